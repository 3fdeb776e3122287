"""Trivial predictors: what a model that ignores its input scores. A trained model that does not beat
them on real signers has learnt nothing that transfers (issue 16): the face task's is the mean face,
the skeleton task's an all-black image."""

from __future__ import annotations

import torch
from torch import nn


class ConstantOutput(nn.Module):
    """The same output for every input."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.register_buffer("output", output.detach().float().clone())

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        return self.output.unsqueeze(0).expand(x.shape[0], *self.output.shape)


def mean_face(faces: torch.Tensor) -> torch.Tensor:
    """(N, 68, 3) normalised faces -> (68, 3): each point's mean over the faces where it is present
    (confidence 1; a point present in no face sits at the centre)."""
    present = (faces[..., 2] > 0).float()                                    # (N, 68)
    counts = present.sum(dim=0).clamp(min=1)[:, None]
    xy = (faces[..., :2] * present[..., None]).sum(dim=0) / counts
    xy = torch.where(present.sum(dim=0)[:, None] > 0, xy, torch.full_like(xy, 0.5))
    return torch.cat([xy, torch.ones_like(xy[:, :1])], dim=1)


def black_image(image_size: int) -> torch.Tensor:
    return torch.zeros(1, image_size, image_size)
