"""``--data_path`` -> (train, validation) datasets for a task.

``--data_path`` is either

* a **preprocessed data set**: a manifest (``.../manifest.json``) or the store location holding it
  (local folder, ``file://`` or ``s3://``), written by the preprocess stage; or
* a **raw keypoint file** in any format :func:`signpose.io.read_keypoints` reads (the seed's two pickle
  formats among them): frames are validated, and skeleton images are rendered on access with the
  project's renderer at ``--image_size``.

Validation data: the ``dev`` split when the data has one, else a held-out ``val_fraction`` of the
training videos (whole videos, so near-identical neighbouring frames do not leak into validation):
random videos of a raw file (``--seed``), the tail of a manifest's train split moved to a change of
video (:func:`held_out_tail`). A manifest is streamed (``cfg.stream``, the default:
:class:`signpose.data.ShardStream`) or, with ``--no_stream``, loaded into memory split by split
(:func:`signpose.data.load_split`); both select the same frames. The training dataset (only) is
wrapped by :func:`signpose.augment.for_training` when the task config asks for augmentation.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from signpose import augment
from signpose.errors import UserError
from signpose.tasks import get_task
from signpose.train.config import TrainConfig

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


@dataclass
class TaskData:
    train: Dataset
    val: Dataset | None
    source: str                 # "manifest" | "raw"
    dataset_hash: str = ""      # the manifest's hash, or a raw file's content hash (raw_dataset_hash)
    info: dict = field(default_factory=dict)


def is_manifest_location(data_path: str) -> bool:
    """True for a manifest file or a store location that holds one; False for a raw keypoint file."""
    if data_path.rstrip("/").endswith("/" + MANIFEST_NAME) or data_path == MANIFEST_NAME:
        return True
    if "://" in data_path and not data_path.startswith("file://"):
        return True  # remote stores only hold preprocessed data sets
    local = data_path[len("file://"):] if data_path.startswith("file://") else data_path
    return os.path.isdir(local) and os.path.exists(os.path.join(local, MANIFEST_NAME))


def held_out_videos(video_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the frames whose video is held out; at least one video when there are two or
    more, whole frames split by index when everything is one video."""
    videos = np.unique(video_id)
    rng = np.random.default_rng(seed)
    if len(videos) >= 2:
        n_val = min(len(videos) - 1, max(1, round(fraction * len(videos))))
        chosen = rng.choice(videos, size=n_val, replace=False)
        return np.isin(video_id, chosen)
    mask = np.zeros(len(video_id), dtype=bool)
    n_val = min(len(video_id) - 1, max(1, round(fraction * len(video_id))))
    mask[rng.choice(len(video_id), size=n_val, replace=False)] = True
    return mask


def load_task_data(task: str, cfg: TrainConfig) -> TaskData:
    if not cfg.data_path:
        raise UserError("--data_path is required: a raw keypoint file or a preprocessed manifest")
    if is_manifest_location(cfg.data_path):
        return _from_manifest(task, cfg)
    if not os.path.exists(cfg.data_path):
        raise FileNotFoundError(errno.ENOENT, "no such keypoint file or data set folder", cfg.data_path)
    _refuse_uncommitted_store(cfg.data_path)
    return _from_raw(task, cfg)


def _refuse_uncommitted_store(data_path: str) -> None:
    """A folder holding a data set's shards or plans but no manifest: its preprocess never committed."""
    from signpose.shards.format import PLAN_DIR, SHARD_DIR

    local = data_path[len("file://"):] if data_path.startswith("file://") else data_path
    if os.path.isdir(local) and any(os.path.isdir(os.path.join(local, d)) for d in (SHARD_DIR, PLAN_DIR)):
        raise UserError(f"{data_path}: no {MANIFEST_NAME}: a data set was started here but never committed (its "
                        "preprocess run did not finish, or is still running); run `signpose preprocess` again to "
                        "complete it, then train on this folder")


def held_out_tail(manifest, split: str, fraction: float) -> int | None:
    """Where validation starts in ``split`` of a data set without a ``dev`` split: the position (within
    the split, in input order) leaving about ``fraction`` of its frames after it, moved to the nearest
    change of video inside the shard it falls in (one shard's columns are read, not its images), so
    whole videos are held out unless one video fills that shard. None when nothing is held out."""
    from signpose.shards import read_shard
    from signpose.store import open_store

    n = manifest.splits.get(split, 0)
    if fraction <= 0 or n < 2:
        return None
    cut = n - min(n - 1, max(1, round(fraction * n)))
    for shard, first in manifest.positions(split):
        if first <= cut < first + shard.frames_of(split):
            arrays = read_shard(open_store(manifest.uri), shard, images=False)
            videos = arrays["video_id"][arrays["split"] == split]
            changes = first + np.flatnonzero(videos[1:] != videos[:-1]) + 1
            if len(changes):
                cut = int(changes[np.argmin(np.abs(changes - cut))])
            break
    return cut


def _manifest_parts(manifest, cfg: TrainConfig) -> tuple[tuple, tuple | None, str]:
    """(split, frames) of the training and the validation data, and how validation was chosen."""
    n_train = manifest.splits.get("train", 0)
    if manifest.splits.get("dev", 0) > 0:
        return ("train", None), ("dev", None), "the dev split"
    cut = held_out_tail(manifest, "train", cfg.val_fraction)
    if cut is None:
        return ("train", None), None, "none (no dev split, val_fraction 0 or a single frame)"
    return (("train", (0, cut)), ("train", (cut, n_train)),
            f"the last {n_train - cut} of {n_train} train frames (no dev split; val_fraction {cfg.val_fraction})")


