"""SFT with TRL, launched by distill (engine = "trl") through `accelerate launch`.

Usage: accelerate launch [accelerate options] sft_train.py sft_train.json [--resume]

sft_train.json holds what distill mapped from its SFT config: `trl_config` is passed to TRL's
SFTConfig as it is; `schedule` is distill's learning-rate schedule (linear warmup from
peak/warmup_steps, then cosine, linear or constant down to min_lr_ratio x peak), applied here
exactly; `no_decay_norms_biases_embeddings` is distill's weight-decay exemption. The data are rows
that distill tokenised itself (`input_ids`, `completion_mask`: the loss covers the final reply),
so both trainers see the same tokens. The trained model goes to `final_dir` and the trainer's log
history to `trainer_state`; distill turns them into its run layout.
"""

import json
import sys

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from distill_trl import DistillTrainerMixin


class DistillSFTTrainer(DistillTrainerMixin, SFTTrainer):
    """TRL's SFTTrainer with distill's schedule, decay exemptions and step timing."""


def main():
    settings = json.load(open(sys.argv[1]))
    resume = "--resume" in sys.argv[2:]
    files = {"train": settings["train_file"]}
    if settings["eval_file"]:
        files["eval"] = settings["eval_file"]
    data = datasets.load_dataset("json", data_files=files)
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
    trainer = DistillSFTTrainer(
        model=model,
        args=SFTConfig(**settings["trl_config"]),
        train_dataset=data["train"],
        eval_dataset=data.get("eval"),
        processing_class=tokenizer,
        distill_settings=settings,
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    if "eval" in data:
        trainer.evaluate()
    trainer.save_model(settings["final_dir"])
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(settings["trainer_state"])


if __name__ == "__main__":
    main()
