"""The synthetic signer: deterministic, whole videos per split, and plausible by the numbers."""

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
            # fingertips may reach a little above the head, never far above it or below the body
            assert (hands[:, 0] >= top - 0.2 * image.shape[0]).all() and (hands[:, 0] <= bottom).all()
            raised += hands[:, 0].mean() < body_rows.mean()
    assert raised >= 5  # signing happens up in front of chest and face
