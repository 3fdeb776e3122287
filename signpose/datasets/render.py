"""Rendering one source of a version into its own shards, one source in memory at a time.

A source's shards are keyed by its *render key*: the sha256 of its content hash, the render settings,
the renderer version, the shard format and size, and the inputs of its split placement (the split
policy, the placements its videos inherited, whether the corpus was tiny). The same source rendered
the same way always gets the same keys and bytes, so versions share it, a re-run finds it
(``sources/<render key>.json``, written after its shards, marks it complete) and concurrent writers
of the same source write the same objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np

from signpose import layout
from signpose.datasets.listing import Corpus, ObjectInfo, SourceEntry
from signpose.datasets.report import source_row
from signpose.datasets.sources import read_source
from signpose.datasets.splits import apply_placement, place_videos
from signpose.errors import UserError
from signpose.io import KeypointFrames
from signpose.render import RENDERER_VERSION, RenderSettings
from signpose.shards.codec import build_shard
from signpose.shards.format import SHARD_DIR, SHARD_FORMAT, SOURCE_DIR, ShardError
from signpose.shards.manifest import ShardInfo, count_face_frames
from signpose.shards.plan import _split_order, plan_shards
from signpose.store import ObjectNotFoundError, ObjectStore

log = logging.getLogger(__name__)


class InputChangedError(ShardError):
    """A source's bytes changed between planning and rendering (re-run the pipeline)."""


@dataclass(frozen=True)
class SplitPolicy:
    """How videos no earlier version placed are split (:mod:`signpose.datasets.splits`)."""

    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:  # a policy built from KFP parameters is checked like the flags
        from signpose.ranges import check_split_fractions

        check_split_fractions(self.dev_fraction, self.test_fraction)


DEFAULT_POLICY = SplitPolicy()


def policy_note(parent_hash: str, old: dict, new: SplitPolicy) -> str:
    """The note of a version whose split policy differs from its parent's: what changed, and that it
    moves no video (the data report's ``notes``, and a warning)."""
    def text(policy: dict) -> str:
        seed = f" (seed {policy.get('seed')})" if policy.get("seed") != new.seed else ""
        return f"dev {policy.get('dev_fraction')} / test {policy.get('test_fraction')}{seed}"

    return (f"split fractions changed from {text(old)} in parent {parent_hash[:12]} to {text(asdict(new))}: they "
            "apply to new videos only; every video an earlier version placed keeps its split")


