"""Transformer building blocks shared by both models (pre-norm, nanoGPT style).

Written out instead of using ``nn.TransformerEncoder`` so that the key-padding mask for missing
keypoints, the cross-attention used by the skeleton decoder and ``torch.export`` (the MLflow pt2
format) all go through one plain code path: ``F.scaled_dot_product_attention`` with a boolean mask,
no fast-path branches and no nested tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention; ``key_mask`` (B, T_k) bool, True = this key may be attended to.

    Every caller keeps at least one key visible per sample (a learned summary token that is never
    masked), so a softmax row is never all ``-inf`` and no NaN can appear.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, d_context: int | None = None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_context or d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, t_q, d = x.shape
        t_k = context.shape[1]
        h = self.n_heads
        q = self.q(x).view(b, t_q, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, t_k, 2, h, d // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t_q, d))


class MLP(nn.Module):
    def __init__(self, d_model: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm self-attention block: x + attn(ln(x)), x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), key_mask=key_mask)
        return x + self.mlp(self.ln_mlp(x))


class CrossBlock(nn.Module):
    """Pre-norm block whose queries attend to a separate context (then an MLP)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_ctx = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_q(x), context=self.ln_ctx(context), key_mask=key_mask)
        return x + self.mlp(self.ln_mlp(x))


def fourier_features(xy: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(..., 2) coordinates in [0, 1] -> (..., 4 * n_freqs) sin/cos features at octave frequencies.

    A plain linear projection of (x, y) cannot resolve positions finely enough to place thin bones;
    the same encoding is used for keypoints and for the decoder's grid cells, so attention can
    compare "where a point is" with "where a cell is".
    """
    freqs = (2.0 ** torch.arange(n_freqs, device=xy.device, dtype=xy.dtype)) * math.pi
    angles = xy[..., None] * freqs  # (..., 2, F)
    feats = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 2, 2F)
    return feats.flatten(-2)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of x (B, T, D) over the tokens where mask (B, T) is True; also returns the count (B, 1).

    An all-False row gives 0 (not NaN); callers use the count to substitute a learned token.
    """
    weights = mask.to(x.dtype).unsqueeze(-1)
    count = weights.sum(dim=1)
    return (x * weights).sum(dim=1) / count.clamp(min=1.0), count
