"""The synthetic signer: deterministic, whole videos per split, and plausible by the numbers."""

from pathlib import Path

import numpy as np
import pytest

from signpose import layout
from signpose.synth import assign_splits, generate_signer_data, generate_signer_frames, generate_video

P = layout.POSE.start


@pytest.fixture(scope="module")
def frames():
    return generate_signer_frames(n_videos=10, frames_per_video=40, seed=11)


def test_same_seed_gives_identical_frames_and_other_seeds_differ():
    a = generate_signer_frames(3, 12, seed=5)
    b = generate_signer_frames(3, 12, seed=5)
    c = generate_signer_frames(3, 12, seed=6)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert a.split.tolist() == b.split.tolist()
    assert not np.array_equal(a.keypoints, c.keypoints)


def test_a_video_does_not_depend_on_how_many_videos_are_generated():
    small = generate_signer_frames(2, 10, seed=4)
    large = generate_signer_frames(5, 10, seed=4)
    np.testing.assert_array_equal(small.keypoints[:10], large.keypoints[:10])


def test_splits_hold_whole_videos_and_all_three_splits_exist(frames):
    counts = frames.split_counts()
    assert counts["train"] > 0 and counts["dev"] > 0 and counts["test"] > 0
    for video in frames.videos():
        assert len(set(frames.split[frames.video_id == video].tolist())) == 1
    assert assign_splits(1, 0).tolist() == ["train"]


def test_coordinates_in_unit_square_and_missing_points_all_zero(frames):
    kp = frames.keypoints
    assert kp.dtype == np.float32 and np.isfinite(kp).all()
    assert kp[..., :2].min() >= 0 and kp[..., :2].max() <= 1
    assert kp[..., 2].min() >= 0 and kp[..., 2].max() <= 1
    missing = kp[..., 2] == 0
    assert (kp[missing] == 0).all()
    # Faces and shoulders are always there; legs never are (below the picture).
    assert (kp[:, layout.FACE, 2] > 0).all() and (kp[:, [P + 11, P + 12], 2] > 0).all()
    assert (kp[:, P + 25:P + 33] == 0).all()


def test_hands_are_sometimes_missing_but_mostly_tracked(frames):
    for hand in (layout.LEFT_HAND, layout.RIGHT_HAND):
        present = frames.keypoints[:, hand, 2] > 0
        assert (present.all(1) | ~present.any(1)).all()  # a hand is tracked whole or not at all
    right = (frames.keypoints[:, layout.RIGHT_HAND, 2] > 0).all(1).mean()
    left = (frames.keypoints[:, layout.LEFT_HAND, 2] > 0).all(1).mean()
    assert 0.05 < min(right, left) and max(right, left) < 0.98
    assert max(right, left) > 0.4


def test_left_and_right_are_not_swapped(frames):
    kp = frames.keypoints
    # MediaPipe/iBUG convention: the subject's left appears on the image's right.
    assert (kp[:, P + 11, 0] > kp[:, P + 12, 0]).all()
    assert (kp[:, 42:48, 0].mean(1) > kp[:, 36:42, 0].mean(1)).all()
    for hand, own_wrist, other_wrist in ((layout.LEFT_HAND, P + 15, P + 16), (layout.RIGHT_HAND, P + 16, P + 15)):
        seen = kp[:, hand.start, 2] > 0
        own = np.linalg.norm(kp[seen, hand.start, :2] - kp[seen, own_wrist, :2], axis=-1)
        assert own.max() < 1e-2
        other = np.linalg.norm(kp[seen, hand.start, :2] - kp[seen, other_wrist, :2], axis=-1)
        assert np.median(other) > 0.05


