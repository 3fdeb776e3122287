"""BoneHeatmapSkeletonTransformer: the seed's skeleton model plus an explicit bone-heat path in its CNN.

The target image is literally lines between keypoints (:mod:`signpose.render`, the bones of
:data:`signpose.layout.BONES`). The seed model has to discover those thin lines from an 8x8 grid of
attention queries and then up-sample them, which is where hands (20 short bones in a few pixels) blur.
This variant keeps the seed's tokens, encoder, hierarchy and grid decoder unchanged and adds one thing:

**Bone heat.** At every resolution of the CNN decoder (grid x2, x4, ... up to ``image_size``) the
keypoints are rendered, with plain tensor ops, into ``4 * len(sigmas)`` heat channels: for each part
(face, left hand, right hand, pose) and each width ``sigma`` (pixels of that resolution), the Gaussian
``exp(-d^2 / (2 sigma^2))`` of ``d``, the distance from the pixel centre to the nearest *drawable* bone
of that part (a line-segment distance field; a bone is drawable when both its endpoints are present,
as the renderer draws it). Each up-sampling block concatenates the heat of its resolution to its
features before its convolution, and the output convolution sees the full-resolution heat. The heat is
a smooth function of the coordinates (differentiable), has no learned parameters, and adds
``9 * 4 * len(sigmas)`` weights per decoder convolution: the parameter count stays within a few
percent of the seed model at the same config.

Pixel centres follow the renderer: a point at ``(x, y)`` lands on pixel ``(x * S, y * S)`` of an
``S``-pixel image, so pixel ``j`` of the full-resolution map sits at ``j / S``; a coarser map of side
``s`` has its pixel centres where nearest up-sampling puts them: ``(j + 0.5) / s - 0.5 / S``.

Same input (B, 143, 3) and output (B, 1, S, S) in [0, 1] as the seed model; exports with
``torch.export`` with a dynamic batch (the bone loop is a fixed Python loop over chunks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from signpose import layout
from signpose.models.skeleton import HierarchicalSkeletonTransformer, SkeletonModelConfig

_FAR = 1e4  # squared distance (frame units) given to bones that are not drawn: heat exp(-huge) = 0
_BONE_CHUNK = 32  # bones per distance evaluation: bounds the (B, chunk, H*W) intermediate at 256 px


@dataclass
class BoneHeatmapConfig(SkeletonModelConfig):
    heat_sigma: float = 0.6       # width of the sharp bone heat, in pixels of each decoder resolution
    heat_sigma_wide: float = 2.0  # width of the wide bone heat (context around the bones); 0 = none

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.heat_sigma <= 0 or self.heat_sigma_wide < 0:
            raise ValueError(f"heat_sigma must be > 0 and heat_sigma_wide >= 0, got "
                             f"{self.heat_sigma}, {self.heat_sigma_wide}")

    @property
    def sigmas(self) -> tuple[float, ...]:
        return (self.heat_sigma,) + ((self.heat_sigma_wide,) if self.heat_sigma_wide > 0 else ())


def _part_bones() -> list[tuple[np.ndarray, np.ndarray]]:
    """Per part (layout.PARTS order): global indices of each bone's two endpoints."""
    out = []
    for part_id in range(len(layout.PARTS)):
        bones = layout.BONES[layout.BONE_PART_IDS == part_id]
        out.append((bones[:, 0].astype(np.int64), bones[:, 1].astype(np.int64)))
    return out


def pixel_centres(side: int, image_size: int) -> torch.Tensor:
    """(side,) frame coordinates of the pixel centres of a ``side`` map inside an ``image_size`` image."""
    return (torch.arange(side, dtype=torch.float32) + 0.5) / side - 0.5 / image_size


