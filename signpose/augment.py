"""Training-time augmentation: random transforms of the training samples, never of validation.

- **face** (the auto-encoder's normalised (68, 3) faces): a random similarity transform (rotation,
  scale, translation about the centre of the unit square) and a random new face shape (each facial
  region scaled and shifted on its own, every point displaced a little) applied to input and target
  alike -- shapes the model must reproduce, not snap to its training faces' average -- then,
  on the input only, small per-point jitter and point dropout: a dropped point becomes missing
  (all zeros, confidence 0: the model masks it out of attention) while the target keeps it, so the
  loss (:func:`signpose.losses.masked_mse` over the target's present points) asks the model to
  reconstruct it.
- **skeleton** ((143, 3) keypoints -> skeleton image): a share of the samples get a random affine
  jitter (rotation, scale, shear, translation about the frame centre) of their keypoints, and their
  target image is rendered again from the jittered keypoints (:func:`signpose.render.render_frame`
  with the data set's render settings), so image and keypoints stay consistent. Points pushed out
  of the frame become missing, as the readers treat them.

The settings are typed fields of the task configs (:class:`FaceAugmentConfig`,
:class:`SkeletonAugmentConfig`: ``--augment``, ``--aug_rotation``, ...). :func:`for_training` wraps
the training dataset only. Randomness is a function of ``(seed, epoch, sample index)`` for map-style
datasets and of ``(seed, epoch, consumer)`` for streams (consumer = DDP rank x DataLoader worker,
as :class:`signpose.data.ShardStream` deals its shards), so a resumed run replays the same
augmented batches whatever the number of workers (streams: for the same number of workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from signpose import layout
from signpose.render import RenderSettings, render_frame

_STREAM = 0xA06  # mixed into every augmentation seed: independent of the data order's streams


@dataclass
class FaceAugmentConfig:
    """Augmentation of the face auto-encoder's training samples (validation is never augmented)."""

    augment: bool = True             # augment training faces (similarity transform, jitter, point dropout)
    aug_rotation: float = 10.0       # max |rotation| of the random similarity transform, degrees
    aug_scale: float = 0.1           # max relative scale change (uniform in 1 +- this)
    aug_shift: float = 0.03          # max translation per axis, in normalised face units (face = 1)
    aug_jitter: float = 0.003        # SD of the per-point jitter added to the input only, normalised units
    aug_dropout: float = 0.1         # share of input points dropped (confidence 0); the target keeps them
    aug_region_scale: float = 0.15   # max relative scale of each facial region about its centre (input and
                                     # target alike: a new face shape the model must reproduce); 0 = off
    aug_region_shift: float = 0.02   # max shift per axis of each facial region (input and target alike)
    aug_shape: float = 0.01          # SD of a per-point displacement of input and target alike (detector-
                                     # and annotator-specific point placement the model must reproduce)


@dataclass
class SkeletonAugmentConfig:
    """Augmentation of the skeleton task's training samples (validation is never augmented)."""

    augment_prob: float = 0.0        # share of training samples whose keypoints get a random affine
                                     # jitter and whose target image is rendered from them; 0 = off
    aug_rotation: float = 8.0        # max |rotation| of the affine jitter, degrees (about the frame centre)
    aug_scale: float = 0.1           # max relative scale change (uniform in 1 +- this)
    aug_shear: float = 0.05          # max |shear| (x by y)
    aug_shift: float = 0.05          # max translation per axis, frame units


