"""pose-format ``.pose`` files (read with the ``pose-format`` library): MediaPipe Holistic and OpenPose 137.

* **MediaPipe Holistic** (components POSE_LANDMARKS 33, FACE_LANDMARKS 468 or 478,
  LEFT_HAND_LANDMARKS 21, RIGHT_HAND_LANDMARKS 21; POSE_WORLD_LANDMARKS and anything else ignored):
  pose and hands map directly; the face mesh is reduced to the 68 iBUG points with
  :data:`HOLISTIC_FACE_TO_IBUG68` (checked on the real samples: tests/test_io_pose.py).
* **OpenPose 137** (pose_keypoints_2d 25 = BODY_25, face_keypoints_2d 70 = 68 iBUG + 2 pupils,
  hand_left_keypoints_2d / hand_right_keypoints_2d 21): face and hands map directly; BODY_25 points
  with a MediaPipe Pose counterpart are mapped (:data:`MEDIAPIPE_FROM_BODY25`), every other pose
  point is missing (confidence 0).

Each frame is one sample (video id = file stem, frame index = position in the file; person 0).
Pixel coordinates are normalised with the header's width/height (letterbox, see checks.py). Frames
in which nothing was detected are dropped (their indices are skipped); a file with no detection at
all is refused.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np

from signpose import layout
from signpose.io import checks
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.limits import FrameBudget
from signpose.io.report import ReadReport
from signpose.io.safe_files import read_regular

log = logging.getLogger(__name__)

# MediaPipe face mesh index of each iBUG-300W point (dlib order 0-67).
HOLISTIC_FACE_TO_IBUG68: tuple[int, ...] = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    71, 63, 105, 66, 107,  # right brow
    336, 296, 334, 293, 301,  # left brow
    168, 197, 5, 4,  # nose bridge
    75, 97, 2, 326, 305,  # nose base
    33, 160, 158, 133, 153, 144,  # right eye
    362, 385, 387, 263, 373, 380,  # left eye
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
)

# MediaPipe Pose index -> BODY_25 index, where the two skeletons share a point.
MEDIAPIPE_FROM_BODY25: dict[int, int] = {
    0: 0,                       # nose
    2: 16, 5: 15,               # left eye, right eye
    7: 18, 8: 17,               # left ear, right ear
    11: 5, 12: 2,               # shoulders
    13: 6, 14: 3,               # elbows
    15: 7, 16: 4,               # wrists
    23: 12, 24: 9,              # hips
    25: 13, 26: 10,             # knees
    27: 14, 28: 11,             # ankles
    29: 21, 30: 24,             # heels
    31: 19, 32: 22,             # foot index <- big toe
}

HOLISTIC_COMPONENTS = ("POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS")
OPENPOSE_COMPONENTS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                       "hand_right_keypoints_2d")
_HOLISTIC_SIZES = {"POSE_LANDMARKS": (33,), "FACE_LANDMARKS": (468, 478), "LEFT_HAND_LANDMARKS": (21,),
                   "RIGHT_HAND_LANDMARKS": (21,)}
_OPENPOSE_SIZES = {"pose_keypoints_2d": (25,), "face_keypoints_2d": (70, 68), "hand_left_keypoints_2d": (21,),
                   "hand_right_keypoints_2d": (21,)}


def read_pose(path, frame_size=None, *, budget: FrameBudget | None = None,
              report: ReadReport | None = None) -> KeypointFrames:
    file = os.fspath(path)
    pose = _load(file, budget or FrameBudget())
    header = pose.header
    components = {c.name: c for c in header.components}
    names = list(components)
    if all(n in components for n in HOLISTIC_COMPONENTS):
        kind, sizes = "holistic", _HOLISTIC_SIZES
    elif all(n in components for n in OPENPOSE_COMPONENTS):
        kind, sizes = "openpose", _OPENPOSE_SIZES
    else:
        raise KeypointFormatError(
            file, f"unknown .pose component set {names}; supported: MediaPipe Holistic "
            f"{list(HOLISTIC_COMPONENTS)} and OpenPose 137 {list(OPENPOSE_COMPONENTS)}", field="components")
    for name, allowed in sizes.items():
        n = len(components[name].points)
        if n not in allowed:
            raise KeypointFormatError(file, f"component has {n} points, expected "
                                      f"{' or '.join(map(str, allowed))}", field=name)

    data = np.asarray(pose.body.data.data if np.ma.isMaskedArray(pose.body.data) else pose.body.data)
    confidence = np.asarray(pose.body.confidence)
    n_points = sum(len(c.points) for c in header.components)
    if data.ndim != 4 or data.shape[2] != n_points or data.shape[-1] < 2:
        raise KeypointFormatError(file, f"body data has shape {data.shape}, expected (frames, people, "
                                  f"{n_points}, dims)", field="body")
    if confidence.shape != data.shape[:3]:
        raise KeypointFormatError(file, f"confidence has shape {confidence.shape}, expected {data.shape[:3]}",
                                  field="confidence")
    if data.shape[0] == 0:
        raise KeypointFormatError(file, "the file holds no frames", field="body")
    if data.shape[1] == 0:
        raise KeypointFormatError(file, "the file holds no person", field="body")
    if data.shape[1] > 1:
        log.info("%s: %d people per frame; reading person 0", file, data.shape[1])
    points = np.concatenate([data[:, 0, :, :2], confidence[:, 0, :, None]], axis=-1).astype(np.float32)
    if np.ma.isMaskedArray(pose.body.data):
        masked = np.ma.getmaskarray(pose.body.data)[:, 0].any(-1)
        points[masked] = 0.0

    offsets, start = {}, 0
    for c in header.components:
        offsets[c.name] = slice(start, start + len(c.points))
        start += len(c.points)
    parts = {name: points[:, offsets[name]] for name in sizes}
    if kind == "holistic":
        kp = _holistic_to_layout(parts)
        point_fields_of = {"face": "FACE_LANDMARKS", "left_hand": "LEFT_HAND_LANDMARKS",
                           "right_hand": "RIGHT_HAND_LANDMARKS", "pose": "POSE_LANDMARKS"}
    else:
        kp = openpose_to_layout(parts["pose_keypoints_2d"], parts["face_keypoints_2d"],
                                parts["hand_left_keypoints_2d"], parts["hand_right_keypoints_2d"])
        point_fields_of = {"face": "face_keypoints_2d", "left_hand": "hand_left_keypoints_2d",
                           "right_hand": "hand_right_keypoints_2d", "pose": "pose_keypoints_2d"}
    try:
        checks.check_finite_and_confidence(kp, file=file)
    except KeypointFormatError as err:  # name the .pose component, not our part
        raise KeypointFormatError(file, err.reason, sample=err.sample,
                                  field=point_fields_of.get(err.field, err.field)) from None
    width, height = header.dimensions.width, header.dimensions.height
    if frame_size is None and width > 0 and height > 0:
        frame_size = (width, height)
    _, info = checks.normalise_coordinates(kp, file=file, frame_size=frame_size, part_names=point_fields_of)
    return video_frames(kp, file, f"pose-{kind}", info=info, report=report)


def video_frames(kp: np.ndarray, file: str, format_name: str, video_id: str | None = None,
                 frame_index: np.ndarray | None = None, *, info: dict | None = None,
                 report: ReadReport | None = None) -> KeypointFrames:
    """One video's frames -> KeypointFrames, dropping frames with nothing detected and the frames
    validation rejected (``info`` from :func:`checks.normalise_coordinates`, recorded in ``report``)."""
    detected = (kp[..., 2] > 0).any(-1)
    rejected = (info or {}).get("rejected", np.zeros(len(kp), dtype=bool))
    empty = ~detected & ~rejected
    if not detected.any():
        if rejected.any():
            first = (info or {}).get("first_rejected", {})
            raise KeypointFormatError(file, f"all {len(kp)} frames hold an outlier coordinate ({first.get('axis')} = "
                                      f"{first.get('value', float('nan')):.6g}), far outside any frame",
                                      sample=first.get("sample"), field=first.get("field"))
        raise KeypointFormatError(file, f"nothing was detected in any of the {len(kp)} frames", field="body")
    if empty.any():
        log.info("%s: dropped %d frames with nothing detected", file, int(empty.sum()))
    index = np.arange(len(kp)) if frame_index is None else np.asarray(frame_index)
    n = int(detected.sum())
    stem = video_id or os.path.splitext(os.path.basename(file.rstrip("/")))[0]
    if report is not None:
        report.add_file(file, len(kp), n, info, dropped_empty=int(empty.sum()))
    return KeypointFrames(kp[detected] if n < len(kp) else kp, np.full(n, "train"), np.full(n, stem),
                          index[detected], file, format_name, report)


def _holistic_to_layout(parts: dict[str, np.ndarray]) -> np.ndarray:
    t = len(parts["POSE_LANDMARKS"])
    kp = np.zeros((t, layout.N_POINTS, 3), dtype=np.float32)
    kp[:, layout.FACE] = parts["FACE_LANDMARKS"][:, list(HOLISTIC_FACE_TO_IBUG68)]
    kp[:, layout.LEFT_HAND] = parts["LEFT_HAND_LANDMARKS"]
    kp[:, layout.RIGHT_HAND] = parts["RIGHT_HAND_LANDMARKS"]
    kp[:, layout.POSE] = parts["POSE_LANDMARKS"]
    return kp


def openpose_to_layout(body25: np.ndarray, face: np.ndarray, left_hand: np.ndarray,
                       right_hand: np.ndarray) -> np.ndarray:
    """OpenPose (T, 25, 3) body, (T, 70|68, 3) face, (T, 21, 3) hands -> (T, 143, 3)."""
    t = len(body25)
    kp = np.zeros((t, layout.N_POINTS, 3), dtype=np.float32)
    kp[:, layout.FACE] = face[:, :68]
    kp[:, layout.LEFT_HAND] = left_hand
    kp[:, layout.RIGHT_HAND] = right_hand
    mp_idx = np.fromiter(MEDIAPIPE_FROM_BODY25.keys(), dtype=np.int64)
    op_idx = np.fromiter(MEDIAPIPE_FROM_BODY25.values(), dtype=np.int64)
    kp[:, layout.POSE.start + mp_idx] = body25[:, op_idx]
    return kp


def _load(file: str, budget: FrameBudget):
    """Parse with pose-format, the frame count its body declares checked against ``budget`` before
    the body is read."""
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader
    from pose_format.utils.reader import BufferReader

    data = read_regular(file, what=".pose file")
    try:
        reader = BufferReader(data)
        header = PoseHeader.read(reader)
        frames = _declared_frames(header, reader)
    except Exception as err:  # a third-party binary parser: any failure means a bad file
        raise KeypointFormatError(file, f"not a readable .pose file (truncated or corrupt): "
                                  f"{type(err).__name__}: {err}") from None
    budget.take(file, frames, field="body")
    try:
        return Pose(header, NumPyPoseBody.read(header, reader))
    except Exception as err:
        raise KeypointFormatError(file, f"not a readable .pose file (truncated or corrupt): "
                                  f"{type(err).__name__}: {err}") from None


def _declared_frames(header, reader) -> int:
    """The frame count of the body that follows ``header`` (the reader is left where it was)."""
    from pose_format.utils.reader import ConstStructs

    offset = reader.read_offset
    try:
        version = round(header.version, 3)
        if version == 0.2:
            reader.unpack(ConstStructs.float)
            return int(reader.unpack(ConstStructs.uint))
        _, frames = reader.unpack(ConstStructs.double_ushort)
        if version == 0.1:  # the stored count is a ushort; pose-format counts the bytes instead
            people = reader.unpack(ConstStructs.ushort)
            points = sum(len(c.points) for c in header.components)
            frames = reader.bytes_left() // max(1, people * points * (header.num_dims() + 1) * 4)
        return int(frames)
    finally:
        reader.read_offset = offset


# --- writing (used by signpose.synth and the tests) ---------------------------------------------

MEDIAPIPE_POSE_NAMES = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE", "RIGHT_EYE_OUTER",
    "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
    "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX",
    "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE",
    "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX")
MEDIAPIPE_HAND_NAMES = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP", "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
    "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP")


def _to_pixels(kp: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of the letterbox normalisation: [0, 1] -> pixel coordinates of a W x H frame."""
    side = float(max(width, height))
    out = kp.copy()
    out[..., 0] = kp[..., 0] * side - (side - width) / 2.0
    out[..., 1] = kp[..., 1] * side - (side - height) / 2.0
    out[kp[..., 2] <= 0] = 0.0
    return out


