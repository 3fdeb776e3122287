"""Writers for every supported input format (the synthetic generator and the tests use them).

All writes are atomic (:func:`signpose.io.atomic.atomic_write_bytes`): a temporary file in the target
folder, then a rename.
"""

from __future__ import annotations

import io
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
