"""The training data as an MLflow dataset input (the UI's Datasets column and the compare view).

A preprocessed data set is logged by reference, not by value: its manifest URI is the source, its
dataset hash the digest, the tensors a sample holds the schema, and its splits, frame and shard
counts and image size the profile. A raw keypoint file is logged the same way with its own content
hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import Schema, TensorSpec

DATASET_CONTEXT = "training"
MAX_DIGEST_CHARS = 36  # MLflow refuses longer dataset digests


class TrainingDataset(MetaDataset):
    """A MetaDataset that also carries a profile (splits, sizes)."""

    def __init__(self, *args, profile: Mapping[str, Any] | None = None, **kwargs):
        self._profile = dict(profile or {})
        super().__init__(*args, **kwargs)

    @property
    def profile(self) -> Any | None:
        return self._profile or None

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        if self._profile:
            config["profile"] = json.dumps(self._profile, sort_keys=True)
        return config


def _source(uri: str):
    try:
        return resolve_dataset_source(uri)
    except Exception:  # an unknown scheme: fall back to MLflow's generic URI source
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        return HTTPDatasetSource(uri)


def dataset_schema(input_shape: tuple[int, ...], image_size: int | None) -> Schema:
    specs = [TensorSpec(np.dtype(np.float32), (-1, *input_shape), "keypoints")]
    if image_size:
        specs.append(TensorSpec(np.dtype(np.uint8), (-1, image_size, image_size), "image"))
    return Schema(specs)


def training_dataset(name: str, uri: str, dataset_hash: str, input_shape: tuple[int, ...],
                     info: Mapping[str, Any]) -> TrainingDataset:
    image_size = info.get("image_size")
    profile = {key: info[key] for key in ("splits", "n_frames", "shards", "image_size", "stream") if key in info}
    local = uri if "://" in uri else f"file://{uri}" if uri.startswith("/") else uri
    return TrainingDataset(_source(local), name=name, digest=dataset_hash[:MAX_DIGEST_CHARS] or None,
                           schema=dataset_schema(input_shape, image_size), profile=profile)


def log_training_data(task: str, uri: str, dataset_hash: str, input_shape: tuple[int, ...],
                      info: Mapping[str, Any]) -> None:
    """Log the training data of the active run as its dataset input."""
    dataset = training_dataset(f"signpose-{task}-{dataset_hash[:12] or 'data'}", uri, dataset_hash, input_shape, info)
    mlflow.log_input(dataset, context=DATASET_CONTEXT)
