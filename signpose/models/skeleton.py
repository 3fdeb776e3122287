"""HierarchicalSkeletonTransformer: 143 keypoints (x, y, conf) -> a skeleton image (1, S, S) in [0, 1].

Read top to bottom:

1. **Keypoint tokens.** Each point becomes a token: Fourier features of (x, y) plus its confidence,
   projected to ``d_model``, plus a *part* embedding (face / left hand / right hand / pose, from
   :data:`signpose.layout.PART_IDS`) plus a *point-index* embedding (which of the 143 points it is).
   A learned *global* token is prepended.
2. **Encoder.** Pre-norm Transformer blocks. Missing points (confidence 0) are removed from
   attention with a key mask and their coordinates are zeroed before the projection, so a missing
   point's stale coordinates can never reach the output. The global token is never masked, which
   also keeps a frame with every point missing well defined (no all-``-inf`` softmax row).
3. **Hierarchy.** The point tokens are pooled into 4 *part* tokens (masked mean over each part's
   present points; a learned "part absent" token when none is present) which, with the global token,
   exchange information in one more block: the seed's "global + region representations".
4. **Decoder.** A ``grid_size x grid_size`` grid of cell queries (the same Fourier encoding of the
   cell centre) cross-attends to the hierarchy and point tokens, giving a small feature map that a CNN
   up-samples (nearest x2 + conv) to ``image_size``; a sigmoid gives the image.

No data-dependent Python control flow: the model exports with ``torch.export`` (MLflow's pt2 format)
with a dynamic batch dimension.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from signpose import layout
from signpose.models.blocks import Block, CrossBlock, fourier_features, masked_mean


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass
class SkeletonModelConfig:
    image_size: int = 256        # output side, a power of two >= 64
    d_model: int = 256           # token width
    n_layers: int = 4            # encoder blocks over the keypoint tokens
    n_heads: int = 8
    n_decoder_layers: int = 2    # cross-attention blocks of the grid queries
    grid_size: int = 8           # side of the feature map the CNN starts from
    decoder_channels: int = 256  # CNN channels at the grid; halved per up-sampling
    min_channels: int = 16       # ... but never below this
    n_freqs: int = 8             # Fourier octaves for coordinates (finest period 1/128 of the frame)
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not _is_power_of_two(self.image_size) or self.image_size < 64:
            raise ValueError(f"image_size must be a power of two >= 64, got {self.image_size}")
        if not _is_power_of_two(self.grid_size) or self.grid_size >= self.image_size:
            raise ValueError(f"grid_size must be a power of two smaller than image_size "
                             f"({self.image_size}), got {self.grid_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def _grid_centres(grid_size: int) -> torch.Tensor:
    """(g*g, 2) cell centres in the frame's [0, 1] coordinates, row-major (y outer, x inner)."""
    centres = (torch.arange(grid_size, dtype=torch.float32) + 0.5) / grid_size
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


class UpBlock(nn.Module):
    """Nearest-neighbour x2 up-sampling then a 3x3 conv (no checkerboard artefacts of transposed convs)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.up(x))))


class HierarchicalSkeletonTransformer(nn.Module):
    def __init__(self, config: SkeletonModelConfig | None = None):
        super().__init__()
        self.config = cfg = config or SkeletonModelConfig()
        d = cfg.d_model
        n_parts = len(layout.PARTS)

        # 1. tokens
        self.point_proj = nn.Linear(4 * cfg.n_freqs + 1, d)
        self.part_emb = nn.Embedding(n_parts, d)
        self.index_emb = nn.Embedding(layout.N_POINTS, d)
        self.global_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("part_ids", torch.as_tensor(layout.PART_IDS, dtype=torch.long),
                             persistent=False)

        # 2. encoder
        self.encoder = nn.ModuleList(
            Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln_encoder = nn.LayerNorm(d)

        # 3. hierarchy: global token + one token per part
        self.absent_part = nn.Parameter(torch.zeros(n_parts, d))
        self.level_emb = nn.Parameter(torch.zeros(1 + n_parts, d))
        self.hierarchy = Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout)
        self.ln_hierarchy = nn.LayerNorm(d)

        # 4. decoder: grid queries -> feature map -> CNN up-sampling
        self.register_buffer("cell_features", fourier_features(_grid_centres(cfg.grid_size), cfg.n_freqs),
                             persistent=False)
        self.cell_proj = nn.Linear(4 * cfg.n_freqs, d)
        self.decoder = nn.ModuleList(
            CrossBlock(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_decoder_layers))
        self.ln_decoder = nn.LayerNorm(d)

        channels = cfg.decoder_channels
        layers: list[nn.Module] = [nn.Conv2d(d, channels, 1)]
        for _ in range(int(math.log2(cfg.image_size // cfg.grid_size))):
            out = max(cfg.min_channels, channels // 2)
            layers.append(UpBlock(channels, out))
            channels = out
        self.cnn = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(channels, 1, 3, padding=1)

        self.apply(self._init_weights)
        # Skeleton images are mostly background: start the output near black (sigmoid(-3) ~ 0.05)
        # so early steps learn where the bones are instead of first un-learning a grey image.
        nn.init.constant_(self.to_image.bias, -3.0)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def encode(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 143, 3) -> point tokens (B, 143, d), hierarchy tokens (B, 5, d) [global, 4 parts],
        present mask (B, 143)."""
        b = keypoints.shape[0]
        present = keypoints[..., 2] > 0
        keypoints = keypoints * present.unsqueeze(-1).to(keypoints.dtype)
        features = torch.cat([fourier_features(keypoints[..., :2], self.config.n_freqs),
                              keypoints[..., 2:3]], dim=-1)
        points = self.point_proj(features) + self.part_emb(self.part_ids) + self.index_emb.weight
        x = torch.cat([self.global_token.expand(b, -1, -1), points], dim=1)
        key_mask = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
        for block in self.encoder:
            x = block(x, key_mask)
        x = self.ln_encoder(x)
        global_token, points = x[:, :1], x[:, 1:]

        part_tokens = []
        for part_id, name in enumerate(layout.PARTS):
            part = layout.PART_SLICES[name]
            mean, count = masked_mean(points[:, part], present[:, part])
            part_tokens.append(torch.where(count > 0, mean, self.absent_part[part_id]))
        hierarchy = torch.cat([global_token, torch.stack(part_tokens, dim=1)], dim=1) + self.level_emb
        hierarchy = self.ln_hierarchy(self.hierarchy(hierarchy))
        return points, hierarchy, present

    def decode_grid(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode, then let the grid's cells attend to the tokens: ((B, d_model, g, g) feature map,
        (B, 143) presence mask)."""
        b = keypoints.shape[0]
        g = self.config.grid_size
        points, hierarchy, present = self.encode(keypoints)
        context = torch.cat([hierarchy, points], dim=1)
        context_mask = torch.cat([torch.ones_like(present[:, : hierarchy.shape[1]]), present], dim=1)
        cells = self.cell_proj(self.cell_features).unsqueeze(0).expand(b, -1, -1)
        for block in self.decoder:
            cells = block(cells, context, context_mask)
        cells = self.ln_decoder(cells)
        return cells.transpose(1, 2).reshape(b, self.config.d_model, g, g), present

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, 143, 3) -> (B, 1, image_size, image_size) in [0, 1]."""
        feature_map, _ = self.decode_grid(keypoints)
        return torch.sigmoid(self.to_image(self.cnn(feature_map)))
