"""The 143-point keypoint layout, defined once.

One frame is ``(143, 3)`` = ``[face 68 | left hand 21 | right hand 21 | pose 33]``, each point
``(x, y, confidence)``. Coordinates are normalised to ``[0, 1]`` of the source frame; a point with
confidence 0 is missing (its coordinates are meaningless and are stored as 0).

Face points follow the iBUG-300W / dlib 68-point order, hands and pose follow MediaPipe's order.
Everything that needs indices, bones or regions imports them from here.
"""

from __future__ import annotations

import numpy as np

N_FACE = 68
N_HAND = 21
N_POSE = 33
N_POINTS = N_FACE + 2 * N_HAND + N_POSE  # 143
N_CHANNELS = 3  # x, y, confidence

# Order of the parts in the flattened frame; also the seed's dict keys.
PARTS: tuple[str, ...] = ("face", "left_hand", "right_hand", "pose")
PART_SIZES: dict[str, int] = {"face": N_FACE, "left_hand": N_HAND, "right_hand": N_HAND, "pose": N_POSE}


def _part_slices() -> dict[str, slice]:
    slices, start = {}, 0
    for name in PARTS:
        slices[name] = slice(start, start + PART_SIZES[name])
        start += PART_SIZES[name]
    return slices


PART_SLICES: dict[str, slice] = _part_slices()
FACE = PART_SLICES["face"]
LEFT_HAND = PART_SLICES["left_hand"]
RIGHT_HAND = PART_SLICES["right_hand"]
POSE = PART_SLICES["pose"]

# Part id (index into PARTS) of each of the 143 points.
PART_IDS: np.ndarray = np.concatenate(
    [np.full(PART_SIZES[name], i, dtype=np.int64) for i, name in enumerate(PARTS)]
)

# --- bones, in each part's local indices ---------------------------------------------------------

# MediaPipe Hands HAND_CONNECTIONS.
HAND_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),          # thumb
    (0, 5), (5, 6), (6, 7), (7, 8),          # index
    (5, 9), (9, 10), (10, 11), (11, 12),     # middle
    (9, 13), (13, 14), (14, 15), (15, 16),   # ring
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),  # pinky and palm
)

# MediaPipe Pose POSE_CONNECTIONS.
POSE_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)


def _chain(start: int, stop: int, closed: bool = False) -> list[tuple[int, int]]:
    bones = [(i, i + 1) for i in range(start, stop)]
    if closed:
        bones.append((stop, start))
    return bones


# iBUG-300W contours: jaw, brows, nose bridge and base, eyes (closed loops), outer and inner lips.
FACE_BONES: tuple[tuple[int, int], ...] = tuple(
    _chain(0, 16)                    # jaw
    + _chain(17, 21) + _chain(22, 26)  # right brow, left brow
    + _chain(27, 30) + _chain(31, 35)  # nose bridge, nose base
    + _chain(36, 41, closed=True) + _chain(42, 47, closed=True)  # right eye, left eye
    + _chain(48, 59, closed=True) + _chain(60, 67, closed=True)  # outer lips, inner lips
)

PART_BONES: dict[str, tuple[tuple[int, int], ...]] = {
    "face": FACE_BONES, "left_hand": HAND_BONES, "right_hand": HAND_BONES, "pose": POSE_BONES,
}


def _global_bones() -> tuple[np.ndarray, np.ndarray]:
    pairs, part_of_bone = [], []
    for part_id, name in enumerate(PARTS):
        offset = PART_SLICES[name].start
        for a, b in PART_BONES[name]:
            pairs.append((a + offset, b + offset))
            part_of_bone.append(part_id)
    return np.asarray(pairs, dtype=np.int64), np.asarray(part_of_bone, dtype=np.int64)


# All bones in the 143-point indexing, shape (n_bones, 2), and the part id of each bone.
BONES, BONE_PART_IDS = _global_bones()

# --- the 8 face regions (iBUG-300W), indices into the 68 face points ----------------------------

FACE_REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose": range(27, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}
FACE_REGION_NAMES: tuple[str, ...] = tuple(FACE_REGIONS)

# Outer eye corners, the 300-W inter-ocular normaliser for NME.
FACE_OUTER_EYE_CORNERS: tuple[int, int] = (36, 45)


def flatten_frame(frame: dict[str, np.ndarray]) -> np.ndarray:
    """Seed per-frame dict (face/left_hand/right_hand/pose) -> (143, 3) float32."""
    return np.concatenate([np.asarray(frame[name], dtype=np.float32) for name in PARTS], axis=0)


def split_frame(keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """(143, 3) -> the seed's per-frame dict; inverse of :func:`flatten_frame`."""
    return {name: keypoints[..., PART_SLICES[name], :] for name in PARTS}
