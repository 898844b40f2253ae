"""transformers baseline for `distill bench generate` on a GPU: the same shape, prompts and greedy
decoding, printing the same JSON fields, so ours/theirs ratios come from one card.

    python3 benches/baselines/torch_generate_gpu.py --shape qwen2.5-0.5b --batch 1 --batch 64

Random weights of Qwen2.5-0.5B's or 1.5B's shape in bf16, SDPA attention, `model.generate` with
greedy decoding, `prompt_len` random prompt tokens per row and exactly `new_tokens` new tokens per row
(EOS off), timed after a 4-token warm-up of the same batch. New tokens/s counts the prefill's time.
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=1024)
    args = parser.parse_args()
    try:
        import torch
        import transformers
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError as error:
        print(f"skipped: the transformers baseline needs torch and transformers ({error})")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                         **SHAPES[args.shape])
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).to(device="cuda", dtype=torch.bfloat16).eval()
    for batch in args.batch or [1]:
        ids = torch.randint(0, config.vocab_size, (batch, args.prompt_len), device="cuda")
        mask = torch.ones_like(ids)

        def run(new_tokens):
            with torch.inference_mode():
                return model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      eos_token_id=None, pad_token_id=0)

        run(4)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = run(args.new_tokens)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        produced = batch * (out.shape[1] - args.prompt_len)
        print(json.dumps(dict(
            workload="generate", shape=args.shape, batch=batch, prompt_len=args.prompt_len,
            new_tokens=args.new_tokens, device=torch.cuda.get_device_name(), compute_dtype="BF16",
            tokens_per_s=produced / seconds, seconds=seconds,
            peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20,
            torch=torch.__version__, transformers=transformers.__version__)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
