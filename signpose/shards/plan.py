"""Planning a data set: its hash and the cut of its frames into shard ranges (every writer of the same
input computes the same plan), and the fan-out of those shards over writer tasks.

Frames are grouped by split (train, dev, test, then any other split, input order kept within a split)
and no shard crosses a split boundary, so reading one split touches only that split's shards.

The dataset hash covers the input content, the render settings, ``RENDERER_VERSION``, the shard size,
the schema version and the shard format; shard keys derive from it, so a re-run with the same input
finds its own shards (resume) or its own manifest (no-op).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from signpose import layout
from signpose.render import RENDERER_VERSION, RenderSettings
from signpose.shards.commit import claim, damaged_shards
from signpose.shards.format import (
    _ID_FIELDS,
    DEFAULT_SHARD_SIZE,
    PLAN_DIR,
    SCHEMA_VERSION,
    SHARD_DIR,
    SHARD_FORMAT,
    SPLIT_ORDER,
)
from signpose.shards.manifest import _try_read_manifest
from signpose.store import ObjectNotFoundError, ObjectStore, StoreError, open_store


def plan_shards(n_frames: int, shard_size: int = DEFAULT_SHARD_SIZE) -> list[range]:
    """Contiguous frame ranges of at most ``shard_size`` covering ``range(n_frames)``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [range(start, min(start + shard_size, n_frames)) for start in range(0, n_frames, shard_size)]


@dataclass(frozen=True)
class DatasetPlan:
    """Everything writers and the merge step agree on, derived from the input and the settings."""

    dataset_hash: str
    n_frames: int
    shard_size: int
    render: dict[str, Any]
    image_size: int
    ranges: list[tuple[int, int]]  # [start, stop) in the split-grouped order, one per shard

    @property
    def n_shards(self) -> int:
        return len(self.ranges)

    def shard_key(self, index: int) -> str:
        return f"{SHARD_DIR}/{self.dataset_hash[:12]}-{index:05d}.npz"

    def sidecar_key(self, index: int) -> str:
        return self.shard_key(index)[: -len(".npz")] + ".json"

    @property
    def plan_key(self) -> str:
        return f"{PLAN_DIR}/{self.dataset_hash}.json"

    def to_json(self) -> str:
        data = asdict(self)
        data["ranges"] = [list(r) for r in self.ranges]
        data["schema_version"] = SCHEMA_VERSION
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> DatasetPlan:
        data = json.loads(text)
        return cls(dataset_hash=data["dataset_hash"], n_frames=int(data["n_frames"]),
                   shard_size=int(data["shard_size"]), render=dict(data["render"]),
                   image_size=int(data["image_size"]), ranges=[tuple(r) for r in data["ranges"]])


def _json_ready(data: dict) -> dict:
    # Tuples become lists, as after a JSON round trip, so written and read-back manifests compare equal.
    return json.loads(json.dumps(data))


