"""One shard's bytes: encoding and decoding (:func:`encode_shard`, :func:`decode_shard`), rendering and
encoding a shard (:func:`build_shard`), fetching, verifying and decoding one (:func:`read_shard`).

A shard holds ``keypoints`` (n, 143, 3) float32, ``images`` (n, S, S) uint8 (rendered by
:func:`signpose.render.render_frames`), ``face`` (n, 68, 3) float32 (= keypoints[:, layout.FACE]),
``split`` / ``video_id`` (n,) fixed-width unicode and ``frame_index`` (n,) int64. Strings are stored as
fixed-width unicode arrays so shards load with ``allow_pickle=False``. Keypoints and face are stored
losslessly as one byte-shuffled stream (:func:`encode_points`), the images as a bit mask plus the lit
pixels' values (:func:`encode_images`); a :class:`StreamCodec` compresses those three streams, xz or
zstd, and each entry's suffix (``_xz``, ``_zst``) says which, so a reader needs neither the level nor
the format's name. Shards of the first format (``SHARD_FORMAT_V1``: keypoints and face as deflated
.npy entries) are still read. The bytes are deterministic: the zip entries carry a fixed timestamp
and a fixed order, and both codecs give the same bytes for the same input, parameters and library.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import zipfile
from dataclasses import dataclass

import numpy as np

from signpose import layout
from signpose.render import RenderSettings, render_frames
from signpose.shards.format import (
    _ID_FIELDS,
    _ZIP_COMPRESSLEVEL,
    _ZIP_DATE_TIME,
    SHARD_FIELDS,
    STORED_FIELDS_V1,
    STORED_FIELDS_V2,
    STORED_FIELDS_ZSTD,
    ShardCorruptError,
    ShardError,
)
from signpose.shards.manifest import ShardInfo
from signpose.store import ObjectNotFoundError, ObjectStore, open_store


def _str_array(values) -> np.ndarray:
    # Fixed-width unicode ('<U<width>'): loads without pickle, width follows from the content.
    arr = np.asarray([str(v) for v in values], dtype=str)
    return arr if arr.size else np.zeros(0, dtype="<U1")


_SUFFIXES = {"xz": "_xz", "zstd": "_zst"}


@dataclass(frozen=True)
class StreamCodec:
    """How a shard's three compressed streams (points, image mask, image values) are compressed:
    ``name`` "xz" (shard format v2; ``level`` = preset) or "zstd" (``level`` = zstd level). Decoding
    needs only the name, which the entries' suffix carries; the level only changes the bytes."""

    name: str
    level: int

    def __post_init__(self):
        if self.name not in _SUFFIXES:
            raise ValueError(f"unknown stream codec {self.name!r} (known: {', '.join(_SUFFIXES)})")

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self.name]

    def compress(self, data: bytes, span: bool = False) -> np.ndarray:
        """``span``: let matches reach back over the whole stream (the points' face columns)."""
        return (_xz if self.name == "xz" else _zstd)(data, self.level, span)

    def decompress(self, stream: np.ndarray, limit: int, where: str, what: str) -> bytes:
        return (_unxz if self.name == "xz" else _unzstd)(stream, limit, where, what)


XZ = StreamCodec("xz", 0)  # shard format v2: preset 0, nearly preset 6's ratio at ~9x the speed
# Shard format v3. Level 9: the smallest level measured within ~1 % of xz's size on generated shards
# (12 is 1 % smaller at half the speed), 2.5x-3.4x xz's whole-shard encode rate (bench/storage.py).
ZSTD = StreamCodec("zstd", 9)
# What new shards are written with (the codec of SHARD_FORMAT).
WRITE_CODEC = ZSTD


