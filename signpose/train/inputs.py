"""``--data_path`` -> (train, validation) datasets for a task.

``--data_path`` is either

* a **preprocessed data set**: a manifest (``.../manifest.json``) or the store location holding it
  (local folder, ``file://`` or ``s3://``), written by the preprocess stage; or
* a **raw keypoint file** in any format :func:`signpose.io.read_keypoints` reads (the seed's two pickle
  formats among them): frames are validated, and skeleton images are rendered on access with the
  project's renderer at ``--image_size``.

Validation data: the ``dev`` split when the data has one, else a held-out ``val_fraction`` of the
training videos (whole videos, so near-identical neighbouring frames do not leak into validation).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset, Subset

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
    dataset_hash: str = ""      # the manifest's hash ('' for raw files)
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
        raise FileNotFoundError(f"{cfg.data_path}: no such keypoint file or data set folder")
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


def _from_manifest(task: str, cfg: TrainConfig) -> TaskData:
    from signpose.data import load_split
    from signpose.shards import read_manifest

    samples = get_task(task).samples
    manifest = read_manifest(cfg.data_path)
    if samples.reads_images and manifest.image_size != cfg.image_size:
        raise ValueError(f"{manifest.uri}: images were rendered at {manifest.image_size}px but "
                         f"--image_size {cfg.image_size}; pass --image_size {manifest.image_size} or preprocess again")
    if cfg.stream:
        from signpose.data import ShardStream

        train = ShardStream(manifest, "train", task=samples, shuffle=True, seed=cfg.seed)
        val = ShardStream(manifest, "dev", task=samples, shuffle=False) if manifest.splits.get("dev", 0) else None
        log.info("data: streaming manifest %s (hash %s): %d train / %d dev frames", manifest.uri,
                 manifest.dataset_hash[:12], manifest.splits.get("train", 0), manifest.splits.get("dev", 0))
        return TaskData(train, val, "manifest", manifest.dataset_hash,
                        {"manifest_uri": manifest.uri, "splits": dict(manifest.splits),
                         "image_size": manifest.image_size, "stream": True})
    train = load_split(manifest, "train", samples)
    if manifest.splits.get("dev", 0) > 0:
        val = load_split(manifest, "dev", samples)
    else:
        # Shards do not carry video ids into the map-style dataset: hold out a contiguous tail of
        # the (video-ordered) training frames, which keeps whole videos together except one.
        n_val = max(1, round(cfg.val_fraction * len(train))) if len(train) > 1 else 0
        val = Subset(train, range(len(train) - n_val, len(train))) if n_val else None
        train = Subset(train, range(len(train) - n_val))
    log.info("data: manifest %s (hash %s): %d train / %d validation samples", manifest.uri,
             manifest.dataset_hash[:12], len(train), len(val) if val is not None else 0)
    return TaskData(train, val, "manifest", manifest.dataset_hash,
                    {"manifest_uri": manifest.uri, "splits": dict(manifest.splits), "image_size": manifest.image_size})


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
    if not val_mask.any() and cfg.val_fraction > 0 and train_mask.sum() > 1:
        held = np.zeros(len(keypoints), dtype=bool)
        held[train_mask] = held_out_videos(video_id[train_mask], cfg.val_fraction, cfg.seed)
        val_mask, train_mask = held, train_mask & ~held
    image_size = getattr(cfg, "image_size", 0)
    train = samples.from_frames(keypoints[train_mask], image_size)
    val = samples.from_frames(keypoints[val_mask], image_size) if val_mask.any() else None
    log.info("data: raw file %s: %d train / %d validation samples", cfg.data_path, len(train),
             len(val) if val is not None else 0)
    return TaskData(train, val, "raw", "", {"raw_path": cfg.data_path, "n_frames": int(len(keypoints))})
