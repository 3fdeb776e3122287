"""Validation and coordinate normalisation shared by every reader.

Every reader turns its input into raw (N, 143, 3) arrays and calls :func:`finish` (or the pieces
below), so the rules are the same for all formats (docs/data.md, "Coordinates"):

* a point with confidence 0 is missing and its x, y are set to 0, whatever they held (NaN too); every
  other value must be finite and a confidence lie in [0, 1] (up to 1.1 is clipped to 1: OpenPose face
  scores reach 1.006): a negative or NaN confidence is an error (:func:`check_finite_and_confidence`);
* pixel coordinates are mapped into [0, 1] on a square canvas of the longer frame side, centred
  ("letterbox"), so the aspect ratio is kept: ``x' = (x + (S - W) / 2) / S`` with ``S = max(W, H)``;
* the scale is decided by the bulk of the frames, never by one value: a frame whose largest
  coordinate is more than :data:`OUTLIER_FACTOR` times the file's typical frame extent (the median
  over frames of each frame's largest coordinate; in frame units never below :data:`OUTLIER_FLOOR`)
  holds an outlier (a 3e38 from a broken float, a pixel value in a normalised file) and is
  *rejected*: dropped, counted in the :class:`ReadReport` with the first offending value, and the
  read fails when more than ``--max_rejected`` of its frames are rejected (:mod:`signpose.io.limits`);
* points that land outside [0, 1] (off-frame legs, a hand leaving the picture) become missing, counted;
* a frame with no present point at all is refused (array/pickle formats) -- see the readers for
  videos, which drop empty frames instead.

Large inputs are checked in blocks of :data:`CHUNK` frames, so the temporaries stay small next to the
keypoints themselves.
"""

from __future__ import annotations

import logging

import numpy as np

from signpose import layout
from signpose.io.errors import KeypointFormatError

log = logging.getLogger(__name__)

