"""Every reader: generated files round-trip into the same 143-point frames; real samples read sensibly."""

from pathlib import Path

import numpy as np
import pytest

from signpose import layout
from signpose.io import KeypointFrames, read_keypoints, split_by_video
from signpose.io.pose_files import HOLISTIC_FACE_TO_IBUG68, MEDIAPIPE_FROM_BODY25
from signpose.io.writers import write_openpose_json, write_pose
from signpose.synth import generate_signer_frames, write_all_formats

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
HOLISTIC_468 = REAL / "holistic_example.pose"
HOLISTIC_478 = REAL / "holistic_7731febd6afbbe90f806a4434c282016.pose"
OPENPOSE = REAL / "openpose.pose"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")
P = layout.POSE.start


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    frames = generate_signer_frames(n_videos=3, frames_per_video=12, seed=21)
    folder = tmp_path_factory.mktemp("formats")
    return frames, write_all_formats(folder, frames, width=640, height=480)


def _first_video(frames: KeypointFrames) -> np.ndarray:
    return frames.keypoints[frames.video_id == frames.video_id[0]]


def _by_video_order(frames: KeypointFrames) -> np.ndarray:
    order = np.lexsort((frames.frame_index, frames.video_id))
    return frames.keypoints[order]


def test_seed_pickle_npz_and_parts_npz_hold_the_same_frames(generated):
    frames, paths = generated
    expect = _by_video_order(frames)
    for name in ("skeleton-pickle", "npz", "npz-parts"):
        got = read_keypoints(paths[name])
        np.testing.assert_array_equal(_by_video_order(got), expect, err_msg=name)
        assert sorted(got.split_counts().items()) == sorted(frames.split_counts().items()), name


def test_npy_and_face_formats_keep_values_and_put_everything_in_train(generated):
    frames, paths = generated
    got = read_keypoints(paths["npy"])
    np.testing.assert_array_equal(got.keypoints, frames.keypoints)
    for name in ("face-npy", "face-pickle"):
        got = read_keypoints(paths[name])
        np.testing.assert_array_equal(got.face, frames.face, err_msg=name)
        assert (got.keypoints[:, 68:] == 0).all() and set(got.split) == {"train"}


@pytest.mark.parametrize("name", ["pose-holistic", "pose-holistic478", "pose-openpose", "openpose-json"])
def test_video_formats_round_trip_through_pixel_coordinates(generated, name):
    frames, paths = generated
    expect = _first_video(frames)
    # OpenPose JSON has no frame size of its own: the caller gives it.
    got = read_keypoints(paths[name], frame_size=(640, 480) if name == "openpose-json" else None)
    assert len(got) == len(expect) and got.frame_index.tolist() == list(range(len(expect)))
    assert set(got.video_id) == {frames.video_id[0]}
    tol = 1e-4 if name == "openpose-json" else 2e-6  # JSON keeps 4 decimals of a pixel
    if name.startswith("pose-holistic"):
        np.testing.assert_allclose(got.keypoints, expect, atol=tol)
    else:
        # OpenPose: face and hands exactly; only pose points with a BODY_25 counterpart survive.
        np.testing.assert_allclose(got.keypoints[:, :P], expect[:, :P], atol=tol)
        mapped = P + np.array(sorted(MEDIAPIPE_FROM_BODY25))
        np.testing.assert_allclose(got.keypoints[:, mapped], expect[:, mapped], atol=tol)
        unmapped = np.setdiff1d(np.arange(P, 143), mapped)
        assert (got.keypoints[:, unmapped] == 0).all()


def test_pts_folder_reads_68_point_faces_scaled_by_the_image_next_to_them(generated):
    frames, paths = generated
    got = read_keypoints(paths["pts"])
    n = len(got)
    assert n == 8 and got.format == "pts"
    np.testing.assert_allclose(got.face[..., :2], frames.face[:n, :, :2], atol=1e-3)
    assert (got.face[..., 2] == 1).all() and (got.keypoints[:, 68:] == 0).all()
    single = read_keypoints(sorted(Path(paths["pts"]).glob("*.pts"))[0])
    np.testing.assert_allclose(single.face, got.face[:1])


