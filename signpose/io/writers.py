"""Writers for every supported input format, one function each, and :func:`write_all_formats` for all of
them at once (the synthetic generator and the tests use them; ``signpose.synth`` re-exports three).

All writes are atomic (:func:`signpose.io.atomic.atomic_write_bytes`): a temporary file in the target
folder, then a rename.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from signpose import layout
from signpose.io.atomic import atomic_write_bytes
from signpose.io.frames import KeypointFrames


def write_seed_pickle(path, data: dict) -> None:
    """A seed-format dict (skeleton or face-only) as a pickle."""
    atomic_write_bytes(path, pickle.dumps(data, protocol=4))


def face_dict(frames: KeypointFrames) -> dict:
    return {"keypoints": np.ascontiguousarray(frames.face), "video_id": frames.video_id.tolist(),
            "frame_index": frames.frame_index.tolist()}


def write_face_pickle(path, data: dict | KeypointFrames) -> None:
    """The face-only format ({'keypoints': (N, 68, 3)}) from a dict or KeypointFrames."""
    write_seed_pickle(path, face_dict(data) if isinstance(data, KeypointFrames) else data)


def write_npz(path, frames: KeypointFrames, per_part: bool = False) -> None:
    """``keypoints`` (N, 143, 3) -- or the four part arrays -- plus split / video_id / frame_index."""
    arrays = {"split": frames.split, "video_id": frames.video_id, "frame_index": frames.frame_index}
    if per_part:
        arrays.update({p: frames.keypoints[:, layout.PART_SLICES[p]] for p in layout.PARTS})
    else:
        arrays["keypoints"] = frames.keypoints
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def write_npy(path, array: np.ndarray) -> None:
    """One (N, 143, 3) or (N, 68, 3) array."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def write_pose(path, keypoints: np.ndarray, kind: str = "holistic", width: int = 640, height: int = 480,
               fps: float = 25.0, face_points: int = 468) -> None:
    """One video (T, 143, 3) as a .pose file: kind 'holistic' (468/478-point mesh) or 'openpose'."""
    from signpose.io.pose_files import holistic_pose_bytes, openpose_pose_bytes

    if kind == "holistic":
        data = holistic_pose_bytes(keypoints, width, height, fps, face_points)
    elif kind == "openpose":
        data = openpose_pose_bytes(keypoints, width, height, fps)
    else:
        raise ValueError(f"kind must be 'holistic' or 'openpose', got {kind!r}")
    atomic_write_bytes(path, data)


def write_openpose_json(folder, keypoints: np.ndarray, width: int = 640, height: int = 480,
                        video_id: str = "video") -> list[str]:
    from signpose.io.openpose_json import write_openpose_json as _write

    return _write(folder, keypoints, width, height, video_id)


def write_pts(path, face: np.ndarray, width: int = 640, height: int = 480) -> None:
    """One face (68, 3) in [0, 1] as an iBUG .pts file in pixel coordinates of a W x H image."""
    from signpose.io.pose_files import _to_pixels
    from signpose.io.pts import format_pts

    atomic_write_bytes(path, format_pts(_to_pixels(np.asarray(face)[None], width, height)[0, :, :2]).encode())


def write_all_formats(folder, frames: KeypointFrames, width: int = 640, height: int = 480,
                      max_pts_files: int = 8) -> dict[str, str]:
    """Write ``frames`` in every supported input format under ``folder``; returns {format: path}.

    skeleton.pkl / face.pkl (the seed's two pickles), keypoints.npz, parts.npz (per-part arrays),
    keypoints.npy, face.npy, holistic/<video>.pose (468-point mesh), holistic478/<video>.pose,
    openpose/<video>.pose, openpose_json/<video>/ (one JSON per frame) and pts/ (iBUG .pts of the
    first ``max_pts_files`` frames, each next to a blank W x H image giving its frame size).
    Pixel formats use a W x H frame (the letterbox inverse of the normalised coordinates).
    """
    import cv2

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    out = {}

    def path(*parts):
        p = os.path.join(folder, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    out["skeleton-pickle"] = path("skeleton.pkl")
    write_seed_pickle(out["skeleton-pickle"], frames.to_seed_dict())
    out["face-pickle"] = path("face.pkl")
    write_face_pickle(out["face-pickle"], frames)
    out["npz"] = path("keypoints.npz")
    write_npz(out["npz"], frames)
    out["npz-parts"] = path("parts.npz")
    write_npz(out["npz-parts"], frames, per_part=True)
    out["npy"] = path("keypoints.npy")
    write_npy(out["npy"], frames.keypoints)
    out["face-npy"] = path("face.npy")
    write_npy(out["face-npy"], frames.face)
    for video in frames.videos():
        kp = frames.keypoints[frames.video_id == video]
        write_pose(path("holistic", f"{video}.pose"), kp, "holistic", width, height)
        write_pose(path("holistic478", f"{video}.pose"), kp, "holistic", width, height, face_points=478)
        write_pose(path("openpose", f"{video}.pose"), kp, "openpose", width, height)
        json_dir = os.path.join(folder, "openpose_json", video)
        os.makedirs(json_dir, exist_ok=True)
        write_openpose_json(json_dir, kp, width, height, video)
    first = frames.video_id[0]
    out["pose-holistic"] = path("holistic", f"{first}.pose")
    out["pose-holistic478"] = path("holistic478", f"{first}.pose")
    out["pose-openpose"] = path("openpose", f"{first}.pose")
    out["openpose-json"] = os.path.join(folder, "openpose_json", first)
    blank = np.zeros((height, width), dtype=np.uint8)
    for i in range(min(max_pts_files, len(frames))):
        name = f"{frames.video_id[i]}_{int(frames.frame_index[i]):06d}"
        write_pts(path("pts", name + ".pts"), frames.face[i], width, height)
        cv2.imwrite(path("pts", name + ".png"), blank)
    out["pts"] = os.path.join(folder, "pts")
    return out