def test_hands_move_in_the_signing_space_in_front_of_chest_and_face(frames):
    kp = frames.keypoints
    for hand in (layout.LEFT_HAND, layout.RIGHT_HAND):
        seen = kp[:, hand.start, 2] > 0
        shoulder_w = np.linalg.norm(kp[seen, P + 11, :2] - kp[seen, P + 12, :2], axis=-1)
        mid_x = (kp[seen, P + 11, 0] + kp[seen, P + 12, 0]) / 2
        shoulder_y = (kp[seen, P + 11, 1] + kp[seen, P + 12, 1]) / 2
        wrist = kp[seen, hand.start, :2]
        brow_y = kp[seen, 17:27, 1].min(1)
        assert (np.abs(wrist[:, 0] - mid_x) < 1.6 * shoulder_w).all()
        assert (wrist[:, 1] > brow_y - 0.5 * shoulder_w).all()
        assert (wrist[:, 1] < shoulder_y + 1.3 * shoulder_w).all()
    # Signing actually happens at face/chest height for a good share of the frames.
    wrist_y = kp[:, layout.RIGHT_HAND.start, 1]
    seen = kp[:, layout.RIGHT_HAND.start, 2] > 0
    chest = (kp[:, P + 11, 1] + kp[:, P + 12, 1]) / 2 + 0.2
    assert (wrist_y[seen] < chest[seen]).mean() > 0.5


def test_rigid_bone_lengths_are_stable_within_each_video(frames):
    for video in frames.videos():
        kp = frames.keypoints[frames.video_id == video]
        shoulder = np.linalg.norm(kp[:, P + 11, :2] - kp[:, P + 12, :2], axis=-1)
        eyes = np.linalg.norm(kp[:, 36, :2] - kp[:, 45, :2], axis=-1)
        nose = np.linalg.norm(kp[:, 27, :2] - kp[:, 30, :2], axis=-1)
        for lengths in (shoulder, eyes, nose):
            assert lengths.std() / lengths.mean() < 0.12
        # Arms foreshorten in the picture but never stretch beyond their 3-D length.
        upper = np.linalg.norm(kp[:, P + 11, :2] - kp[:, P + 13, :2], axis=-1)
        assert upper.max() < 0.9 * shoulder.mean()


def test_motion_is_continuous_between_consecutive_frames():
    kp = generate_video(seed=3, video=0, n_frames=60)
    for point in (P + 15, P + 16, 30):
        xy, seen = kp[:, point, :2], kp[:, point, 2] > 0
        both = seen[1:] & seen[:-1]
        step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)[both]
        assert step.max() < 0.08
    # ... and there is motion at all: the dominant hand travels.
    wrists = kp[:, [P + 15, P + 16], :2]
    assert np.linalg.norm(np.diff(wrists, axis=0), axis=-1).sum(0).max() > 0.3


def test_the_face_has_expression_mouth_opens_and_closes():
    kp = generate_signer_frames(6, 60, seed=2).keypoints
    mouth = kp[:, 66, 1] - kp[:, 62, 1]  # inner lips: bottom centre minus top centre
    eye_dist = np.linalg.norm(kp[:, 36, :2] - kp[:, 45, :2], axis=-1)
    opening = mouth / eye_dist
    assert opening.min() < 0.05 and opening.max() > 0.15


def test_seed_dict_has_the_seed_structure():
    data = generate_signer_data(n_videos=3, frames_per_video=4, seed=0)
    assert set(data) <= {"train", "dev", "test"} and "train" in data
    frame = data["train"]["keypoints"][0]
    assert set(frame) == set(layout.PARTS)
    assert {k: v.shape for k, v in frame.items()} == {"face": (68, 3), "left_hand": (21, 3),
                                                      "right_hand": (21, 3), "pose": (33, 3)}


