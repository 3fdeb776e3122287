"""``read_keypoints(path)``: any supported keypoint source -> validated ``KeypointFrames``.

The format is chosen from the suffix and checked against the content, so a file that is not what
its suffix says is refused instead of half-parsed. Directories hold OpenPose ``*_keypoints.json``
frames or iBUG ``.pts`` files.
"""

from __future__ import annotations

import os
from pathlib import Path

from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.limits import FrameBudget, ReadLimits
from signpose.io.report import ReadReport
from signpose.io.safe_files import folder_members, open_regular

SUFFIX_FORMATS: dict[str, str] = {
    ".pkl": "pickle", ".pickle": "pickle", ".pk": "pickle",
    ".npz": "npz", ".npy": "npy", ".pose": "pose", ".json": "json", ".pts": "pts",
}
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "pickle": "a pickle", "npz": "an .npz (zip) archive", "npy": "an .npy array", "pose": "a .pose file",
    "json": "JSON text", "pts": "an iBUG .pts text file",
}


def sniff_format(head: bytes) -> str | None:
    """Best guess of the format from the first bytes; None when nothing recognisable."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    text = head.lstrip()
    if text.startswith((b"{", b"[")):
        return "json"
    if text.startswith((b"version:", b"n_points:")):
        return "pts"
    return None


def detect_format(path) -> str:
    """The format of ``path`` (suffix checked against content), or a KeypointFormatError."""
    file = os.fspath(path)
    p = Path(file)
    if p.is_dir():
        if any(p.glob("*.pose")):
            return "pose-dir"
        if any(p.glob("*.json")):
            return "openpose-json-dir"
        if any(p.glob("*.pts")):
            return "pts-dir"
        raise KeypointFormatError(file, "directory holds no .pose files, no OpenPose *_keypoints.json and no "
                                  ".pts files")
    if not p.exists() and not p.is_symlink():
        raise KeypointFormatError(file, "no such file or directory")
    with open_regular(file) as handle:  # a FIFO or a device is refused here, never waited on or read
        head = handle.read(64)
    if not head:
        raise KeypointFormatError(file, "the file is empty")
    by_suffix = SUFFIX_FORMATS.get(p.suffix.lower())
    by_content = sniff_format(head)
    if by_suffix is None:
        if by_content is None:
            raise KeypointFormatError(file, f"unknown format: suffix {p.suffix!r} is not one of "
                                      f"{sorted(SUFFIX_FORMATS)} and the content is not recognisable")
        return by_content
    # .pose has no magic bytes: it conflicts only with content that is recognisably something else.
    if by_content is not None and by_content != by_suffix:
        raise KeypointFormatError(file, f"the suffix {p.suffix!r} says {FORMAT_DESCRIPTIONS[by_suffix]} "
                                  f"but the content is {FORMAT_DESCRIPTIONS[by_content]}")
    return by_suffix


def read_keypoints(path, *, frame_size=None, max_frames: int | None = None,
                   max_rejected: float | None = None) -> KeypointFrames:
    """Read and validate any supported keypoint source (docs/data.md lists them).

    ``path``: a file (.pkl/.pickle, .npz, .npy, .pose, .json, .pts) or a folder of .pose files (one
    video each), OpenPose ``*_keypoints.json`` frames or .pts files. ``frame_size=(width, height)``
    gives the pixel frame size for sources without one (OpenPose JSON, .pts without an image,
    pixel-coordinate pickles) and overrides the one a file states (a .pose header, a pickle's
    ``frame_size``). ``max_frames`` caps the frames of the whole read (checked against what each
    file declares before its frames are allocated) and ``max_rejected`` the share of frames
    validation may reject for outlier coordinates; both default to :mod:`signpose.io.limits`'
    values (``SIGNPOSE_MAX_FRAMES`` / ``SIGNPOSE_MAX_REJECTED``). The returned frames carry the
    read's validation summary as ``frames.report``.
    """
    limits = ReadLimits.resolve(max_frames, max_rejected)
    budget, report = FrameBudget(limits), ReadReport()
    frames = _read(detect_format(path), path, frame_size, budget, report)
    frames.report = report
    report.enforce(limits.max_rejected)
    return frames


def _read(kind: str, path, frame_size, budget: FrameBudget, report: ReadReport) -> KeypointFrames:
    limits = {"budget": budget, "report": report}
    if kind == "pickle":
        from signpose.io.safe_pickle import load_pickle
        from signpose.io.seed_format import parse_seed_object
        return parse_seed_object(load_pickle(path), path, frame_size, owned=True, **limits)
    if kind == "npz":
        from signpose.io.arrays import read_npz
        return read_npz(path, frame_size, **limits)
    if kind == "npy":
        from signpose.io.arrays import read_npy
        return read_npy(path, frame_size, **limits)
    if kind == "pose":
        from signpose.io.pose_files import read_pose
        return read_pose(path, frame_size=frame_size, **limits)
    if kind == "pose-dir":
        from signpose.io.pose_files import read_pose
        videos = [read_pose(f, frame_size=frame_size, **limits) for f in folder_members(path, "*.pose")]
        return KeypointFrames.concatenate(videos, source=os.fspath(path))
    if kind in ("json", "openpose-json-dir"):
        from signpose.io.openpose_json import read_openpose_json
        return read_openpose_json(path, frame_size=frame_size, **limits)
    if kind in ("pts", "pts-dir"):
        from signpose.io.pts import read_pts
        return read_pts(path, frame_size=frame_size, **limits)
    raise AssertionError(kind)
