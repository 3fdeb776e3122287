"""The manifest (``manifest.json`` at the store root, written last: the commit point of a data set) and
the ShardInfo record of each shard it lists."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from signpose.render import RENDERER_VERSION, RenderSettings
from signpose.shards.format import (
    DEFAULT_SHARD_SIZE,
    MANIFEST_NAME,
    PLAN_DIR,
    READABLE_SHARD_FORMATS,
    SCHEMA_VERSION,
    SHARD_DIR,
    SHARD_FORMAT,
    SHARD_FORMAT_V1,
    VERSION_SCHEMA,
    ManifestNotFoundError,
    ShardError,
)
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)


def face_present(face: np.ndarray) -> np.ndarray:
    """Which of (n, 68, 3) face slices have at least one point (confidence > 0): the frames the face
    task trains on, and what :attr:`ShardInfo.face_frames` counts."""
    return (np.asarray(face)[..., 2] > 0).any(axis=-1)


def count_face_frames(face: np.ndarray, split: np.ndarray) -> dict[str, int]:
    """Frames with a face, per split (every split of ``split`` is a key, zero counts included)."""
    present = face_present(face)
    split = np.asarray(split)
    return {str(name): int(present[split == name].sum()) for name in np.unique(split)}


@dataclass(frozen=True)
class ShardInfo:
    key: str                       # relative to the store root
    count: int                     # frames in the shard
    bytes: int                     # object size
    sha256: str                    # of the object bytes
    splits: dict[str, int]         # frames per split
    index: int = 0                 # position in the plan
    start: int = 0                 # first frame, in the split-grouped order of the input
    # Frames with at least one face point, per split: the face task's samples, so a stream knows its
    # epoch length without reading the shards. None in shards written before it was recorded.
    face_frames: dict[str, int] | None = None

    def frames_of(self, split: str | None) -> int:
        """Frames of ``split`` in this shard (all its frames for None)."""
        return self.count if split is None else self.splits.get(split, 0)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.face_frames is None:
            data.pop("face_frames")  # unknown: left out, as in the records written before it existed
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ShardInfo:
        return cls(key=str(data["key"]), count=int(data["count"]), bytes=int(data["bytes"]),
                   sha256=str(data["sha256"]), splits={str(k): int(v) for k, v in data["splits"].items()},
                   index=int(data.get("index", 0)), start=int(data.get("start", 0)),
                   face_frames=None if data.get("face_frames") is None
                   else {str(k): int(v) for k, v in data["face_frames"].items()})


@dataclass
class Manifest:
    schema_version: int
    dataset_hash: str
    image_size: int
    render: dict[str, Any]
    splits: dict[str, int]
    shards: list[ShardInfo]
    created_at: str
    n_frames: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    renderer_version: str = RENDERER_VERSION
    shard_format: str = SHARD_FORMAT
    # A version of a corpus (schema_version VERSION_SCHEMA; None in a data set of one input): its
    # parent version's hash, its sources (key, content_hash, fingerprint, render_key, videos: {id:
    # placement}, frames: {split: n}, shards: [keys]), what changed since the parent (added, changed,
    # removed keys) and the split policy (dev/test fractions, seed) new videos were placed with.
    parent: str | None = None
    sources: list[dict] | None = None
    changes: dict[str, list[str]] | None = None
    split_policy: dict[str, Any] | None = None
    # Where it was read from / written to (the store root URI); not serialised.
    uri: str = field(default="", compare=False)

    @property
    def is_version(self) -> bool:
        return self.sources is not None

    def render_settings(self) -> RenderSettings:
        """The RenderSettings the images were drawn with."""
        return RenderSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.render.items()})

    def shards_for(self, split: str | None) -> list[ShardInfo]:
        """Shards holding frames of ``split`` (all shards for None)."""
        if split is None:
            return list(self.shards)
        return [s for s in self.shards if s.splits.get(split, 0) > 0]

    def positions(self, split: str | None) -> list[tuple[ShardInfo, int]]:
        """The shards of ``split``, each with the position of its first frame of the split among the
        split's frames (input order; all frames for None)."""
        placed, position = [], 0
        for shard in self.shards_for(split):
            placed.append((shard, position))
            position += shard.frames_of(split)
        return placed

    def to_dict(self) -> dict:
        # Shallow (not asdict): a version's sources are plain JSON already, and deep-copying thousands of
        # them doubled the commit time of a 1 % delivery.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "uri"}
        for name in ("parent", "sources", "changes", "split_policy"):
            if data[name] is None and not self.is_version:
                data.pop(name)
        data["shards"] = [s.to_dict() for s in self.shards]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict, uri: str = "") -> Manifest:
        if not isinstance(data, dict):
            raise ShardError(f"{uri}/{MANIFEST_NAME}: not a manifest (its JSON is a {type(data).__name__}, not an object)")
        version = data.get("schema_version")
        if version not in (SCHEMA_VERSION, VERSION_SCHEMA):
            raise ShardError(f"{uri}/{MANIFEST_NAME}: schema_version {version!r} is not supported "
                             f"(this code reads {SCHEMA_VERSION} and {VERSION_SCHEMA})")
        try:
            manifest = cls(
                schema_version=int(version), dataset_hash=str(data["dataset_hash"]),
                image_size=int(data["image_size"]), render=dict(data["render"]),
                splits={str(k): int(v) for k, v in data["splits"].items()},
                shards=[ShardInfo.from_dict(s) for s in data["shards"]],
                created_at=str(data["created_at"]), n_frames=int(data.get("n_frames", 0)),
                shard_size=int(data.get("shard_size", DEFAULT_SHARD_SIZE)),
                renderer_version=str(data.get("renderer_version", "")),
                shard_format=str(data.get("shard_format", SHARD_FORMAT_V1)), uri=uri,
                parent=data.get("parent"), sources=data.get("sources"), changes=data.get("changes"),
                split_policy=data.get("split_policy"),
            )
            if version == VERSION_SCHEMA and not isinstance(manifest.sources, list):
                raise KeyError("sources")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ShardError(f"{uri}/{MANIFEST_NAME}: malformed manifest ({type(e).__name__}: {e})") from e
        if manifest.shard_format not in READABLE_SHARD_FORMATS:
            raise ShardError(f"{uri}/{MANIFEST_NAME}: shard_format {manifest.shard_format!r} is not supported "
                             f"(this code reads {', '.join(READABLE_SHARD_FORMATS)})")
        return manifest


