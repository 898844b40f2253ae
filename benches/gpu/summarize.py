"""Summarises the logs of benches/gpu/run.sh: parity, generation and SFT against the CPU, then each
throughput ratio against PyTorch/transformers on the same card.

    python3 benches/gpu/summarize.py LOG_DIR

Exit status 1 when the parity tests failed, were skipped (no CUDA device) or did not run.
"""
import json
import pathlib
import re
import sys

# Datasheet HBM bandwidth (bytes/s) of known cards, for the decode roofline.
PEAK_BANDWIDTH = [("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("A100", 2.0e12)]


def last_json(path):
    """The last JSON object line of a file, or None."""
    if not path.exists():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def json_lines(path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.startswith("{")]


def tail(path, lines=3):
    if not path.exists():
        return "(no log)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def parity(logs, parts):
    log = logs / "parity.log"
    if "parity" not in parts:
        print("parity: NOT RUN")
        return False
    text = log.read_text(errors="replace")
    failed = re.findall(r"^test (\S+) \.\.\. FAILED", text, re.M)
    skipped = text.count("no CUDA device")
    result = (re.findall(r"^test result: .*$", text, re.M) or ["(no result line)"])[-1]
    status, seconds = parts["parity"][0]
    if skipped:
        print(f"parity: SKIPPED ({skipped} tests found no CUDA device)")
        return False
    print(f"parity: {'PASS' if status == 0 else 'FAIL'} in {seconds} s; {result}")
    for name in failed:
        print(f"  failed: {name}")
    return status == 0


def sample(logs, parts):
    if "sample" not in parts:
        return
    cpu, cuda = logs / "sample_cpu.txt", logs / "sample_cuda.txt"
    if not (cpu.exists() and cuda.exists()):
        return
    if not cuda.read_text():
        print(f"generation (stories260K): cuda:0 FAILED: {tail(logs / 'sample_cuda.err')}")
    elif cpu.read_text() == cuda.read_text():
        print("generation (stories260K, greedy, 48 tokens): cuda:0 text equals the CPU's")
    else:
        print("generation (stories260K): cuda:0 text DIFFERS from the CPU's (see sample_*.txt)")


def sft(logs, parts):
    if "sft" not in parts:
        return
    tags = ("cpu_f32", "cuda_f32", "cuda_bf16", "cuda_f32_fused", "cuda_bf16_fused")
    runs = {tag: json_lines(logs / f"sft_{tag}.metrics.jsonl") for tag in tags}
    cpu = [r["loss"] for r in runs["cpu_f32"]]
    if not cpu:
        if (logs / "sft_cpu_f32.out").exists():
            print(f"sft: the CPU run FAILED: {tail(logs / 'sft_cpu_f32.out')}")
        return
    for tag in tags[1:]:
        losses = [r["loss"] for r in runs[tag]]
        if len(losses) != len(cpu):
            print(f"sft {tag}: FAILED or short ({len(losses)} of {len(cpu)} steps): {tail(logs / f'sft_{tag}.out')}")
            continue
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, cpu))
        print(f"sft {tag} vs cpu f32, {len(cpu)} steps: largest relative loss difference {worst:.2e}; "
              f"final loss {losses[-1]:.4f} vs {cpu[-1]:.4f}")


def pairs(logs, parts, tag, what, theirs_tag=None):
    """Our result lines of part TAG against PyTorch's (part THEIRS_TAG_torch, by default TAG_torch)."""
    theirs_tag = theirs_tag or tag
    if tag not in parts and f"{theirs_tag}_torch" not in parts:
        return
    ours, theirs = json_lines(logs / f"{tag}_ours.json"), json_lines(logs / f"{theirs_tag}_torch.json")
    if not ours and not theirs:
        if tag in parts:
            print(f"{what}: ours FAILED: {tail(logs / f'{tag}_ours.err')}")
        return
    if not ours and tag in parts:
        print(f"{what}: ours FAILED: {tail(logs / f'{tag}_ours.err')}")
    if not theirs and f"{theirs_tag}_torch" in parts:
        print(f"{what}: PyTorch gave no result: {tail(logs / f'{theirs_tag}_torch.err')} "
              f"{tail(logs / f'{theirs_tag}_torch.json')}")
    by_batch = {r["batch"]: r for r in theirs}
    for r in ours:
        other = by_batch.get(r["batch"])
        line = f"{what} {r['shape']} batch {r['batch']}: ours {r['tokens_per_s']:.0f} tok/s"
        if r.get("mfu") is not None:
            line += f" (MFU {r['mfu']:.3f})"
        if r.get("phases"):
            p = r["phases"]
            line += (f" [forward {p['forward_seconds']:.3f} s, backward {p['backward_seconds']:.3f} s, "
                     f"optimizer {p['optimizer_seconds']:.3f} s per step]")
        if "weight_bytes" in r:
            steps = r["new_tokens"]
            moved = steps * (r["weight_bytes"] + r["mean_kv_bytes_per_step"])
            peak = next((b for name, b in PEAK_BANDWIDTH if name in r.get("device", "")), None)
            if peak:
                line += f", {moved / r['seconds'] / peak:.2f} of the weights+KV roofline"
        if other:
            line += f"; PyTorch {other['tokens_per_s']:.0f} tok/s"
            if other.get("mfu") is not None:
                line += f" (MFU {other['mfu']:.3f})"
            if other.get("peak_gpu_mib") is not None:
                line += f", peak {other['peak_gpu_mib']:.0f} MiB"
            line += f"; ours/PyTorch {r['tokens_per_s'] / other['tokens_per_s']:.2f}"
        print(line)


