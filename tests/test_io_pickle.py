"""Seed pickle formats: read through the restricted unpickler, validated, converted to 143 points."""

import os
import pickle
import subprocess

import numpy as np
import pytest

from signpose import layout
from signpose.io import KeypointFormatError, KeypointFrames, load_pickle, read_keypoints
from signpose.synth import generate_face_data, generate_signer_data, write_seed_pickle


def _frame(rng, conf=1.0):
    return {p: np.concatenate([rng.uniform(0.1, 0.9, (layout.PART_SIZES[p], 2)),
                               np.full((layout.PART_SIZES[p], 1), conf)], 1).astype(np.float32)
            for p in layout.PARTS}


def _write(tmp_path, obj, name="data.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


# --- the restricted unpickler ------------------------------------------------------------------


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _RunsSubprocess:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return subprocess.call, (self.command,)


class _Evals:
    def __reduce__(self):
        return eval, ("__import__('pathlib').Path('MARKER').touch()",)


def test_pickle_calling_os_system_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, {"train": {"keypoints": [_RunsShell(f"touch {marker}")]}})
    with pytest.raises(KeypointFormatError) as err:
        read_keypoints(path)
    assert not marker.exists()
    assert "system" in str(err.value) and str(path) in str(err.value)


def test_hand_written_pickle_importing_os_module_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(KeypointFormatError, match=r"'os\.system'"):
        load_pickle(path)
    assert not marker.exists()


def test_pickle_calling_subprocess_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, _RunsSubprocess(["touch", str(marker)]))
    with pytest.raises(KeypointFormatError, match="subprocess.call"):
        load_pickle(path)
    assert not marker.exists()


def test_pickle_calling_builtins_eval_is_refused(tmp_path):
    path = _write(tmp_path, _Evals())
    with pytest.raises(KeypointFormatError, match=r"builtins\.eval"):
        load_pickle(path)


def test_restricted_unpickler_loads_numpy_arrays_scalars_and_containers_of_every_protocol(tmp_path):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float32(1.5), "i": np.int64(3),
           "l": [1, 2.0, "x", (None, True)], "names": np.array(["x", "yy"]), "b": b"raw", "set": {1, 2}}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        back = load_pickle(path)
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["a"].dtype == np.float32 and back["s"] == np.float32(1.5) and back["l"] == obj["l"]
        assert back["names"].tolist() == ["x", "yy"] and back["set"] == {1, 2}


def test_truncated_pickle_is_a_clear_format_error(tmp_path):
    data = pickle.dumps({"keypoints": np.zeros((4, 68, 3), np.float32)}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KeypointFormatError, match="truncated or corrupt"):
        read_keypoints(path)


# --- the skeleton format ------------------------------------------------------------------------


def test_skeleton_pickle_is_flattened_in_seed_part_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = [_frame(rng) for _ in range(5)]
    path = _write(tmp_path, {"train": {"keypoints": frames[:3]}, "dev": {"keypoints": frames[3:]}})
    got = read_keypoints(path)
    assert isinstance(got, KeypointFrames) and got.keypoints.shape == (5, 143, 3)
    assert got.keypoints.dtype == np.float32
    for i, frame in enumerate(frames):
        for part in layout.PARTS:
            np.testing.assert_allclose(got.keypoints[i, layout.PART_SLICES[part]], frame[part], rtol=1e-6)
    assert got.split.tolist() == ["train"] * 3 + ["dev"] * 2
    assert got.frame_index.tolist() == [0, 1, 2, 0, 1]
    assert got.source == str(path)


def test_missing_hand_with_confidence_zero_is_valid_and_stays_all_zero(tmp_path):
    rng = np.random.default_rng(1)
    frame = _frame(rng)
    frame["left_hand"][:, 2] = 0.0  # tracker lost the hand; its x, y are leftovers
    got = read_keypoints(_write(tmp_path, {"train": {"keypoints": [frame]}}))
    assert (got.keypoints[0, layout.LEFT_HAND] == 0).all()
    assert (got.keypoints[0, layout.RIGHT_HAND, 2] == 1).all()


def test_face_only_pickle_fills_the_face_slice_and_nothing_else(tmp_path):
    face = np.random.default_rng(2).uniform(0.2, 0.8, (7, 68, 3)).astype(np.float32)
    face[..., 2] = 1.0
    got = read_keypoints(_write(tmp_path, {"keypoints": face}))
    np.testing.assert_allclose(got.face, face)
    assert (got.keypoints[:, 68:] == 0).all()
    assert set(got.split.tolist()) == {"train"} and got.format == "face-pickle"


