"""Generated bodies and motion: signer proportions, keyframed signing, two-link arms, the pose points.

Body proportions were measured on the real MediaPipe Holistic samples (shoulder width W about a third
of the frame; upper arm 0.75-0.85 W, forearm 0.6 W, hand 0.45 W, jaw width 0.45 W, chin 0.25 W above
the shoulder line), varied per signer. Arms are two-link chains solved by inverse kinematics in 3-D
(elbows drop down and out), projected orthographically. A video is rest -> a few signs (movement +
hold between keyframes, eased so velocity is zero at holds) -> rest; the dominant hand signs in front
of chest and face (some signs touch the face: chin, mouth, cheek, forehead), the other hand joins some.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signpose.synth.hands import hand_points, handshape_keys, unit

P_FACE_SIGN = 0.25  # share of the dominant hand's signs made at the face


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


def sample_signer(rng: np.random.Generator) -> SignerProportions:
    w = rng.uniform(0.27, 0.34)
    return SignerProportions(
        shoulder_width=w, centre_x=rng.uniform(0.45, 0.55), shoulder_y=rng.uniform(0.56, 0.64),
        upper_arm=w * rng.uniform(0.76, 0.86), forearm=w * rng.uniform(0.60, 0.68),
        hand=w * rng.uniform(0.42, 0.48), face=w * rng.uniform(0.42, 0.50), neck=w * rng.uniform(0.18, 0.30))


def ease(n_frames: int, key_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: index of the previous keyframe and the eased blend weight towards the next one."""
    t = np.arange(n_frames, dtype=float)
    seg = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, len(key_times) - 2)
    u = (t - key_times[seg]) / np.maximum(key_times[seg + 1] - key_times[seg], 1e-9)
    u = np.clip(u, 0.0, 1.0)
    return seg, u * u * (3.0 - 2.0 * u)  # zero velocity at every keyframe: movement, then hold


