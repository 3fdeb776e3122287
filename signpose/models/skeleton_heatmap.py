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
import torch.nn.functional as F
from torch import nn

from signpose import layout
from signpose.models.skeleton import HierarchicalSkeletonTransformer, SkeletonModelConfig

# Longest bone of each part (frame units) that is sampled densely enough (spacing <= 2 sigma: ripple
# along the line under 2%); longer bones are still drawn, with a ripple.
_LONGEST_BONE = {"face": 0.05, "left_hand": 0.08, "right_hand": 0.08, "pose": 0.3}


@dataclass
class BoneHeatmapConfig(SkeletonModelConfig):
    heat_sigma: float = 0.6       # width of the sharp bone heat, in pixels of the output image
    heat_sigma_wide: float = 2.0  # width of the wide bone heat (context around the bones); 0 = none

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.heat_sigma <= 0 or self.heat_sigma_wide < 0:
            raise ValueError(f"heat_sigma must be > 0 and heat_sigma_wide >= 0, got "
                             f"{self.heat_sigma}, {self.heat_sigma_wide}")

    @property
    def sigmas(self) -> tuple[float, ...]:
        return (self.heat_sigma,) + ((self.heat_sigma_wide,) if self.heat_sigma_wide > 0 else ())


def segment_distance2(px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance from every pixel (px, py: (P,)) to every segment a->b (a, b: (B, n, 2)): (B, n, P).
    The exact line-segment distance field that :class:`BoneHeat` approximates (a reference for tests)."""
    ax, ay = a[..., 0:1], a[..., 1:2]
    abx, aby = b[..., 0:1] - ax, b[..., 1:2] - ay
    apx, apy = px - ax, py - ay
    t = ((apx * abx + apy * aby) / (abx * abx + aby * aby + 1e-12)).clamp(0.0, 1.0)
    dx, dy = apx - t * abx, apy - t * aby
    return dx * dx + dy * dy


def _bone_samples(part_id: int, image_size: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sample points of every bone of a part: endpoint indices, position t in (0, 1) along the bone
    (mid-points of K equal pieces, so bones sharing a joint do not count it twice), and K."""
    bones = layout.BONES[layout.BONE_PART_IDS == part_id]
    k = max(1, math.ceil(_LONGEST_BONE[layout.PARTS[part_id]] * image_size / (2 * sigma)))
    t = (np.arange(k) + 0.5) / k
    return np.repeat(bones[:, 0], k), np.repeat(bones[:, 1], k), np.tile(t, len(bones)), k


class BoneHeat(nn.Module):
    """Keypoints (B, 143, 3) -> per-part bone heat (B, 4 * len(sigmas), S, S); no parameters.

    Each bone is a row of Gaussians (K samples along it, weighted by the piece length / (sigma
    sqrt(2 pi))): their sum is the bone convolved with a Gaussian, i.e. ``exp(-d^2 / (2 sigma^2))`` of
    the distance ``d`` to the segment away from its ends. Gaussians are separable, so a part's map is
    one batched matrix product ``Gy^T diag(w) Gx`` over its samples: far cheaper than a distance field
    over every (pixel, bone) pair. Bones whose endpoints are not both present get weight 0."""

    def __init__(self, image_size: int, sigmas: tuple[float, ...]):
        super().__init__()
        self.image_size = image_size
        self.sigmas = tuple(float(s) for s in sigmas)
        self.register_buffer("centres", torch.arange(image_size, dtype=torch.float32) / image_size,
                             persistent=False)
        self.n_parts = len(layout.PARTS)
        self.samples_per_bone: list[int] = []
        for part_id in range(self.n_parts):
            ia, ib, t, k = _bone_samples(part_id, image_size, min(self.sigmas))
            self.samples_per_bone.append(k)
            self.register_buffer(f"start_{part_id}", torch.as_tensor(ia, dtype=torch.long), persistent=False)
            self.register_buffer(f"end_{part_id}", torch.as_tensor(ib, dtype=torch.long), persistent=False)
            self.register_buffer(f"t_{part_id}", torch.as_tensor(t, dtype=torch.float32).unsqueeze(-1),
                                 persistent=False)

    @property
    def channels(self) -> int:
        return self.n_parts * len(self.sigmas)

    def _part(self, xy: torch.Tensor, present: torch.Tensor, part_id: int) -> list[torch.Tensor]:
        ia, ib = getattr(self, f"start_{part_id}"), getattr(self, f"end_{part_id}")
        a, b = xy[:, ia], xy[:, ib]
        points = a + getattr(self, f"t_{part_id}") * (b - a)  # (B, n, 2)
        length = (b - a).pow(2).sum(-1).add(1e-12).sqrt() * self.image_size  # pixels
        drawn = (present[:, ia] & present[:, ib]).to(xy.dtype)
        maps = []
        for sigma in self.sigmas:
            weight = length * drawn / (self.samples_per_bone[part_id] * sigma * math.sqrt(2 * math.pi))
            gx = torch.exp((self.centres - points[..., 0:1]).pow(2) * (-0.5 * (self.image_size / sigma) ** 2))
            gy = torch.exp((self.centres - points[..., 1:2]).pow(2) * (-0.5 * (self.image_size / sigma) ** 2))
            maps.append(torch.bmm((gy * weight.unsqueeze(-1)).transpose(1, 2), gx))  # (B, S_y, S_x)
        return maps

    def forward(self, keypoints: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        xy = keypoints[..., :2].float() * present.unsqueeze(-1).float()
        per_part = [self._part(xy, present, part_id) for part_id in range(self.n_parts)]
        # The renderer draws crossing lines as the brighter one, not their sum: clamp the overlaps.
        return torch.stack([maps[i] for i in range(len(self.sigmas)) for maps in per_part], dim=1).clamp(max=1.0)


class HeatUpBlock(nn.Module):
    """Nearest x2 up-sampling, the bone heat of the new resolution concatenated, 3x3 conv, norm, GELU."""

    def __init__(self, c_in: int, c_heat: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(c_in + c_heat, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(torch.cat([self.up(x), heat], dim=1))))


class BoneHeatmapSkeletonTransformer(HierarchicalSkeletonTransformer):
    def __init__(self, config: BoneHeatmapConfig | None = None):
        cfg = config or BoneHeatmapConfig()
        super().__init__(cfg)
        del self.cnn  # the seed's decoder CNN is rebuilt with the heat inputs
        n_stages = int(math.log2(cfg.image_size // cfg.grid_size))
        self.pool_factors = [cfg.image_size // (cfg.grid_size * 2 ** (i + 1)) for i in range(n_stages)]
        self.heat = BoneHeat(cfg.image_size, cfg.sigmas)
        channels = cfg.decoder_channels
        self.stem = nn.Conv2d(cfg.d_model, channels, 1)
        blocks = []
        for _ in range(n_stages):
            out = max(cfg.min_channels, channels // 2)
            blocks.append(HeatUpBlock(channels, self.heat.channels, out))
            channels = out
        self.up_blocks = nn.ModuleList(blocks)
        self.to_image = nn.Conv2d(channels + self.heat.channels, 1, 3, padding=1)
        nn.init.constant_(self.to_image.bias, -3.0)  # start near black, as the seed model does

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, 143, 3) -> (B, 1, image_size, image_size) in [0, 1]."""
        feature_map, present = self.decode_grid(keypoints)
        x = self.stem(feature_map)
        heat = self.heat(keypoints, present).to(x.dtype)
        for factor, block in zip(self.pool_factors, self.up_blocks):
            x = block(x, F.avg_pool2d(heat, factor) if factor > 1 else heat)
        return torch.sigmoid(self.to_image(torch.cat([x, heat], dim=1)))
