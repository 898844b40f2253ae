#!/usr/bin/env bash
# Runs on the GPU machine, in one go, what benches/gpu/build.sh put in .gpubin/, then prints a
# summary (benches/gpu/summarize.py). Parts, in order:
#   parity      the CUDA parity tests of every custom op (forward and backward, f32/bf16/f16) and of
#               a tiny decoder's forward and backward, against the CPU
#   sample      greedy generation with stories260K on cuda:0 against the CPU
#   sft         a 20-step SFT run of stories260K on the CPU (f32) and on cuda:0 (f32 and bf16, with
#               the blocked attention, CUDA's default, and the fused kernel)
#   kernels     each stage of that training step (norm, projections, rope, attention, MLP, the
#               blocks, the loss head, the weight cast) timed forward and backward on its own, ours
#               and PyTorch (benches/baselines/torch_kernels_gpu.py)
#   profile     an Nsight Systems profile of one 0.5B training step, where the machine has `nsys`
#   train       the Qwen2.5-0.5B-shape training step (8 x 1024, bf16 over f32 master weights),
#               ours and PyTorch AMP (benches/baselines/torch_train_gpu.py)
#   train_fused the same step of ours with DISTILL_ATTENTION=fused (the fused CUDA attention kernel
#               instead of the default, cuBLAS matmuls over query blocks)
#   generate    greedy generation, Qwen2.5-0.5B shape, bf16, 256 prompt + 1024 new tokens, batch
#               1/16/64/256, ours and transformers `generate` (benches/baselines/torch_generate_gpu.py)
#   grpo        two GRPO steps of a Qwen2.5-0.5B-shape policy on cuda:0: rollout and update seconds
#   train15     the Qwen2.5-1.5B-shape step at 2 x 4096, ours and PyTorch
#   generate15  generation at the Qwen2.5-1.5B shape, batch 1 and 64, ours and transformers
# The PyTorch/transformers side of train, generate, train15 and generate15 is its own part, NAME_torch.
# GPU_GEN_BATCHES and GPU_TORCH_GEN_BATCHES (space-separated) override generate's batch sizes.
# GPU_PARTS (comma-separated) picks parts; GPU_BUDGET_S (default 420) bounds the whole script: a
# part gets at most what is left, and a part that would start with under 20 s left is skipped.
# Every log goes into $OUT/gpu-logs.tgz (the run tool brings $OUT back; at most 8 files) and
# $OUT/summary.txt, or into ./gpu-logs without $OUT. Exit status 1 if a parity test fails or is
# skipped (no CUDA device).
#
#   run tool: carry [".gpubin"], command "bash benches/gpu/run.sh"
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
budget="${GPU_BUDGET_S:-420}"
parts="${GPU_PARTS:-parity,sample,sft,kernels,kernels_torch,profile,train,train_torch,train_fused,generate,generate_torch,grpo,train15,train15_torch,generate15,generate15_torch}"
if [ -n "${OUT:-}" ]; then logs=$(mktemp -d); else logs=gpu-logs; fi
mkdir -p "$logs"
exec 3>&1
purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
export RUST_BACKTRACE=0  # candle errors would otherwise carry a backtrace each
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:$purelib/nvidia/cu13/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