def read_manifest(store_uri: str | ObjectStore) -> Manifest:
    """Read ``manifest.json`` at the store root (``store_uri`` may also point at the file itself)."""
    store = open_store(_strip_manifest_name(store_uri))
    try:
        text = store.get_bytes(MANIFEST_NAME)
    except ObjectNotFoundError:
        raise ManifestNotFoundError(f"{store.url(MANIFEST_NAME)}: no manifest (data set not written, "
                                    "or its writer did not finish)") from None
    try:
        data = json.loads(text)
    except RecursionError:  # a hostile manifest: nesting deeper than the parser can follow
        raise ShardError(f"{store.url(MANIFEST_NAME)}: not a manifest (JSON nested too deeply)") from None
    except ValueError as e:
        raise ShardError(f"{store.url(MANIFEST_NAME)}: not valid JSON ({e})") from e
    return Manifest.from_dict(data, uri=store.uri)


def _strip_manifest_name(uri):
    if isinstance(uri, str) and uri.rstrip("/").endswith("/" + MANIFEST_NAME):
        return uri.rstrip("/")[: -len(MANIFEST_NAME) - 1]
    return uri


def _try_read_manifest(store: ObjectStore) -> Manifest | None:
    try:
        return read_manifest(store)
    except ManifestNotFoundError:
        return None
    except ShardError as e:
        log.warning("ignoring unreadable manifest (a writer refuses it without --replace): %s", e)
        return None


_HEX = frozenset("0123456789abcdef")


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


class ManifestInconsistentError(ShardError, ValueError):
    """A manifest whose fields contradict each other; the message names the manifest and the field."""