def test_folder_of_pose_files_is_one_video_per_file(generated):
    frames, paths = generated
    got = read_keypoints(Path(paths["pose-holistic"]).parent)
    assert sorted(got.videos()) == sorted(frames.videos()) and len(got) == len(frames)


def test_non_square_frames_are_letterboxed_not_stretched(tmp_path):
    frames = generate_signer_frames(1, 4, seed=2)
    kp = frames.keypoints.copy()
    # Keep everything inside the 16:9 picture so nothing becomes off-frame.
    present = kp[..., 2] > 0
    kp[..., 1] = np.where(present, 0.3 + 0.4 * kp[..., 1], 0)
    write_pose(tmp_path / "wide.pose", kp, "holistic", width=1280, height=720)
    got = read_keypoints(tmp_path / "wide.pose")
    np.testing.assert_allclose(got.keypoints, kp, atol=1e-5)


def test_openpose_json_frame_numbers_give_frame_index_and_empty_frames_are_dropped(tmp_path):
    frames = generate_signer_frames(1, 6, seed=3)
    kp = frames.keypoints.copy()
    kp[2] = 0.0  # nobody detected in frame 2
    write_openpose_json(tmp_path, kp, 500, 500, video_id="clip")
    got = read_keypoints(tmp_path, frame_size=(500, 500))
    assert got.frame_index.tolist() == [0, 1, 3, 4, 5] and set(got.video_id) == {tmp_path.name}


def test_split_by_video_keeps_videos_whole_or_cuts_one_video_in_time():
    frames = generate_signer_frames(40, 5, seed=0)
    flat = KeypointFrames(frames.keypoints, np.full(len(frames), "train"), frames.video_id, frames.frame_index)
    split = split_by_video(flat, seed=1)
    counts = split.split_counts()
    assert counts["dev"] > 0 and counts["test"] > 0 and counts["train"] > counts["dev"] + counts["test"]
    for v in split.videos():
        assert len(set(split.split[split.video_id == v])) == 1
    one = split_by_video(flat.subset(flat.video_id == flat.video_id[0]))
    assert one.split.tolist() == ["train"] * 3 + ["dev", "test"]


# --- real samples -------------------------------------------------------------------------------


@needs_real
@pytest.mark.parametrize("path, n_frames", [(HOLISTIC_468, 97), (HOLISTIC_478, 18)])
def test_real_holistic_files_read_with_every_frame(path, n_frames):
    got = read_keypoints(path)
    assert len(got) == n_frames and got.format == "pose-holistic"
    kp = got.keypoints
    assert (kp[:, layout.FACE, 2] == 1).all()                      # the face mesh is always there
    assert ((kp[..., 2] > 0) <= ((kp[..., :2] >= 0) & (kp[..., :2] <= 1)).all(-1)).all()
    assert (kp[:, P + 25:P + 33] == 0).all()                        # legs are below the picture


