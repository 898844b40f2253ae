"""PyTorch + transformers baseline for `distill bench train` on a GPU: the same shape and step, printing
the same JSON fields, so ours/theirs ratios come from one card.

    python3 benches/baselines/torch_train_gpu.py --shape qwen2.5-0.5b --batch 8 --seq 1024 --steps 5

Qwen2.5-0.5B's (or 1.5B's) shape with random weights; f32 master weights with bf16 autocast (torch AMP, the
counterpart of `--precision bf16`), SDPA attention, forward + backward (cross-entropy over all
positions) + AdamW step. MFU uses the same PaLM FLOP count as distill (6 per matmul weight per token
plus 12 * layers * heads * head_dim * seq per token) against the dense bf16 peak of known GPUs.
"""
import argparse
import json
import sys
import time

SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2),
}
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.05), ("L4", 121.0), ("RTX 4090", 165.2)]


def palm_flops(shape, batch, seq):
    d, layers, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    head_dim = d // shape["num_attention_heads"]
    q = shape["num_attention_heads"] * head_dim
    kv = shape["num_key_value_heads"] * head_dim
    weights = layers * (2 * d * q + 2 * d * kv + 3 * d * shape["intermediate_size"]) + vocab * d
    return batch * (6 * weights * seq + 12 * layers * q * seq * seq)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    shape = dict(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                 **SHAPES[args.shape])
    try:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError as error:
        print(f"skipped: the PyTorch baseline needs torch and transformers ({error})")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    torch.manual_seed(0)
    config = Qwen2Config(**shape)
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).float().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, shape["vocab_size"], (args.batch, args.seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name()
    peak = next((tflops for fragment, tflops in BF16_PEAK_TFLOPS if fragment in name), None)
    flops = args.steps * palm_flops(shape, args.batch, args.seq)
    print(json.dumps(dict(
        workload="train", shape=args.shape, batch=args.batch, seq=args.seq, device=name,
        compute_dtype="BF16", tokens_per_s=args.batch * args.seq * args.steps / seconds,
        mfu=flops / seconds / (peak * 1e12) if peak else None,
        peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
