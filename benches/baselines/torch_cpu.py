"""PyTorch + transformers baseline for `distill bench cpu`: the same shapes and workloads, printing the
same lines, so ours/theirs ratios come from one machine.

    python3 benches/baselines/torch_cpu.py            # all cases
    python3 benches/baselines/torch_cpu.py --threads 2

Training: Qwen2 with random weights, batch 8 x 256, forward + backward (cross-entropy over all
positions) + AdamW step, float32. Generation: greedy `generate`, prompt 32, exactly 64 new tokens,
batch 1/8/32. Each case runs in its own process so peak RSS is its own. Skips with a clear message
when torch or transformers is missing.
"""
import argparse
import json
import resource
import subprocess
import sys
import time

SHAPES = {
    "small-vocab": dict(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=4),
    "qwen-vocab": dict(vocab_size=151936, hidden_size=128, intermediate_size=352, num_hidden_layers=2),
}
CASES = ["train:small-vocab:8", "train:qwen-vocab:8", "generate:small-vocab:1", "generate:small-vocab:8",
         "generate:small-vocab:32", "generate:qwen-vocab:1", "generate:qwen-vocab:8", "generate:qwen-vocab:32"]


def model_for(shape):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=2048, **SHAPES[shape])
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config).float()


def run_case(case, steps):
    import torch

    workload, shape, batch = case.split(":")
    batch = int(batch)
    model = model_for(shape)
    vocab = SHAPES[shape]["vocab_size"]
    if workload == "train":
        ids = torch.randint(0, vocab, (batch, 256))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rate = batch * 256 * steps / (time.perf_counter() - start)
    else:
        ids = torch.randint(0, vocab, (batch, 32))
        kwargs = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids[:1], **kwargs)
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            rate = (out.shape[1] - 32) * batch / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(workload=workload, shape=shape, batch=batch, tokens_per_s=rate, peak_rss_mib=peak)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--case")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        print(f"skipped: PyTorch baseline needs torch and transformers ({error})")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.steps)))
        return 0
    print(f"{'workload':<10} {'shape':<12} {'batch':>5} {'tokens/s':>12} {'peak MiB':>10}")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--threads", str(args.threads),
                              "--steps", str(args.steps)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['workload']:<10} {r['shape']:<12} {r['batch']:>5} {r['tokens_per_s']:>12.0f} {r['peak_rss_mib']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
