#!/usr/bin/env bash
# Runs on the GPU machine, in one go, what benches/gpu/build.sh put in .gpubin/ and prints a
# summary: (1) the CUDA parity tests of every custom op, forward and backward in f32, bf16 and f16,
# and of a tiny decoder's forward and backward, against the CPU; (2) greedy generation with
# stories260K on cuda:0 against the CPU; (3) training throughput and MFU of the Qwen2.5-0.5B shape
# (batch 8 x 1024, bf16 over f32 master weights) against PyTorch AMP on the same card
# (benches/baselines/torch_train_gpu.py). Logs go to $OUT (the run tool brings them back) or
# to ./gpu-logs. Exit status 1 if a parity test fails or is skipped (no CUDA device).
#
#   run tool: carry [".gpubin"], command "bash benches/gpu/run.sh"
set -uo pipefail
cd "$(dirname "$0")/../.."
logs="${OUT:-gpu-logs}"
mkdir -p "$logs"
purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
export RUST_BACKTRACE=0  # candle errors would otherwise carry a backtrace each
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:$purelib/nvidia/cu13/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

bin=$(mktemp -d)
for f in .gpubin/*.gz; do
  gunzip -c "$f" >"$bin/$(basename "$f" .gz)"
done
chmod +x "$bin"/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$logs/gpu.txt"
missing=$(ldd "$bin/ops_cuda_parity" | grep 'not found' || true)
[ -n "$missing" ] && echo "missing libraries: $missing"

echo "== ops_cuda_parity"
start=$(date +%s)
"$bin/ops_cuda_parity" --test-threads=1 --nocapture >"$logs/ops_cuda_parity.log" 2>&1
tests_status=$?
tests_seconds=$(( $(date +%s) - start ))
skipped=$(grep -c 'no CUDA device' "$logs/ops_cuda_parity.log")
grep -E '^test |^distill_|test result|panicked|relative error|NaN' "$logs/ops_cuda_parity.log" | head -80

echo "== generation: stories260K, greedy, 48 new tokens"
sample() {
  "$bin/distill" model sample --model .gpubin/stories260K/stories260K.bin \
    --prompt "Once upon a time" --max-new-tokens 48 --device "$1"
}
sample cpu >"$logs/sample_cpu.txt" 2>"$logs/sample_cpu.err"
cpu_status=$?
sample cuda:0 >"$logs/sample_cuda.txt" 2>"$logs/sample_cuda.err"
cuda_status=$?
for device in cpu cuda; do
  echo "$device: $(head -c 400 "$logs/sample_$device.txt")"
  echo "      $(head -n 3 "$logs/sample_$device.err")"
done

echo "== training: qwen2.5-0.5b shape, batch 8 x 1024, bf16 compute over f32 master weights"
"$bin/distill" bench train --device cuda:0 --precision bf16 --shape qwen2.5-0.5b --batch 8 --steps 5 \
  >"$logs/train_ours.json" 2>"$logs/train_ours.err"
train_status=$?
timeout 300 python3 benches/baselines/torch_train_gpu.py --batch 8 --seq 1024 --steps 5 \
  >"$logs/train_torch.json" 2>"$logs/train_torch.err"
echo "ours:    $(tail -n 1 "$logs/train_ours.json") $(tail -n 2 "$logs/train_ours.err")"
echo "PyTorch: $(tail -n 1 "$logs/train_torch.json") $(tail -n 2 "$logs/train_torch.err")"

echo "== summary"
echo "GPU: $(cat "$logs/gpu.txt")"
if [ "$skipped" != 0 ]; then
  echo "parity tests: SKIPPED ($skipped tests found no CUDA device; see ops_cuda_parity.log)"
  tests_status=1
else
  echo "parity tests: $([ $tests_status = 0 ] && echo PASS || echo "FAIL (exit $tests_status)") in ${tests_seconds} s; $(grep -E '^test result' "$logs/ops_cuda_parity.log" | tail -1)"
fi
if [ $cpu_status != 0 ] || [ $cuda_status != 0 ]; then
  echo "generation: FAILED (cpu exit $cpu_status, cuda exit $cuda_status; see sample_*.err)"
elif cmp -s "$logs/sample_cpu.txt" "$logs/sample_cuda.txt"; then
  echo "generation: cuda:0 text equals the CPU's"
else
  echo "generation: cuda:0 text differs from the CPU's (greedy ties can flip; compare sample_*.txt)"
fi
if [ $train_status = 0 ]; then
  python3 - "$logs/train_ours.json" "$logs/train_torch.json" <<'PY'
import json, sys
ours, torch = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:])
print(f"training: ours {ours['tokens_per_s']:.0f} tok/s (MFU {ours['mfu']}), PyTorch {torch['tokens_per_s']:.0f} tok/s "
      f"(MFU {torch['mfu']}), ours/PyTorch {ours['tokens_per_s'] / torch['tokens_per_s']:.2f}")
PY
else
  echo "training: FAILED (exit $train_status; see train_ours.err)"
fi
[ $tests_status = 0 ]
