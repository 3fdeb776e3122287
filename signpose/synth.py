"""Synthetic signer frames: the embedded default data set (and what the tests read).

A signer is a small articulated model, not noise around a template:

* body proportions measured on the real MediaPipe Holistic samples (shoulder width W about a third of
  the frame; upper arm 0.75-0.85 W, forearm 0.6 W, hand 0.45 W, jaw width 0.45 W, chin 0.25 W above the
  shoulder line), varied per signer;
* arms are two-link chains solved by inverse kinematics in 3-D (elbows drop down and out), projected
  orthographically, so bone lengths stay constant in 3-D and only foreshorten in the picture;
* hands have 21 MediaPipe joints driven by per-finger flexion and spread (nine handshapes: flat, 5,
  fist, index, V, C, O, Y, L) and a wrist orientation that follows the forearm (pronation, flexion);
* the face is the 68-point iBUG shape in 3-D with expression (mouth opening, smile, brow raise and
  furrow, blinks) and head rotation;
* a video is rest -> a few signs (movement + hold between keyframes, eased so velocity is zero at
  holds) -> rest; the dominant hand signs in front of chest and face, the other hand joins some signs;
* hands that drop out of the picture or lose tracking for a few frames are missing (confidence 0,
  all zeros), as MediaPipe reports them; legs are below the frame and missing.

Everything is deterministic in ``seed`` (video ``v`` depends only on ``(seed, v)``) and vectorised over
the frames of a video. Coordinates are [0, 1] of a square frame; confidences follow Holistic (hands
and face 1 when tracked, pose visibility in (0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signpose import layout
from signpose.io.frames import SPLITS, KeypointFrames
from signpose.io.writers import write_all_formats, write_face_pickle, write_seed_pickle  # re-exported

# ---------------------------------------------------------------------------------------------------
# Face template: iBUG-300W 68 points in 3-D. Unit = jaw width; origin between the eyes; y down, z
# towards the camera. Image left is the subject's right (points 0, 17-21, 36-41, 48).


def _face_template() -> np.ndarray:
    pts = np.zeros((68, 3))
    theta = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(theta), np.sin(theta)
    pts[0:17, 0] = -0.5 * np.sign(c) * np.abs(c) ** 0.7
    pts[0:17, 1] = -0.08 + 0.93 * s ** 1.4
    pts[0:17, 2] = -0.35 + 0.5 * s
    t = np.linspace(0.0, 1.0, 5)
    pts[17:22, 0] = np.linspace(-0.42, -0.08, 5)
    pts[17:22, 1] = -0.14 - 0.05 * np.sin(np.pi * (0.3 + 0.7 * t))
    pts[17:22, 2] = 0.1 + 0.12 * t
    pts[22:27] = pts[17:22][::-1] * [-1, 1, 1]
    pts[27:31] = np.stack([np.zeros(4), [0.0, 0.09, 0.18, 0.27], [0.25, 0.32, 0.40, 0.48]], 1)
    pts[31:36] = np.stack([[-0.09, -0.045, 0, 0.045, 0.09], [0.33, 0.35, 0.36, 0.35, 0.33],
                           [0.30, 0.35, 0.38, 0.35, 0.30]], 1)
    right_eye = [(-0.295, 0.0), (-0.235, -0.04), (-0.165, -0.04), (-0.105, 0.0), (-0.165, 0.035),
                 (-0.235, 0.035)]
    pts[36:42, :2] = right_eye
    pts[42:48, :2] = [(-x, y) for x, y in [right_eye[3], right_eye[2], right_eye[1], right_eye[0],
                                           right_eye[5], right_eye[4]]]
    pts[36:48, 2] = 0.2
    pts[48:60, :2] = [(-0.18, 0.53), (-0.11, 0.49), (-0.04, 0.475), (0, 0.48), (0.04, 0.475),
                      (0.11, 0.49), (0.18, 0.53), (0.11, 0.58), (0.05, 0.605), (0, 0.61),
                      (-0.05, 0.605), (-0.11, 0.58)]
    pts[48:60, 2] = 0.25
    pts[[48, 54], 2] = 0.18
    pts[60:68, :2] = [(-0.15, 0.535), (-0.05, 0.525), (0, 0.527), (0.05, 0.525), (0.15, 0.535),
                      (0.05, 0.54), (0, 0.542), (-0.05, 0.54)]
    pts[60:68, 2] = 0.24
    return pts


FACE_TEMPLATE = _face_template()
_JAW_WEIGHT = np.sin(np.linspace(0.0, np.pi, 17)) ** 2  # how much each jaw point drops with the mouth
_LOWER_OUTER = np.array([55, 56, 57, 58, 59])
_LOWER_INNER = np.array([65, 66, 67])
_UPPER_INNER = np.array([61, 62, 63])
_MOUTH_CORNERS = np.array([48, 54, 60, 64])
_UPPER_LIDS = np.array([37, 38, 43, 44])
_LOWER_LIDS = np.array([40, 41, 46, 47])

# ---------------------------------------------------------------------------------------------------
# Hand model (MediaPipe 21 points), right hand, unit = hand length (wrist to middle fingertip).
# Local axes: x towards the thumb side, y up along the fingers is -y, z out of the palm.

_MCP = np.array([[0.12, -0.45], [0.035, -0.46], [-0.05, -0.44], [-0.13, -0.40]])  # index..pinky
_SEGMENTS = np.array([[0.22, 0.13, 0.10], [0.25, 0.15, 0.11], [0.23, 0.14, 0.10], [0.18, 0.10, 0.09]])
_SPREAD_DIR = np.array([0.12, 0.03, -0.06, -0.16])  # radians of finger fan-out per unit spread
_THUMB_CMC = np.array([0.10, -0.10, 0.02])
_THUMB_SEGMENTS = np.array([0.15, 0.13, 0.11])

# Handshapes: flexion (radians per joint, 3 joints) of index, middle, ring, pinky, then thumb
# flexion (3 joints) and finger spread.
_FIST = (1.5, 1.6, 0.9)
_STRAIGHT = (0.05, 0.05, 0.03)
HANDSHAPES: dict[str, tuple] = {
    "flat": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (0.2, 0.1, 0.1), 0.0),
    "five": (_STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (-0.1, 0.0, 0.0), 1.0),
    "fist": (_FIST, _FIST, _FIST, _FIST, (0.9, 0.6, 0.4), 0.0),
    "index": (_STRAIGHT, _FIST, _FIST, _FIST, (0.9, 0.6, 0.4), 0.0),
    "v": (_STRAIGHT, _STRAIGHT, _FIST, _FIST, (0.9, 0.6, 0.4), 1.0),
    "c": ((0.5, 0.6, 0.3),) * 4 + ((0.3, 0.2, 0.2), 0.2),
    "o": ((0.8, 0.9, 0.5),) * 4 + ((0.7, 0.4, 0.3), 0.0),
    "y": (_FIST, _FIST, _FIST, _STRAIGHT, (-0.1, 0.0, 0.0), 0.6),
    "l": (_STRAIGHT, _FIST, _FIST, _FIST, (-0.2, 0.0, 0.0), 0.0),
}
_SHAPE_NAMES = tuple(HANDSHAPES)
_SHAPE_PARAMS = np.array([np.concatenate([np.ravel(v[:5]), [v[5]]]) for v in HANDSHAPES.values()])  # (9, 16)
_REST_SHAPE = _SHAPE_NAMES.index("c")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


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
    thumb_base = _unit(np.array([0.55, -0.8, 0.25]))
    across = _unit(np.array([-0.7, -0.2, 0.7]))  # thumb flexes across the palm
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


# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignerProportions:
    shoulder_width: float
    centre_x: float
    shoulder_y: float
    upper_arm: float
    forearm: float
    hand: float
    face: float  # jaw width
    neck: float  # chin above the shoulder line


def _sample_signer(rng: np.random.Generator) -> SignerProportions:
    w = rng.uniform(0.27, 0.34)
    return SignerProportions(
        shoulder_width=w, centre_x=rng.uniform(0.45, 0.55), shoulder_y=rng.uniform(0.56, 0.64),
        upper_arm=w * rng.uniform(0.76, 0.86), forearm=w * rng.uniform(0.60, 0.68),
        hand=w * rng.uniform(0.42, 0.48), face=w * rng.uniform(0.42, 0.50), neck=w * rng.uniform(0.18, 0.30))


def _ease(n_frames: int, key_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: index of the previous keyframe and the eased blend weight towards the next one."""
    t = np.arange(n_frames, dtype=float)
    seg = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, len(key_times) - 2)
    u = (t - key_times[seg]) / np.maximum(key_times[seg + 1] - key_times[seg], 1e-9)
    u = np.clip(u, 0.0, 1.0)
    return seg, u * u * (3.0 - 2.0 * u)  # zero velocity at every keyframe: movement, then hold


