"""Generated hands: 21 MediaPipe joints, handshapes with finger articulation, and tracking as
MediaPipe reports it (whole hands missing for runs of frames).

Hand model: right hand, unit = hand length (wrist to middle fingertip). Local axes: x towards the
thumb side, -y along the fingers, z out of the palm. A handshape is the flexion of the three joints
of each finger (index, middle, ring, pinky), the thumb's three joints and the finger spread; every
sign perturbs its handshape's joints (:data:`ARTICULATION_SD`) so no two signs repeat one exact shape.

Tracking loss, as in MediaPipe Holistic recordings (data/real: hands absent for 17 frames before the
first sign and 35 after the last, and mid-sign dropouts of 1-3 frames): a hand is lost as a whole,
never point by point, for runs of frames -- whenever it is low (at rest) or leaves the picture, and in
dropouts whose hazard grows while the hand moves fast or covers the face (:func:`tracked_hand`).
"""

from __future__ import annotations

import numpy as np

_MCP = np.array([[0.12, -0.45], [0.035, -0.46], [-0.05, -0.44], [-0.13, -0.40]])  # index..pinky
_SEGMENTS = np.array([[0.22, 0.13, 0.10], [0.25, 0.15, 0.11], [0.23, 0.14, 0.10], [0.18, 0.10, 0.09]])
_SPREAD_DIR = np.array([0.12, 0.03, -0.06, -0.16])  # radians of finger fan-out per unit spread
_THUMB_CMC = np.array([0.10, -0.10, 0.02])
_THUMB_SEGMENTS = np.array([0.15, 0.13, 0.11])

# Handshapes: flexion (radians per joint, 3 joints) of index, middle, ring, pinky, then the thumb's
# flexion (3 joints) and the finger spread. Names follow the ASL / DGS handshape inventories.
_FIST = (1.5, 1.6, 0.9)
_STRAIGHT = (0.05, 0.05, 0.03)
_HOOK = (0.3, 1.3, 1.0)
_BENT_MCP = (1.4, 0.05, 0.05)
_THUMB_ACROSS = (0.9, 0.6, 0.4)
_THUMB_OUT = (-0.1, 0.0, 0.0)
HANDSHAPES: dict[str, tuple] = {
    "flat": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (0.2, 0.1, 0.1), 0.0),
    "five": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, _THUMB_OUT, 1.0),
    "fist": (_FIST, _FIST, _FIST, _FIST, _THUMB_ACROSS, 0.0),
    "index": (_STRAIGHT, _FIST, _FIST, _FIST, _THUMB_ACROSS, 0.0),
    "v": (_STRAIGHT, _STRAIGHT, _FIST, _FIST, _THUMB_ACROSS, 1.0),
    "c": ((0.5, 0.6, 0.3),) * 4 + ((0.3, 0.2, 0.2), 0.2),
    "o": ((0.8, 0.9, 0.5),) * 4 + ((0.7, 0.4, 0.3), 0.0),
    "y": (_FIST, _FIST, _FIST, _STRAIGHT, _THUMB_OUT, 0.6),
    "l": (_STRAIGHT, _FIST, _FIST, _FIST, (-0.2, 0.0, 0.0), 0.0),
    "a": (_FIST, _FIST, _FIST, _FIST, (0.0, 0.1, 0.1), 0.0),
    "s": (_FIST, _FIST, _FIST, _FIST, (1.1, 0.5, 0.3), 0.0),
    "b": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (1.2, 0.6, 0.2), 0.0),
    "w": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _FIST, _THUMB_ACROSS, 0.8),
    "i": (_FIST, _FIST, _FIST, _STRAIGHT, _THUMB_ACROSS, 0.0),
    "ily": (_STRAIGHT, _FIST, _FIST, _STRAIGHT, _THUMB_OUT, 0.6),
    "three": (_STRAIGHT, _STRAIGHT, _FIST, _FIST, _THUMB_OUT, 0.8),
    "f": ((0.7, 0.8, 0.5), _STRAIGHT, _STRAIGHT, _STRAIGHT, (0.6, 0.3, 0.3), 0.6),
    "x": (_HOOK, _FIST, _FIST, _FIST, _THUMB_ACROSS, 0.0),
    "claw": ((0.3, 1.0, 0.8),) * 4 + ((0.2, 0.4, 0.4), 1.0),
    "bent": (_BENT_MCP,) * 4 + ((0.2, 0.1, 0.1), 0.0),
    "bent_v": (_HOOK, _HOOK, _FIST, _FIST, _THUMB_ACROSS, 0.8),
}
SHAPE_NAMES = tuple(HANDSHAPES)
SHAPE_PARAMS = np.array([np.concatenate([np.ravel(v[:5]), [v[5]]]) for v in HANDSHAPES.values()])  # (21, 16)
REST_SHAPE = SHAPE_NAMES.index("c")
ARTICULATION_SD = 0.12  # radians per joint (and spread units), per sign