def random_affine(rng: np.random.Generator, rotation: float, scale: float, shift: float,
                  shear: float = 0.0) -> np.ndarray:
    """A (2, 3) affine matrix [A | t] acting on (x, y) about the point (0.5, 0.5)."""
    theta = np.deg2rad(rng.uniform(-rotation, rotation))
    s = rng.uniform(1.0 - scale, 1.0 + scale)
    k = rng.uniform(-shear, shear)
    c, si = np.cos(theta), np.sin(theta)
    a = s * np.array([[c, -si], [si, c]]) @ np.array([[1.0, k], [0.0, 1.0]])
    t = rng.uniform(-shift, shift, 2)
    centre = np.array([0.5, 0.5])
    return np.concatenate([a, (centre - a @ centre + t)[:, None]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., N, 3) points: (x, y) of the present ones (confidence > 0) moved by ``matrix``; missing
    points stay all zero."""
    out = np.array(points, dtype=np.float32, copy=True)
    present = out[..., 2] > 0
    moved = out[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    out[..., :2] = np.where(present[..., None], moved, 0.0)
    return out


def augment_face(face: np.ndarray, rng: np.random.Generator, cfg: FaceAugmentConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One normalised (68, 3) face -> (input, target): the target is the transformed clean face, the
    input also jittered and with some points dropped (never all of them)."""
    target = apply_affine(face, random_affine(rng, cfg.aug_rotation, cfg.aug_scale, cfg.aug_shift))
    if cfg.aug_region_scale > 0 or cfg.aug_region_shift > 0 or cfg.aug_shape > 0:
        target = reshape_face(target, rng, cfg)
    source = target.copy()
    present = source[:, 2] > 0
    source[:, :2] += np.where(present[:, None], rng.normal(0.0, cfg.aug_jitter, (len(source), 2)), 0.0)
    drop = present & (rng.random(len(source)) < cfg.aug_dropout)
    if drop.sum() < present.sum():
        source[drop] = 0.0
    return source, target


def reshape_face(face: np.ndarray, rng: np.random.Generator, cfg: FaceAugmentConfig) -> np.ndarray:
    """A new face shape from a normalised (68, 3) face: every region of
    :data:`signpose.layout.FACE_REGIONS` scaled about its own centre and shifted, then every point
    displaced; missing points stay missing. Applied to input and target alike, so the model learns to
    carry a face's own geometry through instead of snapping it to the training faces' average shape."""
    out = np.array(face, dtype=np.float32, copy=True)
    present = out[:, 2] > 0
    xy = out[:, :2]
    for region in layout.FACE_REGIONS.values():
        idx = np.asarray(region)
        scale = rng.uniform(1.0 - cfg.aug_region_scale, 1.0 + cfg.aug_region_scale, 2)
        shift = rng.uniform(-cfg.aug_region_shift, cfg.aug_region_shift, 2)
        here = present[idx]
        if here.any():
            centre = xy[idx][here].mean(axis=0)
            xy[idx] = (xy[idx] - centre) * scale + centre + shift
    xy += rng.normal(0.0, cfg.aug_shape, xy.shape) if cfg.aug_shape > 0 else 0.0
    out[~present] = 0.0
    return out


def augment_skeleton(keypoints: np.ndarray, rng: np.random.Generator, cfg: SkeletonAugmentConfig
                     ) -> np.ndarray:
    """One (143, 3) frame with the affine jitter applied; points pushed out of the frame become missing."""
    moved = apply_affine(keypoints, random_affine(rng, cfg.aug_rotation, cfg.aug_scale, cfg.aug_shift,
                                                  cfg.aug_shear))
    outside = ((moved[:, :2] < 0) | (moved[:, :2] > 1)).any(-1)
    moved[outside] = 0.0
    return moved


class SampleAugmenter:
    """Turns one training sample (a task's tensor pair) into an augmented one, given a generator."""

    def __init__(self, task: str, cfg, settings: RenderSettings | None = None):
        self.task, self.cfg = task, cfg
        self.settings = settings

    def __call__(self, sample, rng: np.random.Generator):
        if self.task == "face":
            src, tgt = augment_face(np.asarray(sample[0], dtype=np.float32), rng, self.cfg)
            return torch.from_numpy(src), torch.from_numpy(tgt)
        if rng.random() >= self.cfg.augment_prob:
            return sample
        keypoints = augment_skeleton(np.asarray(sample[0], dtype=np.float32), rng, self.cfg)
        image = render_frame(keypoints, self.settings)
        return torch.from_numpy(keypoints), torch.from_numpy(image.astype(np.float32) / 255.0).unsqueeze(0)


class AugmentedDataset(Dataset):
    """A map-style training dataset with augmented samples; ``set_epoch`` changes the draws."""

    def __init__(self, inner: Dataset, augmenter: SampleAugmenter, seed: int):
        self.inner, self.augmenter, self.seed = inner, augmenter, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(index), _STREAM])
        return self.augmenter(self.inner[index], rng)


class AugmentedStream(IterableDataset):
    """A training stream (e.g. :class:`signpose.data.ShardStream`) with augmented samples. Its epoch
    length, rank and world size are the inner stream's."""

    def __init__(self, inner: IterableDataset, augmenter: SampleAugmenter, seed: int):
        self.inner, self.augmenter, self.seed = inner, augmenter, int(seed)

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def rank(self) -> int:
        return self.inner.rank

    @rank.setter
    def rank(self, value: int) -> None:
        self.inner.rank = value

    @property
    def world_size(self) -> int:
        return self.inner.world_size

    @world_size.setter
    def world_size(self, value: int) -> None:
        self.inner.world_size = value

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def _consumer(self) -> int:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info is not None else (1, 0)
        return int(getattr(self.inner, "rank", 0)) * workers + worker_id

    def __iter__(self) -> Iterator:
        rng = np.random.default_rng([self.seed, int(getattr(self.inner, "epoch", 0)), self._consumer(), _STREAM])
        for sample in self.inner:
            yield self.augmenter(sample, rng)


def enabled(task: str, cfg) -> bool:
    """Whether ``cfg`` asks for augmentation of ``task``'s training samples."""
    if task == "face":
        return bool(getattr(cfg, "augment", False))
    if task == "skeleton":
        return float(getattr(cfg, "augment_prob", 0.0)) > 0
    return False


def for_training(train: Dataset, task: str, cfg, settings: RenderSettings | None = None) -> Dataset:
    """The training dataset with ``cfg``'s augmentation (itself when it asks for none). ``settings``:
    how the skeleton images of ``train`` were rendered (the manifest's; default: ``cfg.image_size``)."""
    if not enabled(task, cfg):
        return train
    if task == "skeleton" and settings is None:
        settings = RenderSettings(image_size=int(cfg.image_size))
    augmenter = SampleAugmenter(task, cfg, settings)
    if isinstance(train, IterableDataset):
        return AugmentedStream(train, augmenter, cfg.seed)
    return AugmentedDataset(train, augmenter, cfg.seed)


__all__ = ["AugmentedDataset", "AugmentedStream", "FaceAugmentConfig", "SampleAugmenter", "SkeletonAugmentConfig",
           "apply_affine", "augment_face", "augment_skeleton", "enabled", "for_training", "random_affine"]
