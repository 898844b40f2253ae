"""Prints what transformers' apply_chat_template renders for the conversations in tests/chat_templates.rs.

Run from the project root: python3 tests/support/chat_template_expected.py
(needs `pip install transformers`; torch is not required). The printed strings are pasted into the test.
"""
import json

from transformers import PreTrainedTokenizerFast

DATA = "../shared/data"
Q = "What is 2+2?"
CASES = {
    "single": [{"role": "user", "content": Q}],
    "system_multi": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": Q},
        {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4."},
        {"role": "user", "content": "And 3+3?"},
    ],
    "answered": [
        {"role": "user", "content": Q},
        {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4."},
    ],
}


def load(folder):
    config = json.load(open(f"{DATA}/{folder}/tokenizer_config.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{DATA}/{folder}/tokenizer.json",
                                  eos_token=config.get("eos_token"), bos_token=config.get("bos_token"))
    return tok, config["chat_template"]


def show(name, tok, template, messages, **kw):
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=template, **kw)
    print(name, json.dumps(text, ensure_ascii=False))


q25, t25 = load("tokenizer_qwen2_5")
q3, t3 = load("tokenizer_qwen3")
r1 = PreTrainedTokenizerFast(tokenizer_file=f"{DATA}/tokenizer_qwen2_5/tokenizer.json",
                             bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>")
tr1 = open(f"{DATA}/chat_template_deepseek_r1_distill_qwen/chat_template.jinja").read()
for case, messages in CASES.items():
    show(f"qwen25_{case}_gen", q25, t25, messages, add_generation_prompt=True)
    show(f"qwen25_{case}_nogen", q25, t25, messages, add_generation_prompt=False)
    show(f"qwen3_{case}_gen", q3, t3, messages, add_generation_prompt=True)
    show(f"qwen3_{case}_nothink", q3, t3, messages, add_generation_prompt=True, enable_thinking=False)
    show(f"r1_{case}_gen", r1, tr1, messages, add_generation_prompt=True)
    show(f"r1_{case}_nogen", r1, tr1, messages, add_generation_prompt=False)
