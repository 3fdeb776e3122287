"""``.npz`` / ``.npy``: the seed data as plain numpy files (never unpickled: allow_pickle=False).

``.npz`` keys: ``keypoints`` (N, 143, 3) or (N, 68, 3) -- or the four parts ``face`` (N, 68, 3),
``left_hand`` / ``right_hand`` (N, 21, 3), ``pose`` (N, 33, 3) -- and optionally ``split`` (N,) str,
``video_id`` (N,) str, ``frame_index`` (N,) int, ``frame_size`` (2,) = (width, height) in pixels.
``.npy``: one (N, 143, 3) or (N, 68, 3) array, all frames in the 'train' split.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from signpose import layout
from signpose.io import checks
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.seed_format import parse_seed_object

_COLUMNS = ("split", "video_id", "frame_index", "frame_size")
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def read_npz(path, frame_size=None) -> KeypointFrames:
    file = os.fspath(path)
    data, names = {}, []
    with open(file, "rb") as handle:  # our handle: closed even when numpy gives up half-way
        try:
            archive = np.load(handle, allow_pickle=False)
        except _LOAD_ERRORS as err:
            raise KeypointFormatError(file, f"not a readable .npz archive (truncated or corrupt): {err}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise KeypointFormatError(file, "expected an .npz archive, found a single .npy array")
        with archive:
            names = list(archive.files)
            for name in names:
                try:
                    data[name] = archive[name]
                except _LOAD_ERRORS as err:
                    raise KeypointFormatError(file, f"cannot read array (corrupt, or an object array that would "
                                              f"need unpickling): {err}", field=name) from None
    parts_given = [p for p in layout.PARTS if p in data]
    if "keypoints" not in data and not parts_given:
        raise KeypointFormatError(file, f"no 'keypoints' array and no part arrays {layout.PARTS}; "
                                  f"arrays are {sorted(names)}", field="keypoints")
    unknown = [k for k in names if k not in ("keypoints", *layout.PARTS, *_COLUMNS)]
    if unknown:
        raise KeypointFormatError(file, f"unknown array {unknown[0]!r}", field=unknown[0])
    if parts_given:
        if "keypoints" in data:
            raise KeypointFormatError(file, "has both 'keypoints' and per-part arrays", field="keypoints")
        missing = [p for p in layout.PARTS if p not in data]
        if missing:
            raise KeypointFormatError(file, f"part array '{missing[0]}' is missing", field=missing[0])
        arrays = [checks.as_point_array(data[p], layout.PART_SIZES[p], file=file, field=p, leading=1)
                  for p in layout.PARTS]
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise KeypointFormatError(file, f"part arrays have different frame counts "
                                      f"{[len(a) for a in arrays]}", field="pose")
        data["keypoints"] = np.concatenate(arrays, axis=1)
        for p in layout.PARTS:
            del data[p]
    for column in ("split", "video_id"):
        if column in data:
            data[column] = data[column].tolist() if data[column].ndim == 1 else data[column]
    return parse_seed_object(data, file, frame_size, format_name="npz")


def read_npy(path, frame_size=None) -> KeypointFrames:
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            array = np.load(handle, allow_pickle=False)
            if isinstance(array, np.lib.npyio.NpzFile):
                array.close()
    except _LOAD_ERRORS as err:
        raise KeypointFormatError(file, f"not a readable .npy array (truncated, corrupt, or an object array "
                                  f"that would need unpickling): {err}") from None
    if not isinstance(array, np.ndarray):
        raise KeypointFormatError(file, "expected a single .npy array, found an .npz archive")
    return parse_seed_object({"keypoints": array}, file, frame_size, format_name="npy")
