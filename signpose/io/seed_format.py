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
from signpose.io.limits import FrameBudget
from signpose.io.report import ReadReport

# Top-level keys allowed next to the splits / the face array.
_OPTIONAL_KEYS = ("frame_size", "meta", "video_id", "frame_index", "split")
_PART_SHAPES = {name: (layout.PART_SIZES[name], 3) for name in layout.PARTS}
# A video id or split name longer than this is not one (numpy stores every string at the longest one's width).
MAX_ID_CHARS = 1024


def parse_seed_object(obj, file, frame_size=None, format_name: str = "seed-pickle", *, owned: bool = False,
                      budget: FrameBudget | None = None, report: ReadReport | None = None) -> KeypointFrames:
    """Validate and convert an unpickled seed object (see the module docstring).

    ``owned``: the arrays in ``obj`` were just read and belong to the caller, so they may be
    normalised in place instead of copied. ``budget`` counts the frames against the read's ceiling;
    ``report`` receives the file's validation summary.
    """
    file = os.fspath(file)
    budget = budget or FrameBudget()
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
        return _parse_flat(obj, file, frame_size, format_name, owned, budget, report)
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
    sizes = [_split_size(obj[split], file, split, budget) for split in has_splits]
    keypoints = np.empty((sum(sizes), layout.N_POINTS, 3), dtype=np.float32)  # every split stacked in place
    columns, start = [], 0
    for split, n in zip(has_splits, sizes):
        kp = keypoints[start:start + n]
        video_id, frame_index = _parse_split(obj[split], file, split, stem, kp)
        checks.check_finite_and_confidence(kp, file=file, split=split)
        columns.append((np.full(n, split), video_id, frame_index))
        start += n
    frames = KeypointFrames(keypoints, *(np.concatenate(c) for c in zip(*columns)), file, format_name)
    return _normalise_and_check(frames, file, frame_size, report, by_split=True)


def _normalise_and_check(frames: KeypointFrames, file, frame_size, report: ReadReport | None, *, by_split: bool,
                         point_fields=None) -> KeypointFrames:
    """Normalise, leave out rejected frames, refuse empty frames. Samples are numbered within their
    split (``by_split``, the skeleton format) or within the file."""
    n = len(frames)
    positions = np.arange(n)
    if by_split:
        for split in SPLITS:
            mask = frames.split == split
            positions[mask] = np.arange(int(mask.sum()))
    _, info = checks.normalise_coordinates(frames.keypoints, file=file, frame_size=frame_size, sample_ids=positions,
                                           point_fields=point_fields)
    rejected = info["rejected"]
    if report is not None:
        split_names = frames.split
        report.add_file(file, n, n - int(rejected.sum()), info,
                        split_of=(lambda i: str(split_names[i])) if by_split else None)
    if rejected.any():
        frames, positions = frames.subset(~rejected), positions[~rejected]
    frames.report = report
    for split in (SPLITS if by_split else (None,)):
        mask = frames.split == split if split else np.ones(len(frames), dtype=bool)
        if mask.all():
            checks.check_not_empty_frames(frames.keypoints, file=file, split=split, sample_ids=positions,
                                          field="keypoints")
        elif mask.any():
            checks.check_not_empty_frames(frames.keypoints[mask], file=file, split=split, sample_ids=positions[mask],
                                          field="keypoints")
    return frames


def _split_size(value, file, split: str, budget: FrameBudget) -> int:
    """The frame count of one split (its structure checked), taken from the read's frame budget."""
    if not isinstance(value, dict):
        raise KeypointFormatError(file, f"expected a dict with a 'keypoints' list, got "
                                  f"{checks.describe_value(value)}", split=split)
    if "keypoints" not in value:
        raise KeypointFormatError(file, f"missing key 'keypoints' (keys are {sorted(map(str, value))})",
                                  split=split, field="keypoints")
    frames = value["keypoints"]
    if not (isinstance(frames, np.ndarray) and frames.ndim == 3) and not isinstance(frames, (list, tuple)):
        raise KeypointFormatError(file, "expected a list of per-frame dicts (or an (N, 143, 3) array), got "
                                  f"{checks.describe_value(frames)}", split=split, field="keypoints")
    budget.take(file, len(frames), split=split, field="keypoints")
    return len(frames)


def _parse_split(value: dict, file, split: str, stem: str, out: np.ndarray):
    """Fill ``out`` with the split's frames; returns its video ids and frame indices."""
    frames = value["keypoints"]
    n = len(out)
    if n == 0:
        raise KeypointFormatError(file, "the split is empty (no frames)", split=split, field="keypoints")
    if isinstance(frames, np.ndarray):
        out[:] = checks.as_point_array(frames, layout.N_POINTS, file=file, field="keypoints", split=split, leading=1)
    else:
        _stack_frame_dicts(frames, file, split, out)
    video_id = _optional_column(value, "video_id", n, file, split)
    frame_index = _optional_column(value, "frame_index", n, file, split)
    if video_id is None:
        video_id = np.full(n, f"{stem}:{split}")
    if frame_index is None:
        frame_index = np.arange(n)
    return video_id, frame_index


def _own(arr: np.ndarray, given, owned: bool) -> np.ndarray:
    """``arr`` to normalise in place: a copy only when it is still the caller's array."""
    return arr.copy() if arr is given and not owned else arr


def _optional_column(container: dict, key: str, n: int, file, split):
    if key not in container:
        return None
    value = container[key]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise KeypointFormatError(file, f"expected a list of {n} values, got {checks.describe_value(value)}",
                                  split=split, field=key)
    if not isinstance(value, np.ndarray):
        if len(value) != n:
            raise KeypointFormatError(file, f"expected {n} values (one per frame), got {len(value)}", split=split,
                                      field=key)
        longest = max((len(v) for v in value if isinstance(v, (str, bytes))), default=0)
        if longest > MAX_ID_CHARS:
            raise KeypointFormatError(file, f"a value of {longest} characters; ids and split names are at most "
                                      f"{MAX_ID_CHARS}", split=split, field=key)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as err:
        raise KeypointFormatError(file, f"expected {n} plain values, got a nested or mixed list ({err})",
                                  split=split, field=key) from None
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


def _stack_frame_dicts(frames, file, split: str, out: np.ndarray) -> np.ndarray:
    """List of per-frame dicts -> ``out`` (N, 143, 3) float32, every frame and field checked."""
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


def _parse_flat(obj: dict, file, frame_size, format_name: str, owned: bool, budget: FrameBudget,
                report: ReadReport | None) -> KeypointFrames:
    """``{'keypoints': (N, 68, 3) | (N, 143, 3)}`` plus optional split/video_id/frame_index columns."""
    value = obj["keypoints"]
    if not isinstance(value, np.ndarray):
        raise KeypointFormatError(file, f"expected an (N, 68, 3) array, got {checks.describe_value(value)}",
                                  field="keypoints")
    if value.ndim == 3:
        budget.take(file, len(value), field="keypoints")
    if value.ndim == 3 and value.shape[1] == layout.N_POINTS:
        kp = _own(checks.as_point_array(value, layout.N_POINTS, file=file, field="keypoints", leading=1), value,
                  owned)
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
    return _normalise_and_check(frames, file, frame_size, report, by_split=False, point_fields=point_fields)