@needs_real
@pytest.mark.parametrize("path", [HOLISTIC_468, HOLISTIC_478])
def test_face_mesh_to_ibug_mapping_forms_face_contours_on_real_frames(path):
    kp = read_keypoints(path).keypoints
    face, pose = kp[:, layout.FACE, :2], kp[:, layout.POSE, :2]
    jaw_width = np.linalg.norm(face[:, 0] - face[:, 16], axis=-1)
    # Jaw runs from the image left (subject's right) to the image right, lowest at the chin.
    # (Neighbouring points near the temples may step back a little, and a turned head folds the far
    # side, so compare every fourth point.)
    assert (np.diff(face[:, [0, 4, 8, 12, 16], 0], axis=1) > 0).all()
    assert (face[:, 8, 1] >= face[:, 0:17, 1].max(1) - 0.02 * jaw_width).all()
    # Brows above eyes above the nose tip above the mouth above the chin.
    brow_y, eye_y = face[:, 17:27, 1].mean(1), face[:, 36:48, 1].mean(1)
    assert (brow_y < eye_y).all() and (eye_y < face[:, 30, 1]).all()
    assert (face[:, 30, 1] < face[:, 48:60, 1].mean(1)).all() and (face[:, 57, 1] < face[:, 8, 1]).all()
    # The mapped eyes, nose tip and mouth corners sit on MediaPipe Pose's own face points.
    tol = 0.2 * jaw_width
    for ibug, mp in ((slice(36, 42), 5), (slice(42, 48), 2), (slice(30, 31), 0), (slice(48, 49), 10),
                     (slice(54, 55), 9)):
        d = np.linalg.norm(face[:, ibug].mean(1) - pose[:, mp], axis=-1)
        assert np.median(d) < np.median(tol), (ibug, mp)
    # Eye contours: corners 36/39 are the extreme x of the right eye, upper lid above lower lid.
    eye = face[:, 36:42]
    assert (eye[:, 0, 0] <= eye[:, :, 0].min(1) + 1e-6).mean() > 0.9
    assert (eye[:, [1, 2], 1].mean(1) < eye[:, [4, 5], 1].mean(1)).all()
    # Inner lips inside the outer lip corners.
    assert (face[:, 60, 0] >= face[:, 48, 0]).all() and (face[:, 64, 0] <= face[:, 54, 0]).all()
    assert len(set(HOLISTIC_FACE_TO_IBUG68)) == 68


@needs_real
def test_real_holistic_hands_belong_to_their_side():
    kp = read_keypoints(HOLISTIC_468).keypoints
    for hand, own, other in ((layout.LEFT_HAND, 15, 16), (layout.RIGHT_HAND, 16, 15)):
        seen = kp[:, hand.start, 2] > 0
        d_own = np.linalg.norm(kp[seen, hand.start, :2] - kp[seen, P + own, :2], axis=-1)
        d_other = np.linalg.norm(kp[seen, hand.start, :2] - kp[seen, P + other, :2], axis=-1)
        assert (d_own < d_other).mean() > 0.9


@needs_real
def test_real_openpose_file_maps_body25_and_keeps_face_and_hands():
    got = read_keypoints(OPENPOSE)
    kp = got.keypoints
    assert len(got) == 93 and got.format == "pose-openpose"
    assert (kp[:, layout.FACE, 2] > 0).mean() > 0.99
    unmapped = np.setdiff1d(np.arange(33), sorted(MEDIAPIPE_FROM_BODY25))
    assert (kp[:, P + unmapped] == 0).all()
    # Shoulders: MediaPipe 11 (left) is BODY_25 5 (LShoulder), on the image right.
    both = (kp[:, P + 11, 2] > 0) & (kp[:, P + 12, 2] > 0)
    assert both.mean() > 0.9 and (kp[both, P + 11, 0] > kp[both, P + 12, 0]).all()
    # The face's own eyes agree with BODY_25's eyes mapped to MediaPipe 2 / 5.
    seen = kp[:, P + 2, 2] > 0
    d = np.linalg.norm(kp[seen, 42:48, :2].mean(1) - kp[seen, P + 2, :2], axis=-1)
    assert np.median(d) < 0.01


@needs_real
def test_real_openpose_frame_size_can_be_overridden():
    default = read_keypoints(OPENPOSE)
    tight = read_keypoints(OPENPOSE, frame_size=(300, 300))
    present = default.keypoints[..., 2] > 0
    np.testing.assert_allclose(tight.keypoints[..., :2][present], default.keypoints[..., :2][present] * 1000 / 300,
                               rtol=1e-5)