def encode_images(images: np.ndarray, codec: StreamCodec = WRITE_CODEC) -> dict[str, np.ndarray]:
    """(n, S, S) uint8 -> the compact, lossless stored form (see the module docstring).

    Skeleton images are ~95 % zeros: a bit-packed "pixel is lit" mask plus the lit pixels' grey
    values, each compressed, take ~1.9-2.0 KB a 256x256 anti-aliased frame against ~2.9 KB for the
    whole image deflated (docs/storage.md has the measurements). Non-anti-aliased images are all
    0/255, so their value stream compresses to almost nothing.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, S, S), got {images.shape}")
    lit = images > 0
    return {
        "images_shape": np.asarray(images.shape, dtype=np.int64),
        "images_mask" + codec.suffix: codec.compress(np.packbits(lit, axis=-1).tobytes()),
        "images_values" + codec.suffix: codec.compress(images[lit].tobytes()),
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
    """Inverse of :func:`encode_images` with either codec (a :class:`PackedImages` when ``packed``);
    inconsistent sizes are a ShardCorruptError naming ``where``."""
    codec = ZSTD if "images_mask_zst" in stored else XZ
    shape = tuple(int(v) for v in stored["images_shape"])
    if len(shape) != 3 or min(shape) < 0:
        raise ShardCorruptError(f"{where}: field 'images_shape': expected (n, S, S), got {shape}")
    n, height, width = shape
    row_bytes = (width + 7) // 8
    mask_bytes = codec.decompress(stored["images_mask" + codec.suffix], n * height * row_bytes, where,
                                  "image streams")
    values = np.frombuffer(codec.decompress(stored["images_values" + codec.suffix], n * height * width, where,
                                            "image streams"), dtype=np.uint8)
    if len(mask_bytes) != n * height * row_bytes:
        raise ShardCorruptError(f"{where}: image mask holds {len(mask_bytes)} bytes, "
                                f"expected {n * height * row_bytes} for images {shape}")
    mask = np.frombuffer(mask_bytes, dtype=np.uint8).reshape(n, height, row_bytes)
    images = PackedImages(mask, values, width, where)
    return images if packed else images.decode()


# Points stored per frame: the 143 keypoints, then the 68 face points (the face column of the shard).
_STORED_POINTS = layout.N_POINTS + layout.N_FACE


def encode_points(keypoints: np.ndarray, face: np.ndarray, codec: StreamCodec = WRITE_CODEC) -> np.ndarray:
    """Keypoints (n, 143, 3) and face (n, 68, 3) float32 -> one lossless compressed stream (uint8 array).

    The float32 bytes are split into four byte planes and each plane is laid out time-major (every
    frame's value of one coordinate in a row): sign/exponent bytes and successive frames of one point
    are then near-identical neighbours, which xz or zstd turn into ~650-700 B a frame against
    ~1,450-1,560 B for the two arrays deflated (docs/storage.md). The face columns repeat the first 68
    keypoints; with a window that spans the stream they cost ~2 B a frame.
    """
    points = np.concatenate([np.asarray(keypoints, dtype="<f4"), np.asarray(face, dtype="<f4")], axis=1)
    n = len(points)
    values = _STORED_POINTS * 3
    planes = points.reshape(n, values).view(np.uint8).reshape(n, values, 4).transpose(2, 1, 0)
    return codec.compress(np.ascontiguousarray(planes).tobytes(), span=True)


def decode_points(stream: np.ndarray, n: int, where: str = "shard", codec: StreamCodec = WRITE_CODEC
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_points`: (keypoints (n, 143, 3), face (n, 68, 3)) float32."""
    values = _STORED_POINTS * 3
    field = f"field 'points{codec.suffix}'"
    raw = codec.decompress(stream, n * values * 4, where, field)
    if len(raw) != n * values * 4:
        raise ShardCorruptError(f"{where}: {field} holds {len(raw)} bytes, expected {n * values * 4} "
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


def _xz(data: bytes, preset: int = 0, span: bool = False) -> np.ndarray:
    # Preset 0: nearly the ratio of preset 6 on these streams at ~9x the speed (docs/storage.md).
    # ``span``: a dictionary as long as the stream (up to 32 MiB) so matches reach back to its start.
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset}]
    if span:
        filters[0]["dict_size"] = min(max(len(data), 1 << 16), 1 << 25)
    return np.frombuffer(lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters), dtype=np.uint8)


def _zstd(data: bytes, level: int, span: bool = False) -> np.ndarray:
    # One frame with its content size (what _unzstd bounds the output by) and a checksum, as xz has.
    # ``span``: a window as long as the stream (up to 32 MiB) so matches reach back to its start.
    import zstandard  # here, not at the top: reading xz shards must not need it

    window = {"window_log": min(max((len(data) - 1).bit_length(), 10), 25)} if span else {}
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(data), write_content_size=True, write_checksum=True, threads=0, **window)
    return np.frombuffer(zstandard.ZstdCompressor(compression_params=params).compress(data), dtype=np.uint8)


def _unzstd(stream: np.ndarray, limit: int, where: str, what: str) -> bytes:
    """Decompress one zstd frame of a shard, never to more than ``limit`` bytes: the frame must state
    its content size, a size above ``limit`` is refused before decompressing, and the output buffer
    is that size (a frame that inflates past it is an error, not a bigger buffer)."""
    import zstandard

    data = stream.tobytes()
    try:
        size = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as e:
        raise ShardCorruptError(f"{where}: {what} cannot be decompressed ({e})") from e
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        raise ShardCorruptError(f"{where}: {what} cannot be decompressed (zstd frame without its content size)")
    if size > limit:
        raise ShardCorruptError(f"{where}: {what} would decompress to more than the {limit} bytes the "
                                "shard's shape allows")
    try:
        return zstandard.ZstdDecompressor().decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise ShardCorruptError(f"{where}: {what} cannot be decompressed ({e})") from e


def encode_shard(arrays: dict[str, np.ndarray], codec: StreamCodec = WRITE_CODEC) -> bytes:
    """Arrays (the SHARD_FIELDS) -> deterministic .npz bytes (fixed entry order and timestamps), the
    streams compressed by ``codec`` (default: that of SHARD_FORMAT; ``XZ`` writes shard format v2)."""
    stored = {name: arrays[name] for name in _ID_FIELDS}
    stored["points" + codec.suffix] = encode_points(arrays["keypoints"], arrays["face"], codec)
    stored.update(encode_images(arrays["images"], codec))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name in STORED_FIELDS_ZSTD if codec.name == "zstd" else STORED_FIELDS_V2:
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(stored[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            # The streams are compressed already; deflating them again would only cost time.
            method = zipfile.ZIP_STORED if name.endswith(("_xz", "_zst")) else zipfile.ZIP_DEFLATED
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
            names = (STORED_FIELDS_ZSTD if "points_zst" in npz.files else
                     STORED_FIELDS_V2 if "points_xz" in npz.files else STORED_FIELDS_V1)
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
    points = names[0] if names[0].startswith("points") else None
    if points:
        expected[points] = ((len(stored[points]),), np.uint8)
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
    if points:
        codec = ZSTD if points.endswith("_zst") else XZ
        arrays["keypoints"], arrays["face"] = decode_points(stored[points], n, where, codec)
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
