#!/usr/bin/env bash
# Builds, on a machine without a GPU, what benches/gpu/run.sh runs on a GPU machine: the CUDA
# parity tests (tests/ops_cuda_parity.rs) and the distill binary with `--features cuda`, plus
# the stories260K model (generation and a short SFT run against the CPU), 64 GSM8K rows for that
# run, and the Qwen2.5 tokenizer for the real-shape generation and GRPO benches. They are stripped and gzipped into the
# git-ignored .gpubin/ (~25 MiB; the device carry limit is 64 MiB): carry `.gpubin`, then run
# `bash benches/gpu/run.sh` there.
#
# The toolchain comes from ../shared/gpu/setup-cuda-toolchain.sh (CUDA 13.0 from PyPI, stub
# libcuda); the build goes to target-cuda/ so the CPU build in target/ stays warm. The first
# build takes ~10 minutes on 2 cores (nvcc in candle-kernels).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(bash ../shared/gpu/setup-cuda-toolchain.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-cuda}"

cargo build --features cuda --bin distill
test_bin=$(cargo test --features cuda --test ops_cuda_parity --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ops_cuda_parity":
        print(m["executable"])')

rm -rf .gpubin
mkdir -p .gpubin/stories260K
strip -o .gpubin/ops_cuda_parity "$test_bin"
strip -o .gpubin/distill "$CARGO_TARGET_DIR/debug/distill"
for bin in ops_cuda_parity distill; do
  python3 ../shared/gpu/check-cuda-binary.py ".gpubin/$bin"
done
cp ../shared/data/llama2c_stories260K/stories260K.bin ../shared/data/llama2c_stories260K/tok512.bin \
  .gpubin/stories260K/
mkdir -p .gpubin/tokenizer_qwen2_5
cp ../shared/data/tokenizer_qwen2_5/tokenizer.json ../shared/data/tokenizer_qwen2_5/tokenizer_config.json \
  .gpubin/tokenizer_qwen2_5/
gzip -9 .gpubin/tokenizer_qwen2_5/tokenizer.json
# Short prompt/completion pairs that fit stories260K's 512-token context.
python3 - <<'PY'
import json
with open("../shared/data/gsm8k/train.jsonl") as source, open(".gpubin/sft_gsm8k64.jsonl", "w") as out:
    for line, _ in zip(source, range(64)):
        row = json.loads(line)
        out.write(json.dumps({"prompt": row["question"][:120], "completion": row["answer"][:160]}) + "\n")
PY
gzip -9 .gpubin/ops_cuda_parity .gpubin/distill
du -ch .gpubin/* .gpubin/*/*
