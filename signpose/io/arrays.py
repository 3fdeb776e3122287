"""``.npz`` / ``.npy``: the seed data as plain numpy files (never unpickled: allow_pickle=False).

``.npz`` keys: ``keypoints`` (N, 143, 3) or (N, 68, 3) -- or the four parts ``face`` (N, 68, 3),
``left_hand`` / ``right_hand`` (N, 21, 3), ``pose`` (N, 33, 3) -- and optionally ``split`` (N,) str,
``video_id`` (N,) str, ``frame_index`` (N,) int, ``frame_size`` (2,) = (width, height) in pixels.
``.npy``: one (N, 143, 3) or (N, 68, 3) array, all frames in the 'train' split.

Every array's header (shape, dtype) is read and checked before its data: the bytes it declares must
be in the file (an ``.npy``) or within the member's declared uncompressed size (an ``.npz``), its
frames within the read's frame ceiling (:mod:`signpose.io.limits`), a point array's decoded size at
most :data:`MAX_FRAME_BYTES` per frame (so at most the frame ceiling's worth of keypoints, however
well it compresses: a valid file of mostly missing points deflates 200x), and a column holds at most
one value per frame allowed. Only then is it loaded, so a small file cannot make the reader
allocate gigabytes.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib

import numpy as np

from signpose import layout
from signpose.io import checks
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.limits import FrameBudget
from signpose.io.safe_files import open_regular, size_text
from signpose.io.seed_format import parse_seed_object

_COLUMNS = ("split", "video_id", "frame_index", "frame_size")
_POINT_ARRAYS = ("keypoints", *layout.PARTS)
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
MAX_FRAME_BYTES = layout.N_POINTS * 3 * 8  # the widest keypoint frame: 143 points x (x, y, conf) float64
MAX_COLUMN_ITEM_BYTES = 4096  # a video id of 1024 characters


def _read_header(stream, file: str, field: str | None):
    """(shape, dtype, header length) of the .npy data at ``stream``'s position."""
    fmt = np.lib.format
    start = stream.tell()
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(stream)
        else:
            shape, _, dtype = fmt._read_array_header(stream, version)
    except Exception as err:  # numpy's header parser (ast, tokenize, zlib below it): any failure is a bad file
        raise KeypointFormatError(file, f"not a readable .npy array header (truncated or corrupt): "
                                  f"{type(err).__name__}: {err}", field=field) from None
    return shape, dtype, stream.tell() - start


def _check_array(file: str, field: str | None, shape, dtype, available: int, budget: FrameBudget,
                 *, frames: int | None = None) -> int:
    """Refuse an array header before its data is read (see the module docstring); returns its frame
    count. ``frames``: None for a point array (checked against the frame ceiling), else the frame
    count of the file's point arrays, which a column may not exceed."""
    if dtype.hasobject:
        raise KeypointFormatError(file, "cannot read array: an object array that would need unpickling "
                                  "(keypoint arrays hold numbers)", field=field)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        kind = "array" if field else ".npy array"
        raise KeypointFormatError(file, f"not a readable {kind}: the header declares shape {shape} of {dtype} "
                                  f"({size_text(nbytes)}) but only {size_text(available)} of data follow (truncated "
                                  "or crafted)", field=field)
    count = shape[0] if shape else 1
    if frames is None:
        if nbytes > max(count, 1) * MAX_FRAME_BYTES:  # the decoded size, whatever the compression ratio
            raise KeypointFormatError(file, f"the header declares shape {shape} of {dtype}: {size_text(nbytes)}, more "
                                      f"than {count:,} keypoint frames hold ({layout.N_POINTS} x 3 float64 = "
                                      f"{MAX_FRAME_BYTES:,} bytes a frame)", field=field)
        if count > budget.left:
            budget.take(file, count, field=field)  # raises: more frames than the ceiling allows
    elif field == "frame_size":
        if math.prod(shape) > 2:
            raise KeypointFormatError(file, f"expected (width, height), got shape {shape}", field=field)
    elif count > frames or math.prod(shape[1:]) > 1 or dtype.itemsize > MAX_COLUMN_ITEM_BYTES:
        raise KeypointFormatError(file, f"expected one value per frame ({frames} frames), got shape {shape} of "
                                  f"{dtype}", field=field)
    return count


