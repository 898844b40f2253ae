#!/usr/bin/env bash
# Runs `distill bench cpu` and the PyTorch baseline on the same machine and prints ours/theirs ratios.
#   bash benches/cpu_vs_torch.sh            (from the project root; PyTorch part skips without torch)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q
ours=$(./target/debug/distill bench cpu "$@" | tail -n +2)
theirs=$(python3 benches/baselines/torch_cpu.py | tail -n +2)
if ! grep -q '^train' <<<"$theirs"; then
    echo "$ours"
    echo "$theirs"
    exit 0
fi
printf '%-10s %-12s %5s %10s %10s %7s %9s %9s\n' workload shape batch ours/s torch/s ratio oursMiB torchMiB
paste <(echo "$ours") <(echo "$theirs") | awk '{ printf "%-10s %-12s %5s %10.0f %10.0f %6.2fx %9.0f %9.0f\n", $1, $2, $3, $4, $9, $4 / $9, $5, $10 }'
