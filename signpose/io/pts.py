"""iBUG-300W ``.pts`` landmark files (68 face points), one file per face image.

    version: 1
    n_points: 68
    {
    x y        (68 lines, pixel coordinates)
    }

A path is one ``.pts`` file or a folder of them (one sample each, sorted by name; the video id is the
file stem). Coordinates are normalised by the size of the image next to the file (same stem, .jpg /
.jpeg / .png) when there is one; otherwise all files read together share one scale, their extent
(see checks.py). Every point is present with confidence 1. Only the face slice is filled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from signpose import layout
from signpose.io import checks
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.limits import FrameBudget
from signpose.io.report import ReadReport
from signpose.io.safe_files import check_inside, folder_members, open_regular, read_regular

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".PNG")
# A 68-point .pts file is about 1 kB.
MAX_PTS_BYTES = 1 << 20


def parse_pts(text: str, file: str, sample: int = 0) -> np.ndarray:
    """The text of one .pts file -> (68, 2) float32 pixel coordinates."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    header = {}
    i = 0
    while i < len(lines) and ":" in lines[i]:
        key, _, value = lines[i].partition(":")
        header[key.strip()] = value.strip()
        i += 1
    if "n_points" not in header:
        raise KeypointFormatError(file, "missing the 'n_points:' header line", sample=sample, field="n_points")
    try:
        n_points = int(header["n_points"])
    except ValueError:
        raise KeypointFormatError(file, f"expected an integer, got {header['n_points']!r}", sample=sample,
                                  field="n_points") from None
    if n_points != layout.N_FACE:
        raise KeypointFormatError(file, f"expected 68 points (iBUG-300W), the file declares {n_points}",
                                  sample=sample, field="n_points")
    if i >= len(lines) or lines[i] != "{" or lines[-1] != "}":
        raise KeypointFormatError(file, "expected the points between '{' and '}' lines (truncated file?)",
                                  sample=sample, field="points")
    rows = lines[i + 1:-1]
    if len(rows) != n_points:
        raise KeypointFormatError(file, f"expected {n_points} point lines, got {len(rows)}", sample=sample,
                                  field="points")
    out = np.empty((n_points, 2), dtype=np.float32)
    for k, row in enumerate(rows):
        fields = row.split()
        try:
            if len(fields) != 2:
                raise ValueError
            out[k] = [float(fields[0]), float(fields[1])]
        except ValueError:
            raise KeypointFormatError(file, f"point {k}: expected 'x y', got {row!r}", sample=sample,
                                      field="points") from None
    return out


def _image_size(pts_path: Path) -> tuple[int, int] | None:
    """The size of the image next to ``pts_path`` (its header only), a regular file in the same folder."""
    for suffix in _IMAGE_SUFFIXES:
        image = pts_path.with_suffix(suffix)
        if image.exists() or image.is_symlink():
            from PIL import Image

            check_inside(image, pts_path.parent)
            with open_regular(image, field="frame_size") as handle:
                try:
                    with Image.open(handle) as im:  # reads the header only
                        return im.size
                except Exception as err:  # a third-party image parser (and its decompression-bomb guard)
                    reason = str(err).replace(repr(handle), "")
                    raise KeypointFormatError(str(image), f"cannot take the frame size from this image: "
                                              f"{type(err).__name__}: {reason}", field="frame_size") from None
    return None


def read_pts(path, frame_size=None, *, budget: FrameBudget | None = None,
             report: ReadReport | None = None) -> KeypointFrames:
    root = Path(os.fspath(path))
    files = folder_members(root, "*.pts") if root.is_dir() else [root]
    if not files:
        raise KeypointFormatError(str(root), "directory holds no .pts files")
    n = len(files)
    (budget or FrameBudget()).take(str(root), n, what=".pts files")
    face = np.zeros((n, layout.N_FACE, 3), dtype=np.float32)
    sizes = []
    for i, f in enumerate(files):
        try:
            text = read_regular(f, max_bytes=MAX_PTS_BYTES, what=".pts file").decode("utf-8")
        except UnicodeDecodeError:
            raise KeypointFormatError(str(f), "not a text file", sample=i) from None
        face[i, :, :2] = parse_pts(text, str(f), i)
        face[i, :, 2] = 1.0
        sizes.append(frame_size if frame_size is not None else _image_size(f))
    for i, f in enumerate(files):
        checks.check_finite_and_confidence(face[i:i + 1], file=str(f), sample_ids=[i], point_fields=("points",))
    kp = checks.embed_face(face)
    with_size = [i for i, s in enumerate(sizes) if s is not None]
    if with_size:
        if len(with_size) != n:
            missing = next(f for f, s in zip(files, sizes) if s is None)
            raise KeypointFormatError(str(missing), "no image next to this file to take the frame size from, "
                                      "while others have one; pass frame_size or add the image",
                                      field="frame_size")
        infos = [checks.normalise_coordinates(kp[i:i + 1], file=str(files[i]), frame_size=size)[1]
                 for i, size in enumerate(sizes)]
        info = {"rejected": np.concatenate([i["rejected"] for i in infos]),
                "off_frame_points": sum(i["off_frame_points"] for i in infos)}
    else:
        _, info = checks.normalise_coordinates(kp, file=str(root), point_fields=("points",))
    keep = ~info["rejected"]
    if report is not None:
        report.add_file(str(root), n, int(keep.sum()), info)
    kept = np.flatnonzero(keep)
    checks.check_not_empty_frames(kp[kept], file=str(root), sample_ids=kept, field="points")
    return KeypointFrames(kp[kept], np.full(len(kept), "train"), np.array([f.stem for f in files])[kept],
                          np.zeros(len(kept), dtype=np.int64), str(root), "pts", report)


def format_pts(face_pixels: np.ndarray) -> str:
    """(68, 2) pixel coordinates -> .pts text."""
    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in face_pixels)
    return f"version: 1\nn_points: {len(face_pixels)}\n{{\n{rows}\n}}\n"
