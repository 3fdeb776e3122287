"""Shards and manifest: the preprocessed data set in an object store.

Layout under the store root (a local folder or ``s3://bucket/prefix``)::

    manifest.json                      written LAST: the commit point of a data set
    plans/<dataset_hash>.json          the shard plan (for fan-out writers and the merge step)
    shards/<hash12>-00000.npz          one shard: a deterministic, compressed .npz
    shards/<hash12>-00000.json         its ShardInfo (count, bytes, sha256, splits), written after it

A shard holds ``keypoints`` (n, 143, 3) float32, ``images`` (n, S, S) uint8 (rendered by
:func:`signpose.render.render_frames`), ``face`` (n, 68, 3) float32 (= keypoints[:, layout.FACE]),
``split`` / ``video_id`` (n,) fixed-width unicode and ``frame_index`` (n,) int64. Strings are stored as
fixed-width unicode arrays so shards load with ``allow_pickle=False``. Keypoints and face are stored
losslessly as one byte-shuffled xz stream (:func:`encode_points`), the images as a bit mask plus the lit
pixels' values (:func:`encode_images`); shards of the first format (``SHARD_FORMAT_V1``: keypoints and
face as deflated .npy entries) are still read.

Frames are grouped by split (train, dev, test, then any other split, input order kept within a split)
and no shard crosses a split boundary, so reading one split touches only that split's shards.

The dataset hash covers the input content, the render settings, ``RENDERER_VERSION``, the shard size,
the schema version and the shard format; shard keys derive from it, so a re-run with the same input
finds its own shards (resume) or its own manifest (no-op), and the bytes are identical: the zip entries
carry a fixed timestamp and a fixed order.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import lzma
import os
import sys
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from signpose import layout
from signpose.render import RENDERER_VERSION, RenderSettings, render_frames
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Identifies how a shard's bytes are laid out; part of the dataset hash. New shards are written in
# SHARD_FORMAT; both are read.
SHARD_FORMAT = "npz-v2+points-shuffled-xz+images-mask-values-xz"
SHARD_FORMAT_V1 = "npz-v1+images-mask-values-xz"
READABLE_SHARD_FORMATS = (SHARD_FORMAT, SHARD_FORMAT_V1)
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
PLAN_DIR = "plans"
SPLIT_ORDER = ("train", "dev", "test")
DEFAULT_SHARD_SIZE = 4096

# Fixed zip entry timestamp (the zip epoch): np.savez_compressed stamps the wall clock, which would
# make two runs over the same input differ byte-wise.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_COMPRESSLEVEL = 6
# What read_shard returns, in this order.
SHARD_FIELDS = ("keypoints", "images", "face", "split", "video_id", "frame_index")
# The per-frame sample ids, stored as plain .npy entries in every format.
_ID_FIELDS = ("split", "video_id", "frame_index")
_IMAGE_FIELDS = ("images_shape", "images_mask_xz", "images_values_xz")
# The .npz entries, in this order (fixed: part of the byte-identical guarantee). Keypoints and face
# are stored in the compact form of encode_points, images in that of encode_images.
STORED_FIELDS = ("points_xz", *_ID_FIELDS, *_IMAGE_FIELDS)
STORED_FIELDS_V1 = ("keypoints", "face", *_ID_FIELDS, *_IMAGE_FIELDS)


class ShardError(RuntimeError):
    """A shard or manifest is missing, corrupt or inconsistent; the message names it."""


class ShardCorruptError(ShardError):
    """A shard's bytes do not match the checksum recorded in the manifest, or do not decode."""


class ManifestNotFoundError(ShardError, FileNotFoundError):
    """No manifest.json at the store root: the data set was never committed."""


