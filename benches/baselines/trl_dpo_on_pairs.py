"""Checks that TRL's DPOTrainer trains on a `distill pairs` directory as it is.

Usage: python benches/baselines/trl_dpo_on_pairs.py PAIRS_DIR TOKENIZER_DIR

Loads PAIRS_DIR (the `pairs/` folder `distill pairs` writes) with `datasets.load_dataset(DIR)`
through its dataset card, checks that TRL sees the conversational preference format, and runs
three DPOTrainer steps on the CPU with a tiny random Qwen2 model and the given tokenizer (no
download). Prints the versions, what TRL's tokenisation made of the first pair, and the logged
metrics as one JSON line. Needs torch, transformers, trl and datasets (../shared/tools/pyenv.sh).
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from trl.data_utils import is_conversational  # noqa: E402


def main():
    pairs_dir, tokenizer_dir = sys.argv[1], sys.argv[2]
    train = datasets.load_dataset(pairs_dir)["train"]
    first = train[0]
    assert is_conversational(first), "TRL does not see the conversational format"
    assert [m["role"] for m in first["chosen"]] == ["assistant"]
    assert [m["role"] for m in first["rejected"]] == ["assistant"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    with tempfile.TemporaryDirectory() as out:
        # Saved first: TRL makes the frozen reference from the policy's path.
        model_dir = os.path.join(out, "tiny-qwen2")
        transformers.Qwen2ForCausalLM(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        args = trl.DPOConfig(
            output_dir=out, max_steps=3, per_device_train_batch_size=2, max_length=512,
            logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
        )
        trainer = trl.DPOTrainer(model=model_dir, args=args, train_dataset=train,
                                 processing_class=tokenizer)
        tokenized = trainer.train_dataset[0]
        result = trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    print(json.dumps({
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "datasets": datasets.__version__},
        "pairs": train.num_rows,
        "columns": train.column_names,
        "first_pair_tokenized_columns": sorted(tokenized.keys()),
        "steps": result.global_step,
        "logged": logged,
    }))


if __name__ == "__main__":
    main()
