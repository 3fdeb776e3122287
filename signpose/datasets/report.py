"""The data report of a data set version: ``reports/<dataset_hash>.json`` in the store, written before the
manifest commit and kept as long as the version is (schema in docs/storage.md, "The data report").

Per split its frames and videos; per region (face, left hand, right hand, body: the slices of
:mod:`signpose.layout`) the points counted, the share of missing points (confidence 0), the share of
frames without the region, and histograms of the present points' confidence (20 bins over [0, 1])
and normalised coordinates (50 bins over [0, 1], as the shards store them; values outside are
clipped into the end bins); per source the same regions plus the frames read and rejected with their
reasons; the objects the listing skipped; the sources added, changed and removed since the parent.
Histograms add up, so a version's regions are the sum of its sources' and two reports compare
without the frames.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from signpose import layout
from signpose.shards.format import REPORT_DIR
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)

REPORT_SCHEMA = 1
REGIONS: dict[str, slice] = {"face": layout.FACE, "left_hand": layout.LEFT_HAND,
                             "right_hand": layout.RIGHT_HAND, "body": layout.POSE}
CONF_BINS, COORD_BINS = 20, 50


def report_key(dataset_hash: str) -> str:
    return f"{REPORT_DIR}/{dataset_hash}.json"


def _hist(values: np.ndarray, bins: int) -> list[int]:
    clipped = np.clip(values.astype(np.float64), 0.0, 1.0)
    return np.histogram(clipped, bins=bins, range=(0.0, 1.0))[0].astype(int).tolist()


def region_stats(keypoints: np.ndarray) -> dict[str, dict]:
    """Per region of (n, 143, 3) normalised keypoints: the fields listed in the module docstring."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    stats = {}
    for name, part in REGIONS.items():
        region = keypoints[:, part]
        present = region[..., 2] > 0
        n_frames = len(region)
        stats[name] = {
            "points": int(present.size),
            "missing_share": float(1.0 - present.mean()) if present.size else 0.0,
            "frames_without": float((~present.any(axis=1)).mean()) if n_frames else 0.0,
            "conf_hist": _hist(region[..., 2][present], CONF_BINS),
            "x_hist": _hist(region[..., 0][present], COORD_BINS),
            "y_hist": _hist(region[..., 1][present], COORD_BINS),
        }
    return stats


def merge_regions(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """The region stats of the union of the frames behind ``parts`` (weighted by their points)."""
    merged = {}
    for name, part in REGIONS.items():
        per_frame = part.stop - part.start
        points = sum(p[name]["points"] for p in parts)
        frames = points // per_frame
        missing = sum(p[name]["missing_share"] * p[name]["points"] for p in parts)
        without = sum(p[name]["frames_without"] * (p[name]["points"] // per_frame) for p in parts)
        merged[name] = {
            "points": int(points),
            "missing_share": float(missing / points) if points else 0.0,
            "frames_without": float(without / frames) if frames else 0.0,
            **{h: np.sum([p[name][h] for p in parts], axis=0).astype(int).tolist() if parts
               else [0] * (CONF_BINS if h == "conf_hist" else COORD_BINS)
               for h in ("conf_hist", "x_hist", "y_hist")},
        }
    return merged


def source_row(key: str, content_hash: str, frames, videos: int) -> dict:
    """One source's row: its frames read and rejected (from the reader's report) and its regions."""
    read = getattr(frames, "report", None)
    files = list(getattr(read, "files", []) or [])
    rejected = {"outlier_coordinates": sum(f.rejected for f in files),
                "nothing_detected": sum(f.dropped_empty for f in files)}
    return {"key": key, "content_hash": content_hash, "videos": int(videos),
            "frames_read": int(sum(f.frames for f in files)) if files else len(frames),
            "frames_rejected": {k: int(v) for k, v in rejected.items() if v},
            "regions": region_stats(frames.keypoints)}


def build_report(dataset_hash: str, parent: str | None, splits: dict[str, dict[str, int]], sources: list[dict],
                 skipped: dict[str, int] | None = None, added=(), changed=(), removed=(), notes=()) -> dict:
    """The report of one version from its sources' rows (see the module docstring)."""
    rows = sorted(sources, key=lambda row: row["key"])
    return {"schema": REPORT_SCHEMA, "dataset_hash": dataset_hash, "parent": parent,
            "splits": {name: {"frames": int(v.get("frames", 0)), "videos": int(v.get("videos", 0))}
                       for name, v in splits.items()},
            "regions": merge_regions([row["regions"] for row in rows]), "sources": rows,
            "skipped": dict(skipped or {}), "added": sorted(added), "changed": sorted(changed),
            "removed": sorted(removed), "notes": list(notes)}


def write_report(store: ObjectStore, report: dict) -> str:
    key = report_key(report["dataset_hash"])
    store.put_bytes(key, (json.dumps(report, sort_keys=True) + "\n").encode())
    return key


def read_report(store_uri: str | ObjectStore, dataset_hash: str) -> dict | None:
    """The report of version ``dataset_hash`` in the store, or None (collected, or another store)."""
    store = open_store(store_uri)
    try:
        data = json.loads(store.get_bytes(report_key(dataset_hash)))
    except ObjectNotFoundError:
        return None
    except (ValueError, RecursionError) as e:
        log.warning("%s: unreadable data report (%s)", store.url(report_key(dataset_hash)), e)
        return None
    return data if isinstance(data, dict) else None


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: splits, missing share per region, changes, skipped objects."""
    splits = ", ".join(f"{n} {v['frames']} frames / {v['videos']} videos" for n, v in report["splits"].items())
    regions = ", ".join(f"{n} {r['missing_share']:.0%} missing ({r['frames_without']:.0%} of frames without)"
                        for n, r in report["regions"].items())
    lines = [f"data set {report['dataset_hash'][:12]}: {splits}", f"  regions: {regions}"]
    lines.append(f"  sources: {len(report['sources'])} ({len(report['added'])} added, {len(report['changed'])} "
                 f"changed, {len(report['removed'])} removed since {(report['parent'] or 'nothing')[:12]})")
    rejected = sum(sum(row["frames_rejected"].values()) for row in report["sources"])
    if rejected or report["skipped"]:
        lines.append(f"  rejected frames: {rejected}; skipped objects: {report['skipped'] or 'none'}")
    lines.extend(f"  note: {note}" for note in report.get("notes", []))
    return lines