def check_manifest(manifest: Manifest, store: ObjectStore | None = None) -> None:
    """The manifest's own consistency, without reading a shard: a well-formed dataset hash; at least one
    shard; keys unique, under ``shards/`` and named after the hash; per shard, split counts adding up to
    its count and face counts within them; frame ranges contiguous from 0; shard counts adding up to
    ``n_frames`` and to the per-split ``splits``; and, when the store still holds the data set's plan,
    the same ranges as the plan. Raises ShardError naming the manifest and the field."""
    where = f"{manifest.uri}/{MANIFEST_NAME}" if manifest.uri else MANIFEST_NAME

    def fail(field_name: str, problem: str) -> ShardError:
        return ManifestInconsistentError(f"{where}: field {field_name!r}: {problem}")

    digest = manifest.dataset_hash
    if not _is_sha256(digest):
        raise fail("dataset_hash", f"not a sha256 hex digest: {digest[:80]!r}")
    if not manifest.shards:
        raise fail("shards", f"lists no shard, but n_frames is {manifest.n_frames}")
    seen: set[str] = set()
    position, legacy = 0, all(s.index == 0 and s.start == 0 for s in manifest.shards)
    for i, shard in enumerate(manifest.shards):
        _check_shard(fail, f"shards[{i}]", shard, digest, seen, manifest.is_version)
        if not legacy and (shard.index != i or shard.start != position):
            raise fail(f"shards[{i}].start", f"index {shard.index}, first frame {shard.start}: the shards do not "
                                             f"cover the frames contiguously (expected index {i}, frame {position})")
        position += shard.count
    if position != manifest.n_frames:
        raise fail("n_frames", f"{manifest.n_frames}, but the shards hold {position} frames")
    totals: dict[str, int] = {}
    for shard in manifest.shards:
        for split, count in shard.splits.items():
            totals[split] = totals.get(split, 0) + count
    if {k: v for k, v in totals.items() if v} != {k: v for k, v in manifest.splits.items() if v}:
        raise fail("splits", f"{manifest.splits}, but the shards hold {totals}")
    if store is not None and not manifest.is_version:
        _check_against_plan(fail, manifest, store)


def _check_shard(fail, name: str, shard: ShardInfo, digest: str, seen: set[str], version: bool = False) -> None:
    key = shard.key
    if key in seen:
        raise fail(f"{name}.key", f"{key!r} is listed twice")
    seen.add(key)
    base = key.removeprefix(f"{SHARD_DIR}/")
    # A version's shards belong to its sources (named after their render keys), shared between versions.
    named = base.startswith(f"{digest[:12]}-") or version
    if not (base != key and named and base.endswith(".npz") and "/" not in base):
        raise fail(f"{name}.key", f"{key[:200]!r} is not a shard of this data set "
                                  f"({SHARD_DIR}/{digest[:12]}-NNNNN.npz)")
    if shard.count < 1 or shard.bytes < 1:
        raise fail(f"{name}.count", f"{shard.count} frames in {shard.bytes} bytes")
    if not _is_sha256(shard.sha256):
        raise fail(f"{name}.sha256", f"not a sha256 hex digest: {shard.sha256[:80]!r}")
    if any(v < 0 for v in shard.splits.values()) or sum(shard.splits.values()) != shard.count:
        raise fail(f"{name}.splits", f"{shard.splits} do not add up to its {shard.count} frames")
    for split, faces in (shard.face_frames or {}).items():
        if not 0 <= faces <= shard.splits.get(split, 0):
            raise fail(f"{name}.face_frames", f"{faces} frames with a face in split {split!r} of "
                                              f"{shard.splits.get(split, 0)}")


def _check_against_plan(fail, manifest: Manifest, store: ObjectStore) -> None:
    try:
        plan = json.loads(store.get_bytes(f"{PLAN_DIR}/{manifest.dataset_hash}.json"))
        ranges = [tuple(int(x) for x in r) for r in plan["ranges"]]
    except ObjectNotFoundError:
        return  # the plan is only a writer's aid: a data set copied without it still verifies
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ShardError(f"{store.url(f'{PLAN_DIR}/{manifest.dataset_hash}.json')}: unreadable plan "
                         f"({type(e).__name__}: {str(e)[:200]}); preprocess of the same input again rewrites it "
                         "(or delete it: it is only a writer's aid)") from None
    ours = [(s.start, s.start + s.count) for s in manifest.shards]
    if ours != ranges and not all(s.start == 0 for s in manifest.shards):
        raise fail("shards", f"{len(ours)} shards over frames {ours[:3]}..., but the data set's plan cuts "
                             f"{len(ranges)} shards {ranges[:3]}...")