# Dropouts: expected losses per second at rest, extra hazard while the hand covers the face or
# moves faster than a hand length per 5 frames; a lost hand stays lost for 1-12 frames (geometric).
DROPOUT_RATE = 0.02
FACE_HAZARD = 0.12
SPEED_HAZARD = 0.06
MEAN_LOSS_RUN = 4.0


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def handshape_keys(rng, active: np.ndarray) -> np.ndarray:
    """(K, 16) handshape parameters per keyframe: a random shape while signing, the relaxed C at
    rest, each joint perturbed (finger flexion kept >= -0.2 rad)."""
    shape = rng.integers(0, len(SHAPE_NAMES), len(active))
    shape[~active] = REST_SHAPE
    params = SHAPE_PARAMS[shape] + rng.normal(0.0, ARTICULATION_SD, (len(active), SHAPE_PARAMS.shape[1]))
    params[:, :12] = np.maximum(params[:, :12], -0.2)
    params[:, 15] = np.clip(params[:, 15], -0.2, 1.3)
    return params


def hand_points(params: np.ndarray, finger_dir: np.ndarray, palm_normal: np.ndarray, wrist: np.ndarray,
                length: np.ndarray | float, mirror: bool) -> np.ndarray:
    """(T, 16) handshape params + (T, 3) finger direction / palm normal / wrist -> (T, 21, 3) world."""
    t = len(params)
    local = np.zeros((t, 21, 3))
    out = np.array([0.0, 0.0, 1.0])
    spread = params[:, 15:16]
    for f in range(4):
        angle = _SPREAD_DIR[f] * (0.3 + spread[:, 0])
        base = np.stack([np.sin(angle), -np.cos(angle), np.zeros(t)], 1)
        pos = np.zeros((t, 3))
        pos[:, :2] = _MCP[f]
        local[:, 5 + 4 * f] = pos
        bend = np.zeros(t)
        for j in range(3):
            bend = bend + params[:, 3 * f + j]
            direction = np.cos(bend)[:, None] * base + np.sin(bend)[:, None] * out
            pos = pos + _SEGMENTS[f, j] * direction
            local[:, 6 + 4 * f + j] = pos
    local[:, 1] = _THUMB_CMC
    thumb_base = unit(np.array([0.55, -0.8, 0.25]))
    across = unit(np.array([-0.7, -0.2, 0.7]))  # thumb flexes across the palm
    pos, bend = np.tile(_THUMB_CMC, (t, 1)), np.zeros(t)
    for j in range(3):
        bend = bend + params[:, 12 + j]
        direction = np.cos(bend)[:, None] * thumb_base + np.sin(bend)[:, None] * across
        pos = pos + _THUMB_SEGMENTS[j] * direction
        local[:, 2 + j] = pos
    if mirror:
        local[..., 0] *= -1.0
    # local x -> thumb side of a right hand (mirrored hands negate x above), -y -> fingers, z -> palm.
    basis_x = np.cross(palm_normal, finger_dir)
    length = np.asarray(length, dtype=float).reshape(-1, 1, 1) if np.ndim(length) else float(length)
    world = (local[..., 0:1] * basis_x[:, None] - local[..., 1:2] * finger_dir[:, None]
             + local[..., 2:3] * palm_normal[:, None])
    return wrist[:, None] + length * world


def box(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 2) points -> their (T, 2) lower and upper corners."""
    return xy.min(1), xy.max(1)


def covers(hand_box, face_box) -> np.ndarray:
    """(T,) whether the hand's box overlaps the face's box (the hand in front of the face)."""
    return ((hand_box[0] < face_box[1]) & (hand_box[1] > face_box[0])).all(-1)


def dropouts(rng, hazard: np.ndarray) -> np.ndarray:
    """(T,) frames lost to dropouts: starts drawn with the per-frame ``hazard``, runs geometric."""
    n_frames = len(hazard)
    starts = np.flatnonzero(rng.random(n_frames) < hazard)
    runs = rng.geometric(1.0 / MEAN_LOSS_RUN, len(starts)).clip(1, 12)
    lost = np.zeros(n_frames + 13, dtype=bool)
    for start, run in zip(starts, runs):
        lost[start:start + run] = True
    return lost[:n_frames]


def tracked_hand(rng, wrist: np.ndarray, points: np.ndarray, face_box, hand_length: float,
                 fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """(T, 21, 3) hand keypoints as a tracker reports them (jittered, all zeros where tracking is
    lost) and the (T,) frames where the hand covers the face box ``face_box``."""
    hand_xy = points[..., :2] + rng.normal(0.0, 0.0012, points[..., :2].shape)
    lo, hi = box(hand_xy)
    in_view = (wrist[:, 1] < 0.9) & (lo.min(-1) > 0) & (hi.max(-1) < 1)
    covered = covers((lo, hi), face_box)
    speed = np.linalg.norm(np.diff(wrist[:, :2], axis=0, prepend=wrist[:1, :2]), axis=-1) / hand_length
    hazard = (DROPOUT_RATE / fps * rng.uniform(0.5, 2.0) + FACE_HAZARD * covered
              + SPEED_HAZARD * np.clip(speed * 5.0 - 1.0, 0.0, 1.0))
    tracked = in_view & ~dropouts(rng, hazard)
    hand = np.zeros(points.shape)
    hand[..., :2] = np.where(tracked[:, None, None], hand_xy, 0.0)
    hand[..., 2] = tracked[:, None].astype(float)
    return hand, covered