def _check_npz_members(archive: zipfile.ZipFile, file: str, budget: FrameBudget) -> list[str]:
    """The array names of an .npz, every member's header checked before any data is read."""
    members = {(info.filename[:-4] if info.filename.endswith(".npy") else info.filename): info
               for info in archive.infolist()}
    if "keypoints" not in members and not any(p in members for p in layout.PARTS):
        raise KeypointFormatError(file, f"no 'keypoints' array and no part arrays {layout.PARTS}; "
                                  f"arrays are {sorted(members)}", field="keypoints")
    unknown = [name for name in members if name not in _POINT_ARRAYS and name not in _COLUMNS]
    if unknown:
        raise KeypointFormatError(file, f"unknown array {unknown[0]!r}", field=unknown[0])
    frames = 0
    for name in sorted(members, key=lambda name: name not in _POINT_ARRAYS):  # point arrays first
        info = members[name]
        with archive.open(info) as member:
            shape, dtype, header = _read_header(member, file, name)
        point_array = name in _POINT_ARRAYS
        count = _check_array(file, name, shape, dtype, info.file_size - header, budget,
                             frames=None if point_array else frames)
        frames = max(frames, count) if point_array else frames
    return list(members)


def _load_npz(file: str, budget: FrameBudget) -> dict:
    data = {}
    with open_regular(file) as handle:  # our handle: closed even when numpy gives up half-way
        try:
            with zipfile.ZipFile(handle) as archive:
                names = _check_npz_members(archive, file, budget)
        except KeypointFormatError:
            raise
        except (*_LOAD_ERRORS, NotImplementedError) as err:
            raise KeypointFormatError(file, f"not a readable .npz archive (truncated or corrupt): {err}") from None
        handle.seek(0)
        try:
            archive = np.load(handle, allow_pickle=False)
        except _LOAD_ERRORS as err:
            raise KeypointFormatError(file, f"not a readable .npz archive (truncated or corrupt): {err}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise KeypointFormatError(file, "expected an .npz archive, found a single .npy array")
        with archive:
            for name in names:
                try:
                    data[name] = archive[name]
                except _LOAD_ERRORS as err:
                    raise KeypointFormatError(file, f"cannot read array (corrupt, or an object array that would "
                                              f"need unpickling): {err}", field=name) from None
    return data


def read_npz(path, frame_size=None, *, budget: FrameBudget | None = None,
             report: checks.ReadReport | None = None) -> KeypointFrames:
    file = os.fspath(path)
    budget = budget or FrameBudget()
    data = _load_npz(file, budget)
    parts_given = [p for p in layout.PARTS if p in data]
    if parts_given:
        if "keypoints" in data:
            raise KeypointFormatError(file, "has both 'keypoints' and per-part arrays", field="keypoints")
        missing = [p for p in layout.PARTS if p not in data]
        if missing:
            raise KeypointFormatError(file, f"part array '{missing[0]}' is missing", field=missing[0])
        arrays = [checks.as_point_array(data.pop(p), layout.PART_SIZES[p], file=file, field=p, leading=1)
                  for p in layout.PARTS]
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise KeypointFormatError(file, f"part arrays have different frame counts "
                                      f"{[len(a) for a in arrays]}", field="pose")
        data["keypoints"] = np.concatenate(arrays, axis=1)
        del arrays
    for column in ("split", "video_id"):
        if column in data:
            data[column] = data[column].tolist() if data[column].ndim == 1 else data[column]
    return parse_seed_object(data, file, frame_size, format_name="npz", owned=True, budget=budget, report=report)


def read_npy(path, frame_size=None, *, budget: FrameBudget | None = None,
             report: checks.ReadReport | None = None) -> KeypointFrames:
    file = os.fspath(path)
    budget = budget or FrameBudget()
    with open_regular(file) as handle:
        size = os.fstat(handle.fileno()).st_size
        shape, dtype, header = _read_header(handle, file, None)
        _check_array(file, None, shape, dtype, size - header, budget)
        handle.seek(0)
        try:
            array = np.load(handle, allow_pickle=False)
        except _LOAD_ERRORS as err:
            raise KeypointFormatError(file, f"not a readable .npy array (truncated, corrupt, or an object array "
                                      f"that would need unpickling): {err}") from None
    if not isinstance(array, np.ndarray):
        raise KeypointFormatError(file, "expected a single .npy array, found an .npz archive")
    return parse_seed_object({"keypoints": array}, file, frame_size, format_name="npy", owned=True, budget=budget,
                             report=report)
