"""AdamW with decoupled weight decay on matrices only, linear warm-up and a cosine schedule counted in
training samples (so it is the same on any number of ranks)."""

from __future__ import annotations

import math

import torch
from torch import nn


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear 1/warmup .. 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    # Weight decay on matrices (linear, conv, embedding tables) only; biases and norm gains are not
    # regularised towards 0 (nanoGPT's rule).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


class SampleSchedule:
    """The learning rate as a function of the training samples seen over all ranks, not of optimiser
    steps: a run resumed on another number of GPUs (another global batch, other steps per epoch)
    continues the same warm-up and cosine curve. ``warmup_cosine`` over ``epochs * epoch_samples``
    positions; a step covering the samples ``[p, p + n)`` runs at the factor of its last sample
    ``p + n - 1``; the cosine reaches ``min_lr_ratio`` at the run's last sample, so the last step
    trains at the floor whatever the batch and rank count."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg, epoch_samples: int):
        self.optimizer = optimizer
        self.epoch_samples = max(1, int(epoch_samples))
        total = cfg.epochs * self.epoch_samples
        self.factor = warmup_cosine(max(1, total - 1), int(round(cfg.warmup_fraction * total)), cfg.min_lr_ratio)
        self.base_lr = cfg.lr
        self.set_position(1)

    def position(self, epoch: int, samples_done: int) -> int:
        """Samples seen before this point of ``epoch`` (a padded epoch's last samples count as its end)."""
        return epoch * self.epoch_samples + min(int(samples_done), self.epoch_samples)

    def set_position(self, end: int) -> None:
        """The learning rate of a step whose last sample is at position ``end - 1``."""
        lr = self.base_lr * self.factor(max(0, int(end) - 1))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"epoch_samples": self.epoch_samples}


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, epoch_samples: int) -> SampleSchedule:
    return SampleSchedule(optimizer, cfg, epoch_samples)
