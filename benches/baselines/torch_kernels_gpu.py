"""PyTorch + transformers baseline for `distill bench kernels`: the same stages of a training step at the
same shape, each timed forward and forward + backward on its own, printing the same JSON fields (one line),
so each stage's ours/theirs ratio comes from one card.

    python3 benches/baselines/torch_kernels_gpu.py --shape qwen2.5-0.5b --batch 8 --seq 1024

bf16 tensors (what autocast hands each op in the PyTorch AMP loop of torch_train_gpu.py), transformers'
Qwen2 modules where it has one (RMSNorm, rotary embedding, the decoder layer's attention and MLP with SDPA),
backward seeded with ones as candle's is. The loss head is the logits matmul then cross-entropy over the
upcast logits, as transformers' causal-LM loss does it.
"""
import argparse
import json
import time

from torch_train_gpu import SHAPES


def synchronize(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def mean_seconds(torch, reps, run):
    run()
    synchronize(torch)
    start = time.perf_counter()
    for _ in range(reps):
        run()
    synchronize(torch)
    return (time.perf_counter() - start) / reps


def time_stage(torch, reps, forward):
    def both():
        y = forward()
        y.backward(torch.ones_like(y))

    forward_s = mean_seconds(torch, reps, lambda: forward())
    both_s = mean_seconds(torch, reps, both)
    return forward_s * 1e3, max(both_s - forward_s, 0.0) * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to check the script on a small shape")
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        import transformers
        from transformers import Qwen2Config
        from transformers.models.qwen2 import modeling_qwen2 as qwen2
    except ImportError as error:
        print(f"skipped: the PyTorch baseline needs torch and transformers ({error})")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    torch.manual_seed(0)
    shape = SHAPES[args.shape]
    config = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, **shape)
    config._attn_implementation = "sdpa"
    b, t = args.batch, args.seq
    n, h, inter = b * t, shape["hidden_size"], shape["intermediate_size"]
    heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]
    hd = h // heads
    bf16, dev = torch.bfloat16, args.device

    def leaf(*size, dtype=bf16):
        return torch.randn(*size, device=dev, dtype=dtype).requires_grad_()

    cases = []

    def add(name, forward):
        forward_ms, backward_ms = time_stage(torch, args.reps, forward)
        cases.append(dict(name=name, forward_ms=forward_ms, backward_ms=backward_ms))

    norm = qwen2.Qwen2RMSNorm(h, eps=1e-6).to(dev, bf16)
    x = leaf(n, h)
    add("rms_norm", lambda: norm(x))
    for name, inputs, outputs in [("q_proj", h, heads * hd), ("k_proj, v_proj", h, kv_heads * hd),
                                  ("o_proj", heads * hd, h), ("gate_proj, up_proj", h, inter),
                                  ("down_proj", inter, h)]:
        xi, w = leaf(n, inputs), leaf(outputs, inputs)
        add(name, lambda xi=xi, w=w: F.linear(xi, w))

    rotary = qwen2.Qwen2RotaryEmbedding(config=config).to(dev)
    positions = torch.arange(t, device=dev).expand(b, t)
    q, k, v = leaf(b, heads, t, hd), leaf(b, kv_heads, t, hd), leaf(b, kv_heads, t, hd)
    cos, sin = rotary(q, positions)

    def rope(x):
        return x * cos.unsqueeze(1) + qwen2.rotate_half(x) * sin.unsqueeze(1)

    add("rope (q)", lambda: rope(q))
    add("rope (k)", lambda: rope(k))
    # transformers' SDPA path repeats the kv heads, then calls SDPA with is_causal.
    add("attention", lambda: F.scaled_dot_product_attention(
        q, qwen2.repeat_kv(k, heads // kv_heads), qwen2.repeat_kv(v, heads // kv_heads), is_causal=True))
    gate, up = leaf(n, inter), leaf(n, inter)
    add("swiglu", lambda: F.silu(gate) * up)

    layer = qwen2.Qwen2DecoderLayer(config, layer_idx=0).to(dev)
    hidden = leaf(b, t, h, dtype=torch.float32)
    position_embeddings = rotary(hidden, positions)

    def attention_block():
        with torch.autocast(dev, dtype=bf16):
            out, _ = layer.self_attn(layer.input_layernorm(hidden), position_embeddings=position_embeddings,
                                     attention_mask=None)
        return hidden + out

    def mlp_block():
        with torch.autocast(dev, dtype=bf16):
            out = layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden + out

    add("attention block", attention_block)
    add("mlp block", mlp_block)

    embedding = torch.randn(config.vocab_size, h, device=dev, requires_grad=True)
    hidden16 = leaf(b, t, h)
    ids = torch.randint(0, config.vocab_size, (b, t), device=dev)

    def loss_head():
        with torch.autocast(dev, dtype=bf16):
            logits = F.linear(hidden16, embedding)
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, config.vocab_size), ids[:, 1:].reshape(-1))

    add("loss head", loss_head)
    parameters = sum(p.numel() for p in layer.parameters()) * shape["num_hidden_layers"] + config.vocab_size * h
    master = torch.randn(parameters, device=dev, requires_grad=True)
    add("weight cast", lambda: master.to(bf16))

    device = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(json.dumps(dict(cases=cases, device=device, compute_dtype="BF16", batch=b, seq=t,
                          torch=torch.__version__, transformers=transformers.__version__)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
