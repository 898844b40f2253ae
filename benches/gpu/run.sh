#!/usr/bin/env bash
# Runs on the GPU machine, in one go, what benches/gpu/build.sh put in .gpubin/ and prints a
# summary: (1) the CUDA parity tests of every custom op, forward and backward in f32, bf16 and f16,
# and of a tiny decoder's forward and backward, against the CPU; (2) greedy generation with
# stories260K on cuda:0 against the CPU. Logs go to $OUT (the run tool brings them back) or
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
[ $tests_status = 0 ]