def _from_manifest(task: str, cfg: TrainConfig) -> TaskData:
    from signpose.data import ShardStream, load_split
    from signpose.shards import read_manifest

    samples = get_task(task).samples
    manifest = read_manifest(cfg.data_path)
    if samples.reads_images and manifest.image_size != cfg.image_size:
        raise ValueError(f"{manifest.uri}: images were rendered at {manifest.image_size}px but "
                         f"--image_size {cfg.image_size}; pass --image_size {manifest.image_size} or preprocess again")
    if not manifest.splits.get("train", 0):
        raise ValueError(f"{manifest.uri}: no 'train' split (splits: {manifest.splits})")
    train_part, val_part, validation = _manifest_parts(manifest, cfg)
    if cfg.stream:
        train = ShardStream(manifest, train_part[0], task=samples, shuffle=True, seed=cfg.seed, frames=train_part[1])
        val = None if val_part is None else \
            ShardStream(manifest, val_part[0], task=samples, shuffle=False, frames=val_part[1])
        counts = [ds.n_samples if ds is not None else 0 for ds in (train, val)]
        for name, ds, count in (("training", train, counts[0]), ("validation", val, counts[1])):
            if ds is not None and count == 0:
                raise ValueError(f"{manifest.uri}: no {name} frame is usable for the {task} task, which needs "
                                 f"{samples.needs}")
    else:
        train = load_split(manifest, train_part[0], samples, frames=train_part[1])
        val = None if val_part is None else load_split(manifest, val_part[0], samples, frames=val_part[1])
        counts = [len(train), len(val) if val is not None else 0]
    train = augment.for_training(train, task, cfg, manifest.render_settings() if samples.reads_images else None)
    log.info("data: %s manifest %s (hash %s): %d train / %d validation samples; validation: %s",
             "streaming" if cfg.stream else "in-memory", manifest.uri, manifest.dataset_hash[:12], *counts,
             validation)
    return TaskData(train, val, "manifest", manifest.dataset_hash,
                    {"manifest_uri": manifest.uri, "splits": dict(manifest.splits), "image_size": manifest.image_size,
                     "stream": bool(cfg.stream), "train_samples": counts[0], "val_samples": counts[1],
                     "validation": validation, "augment": augment.enabled(task, cfg)})


def raw_dataset_hash(frames, samples, image_size: int, holdout: dict | None = None) -> str:
    """The dataset hash of a raw keypoint file: :func:`signpose.shards.compute_dataset_hash` of its
    validated frames (keypoints, split, video ids, frame indices) with the render settings the task
    sees (skeleton images at ``image_size``; the defaults for a task without images): the hash its
    preprocessed data set gets with the default shard size, which holds the same training and dev
    frames. ``holdout``: how validation frames were chosen when the file has no dev split (the
    fraction and seed of the held-out videos), mixed in because it changes the validation data."""
    from signpose.render import RenderSettings
    from signpose.shards import compute_dataset_hash

    settings = RenderSettings(image_size=image_size) if samples.reads_images and image_size else RenderSettings()
    digest = compute_dataset_hash(frames, settings)
    if holdout is None:
        return digest
    return hashlib.sha256(f"{digest}:{json.dumps(holdout, sort_keys=True)}".encode()).hexdigest()


def _from_raw(task: str, cfg: TrainConfig) -> TaskData:
    from signpose.io import read_keypoints

    samples = get_task(task).samples
    frames = read_keypoints(cfg.data_path, max_frames=getattr(cfg, "max_frames", None),
                            max_rejected=getattr(cfg, "max_rejected", None))
    split = np.asarray(frames.split).astype(str)
    keypoints = np.asarray(frames.keypoints, dtype=np.float32)
    video_id = np.asarray(frames.video_id).astype(str)
    usable = samples.usable_frames(keypoints)
    if not usable.any():
        raise ValueError(f"{cfg.data_path}: no frame is usable for the {task} task, which needs {samples.needs}")
    train_mask = usable & (split == "train")
    val_mask = usable & (split == "dev")
    if not train_mask.any():
        raise ValueError(f"{cfg.data_path}: no usable frame in split 'train' (splits: "
                         f"{dict(zip(*np.unique(split, return_counts=True)))})")
    holdout = None
    if not val_mask.any() and cfg.val_fraction > 0 and train_mask.sum() > 1:
        held = np.zeros(len(keypoints), dtype=bool)
        held[train_mask] = held_out_videos(video_id[train_mask], cfg.val_fraction, cfg.seed)
        val_mask, train_mask = held, train_mask & ~held
        holdout = {"held_out_videos": cfg.val_fraction, "seed": cfg.seed}
    image_size = getattr(cfg, "image_size", 0)
    train = augment.for_training(samples.from_frames(keypoints[train_mask], image_size), task, cfg)
    val = samples.from_frames(keypoints[val_mask], image_size) if val_mask.any() else None
    dataset_hash = raw_dataset_hash(frames, samples, image_size, holdout)
    log.info("data: raw file %s (hash %s): %d train / %d validation samples", cfg.data_path, dataset_hash[:12],
             len(train), len(val) if val is not None else 0)
    return TaskData(train, val, "raw", dataset_hash, {"raw_path": cfg.data_path, "n_frames": int(len(keypoints)),
                                                        "augment": augment.enabled(task, cfg)})