def test_pixel_coordinates_with_frame_size_are_letterboxed_into_unit_square(tmp_path):
    rng = np.random.default_rng(3)
    frame = _frame(rng)
    frame["face"][0, :2] = (320.0, 120.0)  # the centre of a 640 x 240 frame
    frame["face"][1, :2] = (0.0, 0.0)      # its top-left corner
    for part in layout.PARTS:
        frame[part][:, 0] *= 640
        frame[part][:, 1] *= 240
    frame["face"][0, :2] = (320.0, 120.0)
    frame["face"][1, :2] = (0.0, 0.0)
    got = read_keypoints(_write(tmp_path, {"train": {"keypoints": [frame]}, "frame_size": (640, 240)}))
    np.testing.assert_allclose(got.keypoints[0, 0, :2], (0.5, 0.5), atol=1e-6)
    np.testing.assert_allclose(got.keypoints[0, 1, :2], (0.0, 200 / 640), atol=1e-6)
    assert got.keypoints[..., :2].max() <= 1.0


def test_pixel_coordinates_without_frame_size_are_scaled_by_the_file_extent(tmp_path):
    face = np.zeros((2, 68, 3), np.float32)
    face[..., 0] = np.linspace(100, 400, 68)
    face[..., 1] = 200.0
    face[..., 2] = 1.0
    got = read_keypoints(_write(tmp_path, {"keypoints": face}))
    assert got.face[..., 0].max() == pytest.approx(1.0)
    # One scale for x and y: the shape keeps its aspect ratio.
    assert got.face[0, 0, 1] == pytest.approx(0.5)


def test_points_outside_the_frame_become_missing(tmp_path):
    rng = np.random.default_rng(4)
    frame = _frame(rng)
    frame["pose"][25:, :2] = (0.5, 1.4)  # legs below the picture, as MediaPipe reports them
    frame["pose"][25:, 2] = 0.2
    got = read_keypoints(_write(tmp_path, {"train": {"keypoints": [frame]}}))
    assert (got.keypoints[0, layout.POSE][25:] == 0).all()
    assert (got.keypoints[0, layout.POSE][:25, 2] > 0).all()


def test_wrong_hand_point_count_names_file_split_sample_and_field(tmp_path):
    rng = np.random.default_rng(5)
    frames = [_frame(rng) for _ in range(13)]
    frames[12]["left_hand"] = frames[12]["left_hand"][:20]
    path = _write(tmp_path, {"train": {"keypoints": frames}}, name="phoenix.pkl")
    with pytest.raises(KeypointFormatError) as err:
        read_keypoints(path)
    e = err.value
    assert (e.file, e.split, e.sample, e.field) == (str(path), "train", 12, "left_hand")
    assert str(e) == f"{path}: split 'train', sample 12, field 'left_hand': expected shape (21, 3), got (20, 3)"


def test_nan_in_a_frame_is_located(tmp_path):
    rng = np.random.default_rng(6)
    frames = [_frame(rng) for _ in range(4)]
    frames[2]["pose"][7, 1] = np.nan
    with pytest.raises(KeypointFormatError) as err:
        read_keypoints(_write(tmp_path, {"train": {"keypoints": frames}}))
    assert (err.value.sample, err.value.field) == (2, "pose") and "point 7" in str(err.value)


# --- round trips of the generator's files --------------------------------------------------------


def test_generated_skeleton_pickle_reads_back_exactly(tmp_path):
    data = generate_signer_data(n_videos=4, frames_per_video=6, seed=3)
    write_seed_pickle(tmp_path / "synth.pkl", data)
    got = read_keypoints(tmp_path / "synth.pkl")
    assert len(got) == 24 and len(got.videos()) == 4
    for split in data:
        part = got.by_split(split)
        expect = np.stack([layout.flatten_frame(f) for f in data[split]["keypoints"]])
        np.testing.assert_array_equal(part.keypoints, expect)
        assert part.video_id.tolist() == data[split]["video_id"]


def test_generated_face_pickle_reads_back_exactly(tmp_path):
    data = generate_face_data(n_videos=2, frames_per_video=5, seed=1)
    write_seed_pickle(tmp_path / "face.pkl", data)
    got = read_keypoints(tmp_path / "face.pkl")
    np.testing.assert_array_equal(got.face, data["keypoints"])
    assert got.video_id.tolist() == data["video_id"]