def test_rendered_synthetic_frames_show_a_signer_with_hands_in_front_of_the_body():
    from signpose.render import RenderSettings, render_frame

    settings = RenderSettings(image_size=128, antialias=False)
    frames = generate_signer_frames(4, 30, seed=13)
    hand_levels = {settings.part_intensity[1], settings.part_intensity[2]}
    raised = 0
    for kp in frames.keypoints[::5]:
        image = render_frame(kp, settings)
        lit = np.argwhere(image > 0)
        assert 0.01 < len(lit) / image.size < 0.2  # a figure, not noise and not a blob
        face_rows = np.argwhere(image == settings.part_intensity[0])[:, 0]
        body_rows = np.argwhere(image == settings.part_intensity[3])[:, 0]
        assert face_rows.mean() < body_rows.mean()  # head above the body
        hands = np.argwhere(np.isin(image, list(hand_levels)))
        if len(hands):
            top, bottom = face_rows.min(), body_rows.max()
            # fingertips may reach a little above the head, never far above it or below the body (a
            # hand hanging at rest may reach a few pixels past the lowest drawn body point)
            assert (hands[:, 0] >= top - 0.2 * image.shape[0]).all()
            assert (hands[:, 0] <= bottom + 0.03 * image.shape[0]).all()
            raised += hands[:, 0].mean() < body_rows.mean()
    assert raised >= 5  # signing happens up in front of chest and face


# --- faces that cover real people: identity, conventions, noise (issue 16, part 2) -----------------

def _canonical_width_ratio(face: np.ndarray) -> np.ndarray:
    """Per frame: jaw width (points 0-16) over the outer-eye-corner distance (36-45)."""
    return np.linalg.norm(face[:, 0, :2] - face[:, 16, :2], axis=-1) / \
        np.linalg.norm(face[:, 36, :2] - face[:, 45, :2], axis=-1)


def test_face_identities_follow_the_anthropometric_spread_and_stay_within_its_clip():
    from signpose.synth import faces

    idents = [faces.face_identity(3, v) for v in range(600)]
    for name, cv in faces.CV.items():
        values = np.array([ident[name] for ident in idents])
        assert abs(values.mean() - 1.0) < 0.25 * faces.SPREAD * cv
        assert 0.8 < values.std() / (faces.SPREAD * cv) < 1.1  # clipped normal: a little under 1
        assert np.abs(values - 1.0).max() <= 2.5 * faces.SPREAD * cv + 1e-12
    exponents = np.array([ident["jaw_exponent"] for ident in idents])
    assert faces.JAW_EXPONENT[0] <= exponents.min() and exponents.max() <= faces.JAW_EXPONENT[1]
    # Identity is per video and does not depend on generating the video.
    assert faces.face_identity(3, 7)["face_width"] == idents[7]["face_width"]


def test_generated_faces_differ_between_videos_more_than_within_one():
    frames = generate_signer_frames(24, 20, seed=21)
    ratio = _canonical_width_ratio(frames.face).reshape(24, 20)
    mouth = (np.linalg.norm(frames.face[:, 48, :2] - frames.face[:, 54, :2], axis=-1) /
             np.linalg.norm(frames.face[:, 36, :2] - frames.face[:, 45, :2], axis=-1)).reshape(24, 20)
    for stat in (ratio, mouth):
        assert stat.mean(1).std() > 1.5 * np.median(stat.std(1))


def test_both_annotation_conventions_are_generated_and_the_mediapipe_jaw_is_narrower():
    from signpose.synth import faces

    n = 30
    frames = generate_signer_frames(n, 10, seed=8)
    idents = [faces.face_identity(8, v) for v in range(n)]
    conventions = np.array([ident["convention"] for ident in idents])
    assert set(conventions) == set(faces.CONVENTIONS)
    # The jaw/eye width ratio with the identity's own face and eye widths divided out.
    ratio = _canonical_width_ratio(frames.face).reshape(n, 10).mean(1) / \
        np.array([ident["face_width"] / ident["eye_width"] for ident in idents])
    ibug, mediapipe = ratio[conventions == "ibug68"], ratio[conventions == "mediapipe68"]
    # Measured on the real samples: 1.75 (iBUG, OpenPose) vs 1.55 (MediaPipe mesh -> 68).
    assert abs(ibug.mean() - 1.75) < 0.08 and abs(mediapipe.mean() - 1.55) < 0.08
    # The MediaPipe jaw's top points sit above the eye line, the iBUG ones at it.
    top = frames.face[:, [0, 16], 1].mean(1) - frames.face[:, [36, 45], 1].mean(1)
    top = top.reshape(n, 10).mean(1)
    assert top[conventions == "mediapipe68"].mean() < top[conventions == "ibug68"].mean()