def segment_distance2(px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance from every pixel (px, py: (P,)) to every segment a->b (a, b: (B, n, 2)): (B, n, P)."""
    ax, ay = a[..., 0:1], a[..., 1:2]
    abx, aby = b[..., 0:1] - ax, b[..., 1:2] - ay
    apx, apy = px - ax, py - ay
    t = ((apx * abx + apy * aby) / (abx * abx + aby * aby + 1e-12)).clamp(0.0, 1.0)
    dx, dy = apx - t * abx, apy - t * aby
    return dx * dx + dy * dy


class BoneHeat(nn.Module):
    """Keypoints (B, 143, 3) -> per-part bone heat (B, 4 * len(sigmas), side, side); no parameters."""

    def __init__(self, side: int, image_size: int, sigmas: tuple[float, ...]):
        super().__init__()
        self.side = side
        self.sigmas = tuple(float(s) for s in sigmas)
        centres = pixel_centres(side, image_size)
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("px", xs.flatten(), persistent=False)
        self.register_buffer("py", ys.flatten(), persistent=False)
        self.parts = _part_bones()

    @property
    def channels(self) -> int:
        return len(layout.PARTS) * len(self.sigmas)

    def nearest_bone_distance2(self, keypoints: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, 4, side*side): squared distance (frame units) to the nearest drawable bone of each part."""
        xy = keypoints[..., :2]
        per_part = []
        for start_idx, end_idx in self.parts:
            nearest = None
            for lo in range(0, len(start_idx), _BONE_CHUNK):
                ia, ib = start_idx[lo:lo + _BONE_CHUNK].tolist(), end_idx[lo:lo + _BONE_CHUNK].tolist()
                d2 = segment_distance2(self.px, self.py, xy[:, ia], xy[:, ib])
                drawn = (present[:, ia] & present[:, ib]).unsqueeze(-1)
                d2 = torch.where(drawn, d2, torch.full_like(d2, _FAR)).amin(dim=1)
                nearest = d2 if nearest is None else torch.minimum(nearest, d2)
            per_part.append(nearest)
        return torch.stack(per_part, dim=1)

    def forward(self, keypoints: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b = keypoints.shape[0]
        d2_pixels = self.nearest_bone_distance2(keypoints.float(), present) * float(self.side * self.side)
        heat = [torch.exp(d2_pixels * (-0.5 / (sigma * sigma))) for sigma in self.sigmas]
        return torch.cat(heat, dim=1).reshape(b, self.channels, self.side, self.side)


class HeatUpBlock(nn.Module):
    """Nearest x2 up-sampling, the bone heat of the new resolution concatenated, 3x3 conv, norm, GELU."""

    def __init__(self, c_in: int, c_heat: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(c_in + c_heat, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(torch.cat([self.up(x), heat.to(x.dtype)], dim=1))))


class BoneHeatmapSkeletonTransformer(HierarchicalSkeletonTransformer):
    def __init__(self, config: BoneHeatmapConfig | None = None):
        cfg = config or BoneHeatmapConfig()
        super().__init__(cfg)
        del self.cnn  # the seed's decoder CNN is rebuilt with the heat inputs
        n_stages = int(math.log2(cfg.image_size // cfg.grid_size))
        sides = [cfg.grid_size * 2 ** (i + 1) for i in range(n_stages)]
        self.heats = nn.ModuleList(BoneHeat(side, cfg.image_size, cfg.sigmas) for side in sides)
        c_heat = self.heats[0].channels
        channels = cfg.decoder_channels
        self.stem = nn.Conv2d(cfg.d_model, channels, 1)
        blocks = []
        for _ in sides:
            out = max(cfg.min_channels, channels // 2)
            blocks.append(HeatUpBlock(channels, c_heat, out))
            channels = out
        self.up_blocks = nn.ModuleList(blocks)
        self.to_image = nn.Conv2d(channels + c_heat, 1, 3, padding=1)
        nn.init.constant_(self.to_image.bias, -3.0)  # start near black, as the seed model does

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, 143, 3) -> (B, 1, image_size, image_size) in [0, 1]."""
        b = keypoints.shape[0]
        g = self.config.grid_size
        points, hierarchy, present = self.encode(keypoints)
        context = torch.cat([hierarchy, points], dim=1)
        context_mask = torch.cat([torch.ones_like(present[:, : hierarchy.shape[1]]), present], dim=1)
        cells = self.cell_proj(self.cell_features).unsqueeze(0).expand(b, -1, -1)
        for block in self.decoder:
            cells = block(cells, context, context_mask)
        cells = self.ln_decoder(cells)
        x = self.stem(cells.transpose(1, 2).reshape(b, self.config.d_model, g, g))
        heat = x  # replaced at the first stage (there is at least one: grid_size < image_size)
        for heat_of, block in zip(self.heats, self.up_blocks):
            heat = heat_of(keypoints, present)
            x = block(x, heat)
        return torch.sigmoid(self.to_image(torch.cat([x, heat.to(x.dtype)], dim=1)))
