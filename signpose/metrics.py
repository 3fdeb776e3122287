"""Validation metrics of the two tasks, accumulated over an epoch (and across DDP ranks).

Names are stable and shared by every run (the MLflow layer logs them as they come):

* skeleton: ``val/mse``, ``val/weighted_loss``, ``val/psnr``, ``val/ssim``, ``val/mse_hands``,
  ``val/mse_face``, ``val/mse_body`` and ``val/nmse_hands``, ``val/nmse_face``, ``val/nmse_body``;
* face: ``val/mse`` (over present points), ``val/nme`` and ``val/nme_<region>`` for the 8 regions of
  :data:`signpose.layout.FACE_REGIONS`.

Every metric is kept as a (sum, count) pair so that epoch values are exact averages over samples (or
pixels) however the data was batched, and so that ranks can sum their pairs with one all-reduce.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from signpose import layout
from signpose.losses import DEFAULT_MARGIN, compute_weighted_loss, masked_mse, region_masks


class MetricSums:
    """Named (sum, count) accumulators; ``compute()`` gives sum / count per name."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.sums = torch.zeros(len(self.names), 2, dtype=torch.float64)

    def add(self, name: str, total: float | torch.Tensor, count: float | torch.Tensor) -> None:
        i = self.names.index(name)
        self.sums[i, 0] += float(total)
        self.sums[i, 1] += float(count)

    def all_reduce(self) -> None:
        """Sum the accumulators of every rank (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            sums = self.sums.to(device)
            dist.all_reduce(sums)
            self.sums = sums.cpu()

    def compute(self) -> dict[str, float]:
        return {name: (float(s / c) if c > 0 else float("nan")) for name, (s, c) in zip(self.names, self.sums.tolist())}


# --- skeleton task ---------------------------------------------------------------------------------

def psnr_per_sample(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1] (torchmetrics)."""
    # Imported here: torchmetrics' package import pulls scipy and matplotlib (~3 s), which every
    # command and task pod that never scores a skeleton image would pay at start.
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(generated.float(), target.float(), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))


def ssim_per_sample(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of images in [0, 1] (torchmetrics, 11x11 Gaussian window)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(generated.float(), target.float(), data_range=1.0,
                                               reduction="none")


NMSE_FLOOR = 1e-6  # per pixel: an all-black target region still has a finite normalised error


class SkeletonMetrics:
    """MSE, the weighted loss, PSNR, SSIM (per-sample means), MSE inside the hand / face / body
    regions (per-pixel means over all pixels of that region in the epoch; regions from the frame's
    keypoints, as in the weighted loss) and each region's normalised MSE.

    ``nmse_<region>`` is the region's squared error over the target's energy there (sum of squared
    target pixels): an all-black image scores 1 in every region, a perfect one 0. The body region is
    mostly background, so its plain MSE is small for any image that is black where the target is; the
    normalised figure compares the regions by how much of their drawing is wrong, not by how much ink
    they hold. The normaliser has a floor of ``NMSE_FLOOR`` per region pixel, so that a region whose
    target is all black (no drawing) has a finite score; it shifts a real region's value by under 0.1 %."""

    REGIONS = ("hands", "face", "body")

    def __init__(self, image_size: int, hand_weight: float = 2.0, face_weight: float = 1.5,
                 margin: float = DEFAULT_MARGIN):
        self.image_size, self.hand_weight, self.face_weight, self.margin = image_size, hand_weight, face_weight, margin
        self.sums = MetricSums(["val/mse", "val/weighted_loss", "val/psnr", "val/ssim"]
                               + [f"val/mse_{r}" for r in self.REGIONS] + [f"val/nmse_{r}" for r in self.REGIONS])

    @torch.no_grad()
    def update(self, generated: torch.Tensor, target: torch.Tensor, keypoints: torch.Tensor | None) -> None:
        generated, target = generated.float(), target.float()
        b = generated.shape[0]
        squared = (generated - target).pow(2)
        self.sums.add("val/mse", squared.mean(dim=(1, 2, 3)).sum(), b)
        weighted = compute_weighted_loss(generated, target, self.image_size, self.hand_weight, self.face_weight,
                                         keypoints=keypoints, margin=self.margin)
        self.sums.add("val/weighted_loss", weighted * b, b)
        self.sums.add("val/psnr", psnr_per_sample(generated, target).sum(), b)
        self.sums.add("val/ssim", ssim_per_sample(generated, target).sum(), b)
        masks = region_masks(keypoints, b, self.image_size, self.margin, device=generated.device)
        target_energy = target.pow(2)
        for region in self.REGIONS:
            mask = masks[region]
            region_error = (squared * mask).sum()
            self.sums.add(f"val/mse_{region}", region_error, mask.sum())
            energy = (target_energy * mask).sum() + NMSE_FLOOR * mask.sum()
            self.sums.add(f"val/nmse_{region}", region_error, energy)

    def compute(self) -> dict[str, float]:
        return self.sums.compute()


# --- face task -------------------------------------------------------------------------------------

def nme(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Normalised mean error, 300-W convention: per sample, the mean Euclidean (x, y) error over the
    target's present points divided by the distance between the outer eye corners (points 36 and 45).

    Returns ``(nme (B,), {region: (B,)}, valid (B,))``. A sample is valid when both eye corners are
    present and apart by more than ``eps``; a region value is NaN where the region has no present point.
    Invalid samples hold NaN everywhere.
    """
    present = target[..., 2] > 0
    errors = (pred[..., :2].float() - target[..., :2].float()).norm(dim=-1)  # (B, 68)
    a, b = layout.FACE_OUTER_EYE_CORNERS
    interocular = (target[:, a, :2].float() - target[:, b, :2].float()).norm(dim=-1)
    valid = present[:, a] & present[:, b] & (interocular > eps)
    nan = torch.full_like(interocular, float("nan"))

    def mean_over(points: slice) -> torch.Tensor:
        p = present[:, points]
        n = p.sum(dim=1)
        mean_error = (errors[:, points] * p).sum(dim=1) / n.clamp(min=1)
        return torch.where(valid & (n > 0), mean_error / interocular.clamp(min=eps), nan)

    per_region = {name: mean_over(slice(r.start, r.stop)) for name, r in layout.FACE_REGIONS.items()}
    return mean_over(slice(0, layout.N_FACE)), per_region, valid


class FaceMetrics:
    """MSE over present points (the training loss), NME and per-region NME (means over valid samples)."""

    def __init__(self):
        self.sums = MetricSums(["val/mse", "val/nme"] + [f"val/nme_{r}" for r in layout.FACE_REGION_NAMES])

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        present = target[..., 2] > 0
        n_present = present.sum()
        self.sums.add("val/mse", masked_mse(pred, target) * n_present, n_present)
        overall, per_region, _ = nme(pred, target)
        for name, values in [("val/nme", overall)] + [(f"val/nme_{r}", v) for r, v in per_region.items()]:
            ok = ~torch.isnan(values)
            self.sums.add(name, values[ok].sum(), ok.sum())

    def compute(self) -> dict[str, float]:
        return self.sums.compute()