def test_face_points_carry_detector_noise_larger_on_the_jaw_than_at_the_eye_corners():
    kp = generate_video(4, 0, 60)
    face = kp[:, layout.FACE, :2]
    # Frame-to-frame jitter of the points relative to the nose bridge, per region.
    rel = face - face[:, 27:28]
    jitter = np.abs(np.diff(rel, 2, axis=0)).mean(axis=(0, 2))
    assert jitter[0:17].mean() > 1.5 * jitter[36:48].mean()


# --- hands: shapes, articulation, MediaPipe-like tracking loss ------------------------------------

def test_more_handshapes_and_no_two_signs_share_one_exact_shape():
    from signpose.synth import HANDSHAPES
    from signpose.synth.hands import handshape_keys

    assert len(HANDSHAPES) >= 20
    params = handshape_keys(np.random.default_rng(0), np.ones(50, dtype=bool))
    assert len(np.unique(params.round(6), axis=0)) == 50


def _runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(int), [0]])))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def test_hands_go_missing_whole_for_runs_of_frames_also_in_mid_video():
    frames = generate_signer_frames(30, 60, seed=17)
    mid_runs = []
    for v in range(30):
        kp = frames.keypoints[v * 60:(v + 1) * 60]
        for hand in (layout.LEFT_HAND, layout.RIGHT_HAND):
            present = kp[:, hand, 2] > 0
            assert (present.all(1) | ~present.any(1)).all()  # whole hands, never single points
            mid_runs += [length for start, length in _runs(~present.any(1))
                         if start > 0 and start + length < 60]
    assert len(mid_runs) >= 10
    assert max(mid_runs) >= 3 and np.mean(mid_runs) > 1.5  # runs, not isolated frames


def test_the_dominant_hand_sometimes_covers_the_face():
    from signpose.synth.hands import box, covers

    frames = generate_signer_frames(20, 48, seed=5)
    kp = frames.keypoints
    face_box = box(kp[:, layout.FACE, :2])
    over = np.zeros(len(kp), dtype=bool)
    for hand in (layout.LEFT_HAND, layout.RIGHT_HAND):
        present = (kp[:, hand, 2] > 0).all(1)
        over |= present & covers(box(kp[:, hand, :2]), face_box)
    assert 0.02 < over.mean() < 0.5


def test_generated_shape_statistics_cover_the_real_signers():
    from signpose.io import read_keypoints
    from signpose.resources import REAL_SIGNERS
    from signpose.synth.stats import FACE_STATS, face_stats, hand_span, missing_hand_runs

    generated = generate_signer_frames(80, 48, seed=0)
    gen = face_stats(generated.keypoints)
    gen["hand_span"] = hand_span(generated.keypoints)
    for path in sorted(Path(REAL_SIGNERS).glob("*.pose")):
        real = read_keypoints(str(path)).keypoints
        stats = face_stats(real)
        stats["hand_span"] = hand_span(real)
        for name in (*FACE_STATS, "hand_span"):
            lo, hi = np.percentile(gen[name], [0.5, 99.5])
            assert lo < np.median(stats[name]) < hi, (path.name, name)
    runs = missing_hand_runs(generated.keypoints, generated.video_id)
    assert (runs <= 3).sum() >= 20 and (runs >= 15).sum() >= 10  # dropouts and whole rest periods, as in real