# --- manifest ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardInfo:
    key: str                       # relative to the store root
    count: int                     # frames in the shard
    bytes: int                     # object size
    sha256: str                    # of the object bytes
    splits: dict[str, int]         # frames per split
    index: int = 0                 # position in the plan
    start: int = 0                 # first frame, in the split-grouped order of the input

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardInfo:
        return cls(key=str(data["key"]), count=int(data["count"]), bytes=int(data["bytes"]),
                   sha256=str(data["sha256"]), splits={str(k): int(v) for k, v in data["splits"].items()},
                   index=int(data.get("index", 0)), start=int(data.get("start", 0)))


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
    # Where it was read from / written to (the store root URI); not serialised.
    uri: str = field(default="", compare=False)

    def render_settings(self) -> RenderSettings:
        """The RenderSettings the images were drawn with."""
        return RenderSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.render.items()})

    def shards_for(self, split: str | None) -> list[ShardInfo]:
        """Shards holding frames of ``split`` (all shards for None)."""
        if split is None:
            return list(self.shards)
        return [s for s in self.shards if s.splits.get(split, 0) > 0]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("uri")
        data["shards"] = [s.to_dict() for s in self.shards]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict, uri: str = "") -> Manifest:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ShardError(f"{uri}/{MANIFEST_NAME}: schema_version {version!r} is not supported "
                             f"(this code reads {SCHEMA_VERSION})")
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
            )
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
    except ValueError as e:
        raise ShardError(f"{store.url(MANIFEST_NAME)}: not valid JSON ({e})") from e
    return Manifest.from_dict(data, uri=store.uri)


def _strip_manifest_name(uri):
    if isinstance(uri, str) and uri.rstrip("/").endswith("/" + MANIFEST_NAME):
        return uri.rstrip("/")[: -len(MANIFEST_NAME) - 1]
    return uri


# --- shard encoding ---------------------------------------------------------------------------------

def _str_array(values) -> np.ndarray:
    # Fixed-width unicode ('<U<width>'): loads without pickle, width follows from the content.
    arr = np.asarray([str(v) for v in values], dtype=str)
    return arr if arr.size else np.zeros(0, dtype="<U1")


def encode_images(images: np.ndarray) -> dict[str, np.ndarray]:
    """(n, S, S) uint8 -> the compact, lossless stored form (see the module docstring).

    Skeleton images are ~95 % zeros: a bit-packed "pixel is lit" mask plus the lit pixels' grey
    values, each xz-compressed at preset 0, take ~1.9 KB a 256x256 anti-aliased frame against ~2.9 KB
    for the whole image deflated (docs/storage.md has the measurements). Non-anti-aliased images are
    all 0/255, so their value stream compresses to almost nothing.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, S, S), got {images.shape}")
    lit = images > 0
    return {
        "images_shape": np.asarray(images.shape, dtype=np.int64),
        "images_mask_xz": _xz(np.packbits(lit, axis=-1).tobytes()),
        "images_values_xz": _xz(images[lit].tobytes()),
    }


class PackedImages:
    """A shard's images kept in their stored form -- bit mask plus lit values, ~11 KB a 256x256
    frame instead of 64 KB -- and decoded one frame at a time: ``packed[i]`` is an (S, S) uint8 image.

    Streaming readers hold these instead of the decoded (n, S, S) stack, so a 4096-frame shard costs
    ~45 MB of memory rather than ~270 MB. ``np.asarray(packed)`` decodes everything.
    """

    def __init__(self, mask: np.ndarray, values: np.ndarray, width: int, where: str = "shard"):
        self.mask, self.values, self.width = mask, values, int(width)
        # Lit pixels per frame, counted on the packed bytes (a uint8 temporary, 1/8 of the images).
        counts = np.bitwise_count(mask).reshape(len(mask), -1).sum(axis=1, dtype=np.int64) if len(mask) \
            else np.zeros(0, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if int(self.offsets[-1]) != len(values):
            raise ShardCorruptError(f"{where}: image mask has {int(self.offsets[-1])} lit pixels but "
                                    f"{len(values)} values are stored")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.mask), self.mask.shape[1], self.width)

    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, index) -> np.ndarray:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} images")
        index %= len(self)
        lit = np.unpackbits(self.mask[index], axis=-1, count=self.width).view(bool)
        image = np.zeros(lit.shape, dtype=np.uint8)
        image[lit] = self.values[self.offsets[index]:self.offsets[index + 1]]
        return image

    def decode(self) -> np.ndarray:
        """All frames as one (n, S, S) uint8 array."""
        lit = np.unpackbits(self.mask, axis=-1, count=self.width).view(bool)  # 0/1 bytes: a free bool view
        images = np.zeros(lit.shape, dtype=np.uint8)
        images[lit] = self.values
        return images

    def __array__(self, dtype=None, copy=None):
        images = self.decode()
        return images if dtype is None else images.astype(dtype)


def decode_images(stored: dict[str, np.ndarray], where: str = "shard", packed: bool = False
                  ) -> np.ndarray | PackedImages:
    """Inverse of :func:`encode_images` (a :class:`PackedImages` when ``packed``); inconsistent
    sizes are a ShardCorruptError naming ``where``."""
    shape = tuple(int(v) for v in stored["images_shape"])
    if len(shape) != 3 or min(shape) < 0:
        raise ShardCorruptError(f"{where}: field 'images_shape': expected (n, S, S), got {shape}")
    n, height, width = shape
    row_bytes = (width + 7) // 8
    mask_bytes = _unxz(stored["images_mask_xz"], n * height * row_bytes, where, "image streams")
    values = np.frombuffer(_unxz(stored["images_values_xz"], n * height * width, where, "image streams"),
                           dtype=np.uint8)
    if len(mask_bytes) != n * height * row_bytes:
        raise ShardCorruptError(f"{where}: image mask holds {len(mask_bytes)} bytes, "
                                f"expected {n * height * row_bytes} for images {shape}")
    mask = np.frombuffer(mask_bytes, dtype=np.uint8).reshape(n, height, row_bytes)
    images = PackedImages(mask, values, width, where)
    return images if packed else images.decode()


# Points stored per frame: the 143 keypoints, then the 68 face points (the face column of the shard).
_STORED_POINTS = layout.N_POINTS + layout.N_FACE


def encode_points(keypoints: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Keypoints (n, 143, 3) and face (n, 68, 3) float32 -> one lossless xz stream (uint8 array).

    The float32 bytes are split into four byte planes and each plane is laid out time-major (every
    frame's value of one coordinate in a row): sign/exponent bytes and successive frames of one point
    are then near-identical neighbours, which xz turns into ~650-700 B a frame against ~1,450-1,560 B
    for the two arrays deflated (docs/storage.md). The face columns repeat the first 68 keypoints;
    with a dictionary that spans the stream they cost ~2 B a frame.
    """
    points = np.concatenate([np.asarray(keypoints, dtype="<f4"), np.asarray(face, dtype="<f4")], axis=1)
    n = len(points)
    values = _STORED_POINTS * 3
    planes = points.reshape(n, values).view(np.uint8).reshape(n, values, 4).transpose(2, 1, 0)
    return _xz(np.ascontiguousarray(planes).tobytes(), span=True)


