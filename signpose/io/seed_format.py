"""The seed's two pickle structures (also used for .npz/.npy content), parsed into KeypointFrames.

Skeleton format: ``data['train'|'dev'|'test']['keypoints']`` = list of per-frame dicts with ``face``
(68, 3), ``left_hand`` (21, 3), ``right_hand`` (21, 3), ``pose`` (33, 3); optional per-split
``video_id`` / ``frame_index`` lists and a top-level ``frame_size`` (width, height) when the
coordinates are pixels. Face-only format: ``data['keypoints']`` = (N, 68, 3) array.
"""

from __future__ import annotations

import os

import numpy as np

from signpose import layout
from signpose.io import checks
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import SPLITS, KeypointFrames

# Top-level keys allowed next to the splits / the face array.
_OPTIONAL_KEYS = ("frame_size", "meta", "video_id", "frame_index", "split")
_PART_SHAPES = {name: (layout.PART_SIZES[name], 3) for name in layout.PARTS}


def parse_seed_object(obj, file, frame_size=None, format_name: str = "seed-pickle") -> KeypointFrames:
    """Validate and convert an unpickled seed object (see the module docstring)."""
    file = os.fspath(file)
    if not isinstance(obj, dict):
        raise KeypointFormatError(file, "expected a dict with 'train'/'dev'/'test' splits or a 'keypoints' "
                                  f"array at the top level, got {checks.describe_value(obj)}")
    if frame_size is None and "frame_size" in obj:
        frame_size = obj["frame_size"]
    has_splits = [s for s in SPLITS if s in obj]
    if "keypoints" in obj and has_splits:
        raise KeypointFormatError(file, "has both a top-level 'keypoints' array and splits "
                                  f"{has_splits}; expected one of the two seed formats")
    if "keypoints" in obj:
        return _parse_flat(obj, file, frame_size, format_name)
    unknown = [k for k in obj if k not in SPLITS and k not in _OPTIONAL_KEYS]
    if not has_splits:
        raise KeypointFormatError(file, "no 'train'/'dev'/'test' split and no 'keypoints' array; "
                                  f"top-level keys are {sorted(map(str, obj))}", field="train")
    if unknown:
        raise KeypointFormatError(file, f"unknown top-level key {str(unknown[0])!r}; expected the splits "
                                  f"{SPLITS} (and optionally {_OPTIONAL_KEYS[:2]})", field=str(unknown[0]))
    if "train" not in obj:
        raise KeypointFormatError(file, f"split 'train' is missing (found {has_splits})", field="train")

    stem = os.path.splitext(os.path.basename(file))[0]
    parts = []
    for split in has_splits:
        kp, video_id, frame_index = _parse_split(obj[split], file, split, stem)
        checks.check_finite_and_confidence(kp, file=file, split=split)
        parts.append(KeypointFrames(kp, np.full(len(kp), split), video_id, frame_index, file, format_name))
    frames = KeypointFrames.concatenate(parts)
    return _normalise_and_check(frames, file, frame_size)


def _normalise_and_check(frames: KeypointFrames, file, frame_size) -> KeypointFrames:
    checks.normalise_coordinates(frames.keypoints, file=file, frame_size=frame_size)
    for split in SPLITS:
        mask = frames.split == split
        if mask.any():
            kp = frames.keypoints[mask]
            checks.check_not_empty_frames(kp, file=file, split=split, field="keypoints")
    return frames


def _parse_split(value, file, split: str, stem: str):
    if not isinstance(value, dict):
        raise KeypointFormatError(file, f"expected a dict with a 'keypoints' list, got "
                                  f"{checks.describe_value(value)}", split=split)
    if "keypoints" not in value:
        raise KeypointFormatError(file, f"missing key 'keypoints' (keys are {sorted(map(str, value))})",
                                  split=split, field="keypoints")
    frames = value["keypoints"]
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        kp = checks.as_point_array(frames, layout.N_POINTS, file=file, field="keypoints", split=split,
                                   leading=1).copy()
    elif isinstance(frames, (list, tuple)):
        kp = _stack_frame_dicts(frames, file, split)
    else:
        raise KeypointFormatError(file, "expected a list of per-frame dicts (or an (N, 143, 3) array), got "
                                  f"{checks.describe_value(frames)}", split=split, field="keypoints")
    n = len(kp)
    if n == 0:
        raise KeypointFormatError(file, "the split is empty (no frames)", split=split, field="keypoints")
    video_id = _optional_column(value, "video_id", n, file, split)
    frame_index = _optional_column(value, "frame_index", n, file, split)
    if video_id is None:
        video_id = np.full(n, f"{stem}:{split}")
    if frame_index is None:
        frame_index = np.arange(n)
    return kp, video_id, frame_index