def _interp(keys: np.ndarray, seg: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = w.reshape((-1,) + (1,) * (keys.ndim - 1))
    return keys[seg] * (1.0 - w) + keys[seg + 1] * w


def _smooth_noise(rng, n_frames: int, dims: int, scale: float, period: float = 12.0) -> np.ndarray:
    """Slow random drift: noise on a coarse grid, linearly interpolated."""
    n_knots = int(n_frames / period) + 2
    knots = rng.normal(0.0, scale, (n_knots, dims))
    pos = np.arange(n_frames) / period
    i = np.minimum(pos.astype(int), n_knots - 2)
    f = (pos - i)[:, None]
    return knots[i] * (1 - f) + knots[i + 1] * f


def _rotation(yaw, pitch, roll) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def _solve_elbow(shoulder, wrist, upper, fore, pole):
    """Two-link IK: (T, 3) shoulder and wrist target -> (elbow, reachable wrist)."""
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    reach = np.clip(dist, abs(upper - fore) + 1e-3, 0.985 * (upper + fore))
    n = d / np.maximum(dist, 1e-9)
    wrist = shoulder + n * reach
    cos_a = (upper ** 2 + reach ** 2 - fore ** 2) / (2 * upper * reach)
    along, radius = upper * cos_a, upper * np.sqrt(np.clip(1 - cos_a ** 2, 0, 1))
    q = _unit(pole - np.sum(pole * n, -1, keepdims=True) * n)  # pole direction, orthogonal to the arm
    return shoulder + along * n + radius * q, wrist


def _hand_frame(elbow, wrist, pronation, flexion, mirror: bool):
    """Finger direction and palm normal that follow the forearm, turned by pronation and wrist flexion."""
    f = _unit(wrist - elbow)
    toward_camera = np.array([0.0, 0.0, 1.0])
    n0 = toward_camera - f[:, 2:3] * f
    fallback = np.array([0.0, -1.0, 0.0]) - f[:, 1:2] * f
    n0 = np.where(np.linalg.norm(n0, axis=-1, keepdims=True) > 0.25, n0, fallback)
    n0 = _unit(n0)
    side = np.cross(f, n0)
    sign = -1.0 if mirror else 1.0
    a = (sign * pronation)[:, None]
    n = np.cos(a) * n0 + np.sin(a) * side
    b = flexion[:, None]
    return _unit(np.cos(b) * f + np.sin(b) * n), _unit(np.cos(b) * n - np.sin(b) * f)


def _face_points(n_frames: int, seg, w, keys: dict, blink: np.ndarray) -> np.ndarray:
    """(T, 68, 3) face in template units, with expression and head rotation applied."""
    mouth = _interp(keys["mouth"], seg, w)[:, None]
    smile = _interp(keys["smile"], seg, w)[:, None]
    brow = _interp(keys["brow"], seg, w)[:, None]
    pts = np.repeat(FACE_TEMPLATE[None], n_frames, axis=0)
    pts[:, _LOWER_OUTER, 1] += 0.16 * mouth
    pts[:, _LOWER_INNER, 1] += 0.15 * mouth
    pts[:, _UPPER_INNER, 1] -= 0.02 * mouth
    pts[:, 0:17, 1] += 0.12 * mouth * _JAW_WEIGHT
    pts[:, _MOUTH_CORNERS, 1] += 0.04 * mouth - 0.04 * smile
    pts[:, _MOUTH_CORNERS, 0] *= 1.0 + 0.15 * smile - 0.08 * mouth
    pts[:, 17:27, 1] -= 0.06 * brow
    furrow = np.clip(-brow, 0, None)
    pts[:, [20, 21], 0] += 0.03 * furrow
    pts[:, [22, 23], 0] -= 0.03 * furrow
    pts[:, _UPPER_LIDS, 1] += 0.07 * blink[:, None]
    pts[:, _LOWER_LIDS, 1] -= 0.005 * blink[:, None]
    rot = _rotation(_interp(keys["yaw"], seg, w), _interp(keys["pitch"], seg, w), _interp(keys["roll"], seg, w))
    pivot = np.array([0.0, 0.4, 0.0])
    return (pts - pivot) @ np.transpose(rot, (0, 2, 1)) + pivot


def _blinks(rng, n_frames: int) -> np.ndarray:
    blink = np.zeros(n_frames)
    t = rng.uniform(5, 60)
    while t < n_frames:
        for k, v in enumerate((0.5, 1.0, 1.0, 0.5)):
            i = int(t) + k
            if i < n_frames:
                blink[i] = v
        t += rng.uniform(40, 110)
    return blink


def _signing_keys(rng, n_keys: int, p: SignerProportions, eye_y: float, dominant_right: bool):
    """Keyframe targets: wrist positions (3-D), handshapes, wrist angles, face expression."""
    w, cx = p.shoulder_width, p.centre_x
    rest_y = p.shoulder_y + 1.15 * w
    keys: dict = {}
    for side in ("right", "left"):
        dominant = (side == "right") == dominant_right
        outward = -1.0 if side == "right" else 1.0  # the subject's right is image left
        pos = np.zeros((n_keys, 3))
        active = np.ones(n_keys, dtype=bool)
        active[[0, -1]] = False
        if not dominant:
            active &= rng.random(n_keys) < 0.45
        # Signing space: from below the chest up to the forehead, about a shoulder width either side.
        x = cx + outward * rng.uniform(-0.35, 0.75, n_keys) * w * (1.0 if dominant else 0.9)
        y = rng.uniform(eye_y - 0.15 * w, p.shoulder_y + 0.75 * w, n_keys)
        z = rng.uniform(0.25, 0.9, n_keys) * w
        rest = np.stack([np.full(n_keys, cx + outward * 0.25 * w), np.full(n_keys, rest_y),
                         np.full(n_keys, 0.35 * w)], 1)
        pos[:] = rest
        pos[active] = np.stack([x, y, z], 1)[active]
        shape = rng.integers(0, len(_SHAPE_NAMES), n_keys)
        shape[~active] = _REST_SHAPE
        keys[side] = {
            "wrist": pos, "active": active, "shape": _SHAPE_PARAMS[shape],
            "pronation": np.where(active, rng.uniform(-1.4, 1.0, n_keys), 0.6),
            "flexion": np.where(active, rng.uniform(-0.35, 0.45, n_keys), 0.1),
        }
    talking = rng.random(n_keys) < 0.5
    keys["mouth"] = np.where(talking, rng.uniform(0.1, 0.8, n_keys), 0.0)
    keys["smile"] = rng.uniform(-0.2, 0.8, n_keys) * (rng.random(n_keys) < 0.4)
    keys["brow"] = rng.uniform(-0.8, 1.0, n_keys) * (rng.random(n_keys) < 0.6)
    keys["yaw"] = rng.uniform(-0.3, 0.3, n_keys)
    keys["pitch"] = rng.uniform(-0.15, 0.15, n_keys)
    keys["roll"] = rng.uniform(-0.12, 0.12, n_keys)
    for name in ("mouth", "smile", "brow", "yaw", "pitch", "roll"):
        keys[name][[0, -1]] = keys[name][[0, -1]] * 0.3
    return keys


def _torso(rng, p: SignerProportions, n_frames: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Slow sway and shoulder tilt: the (T, 2) shoulder-line centre and each side's (T, 3) shoulder."""
    w = p.shoulder_width
    sway = _smooth_noise(rng, n_frames, 2, 0.01, period=20.0)
    tilt = _smooth_noise(rng, n_frames, 1, 0.04, period=25.0)[:, 0]
    centre = np.stack([p.centre_x + sway[:, 0], p.shoulder_y + sway[:, 1]], 1)
    half = 0.5 * w * np.stack([np.cos(tilt), np.sin(tilt)], 1)
    shoulder_l = np.concatenate([centre + half, np.zeros((n_frames, 1))], 1)  # subject's left: image right
    shoulder_r = np.concatenate([centre - half, np.zeros((n_frames, 1))], 1)
    return centre, {"right": shoulder_r, "left": shoulder_l}


def _key_times(rng, n_frames: int) -> np.ndarray:
    """Keyframe times, the first and last at the ends of the video."""
    n_keys = max(3, int(round(n_frames / rng.uniform(9, 16))) + 1)  # a sign every 0.4-0.6 s at 25 fps
    inner = np.sort(rng.uniform(0.12, 0.88, n_keys - 2)) * (n_frames - 1)
    return np.concatenate([[0.0], inner, [n_frames - 1.0]])


def _face_in_picture(rng, p: SignerProportions, seg, wgt, keys: dict, chin: np.ndarray) -> np.ndarray:
    """(T, 68, 2) face in image coordinates: template units -> image, chin on the chin point of the body."""
    n_frames = len(chin)
    face = _face_points(n_frames, seg, wgt, keys, _blinks(rng, n_frames))
    face_xy = (face[..., :2] - FACE_TEMPLATE[8, :2]) * p.face + chin[:, None]
    face_xy += rng.normal(0.0, 0.0006, face_xy.shape)
    return face_xy


def _arm(rng, p: SignerProportions, side: str, shoulder: np.ndarray, k: dict, seg, wgt, mirror: bool):
    """One arm from its keyframes: (T, 3) elbow and wrist and the (T, 21, 3) hand points."""
    n_frames = len(shoulder)
    target = _interp(k["wrist"], seg, wgt) + np.concatenate(
        [_smooth_noise(rng, n_frames, 2, 0.006, period=6.0), np.zeros((n_frames, 1))], 1)
    outward = -1.0 if side == "right" else 1.0
    pole = np.array([0.6 * outward, 1.0, -0.3])
    elbow, wrist = _solve_elbow(shoulder, target, p.upper_arm, p.forearm, pole)
    finger_dir, palm = _hand_frame(elbow, wrist, _interp(k["pronation"], seg, wgt),
                                   _interp(k["flexion"], seg, wgt), mirror)
    points = hand_points(_interp(k["shape"], seg, wgt), finger_dir, palm, wrist, p.hand, mirror)
    return elbow, wrist, points


def _tracked_hand(rng, wrist: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(T, 21, 3) hand keypoints as a tracker reports them: jittered, all zeros where tracking is lost."""
    n_frames = len(points)
    hand_xy = points[..., :2] + rng.normal(0.0, 0.0012, points[..., :2].shape)
    # Tracking: lost low in the picture or outside it, and now and then for a few frames.
    tracked = (wrist[:, 1] < 0.9) & (hand_xy.min(axis=(1, 2)) > 0) & (hand_xy.max(axis=(1, 2)) < 1)
    if rng.random() < 0.35:
        start = rng.integers(0, n_frames)
        tracked[start:start + rng.integers(2, 7)] = False
    hand = np.zeros(points.shape)
    hand[..., :2] = np.where(tracked[:, None, None], hand_xy, 0.0)
    hand[..., 2] = tracked[:, None].astype(float)
    return hand


def _pose_arm(rng, pose: np.ndarray, pose_vis: np.ndarray, side: str, shoulder, elbow, wrist, points) -> None:
    """Fill one side's pose points (shoulder, elbow, wrist and hand) and their visibility."""
    n_frames = len(pose)
    s_idx, e_idx, w_idx = (12, 14, 16) if side == "right" else (11, 13, 15)
    pose[:, s_idx] = shoulder
    pose[:, e_idx] = elbow
    pose[:, w_idx] = wrist
    # Pose hand points: pinky/index knuckles and thumb.
    pose[:, w_idx + 2] = points[:, 17]
    pose[:, w_idx + 4] = points[:, 5]
    pose[:, w_idx + 6] = points[:, 2]
    pose_vis[:, s_idx] = rng.uniform(0.97, 1.0, n_frames)
    pose_vis[:, e_idx] = rng.uniform(0.75, 0.99, n_frames)
    raised = np.clip((0.95 - wrist[:, 1]) / 0.2, 0.05, 1.0)
    for idx in (w_idx, w_idx + 2, w_idx + 4, w_idx + 6):
        pose_vis[:, idx] = np.clip(raised * rng.uniform(0.55, 0.98, n_frames), 0.02, 1.0)


def _pose_head_and_hips(rng, pose: np.ndarray, pose_vis: np.ndarray, face_xy: np.ndarray, centre: np.ndarray,
                        p: SignerProportions) -> None:
    """Fill the pose face points (from the face mesh) and the hips (below the frame, barely visible)."""
    n_frames, w = len(pose), p.shoulder_width
    pose[:, 0, :2] = face_xy[:, 30]
    for idx, eye in ((1, slice(42, 43)), (3, slice(45, 46)), (4, slice(39, 40)), (6, slice(36, 37))):
        pose[:, idx, :2] = face_xy[:, eye].mean(1)
    pose[:, 2, :2] = face_xy[:, 42:48].mean(1)
    pose[:, 5, :2] = face_xy[:, 36:42].mean(1)
    pose[:, 7, :2] = face_xy[:, 16] + (face_xy[:, 16] - face_xy[:, 27]) * 0.1
    pose[:, 8, :2] = face_xy[:, 0] + (face_xy[:, 0] - face_xy[:, 27]) * 0.1
    pose[:, 9, :2] = face_xy[:, 54]
    pose[:, 10, :2] = face_xy[:, 48]
    pose_vis[:, 0:11] = rng.uniform(0.98, 1.0, (n_frames, 11))
    hips_y = p.shoulder_y + 1.35 * w
    pose[:, 23, :2] = np.stack([centre[:, 0] + 0.32 * w, np.full(n_frames, hips_y)], 1)
    pose[:, 24, :2] = np.stack([centre[:, 0] - 0.32 * w, np.full(n_frames, hips_y)], 1)
    pose_vis[:, 23:25] = rng.uniform(0.05, 0.3, (n_frames, 2))


def generate_video(seed: int, video: int, n_frames: int) -> np.ndarray:
    """One signing video: (n_frames, 143, 3) float32 in the 143-point layout.

    The steps draw from one generator in a fixed order (signer, torso, keyframes, face, then each
    arm, then head and hips): reordering them changes every video.
    """
    rng = np.random.default_rng([seed, video])
    p = _sample_signer(rng)
    centre, shoulders = _torso(rng, p, n_frames)
    chin = centre + np.array([0.0, -p.neck])
    eye_y = p.shoulder_y - p.neck - 0.85 * p.face
    key_times = _key_times(rng, n_frames)
    seg, wgt = _ease(n_frames, key_times)
    keys = _signing_keys(rng, len(key_times), p, eye_y, dominant_right=rng.random() < 0.85)

    kp = np.zeros((n_frames, layout.N_POINTS, 3))
    face_xy = _face_in_picture(rng, p, seg, wgt, keys, chin)
    kp[:, layout.FACE, :2] = face_xy
    kp[:, layout.FACE, 2] = 1.0
    pose = np.zeros((n_frames, 33, 3))
    pose_vis = np.zeros((n_frames, 33))
    for side, part, mirror in (("right", layout.RIGHT_HAND, False), ("left", layout.LEFT_HAND, True)):
        elbow, wrist, points = _arm(rng, p, side, shoulders[side], keys[side], seg, wgt, mirror)
        kp[:, part] = _tracked_hand(rng, wrist, points)
        _pose_arm(rng, pose, pose_vis, side, shoulders[side], elbow, wrist, points)
    _pose_head_and_hips(rng, pose, pose_vis, face_xy, centre, p)
    pose[..., 2] = pose_vis
    kp[:, layout.POSE] = pose
    # Anything outside the picture is not observed: missing, all zeros (legs always are).
    outside = ((kp[..., :2] < 0) | (kp[..., :2] > 1)).any(-1)
    kp[outside | (kp[..., 2] <= 0)] = 0.0
    return kp.astype(np.float32)


def assign_splits(n_videos: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Whole videos per split: (n_videos,) of 'train'|'dev'|'test' (dev/test get >= 1 video when n >= 3)."""
    order = np.random.default_rng([seed, 7919]).permutation(n_videos)
    n_dev = max(1, int(round(fractions[1] * n_videos))) if n_videos >= 2 else 0
    n_test = max(1, int(round(fractions[2] * n_videos))) if n_videos >= 3 else 0
    split = np.full(n_videos, "train", dtype="<U5")
    split[order[:n_dev]] = "dev"
    split[order[n_dev:n_dev + n_test]] = "test"
    return split


def generate_signer_frames(n_videos: int = 12, frames_per_video: int = 48, seed: int = 0) -> KeypointFrames:
    """Synthetic signing videos as KeypointFrames (the same frames generate_signer_data pickles)."""
    if n_videos < 1 or frames_per_video < 2:
        raise ValueError("need n_videos >= 1 and frames_per_video >= 2")
    splits = assign_splits(n_videos, seed)
    videos = [generate_video(seed, v, frames_per_video) for v in range(n_videos)]
    return KeypointFrames(
        keypoints=np.concatenate(videos),
        split=np.repeat(splits, frames_per_video),
        video_id=np.repeat([f"synth-{seed}-{v:04d}" for v in range(n_videos)], frames_per_video),
        frame_index=np.tile(np.arange(frames_per_video), n_videos),
        source=f"synthetic(seed={seed})", format="synthetic")


def generate_signer_data(n_videos: int = 12, frames_per_video: int = 48, seed: int = 0) -> dict:
    """The seed's skeleton pickle structure: data[split]['keypoints'] = list of per-frame dicts.

    Each split also carries ``video_id`` and ``frame_index`` lists (read back by signpose.io).
    """
    return generate_signer_frames(n_videos, frames_per_video, seed).to_seed_dict()


def generate_face_data(n_videos: int = 12, frames_per_video: int = 48, seed: int = 0) -> dict:
    """The seed's face-only structure: {'keypoints': (N, 68, 3) float32} (plus video_id/frame_index)."""
    frames = generate_signer_frames(n_videos, frames_per_video, seed)
    return {"keypoints": np.ascontiguousarray(frames.face), "video_id": frames.video_id.tolist(),
            "frame_index": frames.frame_index.tolist()}


__all__ = ["HANDSHAPES", "SPLITS", "assign_splits", "generate_face_data", "generate_signer_data",
           "generate_signer_frames", "generate_video", "write_all_formats", "write_face_pickle",
           "write_seed_pickle"]