def decode_points(stream: np.ndarray, n: int, where: str = "shard") -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_points`: (keypoints (n, 143, 3), face (n, 68, 3)) float32."""
    values = _STORED_POINTS * 3
    raw = _unxz(stream, n * values * 4, where, "field 'points_xz'")
    if len(raw) != n * values * 4:
        raise ShardCorruptError(f"{where}: field 'points_xz' holds {len(raw)} bytes, expected {n * values * 4} "
                                f"for {n} frames of {_STORED_POINTS} points")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(4, values, n)
    points = np.ascontiguousarray(planes.transpose(2, 1, 0)).view("<f4").reshape(n, _STORED_POINTS, 3)
    keypoints = np.ascontiguousarray(points[:, :layout.N_POINTS], dtype=np.float32)
    face = np.ascontiguousarray(points[:, layout.N_POINTS:], dtype=np.float32)
    return keypoints, face


def _unxz(stream: np.ndarray, limit: int, where: str, what: str) -> bytes:
    """Decompress one xz stream of a shard, never to more than ``limit`` + 1 bytes: a stream that
    would inflate beyond what the shard's shape allows is caught without holding its output."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = decompressor.decompress(stream.tobytes(), max_length=limit + 1)
    except lzma.LZMAError as e:
        raise ShardCorruptError(f"{where}: {what} cannot be decompressed ({e})") from e
    if len(data) > limit:
        raise ShardCorruptError(f"{where}: {what} would decompress to more than the {limit} bytes the "
                                "shard's shape allows")
    if not decompressor.eof:
        raise ShardCorruptError(f"{where}: {what} cannot be decompressed (truncated xz stream)")
    return data


def _xz(data: bytes, span: bool = False) -> np.ndarray:
    # Preset 0: nearly the ratio of preset 6 on these streams at ~9x the speed (docs/storage.md).
    # ``span``: a dictionary as long as the stream (up to 32 MiB) so matches reach back to its start.
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 0}]
    if span:
        filters[0]["dict_size"] = min(max(len(data), 1 << 16), 1 << 25)
    return np.frombuffer(lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters), dtype=np.uint8)


def encode_shard(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays (the SHARD_FIELDS) -> deterministic .npz bytes (fixed entry order and timestamps)."""
    stored = {name: arrays[name] for name in _ID_FIELDS}
    stored["points_xz"] = encode_points(arrays["keypoints"], arrays["face"])
    stored.update(encode_images(arrays["images"]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name in STORED_FIELDS:
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(stored[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            # The xz streams are compressed already; deflating them again would only cost time.
            method = zipfile.ZIP_STORED if name.endswith("_xz") else zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue(), compress_type=method, compresslevel=_ZIP_COMPRESSLEVEL)
    return buffer.getvalue()


def decode_shard(data: bytes, where: str = "shard", packed_images: bool = False, images: bool = True
                 ) -> dict[str, np.ndarray]:
    """Bytes (either readable shard format) -> dict of the SHARD_FIELDS arrays, validated; errors name
    ``where`` and the field. With ``packed_images`` the images come as a :class:`PackedImages` (decoded
    per frame on access); with ``images=False`` the ``images`` field is left out and its streams, most of
    a shard's decoding cost, are not decompressed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = STORED_FIELDS if "points_xz" in npz.files else STORED_FIELDS_V1
            stored = {name: npz[name] for name in names}
    except KeyError as e:
        raise ShardCorruptError(f"{where}: missing field {e}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ShardCorruptError(f"{where}: cannot decode ({type(e).__name__}: {e})") from e
    n = len(stored["frame_index"])
    expected = {
        "frame_index": ((n,), np.int64),
        "images_shape": ((3,), np.int64),
    }
    if "points_xz" in stored:
        expected["points_xz"] = ((len(stored["points_xz"]),), np.uint8)
    else:
        expected.update({"keypoints": ((n, layout.N_POINTS, 3), np.float32),
                         "face": ((n, layout.N_FACE, 3), np.float32)})
    for name, (shape, dtype) in expected.items():
        arr = stored[name]
        if arr.shape != shape or arr.dtype != dtype:
            raise ShardCorruptError(f"{where}: field {name!r}: expected {shape} {np.dtype(dtype)}, "
                                    f"got {arr.shape} {arr.dtype}")
    for name in ("split", "video_id"):
        if stored[name].shape != (n,) or stored[name].dtype.kind != "U":
            raise ShardCorruptError(f"{where}: field {name!r}: expected ({n},) unicode, "
                                    f"got {stored[name].shape} {stored[name].dtype}")
    images_shape = tuple(int(v) for v in stored["images_shape"])
    if images_shape[0] != n or images_shape[1] != images_shape[2]:
        raise ShardCorruptError(f"{where}: field 'images_shape': expected ({n}, S, S), got {images_shape}")
    arrays = {name: stored[name] for name in _ID_FIELDS}
    if "points_xz" in stored:
        arrays["keypoints"], arrays["face"] = decode_points(stored["points_xz"], n, where)
    else:
        arrays["keypoints"], arrays["face"] = stored["keypoints"], stored["face"]
    if images:
        arrays["images"] = decode_images(stored, where, packed=packed_images)
    return {name: arrays[name] for name in SHARD_FIELDS if name in arrays}


def build_shard(keypoints: np.ndarray, split: np.ndarray, video_id: np.ndarray, frame_index: np.ndarray,
                settings: RenderSettings) -> tuple[bytes, dict[str, int]]:
    """Render one shard's images and encode it. Top-level so a process pool can run it."""
    keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    arrays = {
        "keypoints": keypoints,
        "images": render_frames(keypoints, settings),
        "face": np.ascontiguousarray(keypoints[:, layout.FACE]),
        "split": _str_array(split),
        "video_id": _str_array(video_id),
        "frame_index": np.asarray(frame_index, dtype=np.int64),
    }
    names, counts = np.unique(arrays["split"], return_counts=True)
    return encode_shard(arrays), {str(k): int(v) for k, v in zip(names, counts)}


def read_shard(store_uri_or_store: str | ObjectStore, shard: ShardInfo, verify: bool = True,
               packed_images: bool = False, images: bool = True) -> dict[str, np.ndarray]:
    """Fetch, verify (sha256 and size against the manifest) and decode one shard.
    ``packed_images``: return the images as a :class:`PackedImages` (per-frame decoding, less memory).
    ``images=False``: leave the ``images`` field out without decompressing it (the face task's reads)."""
    store = open_store(store_uri_or_store)
    where = f"shard {store.url(shard.key)}"
    try:
        data = store.get_bytes(shard.key)
    except ObjectNotFoundError:
        raise ShardError(f"{where}: missing from the store (listed in the manifest)") from None
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != shard.bytes or digest != shard.sha256:
            raise ShardCorruptError(f"{where}: checksum mismatch (expected {shard.bytes} bytes sha256 "
                                    f"{shard.sha256}, got {len(data)} bytes sha256 {digest})")
    arrays = decode_shard(data, where, packed_images=packed_images, images=images)
    del data
    if len(arrays["keypoints"]) != shard.count:
        raise ShardCorruptError(f"{where}: holds {len(arrays['keypoints'])} frames, manifest says "
                                f"{shard.count}")
    return arrays


# --- planning ---------------------------------------------------------------------------------------

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
                    shard_size: int = DEFAULT_SHARD_SIZE, n_tasks: int = 4
                    ) -> tuple[DatasetPlan, list[tuple[int, int]]]:
    """First step of a fan-out write: store the plan and return ``(plan, shard index ranges)``.

    Then run ``write_shard_range(frames, store_uri, settings, range(start, stop), shard_size)`` once per
    range (in parallel tasks) and ``merge_manifest(store_uri, plan.dataset_hash)`` at the end. When
    the data set is already committed the list of ranges is empty (merge_manifest is then a no-op).
    """
    store = open_store(store_uri)
    plan = plan_dataset(frames, settings, shard_size)
    if not store.exists(plan.plan_key):
        store.put_bytes(plan.plan_key, plan.to_json().encode())
    existing = _try_read_manifest(store)
    if existing is not None and existing.dataset_hash == plan.dataset_hash:
        return plan, []
    return plan, shard_index_ranges(plan.n_shards, n_tasks)


# --- writing ----------------------------------------------------------------------------------------

def _existing_shard(store: ObjectStore, plan: DatasetPlan, index: int) -> ShardInfo | None:
    """The ShardInfo of a shard already written with the right bytes, else None (rewrite it)."""
    try:
        info = ShardInfo.from_dict(json.loads(store.get_bytes(plan.sidecar_key(index))))
        data = store.get_bytes(plan.shard_key(index))
    except (ObjectNotFoundError, ValueError, KeyError, TypeError):
        return None
    start, stop = plan.ranges[index]
    if (info.key != plan.shard_key(index) or info.count != stop - start or len(data) != info.bytes
            or hashlib.sha256(data).hexdigest() != info.sha256):
        log.warning("shard %s does not match its record; rewriting it", store.url(plan.shard_key(index)))
        return None
    return info


def _default_workers(n_tasks: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_tasks))


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    # forkserver: forking a process that already runs torch/BLAS threads can deadlock its children.
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled, mininterval=2.0,
                file=sys.stderr)


def write_shard_range(frames, store_uri: str | ObjectStore, settings: RenderSettings,
                      shard_indices: Iterable[int] | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                      workers: int | None = None, progress: bool = True,
                      plan: DatasetPlan | None = None) -> list[ShardInfo]:
    """Write the shards ``shard_indices`` of the plan (all when None); skip those already complete.

    Safe to run concurrently for disjoint index sets (one KFP task per range); every writer of the
    same input computes the same plan, so keys and bytes agree. Returns the ShardInfos in index order.
    """
    store = open_store(store_uri)
    plan = plan or plan_dataset(frames, settings, shard_size)
    indices = list(range(plan.n_shards)) if shard_indices is None else sorted(set(int(i) for i in shard_indices))
    bad = [i for i in indices if not 0 <= i < plan.n_shards]
    if bad:
        raise ValueError(f"shard indices {bad} out of range: the plan has {plan.n_shards} shards")
    if not store.exists(plan.plan_key):
        store.put_bytes(plan.plan_key, plan.to_json().encode())

    keypoints, split, video_id, frame_index = _frame_arrays(frames)
    order = _split_order(split)
    infos: dict[int, ShardInfo] = {}
    todo = []
    for index in indices:
        existing = _existing_shard(store, plan, index)
        if existing is not None:
            infos[index] = existing
        else:
            todo.append(index)
    if infos:
        log.info("%s: %d of %d shards already complete, writing %d", store.uri, len(infos), len(indices),
                 len(todo))

    def task_args(index: int):
        start, stop = plan.ranges[index]
        rows = order[start:stop]
        return keypoints[rows], split[rows], video_id[rows], frame_index[rows], settings

    def commit(index: int, data: bytes, splits: dict[str, int]) -> None:
        start, stop = plan.ranges[index]
        info = ShardInfo(key=plan.shard_key(index), count=stop - start, bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), splits=splits, index=index, start=start)
        store.put_bytes(info.key, data)
        # The sidecar follows its shard: a sidecar present means the shard was fully written.
        store.put_bytes(plan.sidecar_key(index), (json.dumps(info.to_dict(), sort_keys=True) + "\n").encode())
        infos[index] = info

    n_workers = _default_workers(len(todo)) if workers is None else max(1, min(int(workers), len(todo) or 1))
    with _progress(len(todo), f"render+write {store.uri}", progress) as bar:
        if n_workers <= 1:
            for index in todo:
                commit(index, *build_shard(*task_args(index)))
                bar.update(1)
        else:
            # Keep a bounded number of shards in flight: each holds its rendered images in memory.
            pool = _pool(n_workers)
            try:
                pending: list[tuple[int, Any]] = []
                queue = list(todo)
                while queue or pending:
                    while queue and len(pending) < 2 * n_workers:
                        index = queue.pop(0)
                        pending.append((index, pool.submit(build_shard, *task_args(index))))
                    index, future = pending.pop(0)
                    commit(index, *future.result())
                    bar.update(1)
            finally:
                # On an error, drop the queued shards instead of rendering them for nothing.
                pool.shutdown(wait=True, cancel_futures=True)
    return [infos[i] for i in indices]


def merge_manifest(store_uri: str | ObjectStore, dataset_hash: str | None = None) -> Manifest:
    """Commit a data set whose shards were written (possibly by several tasks): write manifest.json.

    ``dataset_hash`` selects the plan; when None there must be exactly one plan in the store.
    Fails, naming the missing shards, unless every shard of the plan has been written.
    """
    store = open_store(store_uri)
    if dataset_hash is None:
        plans = store.list(PLAN_DIR + "/")
        if len(plans) != 1:
            raise ShardError(f"{store.uri}: expected exactly one plan under {PLAN_DIR}/ to merge, found "
                             f"{len(plans)}; pass dataset_hash")
        plan_key = plans[0]
    else:
        plan_key = f"{PLAN_DIR}/{dataset_hash}.json"
    try:
        plan = DatasetPlan.from_json(store.get_bytes(plan_key))
    except ObjectNotFoundError:
        raise ShardError(f"{store.url(plan_key)}: no such plan; write the shards first") from None
    existing = _try_read_manifest(store)
    if existing is not None and existing.dataset_hash == plan.dataset_hash:
        return existing
    infos, missing = [], []
    for index in range(plan.n_shards):
        try:
            infos.append(ShardInfo.from_dict(json.loads(store.get_bytes(plan.sidecar_key(index)))))
        except ObjectNotFoundError:
            missing.append(plan.shard_key(index))
    if missing:
        raise ShardError(f"{store.uri}: cannot merge, {len(missing)} of {plan.n_shards} shards not written: "
                         + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return _commit_manifest(store, plan, infos)


def _commit_manifest(store: ObjectStore, plan: DatasetPlan, infos: Sequence[ShardInfo]) -> Manifest:
    splits: dict[str, int] = {}
    for info in infos:
        for name, count in info.splits.items():
            splits[name] = splits.get(name, 0) + count
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, dataset_hash=plan.dataset_hash, image_size=plan.image_size,
        render=plan.render, splits=splits, shards=list(infos),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        n_frames=plan.n_frames, shard_size=plan.shard_size, uri=store.uri,
    )
    store.put_bytes(MANIFEST_NAME, manifest.to_json().encode())
    log.info("%s: committed data set %s (%d frames, %d shards, %s)", store.uri, plan.dataset_hash[:12],
             plan.n_frames, plan.n_shards, splits)
    return manifest


def _try_read_manifest(store: ObjectStore) -> Manifest | None:
    try:
        return read_manifest(store)
    except ManifestNotFoundError:
        return None
    except ShardError as e:
        log.warning("ignoring unreadable manifest (it will be rewritten): %s", e)
        return None


def _missing_or_resized(store: ObjectStore, manifest: Manifest) -> list[str]:
    """Keys of committed shards that are absent or whose size differs from the manifest (cheap: no
    download; a full checksum check is verify_dataset)."""
    bad = []
    for shard in manifest.shards:
        try:
            if store.size(shard.key) != shard.bytes:
                bad.append(shard.key)
        except ObjectNotFoundError:
            bad.append(shard.key)
    return bad


def verify_dataset(store_uri: str | ObjectStore, progress: bool = True) -> Manifest:
    """Download every shard of the manifest and check size, sha256 and decoding; raise on the first
    bad one (naming it), return the manifest when all are good."""
    store = open_store(store_uri)
    manifest = read_manifest(store)
    with _progress(len(manifest.shards), f"verify {store.uri}", progress) as bar:
        for shard in manifest.shards:
            read_shard(store, shard)
            bar.update(1)
    return manifest


def write_dataset(frames, store_uri: str | ObjectStore, settings: RenderSettings = RenderSettings(),
                  shard_size: int = DEFAULT_SHARD_SIZE, workers: int | None = None,
                  progress: bool = True) -> Manifest:
    """Render and write all shards, then the manifest (last: the commit point).

    Idempotent: a manifest with the same dataset hash is returned without any work. After a crash
    the re-run writes only the shards that are missing or damaged; the result is byte-identical.
    """
    store = open_store(store_uri)
    plan = plan_dataset(frames, settings, shard_size)
    existing = _try_read_manifest(store)
    if existing is not None and existing.dataset_hash == plan.dataset_hash:
        damaged = _missing_or_resized(store, existing)
        if not damaged:
            log.info("%s: data set %s already written, nothing to do", store.uri, plan.dataset_hash[:12])
            return existing
        # Someone deleted or truncated committed shards: repair them (the rest is verified and kept).
        log.warning("%s: data set %s is committed but %d shards are missing or resized (%s); rewriting them",
                    store.uri, plan.dataset_hash[:12], len(damaged), ", ".join(damaged[:5]))
    log.info("%s: writing data set %s: %d frames in %d shards of <= %d", store.uri, plan.dataset_hash[:12],
             plan.n_frames, plan.n_shards, shard_size)
    infos = write_shard_range(frames, store, settings, None, shard_size, workers, progress, plan=plan)
    return _commit_manifest(store, plan, infos)


# --- CLI: `signpose dataset info|verify URI` ----------------------------------------------------------

def add_parser(subparsers) -> None:
    """Register ``dataset info URI`` and ``dataset verify URI`` (each sets ``func``)."""
    dataset = subparsers.add_parser("dataset", help="inspect or verify a preprocessed data set (shards + manifest)")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)
    info = commands.add_parser("info", help="print the manifest summary of a data set")
    info.add_argument("uri", help="store root (local folder or s3://bucket/prefix) or its manifest.json")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=_run_info)
    verify = commands.add_parser("verify", help="download every shard and check size, sha256 and decoding")
    verify.add_argument("uri", help="store root or its manifest.json")
    verify.set_defaults(func=_run_verify)


def _run_info(args) -> int:
    try:
        manifest = read_manifest(args.uri)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    total = sum(s.bytes for s in manifest.shards)
    print(f"{manifest.uri}: data set {manifest.dataset_hash}\n"
          f"  {manifest.n_frames} frames {manifest.splits}, {len(manifest.shards)} shards, "
          f"{total / 1e6:.1f} MB ({total / max(1, manifest.n_frames):,.0f} B/frame)\n"
          f"  images {manifest.image_size}x{manifest.image_size}, renderer {manifest.renderer_version}, "
          f"format {manifest.shard_format}, created {manifest.created_at}")
    return 0


def _run_verify(args) -> int:
    try:
        manifest = verify_dataset(_strip_manifest_name(args.uri))
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{manifest.uri}: all {len(manifest.shards)} shards verified ({manifest.n_frames} frames)")
    return 0