def interp(keys: np.ndarray, seg: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = w.reshape((-1,) + (1,) * (keys.ndim - 1))
    return keys[seg] * (1.0 - w) + keys[seg + 1] * w


def smooth_noise(rng, n_frames: int, dims: int, scale: float, period: float = 12.0) -> np.ndarray:
    """Slow random drift: noise on a coarse grid, linearly interpolated."""
    n_knots = int(n_frames / period) + 2
    knots = rng.normal(0.0, scale, (n_knots, dims))
    pos = np.arange(n_frames) / period
    i = np.minimum(pos.astype(int), n_knots - 2)
    f = (pos - i)[:, None]
    return knots[i] * (1 - f) + knots[i + 1] * f


def _solve_elbow(shoulder, wrist, upper, fore, pole):
    """Two-link IK: (T, 3) shoulder and wrist target -> (elbow, reachable wrist)."""
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    reach = np.clip(dist, abs(upper - fore) + 1e-3, 0.985 * (upper + fore))
    n = d / np.maximum(dist, 1e-9)
    wrist = shoulder + n * reach
    cos_a = (upper ** 2 + reach ** 2 - fore ** 2) / (2 * upper * reach)
    along, radius = upper * cos_a, upper * np.sqrt(np.clip(1 - cos_a ** 2, 0, 1))
    q = unit(pole - np.sum(pole * n, -1, keepdims=True) * n)  # pole direction, orthogonal to the arm
    return shoulder + along * n + radius * q, wrist


def _hand_frame(elbow, wrist, pronation, flexion, mirror: bool):
    """Finger direction and palm normal that follow the forearm, turned by pronation and wrist flexion."""
    f = unit(wrist - elbow)
    toward_camera = np.array([0.0, 0.0, 1.0])
    n0 = toward_camera - f[:, 2:3] * f
    fallback = np.array([0.0, -1.0, 0.0]) - f[:, 1:2] * f
    n0 = np.where(np.linalg.norm(n0, axis=-1, keepdims=True) > 0.25, n0, fallback)
    n0 = unit(n0)
    side = np.cross(f, n0)
    sign = -1.0 if mirror else 1.0
    a = (sign * pronation)[:, None]
    n = np.cos(a) * n0 + np.sin(a) * side
    b = flexion[:, None]
    return unit(np.cos(b) * f + np.sin(b) * n), unit(np.cos(b) * n - np.sin(b) * f)


def signing_keys(rng, n_keys: int, p: SignerProportions, eye_y: float, dominant_right: bool) -> dict:
    """Keyframe targets of each hand: wrist positions (3-D), handshapes, wrist angles."""
    w, cx = p.shoulder_width, p.centre_x
    rest_y = p.shoulder_y + 1.15 * w
    chin_y = p.shoulder_y - p.neck
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
        # Signs at the face: the wrist below the touched spot, the hand covering part of the face.
        at_face = rng.random(n_keys) < (P_FACE_SIGN if dominant else 0.0)
        x = np.where(at_face, cx + rng.uniform(-0.5, 0.5, n_keys) * p.face, x)
        y = np.where(at_face, rng.uniform(eye_y, chin_y + 0.5 * p.hand, n_keys), y)
        z = np.where(at_face, rng.uniform(0.3, 0.55, n_keys) * w, z)
        rest = np.stack([np.full(n_keys, cx + outward * 0.25 * w), np.full(n_keys, rest_y),
                         np.full(n_keys, 0.35 * w)], 1)
        pos[:] = rest
        pos[active] = np.stack([x, y, z], 1)[active]
        keys[side] = {
            "wrist": pos, "active": active, "shape": handshape_keys(rng, active),
            "pronation": np.where(active, rng.uniform(-1.4, 1.0, n_keys), 0.6),
            "flexion": np.where(active, rng.uniform(-0.35, 0.45, n_keys), 0.1),
        }
    return keys


def torso(rng, p: SignerProportions, n_frames: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Slow sway and shoulder tilt: the (T, 2) shoulder-line centre and each side's (T, 3) shoulder."""
    w = p.shoulder_width
    sway = smooth_noise(rng, n_frames, 2, 0.01, period=20.0)
    tilt = smooth_noise(rng, n_frames, 1, 0.04, period=25.0)[:, 0]
    centre = np.stack([p.centre_x + sway[:, 0], p.shoulder_y + sway[:, 1]], 1)
    half = 0.5 * w * np.stack([np.cos(tilt), np.sin(tilt)], 1)
    shoulder_l = np.concatenate([centre + half, np.zeros((n_frames, 1))], 1)  # subject's left: image right
    shoulder_r = np.concatenate([centre - half, np.zeros((n_frames, 1))], 1)
    return centre, {"right": shoulder_r, "left": shoulder_l}


def key_times(rng, n_frames: int) -> np.ndarray:
    """Keyframe times, the first and last at the ends of the video."""
    n_keys = max(3, int(round(n_frames / rng.uniform(9, 16))) + 1)  # a sign every 0.4-0.6 s at 25 fps
    inner = np.sort(rng.uniform(0.12, 0.88, n_keys - 2)) * (n_frames - 1)
    return np.concatenate([[0.0], inner, [n_frames - 1.0]])


def arm(rng, p: SignerProportions, side: str, shoulder: np.ndarray, k: dict, seg, wgt, mirror: bool):
    """One arm from its keyframes: (T, 3) elbow and wrist and the (T, 21, 3) hand points."""
    n_frames = len(shoulder)
    target = interp(k["wrist"], seg, wgt) + np.concatenate(
        [smooth_noise(rng, n_frames, 2, 0.006, period=6.0), np.zeros((n_frames, 1))], 1)
    outward = -1.0 if side == "right" else 1.0
    pole = np.array([0.6 * outward, 1.0, -0.3])
    elbow, wrist = _solve_elbow(shoulder, target, p.upper_arm, p.forearm, pole)
    finger_dir, palm = _hand_frame(elbow, wrist, interp(k["pronation"], seg, wgt),
                                   interp(k["flexion"], seg, wgt), mirror)
    points = hand_points(interp(k["shape"], seg, wgt), finger_dir, palm, wrist, p.hand, mirror)
    return elbow, wrist, points


def pose_arm(rng, pose: np.ndarray, pose_vis: np.ndarray, side: str, shoulder, elbow, wrist, points) -> None:
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


def pose_head_and_hips(rng, pose: np.ndarray, pose_vis: np.ndarray, face_xy: np.ndarray, centre: np.ndarray,
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


__all__ = ["SignerProportions", "arm", "ease", "interp", "key_times",
           "pose_arm", "pose_head_and_hips", "sample_signer", "signing_keys", "smooth_noise", "torso"]
