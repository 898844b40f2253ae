"""PyTorch + transformers baseline for one full-size SFT step on the CPU, the counterpart of

    distill bench train --shape qwen2.5-0.5b --batch 1 --seq 1024 --steps 1 [--gradient-checkpointing]

    python3 benches/baselines/torch_cpu_step.py [--gradient-checkpointing] [--threads 2]

Qwen2.5-0.5B's shape with random weights in float32, SDPA attention, one row of 1,024 random tokens,
forward + backward (cross-entropy over all positions) + AdamW step; one warm-up step, then `--steps`
timed steps. With `--gradient-checkpointing`, transformers' own (`gradient_checkpointing_enable`,
non-reentrant). Prints one JSON line with the same fields as distill's bench: tokens/s and the peak
RSS of the process (MiB), plus the torch and transformers versions.
"""
import argparse
import json
import resource
import sys
import time

SHAPE = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
             num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
             max_position_embeddings=32768)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    try:
        import torch
        import transformers
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError as error:
        print(f"skipped: the PyTorch baseline needs torch and transformers ({error})")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPE)
    config._attn_implementation = "sdpa"
    config.use_cache = False
    model = Qwen2ForCausalLM(config).float().train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, args.seq))

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps(dict(
        workload="train", shape="qwen2.5-0.5b", batch=1, seq=args.seq,
        gradient_checkpointing=args.gradient_checkpointing,
        tokens_per_s=args.seq * args.steps / seconds,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        torch=torch.__version__, transformers=transformers.__version__)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