def _optional_column(container: dict, key: str, n: int, file, split):
    if key not in container:
        return None
    value = container[key]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise KeypointFormatError(file, f"expected a list of {n} values, got {checks.describe_value(value)}",
                                  split=split, field=key)
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise KeypointFormatError(file, f"expected {n} values (one per frame), got shape {arr.shape}",
                                  split=split, field=key)
    if key == "frame_index":
        if arr.dtype.kind not in "iu":
            raise KeypointFormatError(file, f"expected integers, got dtype {arr.dtype}", split=split, field=key)
        if (arr < 0).any():
            raise KeypointFormatError(file, "frame indices must be >= 0", sample=int(np.argmax(arr < 0)),
                                      split=split, field=key)
        return arr.astype(np.int64)
    if arr.dtype.kind not in "UiuS":
        raise KeypointFormatError(file, f"expected strings, got dtype {arr.dtype}", split=split, field=key)
    return arr.astype(str)


def _stack_frame_dicts(frames, file, split: str) -> np.ndarray:
    """List of per-frame dicts -> (N, 143, 3) float32, every frame and field checked."""
    n = len(frames)
    out = np.empty((n, layout.N_POINTS, 3), dtype=np.float32)
    slices = [(name, layout.PART_SLICES[name], _PART_SHAPES[name]) for name in layout.PARTS]
    for i, frame in enumerate(frames):
        if type(frame) is not dict:
            if not isinstance(frame, dict):
                raise KeypointFormatError(file, "expected a dict with keys face/left_hand/right_hand/pose, "
                                          f"got {checks.describe_value(frame)}", split=split, sample=i)
        for name, sl, shape in slices:
            try:
                value = frame[name]
            except KeyError:
                raise KeypointFormatError(file, f"missing key '{name}' (keys are {sorted(map(str, frame))})",
                                          split=split, sample=i, field=name) from None
            if not (type(value) is np.ndarray and value.shape == shape and value.dtype.kind in "fiu"):
                value = checks.as_point_array(value, shape[0], file=file, field=name, sample=i, split=split)
            out[i, sl] = value
    return out


def _parse_flat(obj: dict, file, frame_size, format_name: str) -> KeypointFrames:
    """``{'keypoints': (N, 68, 3) | (N, 143, 3)}`` plus optional split/video_id/frame_index columns."""
    value = obj["keypoints"]
    if not isinstance(value, np.ndarray):
        raise KeypointFormatError(file, f"expected an (N, 68, 3) array, got {checks.describe_value(value)}",
                                  field="keypoints")
    if value.ndim == 3 and value.shape[1] == layout.N_POINTS:
        kp = checks.as_point_array(value, layout.N_POINTS, file=file, field="keypoints", leading=1).copy()
        point_fields = None
        format_name = format_name.replace("seed-pickle", "keypoints-pickle")
    elif value.ndim == 3 and value.shape[1:] == (layout.N_FACE, 3):
        face = checks.as_point_array(value, layout.N_FACE, file=file, field="keypoints", leading=1)
        kp = checks.embed_face(face)
        point_fields = ("keypoints",)
        format_name = format_name.replace("seed-pickle", "face-pickle")
    else:
        raise KeypointFormatError(file, f"expected shape (N, 68, 3) (faces) or (N, 143, 3) (whole frames), got "
                                  f"{value.shape}", field="keypoints")
    n = len(kp)
    if n == 0:
        raise KeypointFormatError(file, "no frames (empty array)", field="keypoints")
    checks.check_finite_and_confidence(kp, file=file, point_fields=point_fields)
    stem = os.path.splitext(os.path.basename(file))[0]
    split = _optional_column(obj, "split", n, file, None)
    if split is None:
        split = np.full(n, "train")
    bad = ~np.isin(split, SPLITS)
    if bad.any():
        raise KeypointFormatError(file, f"unknown split name {split[bad][0]!r}; expected one of {SPLITS}",
                                  sample=int(np.argmax(bad)), field="split")
    video_id = _optional_column(obj, "video_id", n, file, None)
    frame_index = _optional_column(obj, "frame_index", n, file, None)
    frames = KeypointFrames(kp, split, np.full(n, stem) if video_id is None else video_id,
                            np.arange(n) if frame_index is None else frame_index, file, format_name)
    checks.normalise_coordinates(frames.keypoints, file=file, frame_size=frame_size)
    checks.check_not_empty_frames(frames.keypoints, file=file, field="keypoints")
    return frames
