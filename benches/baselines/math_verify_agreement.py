#!/usr/bin/env python3
"""Agreement and speed of the Rust verifier against Python `math-verify`.

Usage:
    cargo bench --bench verify_throughput -- --dump /tmp/pairs.jsonl
    python3 benches/baselines/math_verify_agreement.py /tmp/pairs.jsonl

Reads the (gold, pred, label, rust) JSONL written by the Rust bench (and
its `.meta.json` sidecar with the Rust pairs/s), runs `math_verify.verify`
on each pair (both sides wrapped in `\\boxed{}` for `math_verify.parse`),
and prints the agreement rate, each verifier's agreement with the
construction labels, the disagreements, and the speed ratio.
Skips (exit 0) with a message when `math_verify` is not installed.
"""

import json
import sys
import time


def load_pairs(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_meta(path):
    try:
        with open(path + ".meta.json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def python_verdict(math_verify, gold, pred):
    try:
        g = math_verify.parse("\\boxed{" + gold + "}")
        p = math_verify.parse("\\boxed{" + pred + "}")
        return bool(math_verify.verify(g, p))
    except Exception:  # math-verify raises on some inputs; count as not equal
        return False


def report(name, chosen):
    n = len(chosen)
    agree = sum(v == p["rust"] for v, p in chosen)
    py_label = sum(v == p["label"] for v, p in chosen)
    rust_label = sum(p["rust"] == p["label"] for _, p in chosen)
    print(f"[{name}] pairs: {n}")
    print(f"[{name}] rust vs math-verify agreement: {agree}/{n} = {100 * agree / n:.2f}%")
    print(f"[{name}] label agreement: rust {100 * rust_label / n:.2f}%, math-verify {100 * py_label / n:.2f}%")
    for v, p in chosen:
        if v != p["rust"]:
            print(f"  differ: gold={p['gold']!r} pred={p['pred']!r} label={p['label']} rust={p['rust']} math-verify={v}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    try:
        import math_verify
    except ImportError:
        print("SKIP: math_verify is not installed (pip install math-verify)")
        return 0
    pairs = load_pairs(sys.argv[1])
    meta = load_meta(sys.argv[1])
    start = time.perf_counter()
    verdicts = [python_verdict(math_verify, p["gold"], p["pred"]) for p in pairs]
    elapsed = time.perf_counter() - start
    for name in sorted({p.get("set", "all") for p in pairs}):
        chosen = [(v, p) for v, p in zip(verdicts, pairs) if p.get("set", "all") == name]
        report(name, chosen)
    py_rate = len(pairs) / elapsed
    print(f"math-verify: {py_rate:.0f} pairs/s")
    rust_rate = meta.get("rust_pairs_per_sec")
    if rust_rate:
        print(f"rust: {rust_rate:.0f} traces/s (extract + verify); speed ratio rust/python = {rust_rate / py_rate:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
