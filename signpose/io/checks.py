"""Validation and coordinate normalisation shared by every reader.

Every reader turns its input into raw (N, 143, 3) arrays and calls :func:`finish` (or the pieces
below), so the rules are the same for all formats (docs/data.md, "Coordinates"):

* values must be finite; confidence must lie in [0, 1] (up to 1.1 is clipped to 1: OpenPose face
  scores reach 1.006); a point with confidence 0 is missing and its x, y are set to 0;
* pixel coordinates are mapped into [0, 1] on a square canvas of the longer frame side, centred
  ("letterbox"), so the aspect ratio is kept: ``x' = (x + (S - W) / 2) / S`` with ``S = max(W, H)``;
* points that land outside [0, 1] (off-frame legs, a hand leaving the picture) become missing;
* a frame with no present point at all is refused (array/pickle formats) -- see the readers for
  videos, which drop empty frames instead.
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
    """Refuse NaN/inf and confidences outside [0, 1]; clip small overshoots; returns ``kp``."""
    sample_ids = np.arange(len(kp)) if sample_ids is None else sample_ids
    bad = ~np.isfinite(kp)
    if bad.any():
        n, p, c = np.argwhere(bad)[0]
        part, local = _point_field(p, point_fields)
        raise KeypointFormatError(file, f"point {local} has a non-finite {'xyc'[c]} value ({kp[n, p, c]})",
                                  sample=sample_ids[n], field=part, split=split)
    conf = kp[..., 2]
    bad = (conf < 0) | (conf > CONFIDENCE_TOLERANCE)
    if bad.any():
        n, p = np.argwhere(bad)[0]
        part, local = _point_field(p, point_fields)
        raise KeypointFormatError(file, f"point {local} has confidence {conf[n, p]:g}, expected a value "
                                  "in [0, 1]", sample=sample_ids[n], field=part, split=split)
    np.clip(conf, 0.0, 1.0, out=conf)
    return kp


def letterbox(kp: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel coordinates of a W x H frame -> [0, 1] of a centred square canvas of side max(W, H)."""
    side = float(max(width, height))
    kp[..., 0] = (kp[..., 0] + (side - width) / 2.0) / side
    kp[..., 1] = (kp[..., 1] + (side - height) / 2.0) / side
    return kp


def normalise_coordinates(kp: np.ndarray, *, file, frame_size=None) -> tuple[np.ndarray, dict]:
    """Bring x, y into [0, 1] (see the module docstring); returns (kp, info about what was done)."""
    present = kp[..., 2] > 0
    info: dict = {"coordinates": "normalised"}
    if frame_size is not None:
        width, height = _frame_size(frame_size, file)
        letterbox(kp, width, height)
        info = {"coordinates": "pixels", "frame_size": (width, height)}
    elif present.any():
        extent = float(np.abs(kp[..., :2][present]).max())
        if extent > PIXEL_THRESHOLD:
            # No frame size known: take the square canvas [0, extent] of the file itself.
            side = float(np.ceil(extent))
            kp[..., :2] /= side
            info = {"coordinates": "pixels", "frame_size": None, "inferred_canvas": side}
            log.info("%s: pixel coordinates without a frame size; normalised by the file's extent %g",
                     file, side)
    xy = kp[..., :2]
    inside = ((xy >= -_EDGE_EPS) & (xy <= 1 + _EDGE_EPS)).all(-1)
    off_frame = present & ~inside
    info["off_frame_points"] = int(off_frame.sum())
    np.clip(xy, 0.0, 1.0, out=xy)
    kp[off_frame] = 0.0
    kp[kp[..., 2] <= 0] = 0.0  # the missing-point convention: all zeros
    return kp, info


def _frame_size(frame_size, file) -> tuple[float, float]:
    try:
        width, height = (float(v) for v in np.asarray(frame_size, dtype=np.float64).reshape(2))
    except (ValueError, TypeError):
        raise KeypointFormatError(file, f"expected (width, height), got {frame_size!r}",
                                  field="frame_size") from None
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise KeypointFormatError(file, f"expected positive (width, height), got {frame_size!r}",
                                  field="frame_size")
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
