"""Data reports (schema 1, docs/storage.md) filled from numpy frames, for the tests of what reads them
(drift, MLflow logging, the retraining policy). Test-side only: the preprocessing stage writes the
real ones."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from signpose import layout
from signpose.datasets.report import report_key
from signpose.store import open_store

REGION_SLICES = {"face": layout.FACE, "left_hand": layout.LEFT_HAND, "right_hand": layout.RIGHT_HAND,
                 "body": layout.POSE}


def region_stats(frames: np.ndarray) -> dict[str, dict]:
    """The report's per-region fields of (n, 143, 3) frames (confidence 0 = missing point)."""
    stats = {}
    for region, part in REGION_SLICES.items():
        points = frames[:, part]
        present = points[..., 2] > 0
        xy = np.clip(points[..., :2][present], 0.0, 1.0)
        stats[region] = {
            "points": int(present.size),
            "missing_share": float(1.0 - present.mean()) if present.size else 0.0,
            "frames_without": float((~present.any(axis=1)).mean()) if len(frames) else 0.0,
            "conf_hist": np.histogram(points[..., 2][present], bins=20, range=(0, 1))[0].tolist(),
            "x_hist": np.histogram(xy[:, 0], bins=50, range=(0, 1))[0].tolist(),
            "y_hist": np.histogram(xy[:, 1], bins=50, range=(0, 1))[0].tolist(),
        }
    return stats


def _merge(rows: list[dict]) -> dict[str, dict]:
    merged = {}
    for region in REGION_SLICES:
        parts = [row["regions"][region] for row in rows]
        points = sum(p["points"] for p in parts)
        frames = [p["points"] / (REGION_SLICES[region].stop - REGION_SLICES[region].start) for p in parts]
        merged[region] = {
            "points": points,
            "missing_share": sum(p["missing_share"] * p["points"] for p in parts) / points if points else 0.0,
            "frames_without": sum(p["frames_without"] * f for p, f in zip(parts, frames)) / sum(frames) if points else 0.0,
            **{key: np.sum([p[key] for p in parts], axis=0).tolist() for key in ("conf_hist", "x_hist", "y_hist")},
        }
    return merged


def make_report(sources: dict[str, np.ndarray], parent: str | None = None) -> dict:
    """A version's report from ``{source key: frames}`` (all frames in the train split; one video each)."""
    rows = []
    for key in sorted(sources):
        frames = sources[key]
        rows.append({"key": key, "content_hash": hashlib.sha256(frames.tobytes()).hexdigest()[:16], "videos": 1,
                     "frames_read": len(frames), "frames_rejected": {}, "regions": region_stats(frames)})
    dataset_hash = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    n_frames = sum(len(frames) for frames in sources.values())
    return {"schema": 1, "dataset_hash": dataset_hash, "parent": parent,
            "splits": {"train": {"frames": n_frames, "videos": len(rows)}, "dev": {"frames": 0, "videos": 0},
                       "test": {"frames": 0, "videos": 0}},
            "regions": _merge(rows), "sources": rows, "skipped": {}, "added": sorted(sources), "changed": [],
            "removed": []}


def write_report(store_uri: str, report: dict, dataset_hash: str | None = None) -> str:
    """Store ``report`` as the report of ``dataset_hash`` (default: its own) in the store; returns the hash."""
    dataset_hash = dataset_hash or report["dataset_hash"]
    open_store(store_uri).put_bytes(report_key(dataset_hash), json.dumps(dict(report, dataset_hash=dataset_hash)).encode())
    return dataset_hash


def signing_sources(count: int, first: int = 0, frames_per_source: int = 20, left_hand_missing: float = 0.0,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` recorded videos (sources ``first``.. of one signer corpus: tracking_fixtures' signer, the
    same distribution in every source), the left hand missing in a share of each one's frames."""
    from tracking_fixtures import make_frames

    frames = make_frames((first + count) * frames_per_source, seed)[first * frames_per_source:]
    rng = np.random.default_rng(seed + 1000 + first)
    missing = rng.random(len(frames)) < left_hand_missing
    frames[missing, layout.LEFT_HAND] = 0.0
    return {f"videos/v{first + i:04d}.pose": frames[i * frames_per_source:(i + 1) * frames_per_source]
            for i in range(count)}
