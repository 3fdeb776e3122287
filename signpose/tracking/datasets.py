"""The training data as an MLflow dataset input (the UI's Datasets column and the compare view).

A preprocessed data set is logged by reference, not by value: its manifest URI is the source, its
dataset hash the digest, the tensors a sample holds the schema, and its splits, frame and shard
counts and image size the profile. A raw keypoint file is logged the same way with its own content
hash. A version's data report (``signpose.datasets.report``), when it has one, goes with it: a
summary in the profile, the whole report and its figure as run artifacts (``data/``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import Schema, TensorSpec

log = logging.getLogger(__name__)

DATASET_CONTEXT = "training"
REPORT_ARTIFACT = "data/report.json"
REPORT_FIGURE = "data/report.png"
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
    profile = {key: info[key] for key in ("splits", "n_frames", "shards", "image_size", "stream", "report")
               if key in info}
    local = uri if "://" in uri else f"file://{uri}" if uri.startswith("/") else uri
    return TrainingDataset(_source(local), name=name, digest=dataset_hash[:MAX_DIGEST_CHARS] or None,
                           schema=dataset_schema(input_shape, image_size), profile=profile)


def report_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a data report that fits a data set's profile: counts and per-region shares."""
    return {
        "sources": len(report.get("sources", [])),
        **{f"sources_{change}": len(report.get(change, [])) for change in ("added", "changed", "removed")},
        "parent": report.get("parent"),
        "regions": {region: {key: round(float(stats.get(key, 0.0)), 6) for key in ("missing_share", "frames_without")}
                    for region, stats in report.get("regions", {}).items()},
    }


def log_training_data(task: str, uri: str, dataset_hash: str, input_shape: tuple[int, ...],
                      info: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> None:
    """Log the training data of the active run as its dataset input, with its data report (if any)."""
    info = dict(info, report=report_summary(report)) if report is not None else info
    dataset = training_dataset(f"signpose-{task}-{dataset_hash[:12] or 'data'}", uri, dataset_hash, input_shape, info)
    mlflow.log_input(dataset, context=DATASET_CONTEXT, tags={"report": REPORT_ARTIFACT} if report is not None else None)
    if report is None:
        log.info("data set %s has no data report (written before data reports, or a raw file): no report, figure "
                 "or drift logged", dataset_hash[:12])
        return
    mlflow.log_dict(dict(report), REPORT_ARTIFACT)
    from signpose.datasets.figure import report_figure

    figure = report_figure(report, title=f"{task}: data set {dataset_hash[:12]}")
    try:
        mlflow.log_figure(figure, REPORT_FIGURE)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
