"""What distill's TRL launch scripts share: distill's learning-rate schedule and weight-decay rule,
applied to a TRL trainer so that its steps follow distill's settings exactly."""

import math
import time

import torch


def distill_lr_factor(schedule, total_steps):
    """distill's Schedule::lr as a multiplier of the peak, for optimiser step `step` (0-based):
    linear warmup from peak/warmup_steps (transformers' starts at 0), then cosine, linear or
    constant down to min_lr_ratio x peak."""
    warmup, decay, floor = schedule["warmup_steps"], schedule["decay"], schedule["min_lr_ratio"]

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        if decay == "constant":
            return 1.0
        if decay == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def distill_decays(name, exempt):
    """distill's rule: norms, biases and embeddings take no weight decay (when exempt)."""
    return not exempt or not (name.endswith(".bias") or "norm" in name or "embed_tokens" in name)


class DistillTrainerMixin:
    """Put before a TRL trainer class: distill's schedule, decay exemptions and per-step timing
    (`step_seconds` in the log history, from which distill computes tokens/s)."""

    def __init__(self, *args, distill_settings, **kwargs):
        self.distill_settings = distill_settings
        self._last_log = time.perf_counter()
        super().__init__(*args, **kwargs)

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            factor = distill_lr_factor(self.distill_settings["schedule"], num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def get_decay_parameter_names(self, model):
        exempt = self.distill_settings["no_decay_norms_biases_embeddings"]
        return [n for n, _ in model.named_parameters() if distill_decays(n, exempt)]

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:
            now = time.perf_counter()
            logs["step_seconds"] = now - self._last_log
            self._last_log = now
        super().log(logs, *args, **kwargs)
