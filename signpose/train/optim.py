"""AdamW with decoupled weight decay on matrices only, linear warm-up and a cosine schedule."""

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


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(cfg.warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup, cfg.min_lr_ratio))