def _frame_arrays(frames) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the KeypointFrames fields this module needs; errors name the source and field."""
    source = getattr(frames, "source", "") or "frames"
    keypoints = np.asarray(frames.keypoints)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (layout.N_POINTS, 3):
        raise ValueError(f"{source}: field 'keypoints': expected shape (N, {layout.N_POINTS}, 3), "
                         f"got {keypoints.shape}")
    n = len(keypoints)
    columns = []
    for name in _ID_FIELDS:
        arr = np.asarray(getattr(frames, name))
        if arr.shape != (n,):
            raise ValueError(f"{source}: field {name!r}: expected shape ({n},), got {arr.shape}")
        columns.append(arr)
    return (keypoints, *columns)


def _split_order(split: np.ndarray) -> np.ndarray:
    """Stable permutation grouping frames by split: train, dev, test, then others by name."""
    names = sorted(set(split.tolist()), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER
                                                       else len(SPLIT_ORDER), s))
    rank = {name: i for i, name in enumerate(names)}
    return np.argsort(np.fromiter((rank[s] for s in split.tolist()), dtype=np.int64, count=len(split)),
                      kind="stable")


def compute_dataset_hash(frames, settings: RenderSettings, shard_size: int = DEFAULT_SHARD_SIZE) -> str:
    """sha256 of the input content + render settings + renderer version + shard size + format."""
    keypoints, split, video_id, frame_index = _frame_arrays(frames)
    digest = hashlib.sha256()
    header = {"schema_version": SCHEMA_VERSION, "shard_format": SHARD_FORMAT,
              "renderer_version": RENDERER_VERSION, "render": settings.to_dict(),
              "shard_size": int(shard_size), "n_frames": len(keypoints)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    kp = np.ascontiguousarray(keypoints, dtype="<f4")
    digest.update(b"keypoints")
    # Hash in row blocks to avoid one huge temporary for large inputs.
    for start in range(0, len(kp), 65536):
        digest.update(memoryview(kp[start:start + 65536]).cast("B"))
    for name, column in (("split", split), ("video_id", video_id)):
        digest.update(name.encode())
        digest.update("\x00".join(str(v) for v in column.tolist()).encode())
    digest.update(b"frame_index")
    digest.update(np.ascontiguousarray(frame_index, dtype="<i8").tobytes())
    return digest.hexdigest()


def plan_dataset(frames, settings: RenderSettings, shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetPlan:
    """Hash the input and cut the split-grouped frame order into shard ranges."""
    _, split, _, _ = _frame_arrays(frames)
    if len(split) == 0:
        raise ValueError(f"{getattr(frames, 'source', '') or 'frames'}: no frames to write")
    order = _split_order(split)
    grouped = split[order]
    ranges: list[tuple[int, int]] = []
    # After grouping, each split is one contiguous run; cut every run into shards of its own.
    boundaries = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
    starts = [0, *boundaries.tolist()]
    stops = [*boundaries.tolist(), len(grouped)]
    for run_start, run_stop in zip(starts, stops):
        if run_stop > run_start:
            ranges.extend((run_start + r.start, run_start + r.stop)
                          for r in plan_shards(run_stop - run_start, shard_size))
    return DatasetPlan(dataset_hash=compute_dataset_hash(frames, settings, shard_size),
                       n_frames=len(split), shard_size=int(shard_size), render=_json_ready(settings.to_dict()),
                       image_size=settings.image_size, ranges=ranges)


def shard_index_ranges(n_shards: int, n_tasks: int) -> list[tuple[int, int]]:
    """Cut shard indices ``0..n_shards`` into at most ``n_tasks`` contiguous, near-equal
    ``[start, stop)`` ranges: the items of a ``dsl.ParallelFor`` over writer tasks."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    n_tasks = min(n_tasks, n_shards)
    bounds = [round(i * n_shards / n_tasks) for i in range(n_tasks + 1)] if n_tasks else [0]
    return [(bounds[i], bounds[i + 1]) for i in range(n_tasks)]


def prepare_fan_out(frames, store_uri: str | ObjectStore, settings: RenderSettings,
                    shard_size: int = DEFAULT_SHARD_SIZE, n_tasks: int = 4, replace: bool = False
                    ) -> tuple[DatasetPlan, list[tuple[int, int]]]:
    """First step of a fan-out write: store the plan and return ``(plan, shard index ranges)``.

    Then run ``write_shard_range(frames, store_uri, settings, range(start, stop), shard_size)`` once per
    range (in parallel tasks) and ``merge_manifest(store_uri, plan.dataset_hash)`` at the end. When
    the data set is already committed and its shards' checksums hold, the list of ranges is empty
    (merge_manifest is then a no-op); with damaged shards it covers every shard (the writers skip
    intact ones). A store holding another data set is refused before the plan is written, unless
    ``replace`` (:func:`~signpose.shards.commit.claim`).
    """
    store = open_store(store_uri)
    plan = plan_dataset(frames, settings, shard_size)
    existing = _try_read_manifest(store)
    if existing is None or existing.dataset_hash != plan.dataset_hash:
        claim(store, plan.dataset_hash, replace)
    store_plan(store, plan)
    if existing is not None and existing.dataset_hash == plan.dataset_hash and not damaged_shards(store, existing):
        return plan, []
    return plan, shard_index_ranges(plan.n_shards, n_tasks)


def store_plan(store: ObjectStore, plan: DatasetPlan) -> None:
    """Write the plan unless the store holds exactly its bytes (the plan is deterministic): a plan
    damaged since it was written is mended by the next writer of the same input."""
    data = plan.to_json().encode()
    try:
        if store.get_bytes(plan.plan_key) == data:
            return
    except ObjectNotFoundError:
        pass
    store.put_bytes(plan.plan_key, data)



@contextlib.contextmanager
def plan_dropped_on_failure(store: ObjectStore, plan_key: str, existed: bool | None = None):
    """Around a single-process write: a plan stored by a run that then fails is deleted again (the
    re-run computes the same plan; the shards it finished stay for that re-run to resume, and the
    next commit collects them if none does), so a failed ``preprocess`` leaves no ``plans/`` behind."""
    existed = store.exists(plan_key) if existed is None else existed  # before this run stored it
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(StoreError, OSError):
                store.delete(plan_key)
        raise
