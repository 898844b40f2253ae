#!/usr/bin/env bash
# Checks the logic of the CUDA kernels on the CPU, without a GPU or a CUDA toolkit: compiles
# src/ops/cuda/kernels/*.cu with g++ against the emulation of the CUDA execution model in
# benches/gpu/emu/emu.h and compares every kernel, launched as src/ops/cuda/*.rs launches it,
# with a naive double-precision reference (benches/gpu/emu/check.cpp). An optional argument
# picks the op families to check (`benches/gpu/emulate.sh attention`).
# This is no substitute for benches/gpu/run.sh on a GPU: it does not exercise nvcc's code,
# the Rust launch code, cuBLAS or timing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The only source change: dynamic shared memory becomes the emulator's per-block buffer.
for f in "$root"/src/ops/cuda/kernels/*.cu "$root"/src/ops/cuda/kernels/*.cuh; do
  sed 's/extern __shared__ float smem\[\];/float *smem = emu::dynamic_shared.data();/' "$f" \
    >"$work/$(basename "$f")"
done
emu="$root/benches/gpu/emu"
g++ -std=c++20 -O2 -pthread -Wall -Wno-unused-function -Wno-unknown-pragmas -I "$emu/include" -I "$emu" -I "$work" \
  "$emu/check.cpp" -o "$work/check"
"$work/check" "$@"
