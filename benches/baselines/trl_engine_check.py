"""Checks the TRL engine against distill's own trainer, on the CPU, through the distill binary.

Run from the repository root after the demo (`cargo run --release -- run`, which leaves
runs/tiny-r1), with the reference stack:

    PY=$(bash ../shared/tools/pyenv.sh)
    cargo build --release
    $PY benches/baselines/trl_engine_check.py --distill target/release/distill --run runs/tiny-r1

1. Agreement: the demo's student base is fine-tuned on the first --examples accepted traces by
   `distill train --engine distill` and `--engine trl` with the same settings (f32, one process).
   One micro-batch holds every example, so both trainers see the same rows at every step whatever
   order each draws them in. Reports the per-step losses' mean and largest relative difference, and
   the greedy replies (`distill eval --temperature 0 --k 1`) of both students on the demo's held-out
   prompts: how many are identical, and each one's pass@1.
2. DDP: TRL with 2 processes (`--nproc-per-node 2`, gloo on the CPU) × half the rows each, against 1
   process with 2 accumulated micro-batches of the same size: the loss curves' largest difference.

Prints one JSON object (also written to --work/report.json) with the versions used.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd
import torch
import transformers
import trl


def sh(args):
    started = time.time()
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True)
    return time.time() - started


def losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def train(distill, out, engine, student, data, config, extra=()):
    args = [distill, "train", "--student", student, "--data", data, "--out", out, "--config", config,
            "--engine", engine, "--force"]
    if engine == "trl":
        args += ["--python", sys.executable]
    return sh(args + list(extra))


def greedy(distill, model, out, prompts, limit):
    sh([distill, "eval", "--model", model, "--prompts", prompts, "--out", out, "--k", "1",
        "--temperature", "0", "--limit", str(limit), "--max-new-tokens", "128", "--batch-size", "32"])
    samples = pd.read_parquet(os.path.join(out, "data", "samples.parquet"))
    summary = json.load(open(os.path.join(out, "summary.json")))
    return samples.sort_values("id")["completion"].tolist(), summary["pass_at_1"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--distill", default="target/release/distill")
    parser.add_argument("--run", default="runs/tiny-r1")
    parser.add_argument("--work", default="/tmp/distill-trl-check")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", default="synth:arith:difficulty=1:count=128:seed=12")
    parser.add_argument("--eval-limit", type=int, default=128)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    student = os.path.join(args.run, "student", "train", "final")
    accepted = pd.read_parquet(os.path.join(args.run, "filtered", "accepted", "data"))
    accepted = accepted.sort_values(["id", "sample_index"]).head(args.examples)
    data = os.path.join(args.work, "traces.jsonl")
    with open(data, "w") as f:
        for messages in accepted["messages"]:
            f.write(json.dumps({"messages": [dict(m) for m in messages]}) + "\n")
    config = os.path.join(args.work, "sft.toml")
    with open(config, "w") as f:
        f.write(f"learning_rate = 2e-3\nwarmup_steps = 5\nmin_lr_ratio = 0.1\nmax_steps = {args.steps}\n"
                f"max_length = 256\neval_fraction = 0.0\nprecision = \"f32\"\nseed = 0\n")
    report = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__},
              "examples": len(accepted), "steps": args.steps}

    # 1. distill vs TRL, one micro-batch of every example.
    whole = ["--batch-size", str(len(accepted))]
    runs = {e: os.path.join(args.work, f"sft-{e}") for e in ["distill", "trl"]}
    wall = {e: train(args.distill, runs[e], e, student, data, config, whole) for e in runs}
    ours, theirs = losses(runs["distill"]), losses(runs["trl"])
    rel = [abs(a - b) / abs(a) for a, b in zip(ours, theirs)]
    replies, pass1 = {}, {}
    for e in runs:
        replies[e], pass1[e] = greedy(args.distill, os.path.join(runs[e], "final"),
                                      os.path.join(args.work, f"eval-{e}"), args.prompts, args.eval_limit)
    same = sum(a == b for a, b in zip(replies["distill"], replies["trl"]))
    report["agreement"] = {
        "distill_losses": ours, "trl_losses": theirs, "steps_compared": min(len(ours), len(theirs)),
        "mean_relative_difference": sum(rel) / len(rel), "max_relative_difference": max(rel),
        "greedy_identical": same, "greedy_prompts": len(replies["distill"]),
        "pass_at_1": pass1, "wall_seconds": wall,
    }

    # 2. DDP: 2 processes x half the rows vs 1 process x 2 accumulated micro-batches.
    half = str(len(accepted) // 2)
    ddp = os.path.join(args.work, "ddp-2proc")
    single = os.path.join(args.work, "ddp-1proc-accum2")
    wall_ddp = train(args.distill, ddp, "trl", student, data, config,
                     ["--batch-size", half, "--grad-accum", "1", "--nproc-per-node", "2"])
    wall_single = train(args.distill, single, "trl", student, data, config,
                        ["--batch-size", half, "--grad-accum", "2", "--nproc-per-node", "1"])
    a, b = losses(ddp), losses(single)
    report["ddp"] = {
        "two_process_losses": a, "one_process_accum2_losses": b,
        "max_abs_difference": max(abs(x - y) for x, y in zip(a, b)),
        "max_relative_difference": max(abs(x - y) / abs(y) for x, y in zip(a, b)),
        "wall_seconds": {"two_processes": wall_ddp, "one_process": wall_single},
    }
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