def render_key(content_hash: str, settings: RenderSettings, shard_size: int, policy: SplitPolicy,
               inherited: dict[str, str], cut_new: bool) -> str:
    text = json.dumps({"content_hash": content_hash, "render": settings.to_dict(), "shard_size": int(shard_size),
                       "renderer_version": RENDERER_VERSION, "shard_format": SHARD_FORMAT, "policy": asdict(policy),
                       "inherited": dict(sorted(inherited.items())), "cut_new": bool(cut_new)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def record_key(rkey: str) -> str:
    return f"{SOURCE_DIR}/{rkey}.json"


def shard_key(rkey: str, index: int) -> str:
    return f"{SHARD_DIR}/{rkey[:16]}-{index:05d}.npz"


def source_entry(entry: dict) -> SourceEntry:
    """The listing entry a plan's source records (so a writer needs no listing of its own)."""
    return SourceEntry(entry["key"], tuple(ObjectInfo(*m) for m in entry["members"]), bool(entry["grouped"]))


def _placed(frames: KeypointFrames, entry: dict, policy: SplitPolicy) -> tuple[np.ndarray, dict[str, str]]:
    """Each frame's split and each video's placement: splits the source gives are kept as given."""
    if set(frames.split.tolist()) - {"train"}:
        first = {}
        for video, split in zip(frames.video_id.tolist(), frames.split.tolist()):
            first.setdefault(video, split)
        return frames.split, first
    placement = place_videos(frames.videos(), entry.get("inherited") or {}, policy.dev_fraction,
                             policy.test_fraction, policy.seed, cut_new=bool(entry.get("cut_new")))
    return apply_placement(frames.video_id, frames.frame_index, placement, policy.dev_fraction,
                           policy.test_fraction), placement


def _split_ranges(split: np.ndarray, shard_size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The split-grouped order of the frames and its cut into shards that never cross a split."""
    order = _split_order(split)
    grouped = split[order]
    ranges, start = [], 0
    while start < len(grouped):
        same = grouped[start:] == grouped[start]
        stop = start + (len(same) if same.all() else int(np.argmin(same)))
        ranges.extend((start + r.start, start + r.stop) for r in plan_shards(stop - start, shard_size))
        start = stop
    return order, ranges


def _complete(store: ObjectStore, rkey: str) -> bool:
    """Whether the source was rendered already: its record exists and so does each of its shards."""
    try:
        record = json.loads(store.get_bytes(record_key(rkey)))
        return all(store.exists(shard["key"]) for shard in record["shards"])
    except (ObjectNotFoundError, ValueError, KeyError, TypeError):
        return False


class WorkerUserError(ShardError, UserError):
    """A user error from a render process whose own exception type cannot be rebuilt in this one."""


def render_job(store: ObjectStore, corpus: Corpus, entries: list[dict], settings: RenderSettings, shard_size: int,
               policy: SplitPolicy, max_frames: int | None, max_rejected: float | None) -> int:
    """:func:`render_source` of each of ``entries`` in turn, as a render process runs them: only the plan
    entries cross, the sources are read there; an error comes back as one the caller can rebuild."""
    try:
        return sum(render_source(store, corpus, entry, settings, shard_size, policy, max_frames, max_rejected)
                   for entry in entries)
    except Exception as error:
        raise _relayable(error) from None


def _relayable(error: Exception) -> Exception:
    """``error``, or when it cannot be rebuilt from its pickled form (an ``__init__`` that does not take
    its ``args``) one that keeps its message and whether it is the user's to fix."""
    try:
        rebuild, args = error.__reduce__()[:2]
        rebuild(*args)  # what unpickling it in the parent will do
        return error
    except Exception:
        text = f"{type(error).__name__}: {error}"
        return WorkerUserError(str(error)) if isinstance(error, UserError) else RuntimeError(text)


def render_source(store: ObjectStore, corpus: Corpus, entry: dict, settings: RenderSettings, shard_size: int,
                  policy: SplitPolicy, max_frames: int | None = None, max_rejected: float | None = None) -> int:
    """Read, split, render and write one planned source; returns the frames rendered (0 when its record
    shows it complete already). The record is written last: present means every shard is."""
    rkey = entry["render_key"]
    if _complete(store, rkey):
        return 0
    digest, frames = read_source(corpus, source_entry(entry), max_frames, max_rejected)
    if digest != entry["content_hash"]:
        raise InputChangedError(f"{corpus.uri}/{entry['key']}: the source changed after planning (content "
                                f"{digest[:12]}, planned {entry['content_hash'][:12]}); re-run the pipeline")
    split, placement = _placed(frames, entry, policy)
    order, ranges = _split_ranges(split, shard_size)
    keypoints, video_id, frame_index = frames.keypoints, frames.video_id, frames.frame_index
    infos = []
    for index, (start, stop) in enumerate(ranges):
        rows = order[start:stop]
        data, splits = build_shard(keypoints[rows], split[rows], video_id[rows], frame_index[rows], settings)
        info = ShardInfo(key=shard_key(rkey, index), count=stop - start, bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), splits=splits, index=index, start=start,
                         face_frames=count_face_frames(keypoints[rows][:, layout.FACE], split[rows]))
        store.put_bytes(info.key, data)  # its record is the source's (no per-shard sidecar: one write less)
        infos.append(info)
    video_splits: dict[str, int] = {}
    for name in np.unique(split).tolist():
        video_splits[name] = len(np.unique(video_id[split == name]))
    record = {"key": entry["key"], "content_hash": digest, "render_key": rkey, "videos": placement,
              "frames": {name: int((split == name).sum()) for name in np.unique(split).tolist()},
              "video_splits": video_splits, "shards": [info.to_dict() for info in infos],
              "row": source_row(entry["key"], digest, frames, len(placement))}
    store.put_bytes(record_key(rkey), (json.dumps(record, sort_keys=True) + "\n").encode())
    log.debug("%s: rendered %d frames of %s into %d shards", store.uri, len(frames), entry["key"], len(infos))
    return len(frames)