# Confidence a little above 1 occurs in real extractor output; more than this is not a confidence.
CONFIDENCE_TOLERANCE = 1.1
# A present coordinate beyond this cannot be a [0, 1] coordinate: the file holds pixels.
PIXEL_THRESHOLD = 2.0
# Rounding slack at the frame border before a point counts as off-frame.
_EDGE_EPS = 1e-3
# A frame reaching further than this many times the file's typical frame extent holds an outlier ...
OUTLIER_FACTOR = 4.0
# ... and, in frame units ([0, 1] is the frame), never a point within two frame sizes of the origin.
OUTLIER_FLOOR = 2.0
CHUNK = 16384
# A frame size beyond this is not a video's (a 16K frame is 15360 pixels wide).
MAX_FRAME_SIDE = 100_000


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (and never failing: huge integers have no repr)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_value(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def as_point_array(value, n_points: int | None, *, file, field: str, sample=None, split=None,
                   leading: int = 0) -> np.ndarray:
    """``value`` as a float32 array of shape (*leading dims, n_points, 3), or a clear error.

    Accepts numpy arrays and nested lists/tuples of numbers; ``n_points=None`` accepts any count.
    """
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise KeypointFormatError(file, "expected an array of numbers, got a ragged nested list",
                                      sample=sample, field=field, split=split) from None
    else:
        raise KeypointFormatError(file, f"expected an array of (x, y, confidence) points, got "
                                  f"{describe_value(value)}", sample=sample, field=field, split=split)
    if arr.dtype.kind not in "biuf":
        raise KeypointFormatError(file, f"expected numbers, got an array of dtype {arr.dtype}",
                                  sample=sample, field=field, split=split)
    want_ndim = leading + 2
    shape_text = "(" + ", ".join(["N"] * leading + [str(n_points) if n_points else "P", "3"]) + ")"
    if arr.ndim != want_ndim or arr.shape[-1] != 3 or (n_points is not None and arr.shape[-2] != n_points):
        raise KeypointFormatError(file, f"expected shape {shape_text}, got {arr.shape}",
                                  sample=sample, field=field, split=split)
    return arr.astype(np.float32, copy=False)


def _point_field(point: int, point_fields: tuple[str, ...] | None) -> tuple[str, int]:
    """Part name and index within the part of global point ``point``."""
    if point_fields is not None:
        return point_fields[0], point
    part = layout.PARTS[layout.PART_IDS[point]]
    return part, point - layout.PART_SLICES[part].start


def check_finite_and_confidence(kp: np.ndarray, *, file, split=None, sample_ids=None,
                                point_fields: tuple[str, ...] | None = None) -> np.ndarray:
    """The one rule for missing points, applied by every reader (docs/data.md, "Coordinates"): a point
    whose confidence is 0 is missing and its x, y are set to 0, whatever they held (NaN included:
    pose-format leaves them so); every other confidence must be finite and in [0, 1] (overshoots up to
    :data:`CONFIDENCE_TOLERANCE` are clipped to 1), and the x, y of a present point finite. A negative or
    NaN confidence is refused, not read as missing: no extractor writes one. Returns ``kp``."""
    sample_ids = np.arange(len(kp)) if sample_ids is None else sample_ids
    for start in range(0, len(kp), CHUNK):
        block = kp[start:start + CHUNK]
        block[block[..., 2] == 0] = 0.0
        bad = ~np.isfinite(block)
        if bad.any():
            n, p, c = np.argwhere(bad)[0]
            part, local = _point_field(p, point_fields)
            raise KeypointFormatError(file, f"point {local} has a non-finite {'xyc'[c]} value ({block[n, p, c]})",
                                      sample=sample_ids[start + n], field=part, split=split)
        conf = block[..., 2]
        bad = (conf < 0) | (conf > CONFIDENCE_TOLERANCE)
        if bad.any():
            n, p = np.argwhere(bad)[0]
            part, local = _point_field(p, point_fields)
            raise KeypointFormatError(file, f"point {local} has confidence {conf[n, p]:g}, expected a value "
                                      "in [0, 1] (0: missing)", sample=sample_ids[start + n], field=part, split=split)
        np.clip(conf, 0.0, 1.0, out=conf)
    return kp


def letterbox(kp: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel coordinates of a W x H frame -> [0, 1] of a centred square canvas of side max(W, H)."""
    side = float(max(width, height))
    for start in range(0, len(kp), CHUNK):
        block = kp[start:start + CHUNK]
        block[..., 0] = (block[..., 0] + (side - width) / 2.0) / side
        block[..., 1] = (block[..., 1] + (side - height) / 2.0) / side
    return kp


def frame_extents(kp: np.ndarray) -> np.ndarray:
    """(N,) float64: each frame's largest |x| or |y| over its present points; -1 for a frame without one."""
    out = np.full(len(kp), -1.0)
    for start in range(0, len(kp), CHUNK):
        block = kp[start:start + CHUNK]
        magnitude = np.abs(block[..., :2]).max(-1)
        magnitude[~(block[..., 2] > 0)] = -1.0
        if magnitude.shape[1]:
            out[start:start + len(block)] = magnitude.max(-1)
    return out


def _first_outlier(kp: np.ndarray, rejected: np.ndarray, sample_ids, point_fields, part_names) -> dict:
    """Where the first rejected frame's largest coordinate is, and its value (for the report)."""
    n = int(np.argmax(rejected))
    magnitude = np.abs(kp[n, :, :2]).astype(np.float64)
    magnitude[~(kp[n, :, 2] > 0)] = -1.0
    p, axis = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    part, local = _point_field(int(p), point_fields)
    return {"sample": int(sample_ids[n]) if sample_ids is not None else n,
            "field": (part_names or {}).get(part, part), "point": int(local), "axis": "xy"[axis],
            "value": float(kp[n, p, axis]), "index": n}


def normalise_coordinates(kp: np.ndarray, *, file, frame_size=None, sample_ids=None,
                          point_fields: tuple[str, ...] | None = None,
                          part_names: dict[str, str] | None = None) -> tuple[np.ndarray, dict]:
    """Bring x, y into [0, 1] in place (see the module docstring); returns (kp, info about what was done).

    ``info['rejected']`` is the (N,) mask of frames rejected for an outlier coordinate (set all
    missing here; the caller drops them), ``info['first_rejected']`` where the first one's outlier is
    (sample id from ``sample_ids``, field named by ``part_names`` when given), ``info['off_frame_points']``
    how many points were set missing for lying outside the frame.
    """
    info: dict = {"coordinates": "normalised"}
    if frame_size is not None:
        width, height = _frame_size(frame_size, file)
        letterbox(kp, width, height)
        info = {"coordinates": "pixels", "frame_size": (width, height)}
    extent = frame_extents(kp)
    seen = extent >= 0
    rejected = np.zeros(len(kp), dtype=bool)
    if seen.any():
        typical = float(np.median(extent[seen]))
        in_frame_units = frame_size is not None or typical <= PIXEL_THRESHOLD
        limit = max(OUTLIER_FACTOR * typical, OUTLIER_FLOOR) if in_frame_units else OUTLIER_FACTOR * typical
        rejected = extent > limit
        if rejected.any():
            info["first_rejected"] = _first_outlier(kp, rejected, sample_ids, point_fields, part_names)
            info["outlier_limit"] = limit
        if not in_frame_units:
            # No frame size known: take the square canvas [0, extent] of the file's accepted frames.
            side = float(np.ceil(extent[seen & ~rejected].max()))
            for start in range(0, len(kp), CHUNK):
                kp[start:start + CHUNK, :, :2] /= side
            info = {**info, "coordinates": "pixels", "frame_size": None, "inferred_canvas": side}
            log.info("%s: pixel coordinates without a frame size; normalised by the file's extent %g",
                     file, side)
    info["rejected"] = rejected
    info["off_frame_points"] = _clip_to_frame(kp, rejected)
    return kp, info


def _clip_to_frame(kp: np.ndarray, rejected: np.ndarray) -> int:
    """Points outside [0, 1] become missing, 1e-3 of slack is clipped, missing points are all zeros and
    rejected frames all missing; returns the number of off-frame points (rejected frames not counted)."""
    off = 0
    for start in range(0, len(kp), CHUNK):
        block = kp[start:start + CHUNK]
        xy = block[..., :2]
        inside = ((xy >= -_EDGE_EPS) & (xy <= 1 + _EDGE_EPS)).all(-1)
        off_frame = (block[..., 2] > 0) & ~inside
        off_frame[rejected[start:start + CHUNK]] = False
        off += int(off_frame.sum())
        np.clip(xy, 0.0, 1.0, out=xy)
        block[off_frame] = 0.0
        block[block[..., 2] <= 0] = 0.0  # the missing-point convention: all zeros
        block[rejected[start:start + CHUNK]] = 0.0
    return off


def _frame_size(frame_size, file) -> tuple[float, float]:
    try:
        width, height = (float(v) for v in np.asarray(frame_size, dtype=np.float64).reshape(2))
    except (ValueError, TypeError, OverflowError):
        raise KeypointFormatError(file, f"expected (width, height), got {short_repr(frame_size)}",
                                  field="frame_size") from None
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise KeypointFormatError(file, f"expected positive (width, height), got {short_repr(frame_size)}",
                                  field="frame_size")
    if max(width, height) > MAX_FRAME_SIDE:
        raise KeypointFormatError(file, f"a frame of {width:g} x {height:g} pixels; frame sides are at most "
                                  f"{MAX_FRAME_SIDE} pixels (every point would land in one corner)", field="frame_size")
    return width, height


def check_not_empty_frames(kp: np.ndarray, *, file, split=None, sample_ids=None,
                           field: str = "keypoints") -> None:
    """Refuse frames in which no point is present."""
    empty = ~(kp[..., 2] > 0).any(-1)
    if empty.any():
        n = int(np.argmax(empty))
        sample_ids = np.arange(len(kp)) if sample_ids is None else sample_ids
        raise KeypointFormatError(file, f"every point is missing (confidence 0 / all zeros) in this frame "
                                  f"({int(empty.sum())} such frames in all)", sample=sample_ids[n],
                                  field=field, split=split)


def embed_face(face: np.ndarray) -> np.ndarray:
    """(N, 68, 3) face-only -> (N, 143, 3) with the other parts missing."""
    kp = np.zeros((len(face), layout.N_POINTS, 3), dtype=np.float32)
    kp[:, layout.FACE] = face
    return kp