bin=$(mktemp -d)
for f in .gpubin/*.gz; do
  gunzip -c "$f" >"$bin/$(basename "$f" .gz)"
done
chmod +x "$bin"/*
tokenizer=$(mktemp -d)
gunzip -c .gpubin/tokenizer_qwen2_5/tokenizer.json.gz >"$tokenizer/tokenizer.json"
cp .gpubin/tokenizer_qwen2_5/tokenizer_config.json "$tokenizer/"
work=$(mktemp -d)
distill="$bin/distill"
stories=.gpubin/stories260K/stories260K.bin

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$logs/gpu.txt" 2>&1
cat "$logs/gpu.txt"
ldd "$bin/ops_cuda_parity" | grep 'not found' && echo "missing libraries (above)"

export distill stories logs work tokenizer
# part NAME LIMIT_S COMMAND...: runs COMMAND (a program or an exported function) under a timeout of LIMIT_S or what is left of the
# budget, whichever is less; records "NAME exit STATUS SECONDS" in parts.txt.
part() {
  local name=$1 limit=$2
  shift 2
  case ",$parts," in *",$name,"*) ;; *) return 0 ;; esac
  local left=$((budget - ($(date +%s) - started) - 10))
  if [ $left -lt 20 ]; then
    echo "$name skipped 0" >>"$logs/parts.txt"
    echo "== $name: skipped, the budget is spent" >&3
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most $limit s)" >&3
  local t0=$(date +%s)
  timeout "$limit" bash -c '"$@"' "$name" "$@"
  local status=$?
  echo "$name $status $(($(date +%s) - t0))" >>"$logs/parts.txt"
  echo "   exit $status after $(($(date +%s) - t0)) s" >&3
}

part parity 150 "$bin/ops_cuda_parity" --test-threads=1 --nocapture >"$logs/parity.log" 2>&1

sample() {
  "$distill" model sample --model "$stories" --prompt "Once upon a time" --max-new-tokens 48 \
    --device "$1" >"$logs/sample_$2.txt" 2>"$logs/sample_$2.err"
}
sample_both() { sample cpu cpu; sample cuda:0 cuda; }
export -f sample sample_both
part sample 40 sample_both

sft() {
  "$distill" train --student "$stories" --data .gpubin/sft_gsm8k64.jsonl --out "$work/sft_$1" \
    --max-steps 20 --batch-size 4 --max-length 512 --seed 0 --device "$2" --precision "$3" \
    >"$logs/sft_$1.out" 2>&1
  cp "$work/sft_$1/metrics.jsonl" "$logs/sft_$1.metrics.jsonl"
}
sft_all() {
  sft cpu_f32 cpu f32
  sft cuda_f32 cuda:0 f32
  sft cuda_bf16 cuda:0 bf16
  DISTILL_ATTENTION=fused sft cuda_f32_fused cuda:0 f32
  DISTILL_ATTENTION=fused sft cuda_bf16_fused cuda:0 bf16
}
export -f sft sft_all
part sft 90 sft_all

train() { # SHAPE BATCH SEQ STEPS TAG
  part "$5" 100 "$distill" bench train --device cuda:0 --precision bf16 --shape "$1" --batch "$2" \
    --seq "$3" --steps "$4" >"$logs/$5_ours.json" 2>"$logs/$5_ours.err"
  part "$5_torch" 100 python3 benches/baselines/torch_train_gpu.py --shape "$1" --batch "$2" --seq "$3" \
    --steps "$4" >"$logs/$5_torch.json" 2>"$logs/$5_torch.err"
}
kernels() { # SHAPE BATCH SEQ
  part kernels 100 "$distill" bench kernels --device cuda:0 --precision bf16 --shape "$1" --batch "$2" \
    --seq "$3" >"$logs/kernels_ours.json" 2>"$logs/kernels_ours.err"
  part kernels_torch 100 python3 benches/baselines/torch_kernels_gpu.py --shape "$1" --batch "$2" \
    --seq "$3" >"$logs/kernels_torch.json" 2>"$logs/kernels_torch.err"
}
kernels qwen2.5-0.5b 8 1024

# The kernel time of one training step by kernel name, where Nsight Systems is installed.
profile() {
  local nsys
  nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [ -z "$nsys" ]; then
    echo "no nsys on this machine; /usr/local/cuda/bin has: $(ls /usr/local/cuda/bin 2>&1 | tr '\n' ' ')"
    return 0
  fi
  "$nsys" profile --trace cuda --stats true --force-overwrite true --output "$work/step" \
    "$distill" bench train --device cuda:0 --precision bf16 --shape qwen2.5-0.5b --batch 8 --seq 1024 --steps 1
}
export -f profile
part profile 75 profile >"$logs/profile.txt" 2>&1

train qwen2.5-0.5b 8 1024 5 train
part train_fused 100 env DISTILL_ATTENTION=fused "$distill" bench train --device cuda:0 --precision bf16 \
  --shape qwen2.5-0.5b --batch 8 --seq 1024 --steps 5 >"$logs/train_fused_ours.json" 2>"$logs/train_fused_ours.err"

generation() { # SHAPE TAG OURS_BATCHES TORCH_BATCHES (space-separated lists)
  local shape=$1 tag=$2 ours=() torch=() b
  for b in $3; do ours+=(--batch "$b"); done
  for b in $4; do torch+=(--batch "$b"); done
  part "$tag" 150 "$distill" bench generate --device cuda:0 --shape "$shape" --tokenizer "$tokenizer" \
    --prompt-len 256 --new-tokens 1024 "${ours[@]}" >"$logs/${tag}_ours.json" 2>"$logs/${tag}_ours.err"
  part "${tag}_torch" 150 python3 benches/baselines/torch_generate_gpu.py --shape "$shape" \
    --prompt-len 256 --new-tokens 1024 "${torch[@]}" >"$logs/${tag}_torch.json" 2>"$logs/${tag}_torch.err"
}
batches="${GPU_GEN_BATCHES:-1 16 64 256}"
generation qwen2.5-0.5b generate "$batches" "${GPU_TORCH_GEN_BATCHES:-$batches}"

grpo() {
  "$distill" model init --preset qwen2.5-0.5b --tokenizer "$tokenizer" --out "$work/policy" &&
    "$distill" grpo --policy "$work/policy" --prompts synth:arith:difficulty=1:count=64:seed=0 \
      --out "$work/grpo" --steps 2 --group-size 8 --prompts-per-step 8 --max-new-tokens 256 \
      --device cuda:0
  local status=$?
  cp "$work/grpo/metrics.jsonl" "$logs/grpo.metrics.jsonl" 2>/dev/null
  return $status
}
export -f grpo
part grpo 120 grpo >"$logs/grpo.log" 2>&1

train qwen2.5-1.5b 2 4096 3 train15
generation qwen2.5-1.5b generate15 "1 64" "1 64"

python3 benches/gpu/summarize.py "$logs" | tee "$logs/summary.txt"
summary_status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  cp "$logs/summary.txt" "$OUT/"
  tar czf "$OUT/gpu-logs.tgz" -C "$logs" .
fi
echo "total $(($(date +%s) - started)) s"
exit "$summary_status"