def grpo(logs, parts):
    if "grpo" not in parts:
        return
    records = json_lines(logs / "grpo.metrics.jsonl")
    if not records:
        if (logs / "grpo.log").exists():
            print(f"grpo: FAILED: {tail(logs / 'grpo.log')}")
        return
    for r in records:
        print(f"grpo qwen2.5-0.5b step {r['step']}: rollout {r['rollout_seconds']:.2f} s "
              f"({r['generated_tokens']} tokens), update {r['update_seconds']:.2f} s ({r['update_tokens']} tokens)")


def kernels(logs, parts):
    """Each stage of the training step, ours against PyTorch: ms forward + backward and their ratio."""
    if "kernels" not in parts:
        return
    ours, theirs = last_json(logs / "kernels_ours.json"), last_json(logs / "kernels_torch.json")
    if not ours:
        print(f"kernels: ours FAILED: {tail(logs / 'kernels_ours.err')}")
        return
    torch_cases = {c["name"]: c for c in (theirs or {}).get("cases", [])}
    step = ours["step_ms_from_primitives"]
    print(f"kernels {ours['device']} batch {ours['batch']} x {ours['seq']}: a step is "
          f"{step:.1f} ms as the sum of the primitives, {ours['step_ms_from_blocks']:.1f} ms as the sum of the blocks")
    print(f"  {'stage':<20} {'x/step':>6} {'ours fwd+bwd ms':>16} {'share':>6} {'rate':>12} {'of peak':>8} "
          f"{'torch fwd+bwd ms':>17} {'ours/torch':>10}")
    for c in ours["cases"]:
        ms = c["forward_ms"] + c["backward_ms"]
        unit = "TFLOP/s" if "flops" in c["work"] else "GB/s"
        share = c["per_step"] * ms / step if c["role"] == "primitive" else float("nan")
        peak = f"{c['peak_fraction']:.2f}" if c.get("peak_fraction") is not None else "-"
        line = (f"  {c['name']:<20} {c['per_step']:>6} {c['forward_ms']:>7.2f}+{c['backward_ms']:<8.2f} "
                f"{share:>6.2f} {c['rate']:>6.1f} {unit:<5} {peak:>8}")
        other = torch_cases.get(c["name"])
        if other:
            theirs_ms = other["forward_ms"] + other["backward_ms"]
            line += f" {other['forward_ms']:>8.2f}+{other['backward_ms']:<8.2f} {ms / theirs_ms:>10.2f}"
        print(line)
    if theirs is None and "kernels_torch" in parts:
        print(f"  PyTorch gave no result: {tail(logs / 'kernels_torch.err')}")


def main():
    logs = pathlib.Path(sys.argv[1])
    parts = {}
    if (logs / "parts.txt").exists():
        for line in (logs / "parts.txt").read_text().splitlines():
            name, status, seconds = line.split()
            parts.setdefault(name, []).append((int(status) if status != "skipped" else None, int(seconds)))
    print(f"GPU: {(logs / 'gpu.txt').read_text().strip() if (logs / 'gpu.txt').exists() else '?'}")
    ok = parity(logs, parts)
    sample(logs, parts)
    sft(logs, parts)
    pairs(logs, parts, "train", "training")
    pairs(logs, parts, "train_fused", "training (fused attention kernel)", theirs_tag="train")
    kernels(logs, parts)
    pairs(logs, parts, "generate", "generation")
    grpo(logs, parts)
    pairs(logs, parts, "train15", "training")
    pairs(logs, parts, "generate15", "generation")
    for name, runs in parts.items():
        for status, seconds in runs:
            if status is None:
                print(f"{name}: skipped (budget spent)")
            elif status == 124:
                print(f"{name}: TIMED OUT after {seconds} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
