"""GRPO with TRL, launched by distill (engine = "trl") through `accelerate launch`.

Usage: accelerate launch [accelerate options] grpo_train.py grpo_train.json [--resume]

grpo_train.json holds what distill mapped from its GRPO config: `trl_config` is passed to TRL's
GRPOConfig as it is; `schedule` is distill's learning-rate schedule, applied here exactly;
`no_decay_norms_biases_embeddings` is distill's weight-decay exemption. The prompts are rendered by
distill (chat template, instruction, prefill). The reward is distill's own: every process keeps a
`distill rewards` process (`reward_command`) that scores each completion with the recipe's reward
terms and weights. With `max_flops`, training stops once the estimated FLOPs (6 per parameter per
updated token, 2 per parameter per rollout or reference token, from TRL's token count) reach it.
"""

import json
import subprocess
import sys

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from distill_trl import DistillTrainerMixin


class DistillRewards:
    """distill's reward for each completion, from a `distill rewards` process (one JSON line each way)."""

    __name__ = "distill_reward"

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, prompts, completions, completion_ids, index, log_metric=None, **kwargs):
        for text, ids, i in zip(completions, completion_ids, index):
            request = {"index": i, "completion": text, "completion_tokens": len(ids)}
            self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        scores = []
        for _ in completions:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the distill rewards process ended; its error is above")
            scores.append(json.loads(line))
        if log_metric is not None:
            log_metric("reward_accuracy", sum(s["accuracy"] for s in scores) / len(scores))
        return [s["total"] for s in scores]


class ComputeBudget(TrainerCallback):
    """Stops training once the estimated FLOPs reach `max_flops` (also kept for the summary)."""

    def __init__(self, max_flops, parameters, beta, mu):
        self.max_flops, self.parameters, self.beta, self.mu = max_flops, parameters, beta, mu

    def flops(self, tokens):
        forward = tokens * (1 + (1 if self.beta > 0 else 0))
        return 6.0 * self.parameters * tokens * self.mu + 2.0 * self.parameters * forward

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_flops is not None and self.flops(state.num_input_tokens_seen) >= self.max_flops:
            control.should_training_stop = True
        return control


class DistillGRPOTrainer(DistillTrainerMixin, GRPOTrainer):
    """TRL's GRPOTrainer with distill's schedule, decay exemptions and step timing."""


def main():
    settings = json.load(open(sys.argv[1]))
    resume = "--resume" in sys.argv[2:]
    prompts = datasets.load_dataset("json", data_files={"train": settings["train_file"]})["train"]
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    first = prompts[0]["prompt"]
    if tokenizer(first)["input_ids"] != tokenizer(first, add_special_tokens=False)["input_ids"]:
        raise SystemExit("the tokenizer adds special tokens to text prompts; distill's prompts already hold them")
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
    config = GRPOConfig(**settings["trl_config"])
    budget = ComputeBudget(settings["max_flops"], settings["parameters"], config.beta, config.num_iterations)
    trainer = DistillGRPOTrainer(
        model=model,
        args=config,
        train_dataset=prompts,
        processing_class=tokenizer,
        reward_funcs=[DistillRewards(settings["reward_command"])],
        callbacks=[budget],
        distill_settings=settings,
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(settings["final_dir"])
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(settings["trainer_state"])


if __name__ == "__main__":
    main()
