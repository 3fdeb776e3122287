"""Per-region shape statistics of keypoint frames: how generated data is compared with real signers
(``tools/synth_figures.py`` draws them for docs/data.md; the tests check the generator with them).

Every face statistic is a ratio of distances, so it does not depend on the frame size, the face's
size or its position: ``face_aspect`` = jaw width (points 0-16) / face height (brow centre to chin),
``eye_span`` = outer eye corners (36-45) / jaw width, ``mouth_width`` = mouth corners (48-54) / eye
span, ``nose_length`` = nose bridge to base (27-33) / eye span, ``brow_height`` = brows above the eye
centres / eye span, ``jaw_squareness`` = jaw width at points 4-12 / at 0-16 (1 = square, lower =
pointed), ``head_turn`` = nose tip (30) left or right of the eye midpoint / eye span (a yaw proxy).
``hand_span`` = thumb tip to little fingertip (4-20) / palm length (wrist to middle knuckle, 0-9).
"""

from __future__ import annotations

import numpy as np

from signpose import layout

FACE_STATS = ("face_aspect", "eye_span", "mouth_width", "nose_length", "brow_height", "jaw_squareness",
              "head_turn")


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def face_stats(keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 143, 3) frames -> each face statistic over the frames whose 68 face points are all present."""
    face = keypoints[:, layout.FACE]
    face = face[(face[..., 2] > 0).all(1)][..., :2].astype(np.float64)
    jaw = _dist(face[:, 0], face[:, 16])
    eyes = _dist(face[:, 36], face[:, 45])
    eye_mid = (face[:, 36:42].mean(1) + face[:, 42:48].mean(1)) / 2
    brow_mid = face[:, 17:27].mean(1)
    return {
        "face_aspect": jaw / _dist(brow_mid, face[:, 8]),
        "eye_span": eyes / jaw,
        "mouth_width": _dist(face[:, 48], face[:, 54]) / eyes,
        "nose_length": _dist(face[:, 27], face[:, 33]) / eyes,
        "brow_height": _dist(brow_mid, eye_mid) / eyes,
        "jaw_squareness": _dist(face[:, 4], face[:, 12]) / jaw,
        "head_turn": (face[:, 30, 0] - eye_mid[:, 0]) / eyes,
    }


def hand_span(keypoints: np.ndarray) -> np.ndarray:
    """Thumb tip to little fingertip over palm length, for every tracked hand of (N, 143, 3) frames."""
    spans = []
    for part in (layout.LEFT_HAND, layout.RIGHT_HAND):
        hand = keypoints[:, part]
        hand = hand[(hand[..., 2] > 0).all(1)][..., :2].astype(np.float64)
        spans.append(_dist(hand[:, 4], hand[:, 20]) / np.maximum(_dist(hand[:, 0], hand[:, 9]), 1e-9))
    return np.concatenate(spans)


def missing_hand_runs(keypoints: np.ndarray, video_id: np.ndarray | None = None) -> np.ndarray:
    """Lengths of the runs of consecutive frames in which a hand is missing, over both hands of every
    video (frames in input order; ``video_id`` splits the videos)."""
    videos = np.zeros(len(keypoints), dtype=int) if video_id is None else np.unique(video_id, return_inverse=True)[1]
    runs = []
    for v in np.unique(videos):
        kp = keypoints[videos == v]
        for part in (layout.LEFT_HAND, layout.RIGHT_HAND):
            missing = ~(kp[:, part, 2] > 0).any(1)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(int), [0]])))
            runs.extend(edges[1::2] - edges[::2])
    return np.asarray(runs, dtype=int)
