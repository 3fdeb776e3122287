"""HierarchicalKeypointTransformer: a face keypoint auto-encoder, (B, 68, 3) -> (B, 68, 3).

Read top to bottom:

1. **Region encoders.** The 68 iBUG-300W points are split into the 8 regions of
   :data:`signpose.layout.FACE_REGIONS` (jaw, brows, nose, eyes, lips). Each region has its own small
   Transformer over its points (tokens: projected (x, y, conf) -- with ``coord_bands``, also
   sin/cos octaves of x and y -- + a point embedding) and a learned
   summary token that becomes the region token (width ``d_region``). Missing points (confidence 0)
   are masked out of attention and zeroed; the summary token is never masked, so a region whose
   points are all missing is still well defined.
2. **Cross-region interaction.** Transformer blocks over the 8 region tokens (+ region embeddings).
3. **Global bottleneck.** The 8 region tokens are flattened and projected to ``d_global``: the
   learned representation, :meth:`HierarchicalKeypointTransformer.encode`.
4. **Decoder.** ``d_global`` -> 8 region tokens -> interaction blocks -> one head per region that
   emits that region's points; a sigmoid keeps them in the [0, 1] range of the normalised input.

``model(src, tgt)`` is accepted as in the seed's training loop: ``tgt`` is only checked for shape, the
decoder never reads it (an auto-encoder that saw its target could copy it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from signpose import layout
from signpose.models.blocks import Block


@dataclass
class FaceModelConfig:
    d_region: int = 128         # width of point and region tokens
    d_global: int = 256         # bottleneck size (the representation)
    n_heads: int = 4
    region_layers: int = 2      # blocks in each region encoder
    interaction_layers: int = 2 # blocks over the 8 region tokens (encoder side)
    decoder_layers: int = 2     # blocks over the 8 region tokens (decoder side)
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    coord_bands: int = 6        # point tokens also see sin/cos of x, y at this many octaves; 0 = (x, y, conf) only

    def __post_init__(self) -> None:
        if self.d_region % self.n_heads:
            raise ValueError(f"d_region={self.d_region} must be divisible by n_heads={self.n_heads}")
        if self.coord_bands < 0:
            raise ValueError(f"coord_bands must be >= 0, got {self.coord_bands}")

    def to_dict(self) -> dict:
        return asdict(self)


class CoordinateFeatures(nn.Module):
    """(..., 3) points -> (x, y, conf) and, for ``bands`` > 0, sin and cos of ``2^k pi x`` and ``2^k pi y``
    (k < bands; zero for missing points). A linear projection of the raw coordinates hands the
    Transformer a few hundredths of variation to work with; the octaves spread a point's position over
    many features at several scales, which is what lets the auto-encoder reproduce a face it has not
    seen instead of snapping it to the training faces' average shape (real-face NME 5.3 -> 2.7 %,
    docs/training.md)."""

    def __init__(self, bands: int):
        super().__init__()
        self.bands = int(bands)
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(self.bands, dtype=torch.float32),
                             persistent=False)

    @property
    def channels(self) -> int:
        return layout.N_CHANNELS + 4 * self.bands

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if self.bands == 0:
            return points
        present = (points[..., 2:3] > 0).to(points.dtype)
        angles = points[..., :2, None] * self.freqs.to(points.dtype)  # (..., 2, bands)
        waves = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2) * present
        return torch.cat([points, waves], dim=-1)


class RegionEncoder(nn.Module):
    """Points of one face region -> one region token."""

    def __init__(self, n_points: int, cfg: FaceModelConfig):
        super().__init__()
        d = cfg.d_region
        self.coords = CoordinateFeatures(cfg.coord_bands)
        self.point_proj = nn.Linear(self.coords.channels, d)
        self.point_emb = nn.Parameter(torch.randn(n_points, d) * 0.02)
        self.summary = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.region_layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, points: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b = points.shape[0]
        x = torch.cat([self.summary.expand(b, -1, -1), self.point_proj(self.coords(points)) + self.point_emb], dim=1)
        key_mask = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
        for block in self.blocks:
            x = block(x, key_mask)
        return self.ln(x[:, 0])


class HierarchicalKeypointTransformer(nn.Module):
    def __init__(self, config: FaceModelConfig | None = None):
        super().__init__()
        self.config = cfg = config or FaceModelConfig()
        d = cfg.d_region
        self.region_names = layout.FACE_REGION_NAMES
        self.region_slices = [slice(r.start, r.stop) for r in layout.FACE_REGIONS.values()]
        n_regions = len(self.region_names)

        # 1-2. region encoders and their interaction
        self.region_encoders = nn.ModuleList(
            RegionEncoder(len(r), cfg) for r in layout.FACE_REGIONS.values())
        self.region_emb = nn.Parameter(torch.randn(n_regions, d) * 0.02)
        self.interaction = nn.ModuleList(
            Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.interaction_layers))
        self.ln_interaction = nn.LayerNorm(d)

        # 3. bottleneck
        self.to_global = nn.Sequential(nn.Linear(n_regions * d, cfg.d_global), nn.LayerNorm(cfg.d_global))

        # 4. decoder
        self.from_global = nn.Linear(cfg.d_global, n_regions * d)
        self.decoder_region_emb = nn.Parameter(torch.randn(n_regions, d) * 0.02)
        self.decoder = nn.ModuleList(
            Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.decoder_layers))
        self.ln_decoder = nn.LayerNorm(d)
        self.region_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, len(r) * layout.N_CHANNELS))
            for r in layout.FACE_REGIONS.values())

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """(B, 68, 3) -> (B, d_global), the learned face representation."""
        present = src[..., 2] > 0
        src = src * present.unsqueeze(-1).to(src.dtype)
        regions = torch.stack(
            [encoder(src[:, part], present[:, part])
             for encoder, part in zip(self.region_encoders, self.region_slices)], dim=1)
        x = regions + self.region_emb
        for block in self.interaction:
            x = block(x)
        x = self.ln_interaction(x)
        return self.to_global(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d_global) -> (B, 68, 3) in [0, 1]."""
        b = z.shape[0]
        x = self.from_global(z).view(b, len(self.region_names), self.config.d_region) + self.decoder_region_emb
        for block in self.decoder:
            x = block(x)
        x = self.ln_decoder(x)
        points = [head(x[:, i]).view(b, -1, layout.N_CHANNELS) for i, head in enumerate(self.region_heads)]
        return torch.sigmoid(torch.cat(points, dim=1))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> torch.Tensor:
        if tgt is not None and tgt.shape != src.shape:
            raise ValueError(f"tgt shape {tuple(tgt.shape)} does not match src shape {tuple(src.shape)}")
        return self.decode(self.encode(src))
