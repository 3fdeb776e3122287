"""Synthetic signer frames: the embedded default data set (and what the tests read).

A signer is a small articulated model, not noise around a template:

* :mod:`~signpose.synth.body`: body proportions measured on the real Holistic samples, arms solved by
  inverse kinematics in 3-D, keyframed signing (movement + hold) from rest to rest, some signs at the
  face;
* :mod:`~signpose.synth.hands`: 21 MediaPipe joints, 21 handshapes with per-sign finger articulation,
  a wrist that follows the forearm; a hand is lost as a whole for runs of frames (at rest, out of the
  picture, dropouts that come more often when it moves fast or covers the face);
* :mod:`~signpose.synth.faces`: the 68-point iBUG face in 3-D with one identity per video drawn from
  anthropometric norms (Farkas 1994), expression (mouth, smile, brows, blinks), head pose of signing,
  per-point detector noise, and either annotation convention (manual iBUG-68 or MediaPipe 468 -> 68).

Everything is deterministic in ``seed`` (video ``v`` depends only on ``(seed, v)``) and vectorised over
the frames of a video. Coordinates are [0, 1] of a square frame; confidences follow Holistic (hands
and face 1 when tracked, pose visibility in (0, 1]).
"""

from __future__ import annotations

import numpy as np

from signpose import layout
from signpose.io.frames import SPLITS, KeypointFrames
from signpose.io.writers import write_all_formats, write_face_pickle, write_seed_pickle  # re-exported
from signpose.synth import body, faces
from signpose.synth.faces import CONVENTIONS, FACE_TEMPLATE, face_identity
from signpose.synth.hands import HANDSHAPES, box, hand_points, tracked_hand

OCCLUDED_FACE_NOISE = 2.0  # face detector noise is this many times larger while a hand covers the face


def _face_in_picture(rng, p: body.SignerProportions, seg, wgt, keys: dict, chin: np.ndarray,
                     ident: dict) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 2) face in image coordinates (chin on the body's chin point) and the per-point noise
    in template units that the detector adds on top (scaled by occlusion later)."""
    n_frames = len(chin)
    shape = faces.identity_shape(ident)
    values = {name: body.interp(keys[name], seg, wgt) for name in keys}
    face = faces.face_points(shape, n_frames, values["mouth"], values["smile"], values["brow"],
                             faces.blinks(rng, n_frames), values["yaw"], values["pitch"], values["roll"])
    xy = faces.annotate(face, ident)
    face_xy = (xy - shape[8, :2]) * p.face + chin[:, None]
    noise = rng.normal(0.0, 1.0, face_xy.shape) * (faces.POINT_NOISE[:, None] * p.face)
    return face_xy, noise


def generate_video(seed: int, video: int, n_frames: int) -> np.ndarray:
    """One signing video: (n_frames, 143, 3) float32 in the 143-point layout.

    The steps draw from one generator in a fixed order (signer, torso, keyframes, face, then each
    arm, then head and hips): reordering them changes every video. The face identity has its own
    generator (:func:`signpose.synth.faces.face_identity`).
    """
    rng = np.random.default_rng([seed, video])
    ident = face_identity(seed, video)
    p = body.sample_signer(rng)
    centre, shoulders = body.torso(rng, p, n_frames)
    chin = centre + np.array([0.0, -p.neck])
    eye_y = p.shoulder_y - p.neck - 0.85 * p.face
    times = body.key_times(rng, n_frames)
    seg, wgt = body.ease(n_frames, times)
    keys = body.signing_keys(rng, len(times), p, eye_y, dominant_right=rng.random() < 0.85)
    expression = faces.expression_keys(rng, len(times), ident)

    kp = np.zeros((n_frames, layout.N_POINTS, 3))
    face_xy, face_noise = _face_in_picture(rng, p, seg, wgt, expression, chin, ident)
    pose = np.zeros((n_frames, 33, 3))
    pose_vis = np.zeros((n_frames, 33))
    covered = np.zeros(n_frames, dtype=bool)
    face_box = box(face_xy)
    for side, part, mirror in (("right", layout.RIGHT_HAND, False), ("left", layout.LEFT_HAND, True)):
        elbow, wrist, points = body.arm(rng, p, side, shoulders[side], keys[side], seg, wgt, mirror)
        kp[:, part], over_face = tracked_hand(rng, wrist, points, face_box, p.hand)
        covered |= over_face
        body.pose_arm(rng, pose, pose_vis, side, shoulders[side], elbow, wrist, points)
    face_xy = face_xy + face_noise * np.where(covered, OCCLUDED_FACE_NOISE, 1.0)[:, None, None]
    kp[:, layout.FACE, :2] = face_xy
    kp[:, layout.FACE, 2] = 1.0
    body.pose_head_and_hips(rng, pose, pose_vis, face_xy, centre, p)
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


__all__ = ["CONVENTIONS", "FACE_TEMPLATE", "HANDSHAPES", "SPLITS", "assign_splits", "face_identity",
           "generate_face_data", "generate_signer_data", "generate_signer_frames", "generate_video",
           "hand_points", "write_all_formats", "write_face_pickle", "write_seed_pickle"]