def holistic_pose_bytes(kp: np.ndarray, width: int, height: int, fps: float = 25.0,
                        face_points: int = 468) -> bytes:
    """(T, 143, 3) -> a MediaPipe Holistic .pose file (XYZC, z = 0).

    Mesh points without an iBUG counterpart are written missing (confidence 0); pose-format's
    reader, and ours, take them as they are.
    """
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

    px = _to_pixels(kp, width, height)
    t = len(kp)
    face = np.zeros((t, face_points, 3), dtype=np.float32)
    face[:, list(HOLISTIC_FACE_TO_IBUG68)] = px[:, layout.FACE]
    blocks = [px[:, layout.POSE], face, px[:, layout.LEFT_HAND], px[:, layout.RIGHT_HAND]]
    names = [MEDIAPIPE_POSE_NAMES, tuple(str(i) for i in range(face_points)), MEDIAPIPE_HAND_NAMES,
             MEDIAPIPE_HAND_NAMES]
    components = [
        PoseHeaderComponent(name, list(points), _limbs(name, len(points)),
                            [(255, 255, 255)] * len(_limbs(name, len(points))), "XYZC")
        for name, points in zip(HOLISTIC_COMPONENTS, names)]
    allpts = np.concatenate(blocks, axis=1)
    data = np.zeros((t, 1, allpts.shape[1], 3), dtype=np.float32)
    data[:, 0, :, :2] = allpts[..., :2]
    confidence = allpts[None, ..., 2].transpose(1, 0, 2).astype(np.float32)
    header = PoseHeader(0.2, PoseHeaderDimensions(width, height, 0), components)
    buffer = io.BytesIO()
    Pose(header, NumPyPoseBody(fps, data, confidence)).write(buffer)
    return buffer.getvalue()


def openpose_pose_bytes(kp: np.ndarray, width: int, height: int, fps: float = 25.0) -> bytes:
    """(T, 143, 3) -> an OpenPose 137 .pose file (components from pose_format.utils.openpose)."""
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
    from pose_format.utils.openpose import OpenPose_Components

    body25, face70, left, right = layout_to_openpose(_to_pixels(kp, width, height))
    allpts = np.concatenate([body25, face70, left, right], axis=1)
    data = allpts[:, None, :, :2].astype(np.float32)
    confidence = allpts[:, None, :, 2].astype(np.float32)
    header = PoseHeader(0.1, PoseHeaderDimensions(width, height, 0), OpenPose_Components)
    buffer = io.BytesIO()
    Pose(header, NumPyPoseBody(fps, data, confidence)).write(buffer)
    return buffer.getvalue()


def layout_to_openpose(kp: np.ndarray):
    """(T, 143, 3) -> BODY_25 (T, 25, 3), face 70 (T, 70, 3), left and right hand (T, 21, 3).

    Neck and MidHip are the midpoints of the shoulders / hips; the pupils are the eye centres.
    """
    t = len(kp)
    pose = kp[:, layout.POSE]
    body = np.zeros((t, 25, 3), dtype=np.float32)
    for mp_i, op_i in MEDIAPIPE_FROM_BODY25.items():
        body[:, op_i] = pose[:, mp_i]
    for op_i, (a, b) in ((1, (11, 12)), (8, (23, 24))):
        both = (pose[:, a, 2] > 0) & (pose[:, b, 2] > 0)
        body[both, op_i, :2] = (pose[both, a, :2] + pose[both, b, :2]) / 2
        body[both, op_i, 2] = np.minimum(pose[both, a, 2], pose[both, b, 2])
    face = np.zeros((t, 70, 3), dtype=np.float32)
    face[:, :68] = kp[:, layout.FACE]
    for pupil, eye in ((68, slice(36, 42)), (69, slice(42, 48))):
        seen = (kp[:, eye, 2] > 0).all(-1)
        face[seen, pupil, :2] = kp[seen, eye, :2].mean(1)
        face[seen, pupil, 2] = kp[seen, eye, 2].min(-1)
    return body, face, kp[:, layout.LEFT_HAND].copy(), kp[:, layout.RIGHT_HAND].copy()


def _limbs(component: str, n_points: int) -> list[tuple[int, int]]:
    if component == "POSE_LANDMARKS":
        return [tuple(b) for b in layout.POSE_BONES]
    if component.endswith("HAND_LANDMARKS"):
        return [tuple(b) for b in layout.HAND_BONES]
    mesh = HOLISTIC_FACE_TO_IBUG68
    return [(mesh[a], mesh[b]) for a, b in layout.FACE_BONES]
