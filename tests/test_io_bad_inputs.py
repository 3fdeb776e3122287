"""Bad input, table-driven: every case is one KeypointFormatError naming file, sample and field, and
nothing is written.

Each case builds a file in an empty folder and states what the error must say: the sample index and
the field where they apply (None: the error is about the whole file), and a phrase of the message.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from pickle_opcodes import glob, int4, pickle4, ustr

from signpose import layout
from signpose.cli import main as cli_main
from signpose.io import KeypointFormatError, read_keypoints
from signpose.io.pose_files import holistic_pose_bytes
from signpose.synth import generate_signer_frames


def _frames(n=4):
    kp = generate_signer_frames(1, n, seed=9).keypoints
    return [{p: np.array(f[layout.PART_SLICES[p]]) for p in layout.PARTS} for f in kp]


def _skeleton(mutate: Callable[[list], None] | None = None, **splits) -> dict:
    frames = _frames()
    if mutate:
        mutate(frames)
    data = {"train": {"keypoints": frames}}
    data.update(splits)
    return data


def _face(mutate=None, n=5):
    face = generate_signer_frames(1, n, seed=9).keypoints[:, layout.FACE].copy()
    if mutate:
        face = mutate(face)
    return {"keypoints": face}


def _set(frame_i, part, value):
    def mutate(frames):
        frames[frame_i][part] = value(frames[frame_i][part]) if callable(value) else value
    return mutate


def _pkl(obj):
    return lambda d: _write(d / "data.pkl", pickle.dumps(obj, protocol=4))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _npz(**arrays):
    def build(d):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return _write(d / "data.npz", buffer.getvalue())
    return build


def _npz_with_object_array(d):
    buffer = io.BytesIO()
    np.savez(buffer, keypoints=np.array([{"face": 1}], dtype=object))
    return _write(d / "data.npz", buffer.getvalue())


def _npy(array):
    def build(d):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return _write(d / "data.npy", buffer.getvalue())
    return build


def _truncated(build, keep=0.5):
    def inner(d):
        path = build(d)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path
    return inner


def _pose_bytes(face_points=468):
    return holistic_pose_bytes(generate_signer_frames(1, 5, seed=9).keypoints, 640, 480, face_points=face_points)


def _pose_with_components(names_sizes):
    def build(d):
        from pose_format import Pose
        from pose_format.numpy import NumPyPoseBody
        from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

        comps = [PoseHeaderComponent(n, [str(i) for i in range(k)], [], [], "XYC") for n, k in names_sizes]
        total = sum(k for _, k in names_sizes)
        body = NumPyPoseBody(25, np.ones((3, 1, total, 2), np.float32), np.ones((3, 1, total), np.float32))
        buffer = io.BytesIO()
        Pose(PoseHeader(0.2, PoseHeaderDimensions(640, 480, 0), comps), body).write(buffer)
        return _write(d / "data.pose", buffer.getvalue())
    return build


def _pose_with_nan_in_hand(d):
    from pose_format import Pose

    pose = Pose.read(_pose_bytes())
    pose.body.data.data[2, 0, 33 + 468 + 4, 0] = np.nan  # left hand, point 4, frame 2
    pose.body.data.mask[2, 0, 33 + 468 + 4] = False
    pose.body.confidence[2, 0, 33 + 468 + 4] = 1.0
    buffer = io.BytesIO()
    pose.write(buffer)
    return _write(d / "nan.pose", buffer.getvalue())


def _json_frames(person_update):
    def build(d):
        person = {"pose_keypoints_2d": [1.0] * 75, "face_keypoints_2d": [1.0] * 210,
                  "hand_left_keypoints_2d": [1.0] * 63, "hand_right_keypoints_2d": [1.0] * 63}
        for i in range(3):
            p = dict(person)
            if i == 1:
                p.update(person_update)
            _write(d / f"clip_{i:012d}_keypoints.json", json.dumps({"people": [p]}).encode())
        return d
    return build


def _pts(text):
    return lambda d: _write(d / "face.pts", text.encode())


_PTS_OK_ROWS = "\n".join(f"{10 + i} {20 + i}" for i in range(68))

# --- builders of the hostile inputs of issue 17 -----------------------------------------------------


def _raw(name: str, data: bytes):
    return lambda d: _write(d / name, data)


def _object_array_state(n: int, items: int) -> bytes:
    """numpy's reconstruction of an object array declaring ``n`` elements, with ``items`` of data."""
    return pickle4(glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
                   + b"K\x00\x85C\x01b\x87R(K\x01" + int4(n) + b"\x85" + glob("numpy", "dtype")
                   + ustr("O8") + b"\x89\x88\x87R(K\x03" + ustr("|")
                   + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89](" + b"N" * items + b"etb")


def _nested_lists(depth: int) -> bytes:
    return pickle4(b"]" * depth + b"a" * (depth - 1))


def _npz_of_zeros(frames: int, points: int = 143):
    def build(d):
        path = d / "data.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open("keypoints.npy", "w") as member:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                              "shape": (frames, points, 3)})
                member.write(header.getvalue() + bytes(frames * points * 3 * 4))
        return path
    return build


def _fifo(d):
    os.mkfifo(d / "x.pose")
    return d / "x.pose"


def _json_text(text: str):
    return lambda d: _write(d / "clip_000000000000_keypoints.json", text.encode())


def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def _pts_next_to(image: bytes):
    def build(d):
        _write(d / "f.png", image)
        return _write(d / "f.pts", f"version: 1\nn_points: 68\n{{\n{_PTS_OK_ROWS}\n}}\n".encode())
    return build


def _npy_unparsable_header(d):
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, "
    text += " " * ((64 - (11 + len(text)) % 64) % 64) + "\n"
    return _write(d / "x.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(32))


def _pose_folder_with_a_folder(d):
    _write(d / "a.pose", _pose_bytes())
    (d / "b.pose").mkdir()
    return d


@dataclass
class Case:
    id: str
    build: Callable[[Path], Path]
    sample: int | None
    field: str | None
    phrase: str
    split: str | None = None


CASES = [
    # --- the skeleton pickle: shapes -----------------------------------------------------------
    Case("face-has-70-points", _pkl(_skeleton(_set(3, "face", lambda a: np.zeros((70, 3))))), 3, "face",
         "expected shape (68, 3), got (70, 3)", "train"),
    Case("pose-has-25-points", _pkl(_skeleton(_set(1, "pose", lambda a: a[:25]))), 1, "pose",
         "expected shape (33, 3), got (25, 3)", "train"),
    Case("hand-has-20-points", _pkl(_skeleton(_set(2, "left_hand", lambda a: a[:20]))), 2, "left_hand",
         "(21, 3), got (20, 3)", "train"),
    Case("face-without-confidence", _pkl(_skeleton(_set(0, "face", lambda a: a[:, :2]))), 0, "face",
         "got (68, 2)", "train"),
    Case("hand-with-extra-dim", _pkl(_skeleton(_set(0, "right_hand", lambda a: a[..., None]))), 0, "right_hand",
         "got (21, 3, 1)", "train"),
    # --- values ------------------------------------------------------------------------------
    Case("nan-in-left-hand", _pkl(_skeleton(_set(2, "left_hand", lambda a: np.where(np.arange(21)[:, None] == 5, np.nan, a).astype(np.float32) + 0 * a))),
         2, "left_hand", "non-finite", "train"),
    Case("inf-in-pose", _pkl(_skeleton(_set(3, "pose", lambda a: np.concatenate([a[:1] * np.inf, a[1:]])))),
         3, "pose", "non-finite", "train"),
    Case("negative-confidence", _pkl(_skeleton(_set(1, "face", lambda a: np.concatenate([a[:, :2], -np.ones((68, 1))], 1)))),
         1, "face", "confidence -1", "train"),
    Case("confidence-way-above-one", _pkl(_skeleton(_set(0, "pose", lambda a: np.concatenate([a[:, :2], np.full((33, 1), 5.0)], 1)))),
         0, "pose", "confidence 5", "train"),
    Case("all-zero-frame", _pkl(_skeleton(lambda fr: fr[2].update({p: np.zeros_like(v) for p, v in fr[2].items()}))),
         2, "keypoints", "every point is missing", "train"),
    # --- structure -----------------------------------------------------------------------------
    Case("frame-missing-right-hand", _pkl(_skeleton(lambda fr: fr[1].pop("right_hand"))), 1, "right_hand",
         "missing key 'right_hand'", "train"),
    Case("frame-is-a-list", _pkl(_skeleton(lambda fr: fr.__setitem__(3, [1, 2, 3]))), 3, None,
         "expected a dict", "train"),
    Case("face-is-a-string", _pkl(_skeleton(_set(0, "face", "not an array"))), 0, "face",
         "got str", "train"),
    Case("pose-is-none", _pkl(_skeleton(_set(2, "pose", None))), 2, "pose", "got NoneType", "train"),
    Case("face-is-object-array", _pkl(_skeleton(_set(1, "face", np.array([None] * 204, dtype=object).reshape(68, 3)))),
         1, "face", "dtype object", "train"),
    Case("hand-is-ragged-list", _pkl(_skeleton(_set(0, "left_hand", [[1, 2, 3], [1, 2]]))), 0, "left_hand",
         "ragged", "train"),
    Case("train-split-missing", _pkl({"dev": {"keypoints": _frames()}}), None, "train", "split 'train' is missing"),
    Case("empty-split", _pkl(_skeleton(dev={"keypoints": []})), None, "keypoints", "empty", "dev"),
    Case("split-is-a-list", _pkl({"train": _frames()}), None, None, "expected a dict with a 'keypoints' list",
         "train"),
    Case("split-without-keypoints", _pkl({"train": {"frames": _frames()}}), None, "keypoints",
         "missing key 'keypoints'", "train"),
    Case("unknown-split-name", _pkl(_skeleton(val={"keypoints": _frames()})), None, "val", "unknown top-level key"),
    Case("top-level-is-a-list", _pkl(_frames()), None, None, "expected a dict"),
    Case("video-ids-wrong-length", _pkl(_skeleton(test={"keypoints": _frames(), "video_id": ["a"]})), None,
         "video_id", "expected 4 values", "test"),
    Case("negative-frame-index", _pkl(_skeleton(dev={"keypoints": _frames(), "frame_index": [0, 1, -2, 3]})), 2,
         "frame_index", ">= 0", "dev"),
    # --- the face-only pickle ------------------------------------------------------------------
    Case("face-only-70-points", _pkl(_face(lambda f: np.zeros((5, 70, 3), np.float32))), None, "keypoints",
         "expected shape (N, 68, 3) (faces) or (N, 143, 3) (whole frames), got (5, 70, 3)"),
    Case("face-only-two-columns", _pkl(_face(lambda f: f[..., :2])), None, "keypoints", "got (5, 68, 2)"),
    Case("face-only-not-an-array", _pkl({"keypoints": [{"face": 1}]}), None, "keypoints", "got list"),
    Case("face-only-all-zero-frame", _pkl(_face(lambda f: np.concatenate([f[:3], np.zeros_like(f[:1]), f[4:]]))),
         3, "keypoints", "every point is missing"),
    Case("face-only-empty", _pkl({"keypoints": np.zeros((0, 68, 3), np.float32)}), None, "keypoints", "no frames"),
    Case("face-only-nan", _pkl(_face(lambda f: np.where(np.arange(5)[:, None, None] == 4, np.nan, f))), 4,
         "keypoints", "non-finite"),
    Case("bad-frame-size", _pkl(_skeleton(frame_size=(-640, 480))), None, "frame_size", "positive"),
    # --- broken and hostile pickles ------------------------------------------------------------
    Case("truncated-pickle", _truncated(_pkl(_skeleton())), None, None, "truncated or corrupt"),
    Case("corrupt-pickle", lambda d: _write(d / "x.pkl", b"\x80\x04\x95garbage-garbage-garbage"), None, None,
         "truncated or corrupt"),
    Case("pickle-imports-os-system", _pkl(_Reduce(os.system, "echo hacked")), None, None, "system'"),
    Case("pickle-imports-subprocess", _pkl(_Reduce(subprocess.Popen, ["true"])), None, None, "subprocess.Popen"),
    Case("pickle-imports-builtins-eval", _pkl(_Reduce(eval, "1+1")), None, None, "builtins.eval"),
    Case("pickle-imports-builtins-getattr", _pkl(_Reduce(getattr, "text", "upper")), None, None, "builtins.getattr"),
    # --- npz / npy -----------------------------------------------------------------------------
    Case("truncated-npz", _truncated(_npz(keypoints=np.ones((4, 143, 3), np.float32))), None, None,
         "not a readable .npz"),
    Case("corrupt-npz", lambda d: _write(d / "x.npz", b"PK\x03\x04" + b"\x00" * 64), None, None, "not a readable .npz"),
    Case("npz-object-array", _npz_with_object_array, None, "keypoints", "object array"),
    Case("npz-without-keypoints", _npz(points=np.ones((4, 143, 3), np.float32)), None, "keypoints",
         "no 'keypoints' array"),
    Case("npz-parts-disagree-on-frames", _npz(face=np.ones((4, 68, 3)), left_hand=np.ones((4, 21, 3)),
                                                right_hand=np.ones((4, 21, 3)), pose=np.ones((3, 33, 3))),
         None, "pose", "different frame counts"),
    Case("npy-two-columns", _npy(np.ones((4, 143, 2), np.float32)), None, "keypoints", "got (4, 143, 2)"),
    Case("npy-25-point-pose-as-frames", _npy(np.ones((4, 25, 3), np.float32)), None, "keypoints", "(4, 25, 3)"),
    Case("truncated-npy", _truncated(_npy(np.ones((40, 143, 3), np.float32))), None, None, "not a readable .npy"),
    # --- .pose ---------------------------------------------------------------------------------
    Case("truncated-pose", lambda d: _write(d / "x.pose", _pose_bytes()[:5000]), None, None, "truncated or corrupt"),
    Case("corrupt-pose", lambda d: _write(d / "x.pose", b"\x00\x00\x00\x00" + bytes(range(256)) * 4), None, None,
         "not a readable .pose"),
    Case("pose-unknown-components", _pose_with_components([("BODY", 17), ("HANDS", 42)]), None, "components",
         "unknown .pose component set"),
    Case("pose-reduced-face-mesh", _pose_with_components([("POSE_LANDMARKS", 33), ("FACE_LANDMARKS", 128),
                                                          ("LEFT_HAND_LANDMARKS", 21), ("RIGHT_HAND_LANDMARKS", 21)]),
         None,
         "FACE_LANDMARKS", "has 128 points, expected 468 or 478"),
    Case("pose-nan-in-hand", _pose_with_nan_in_hand, 2, "LEFT_HAND_LANDMARKS", "non-finite"),
    # --- OpenPose JSON, .pts -------------------------------------------------------------------
    Case("json-pose-wrong-length", _json_frames({"pose_keypoints_2d": [1.0] * 54}), 1, "pose_keypoints_2d",
         "expected 75 numbers"),
    Case("json-hand-not-numbers", _json_frames({"hand_left_keypoints_2d": ["x"] * 63}), 1,
         "hand_left_keypoints_2d", "flat list of numbers"),
    Case("json-truncated", lambda d: _write(d / "clip_000000000000_keypoints.json", b'{"people": [{"pose_k'), 0,
         None, "not valid JSON"),
    Case("pts-70-points", _pts(f"version: 1\nn_points: 70\n{{\n{_PTS_OK_ROWS}\n1 1\n1 1\n}}\n"), 0, "n_points",
         "declares 70"),
    Case("pts-truncated", _pts(f"version: 1\nn_points: 68\n{{\n{_PTS_OK_ROWS[:200]}"), 0, "points",
         "truncated"),
    Case("pts-bad-number", _pts("version: 1\nn_points: 68\n{\n" + _PTS_OK_ROWS.replace("15 25", "15 abc") + "\n}\n"),
         0, "points", "point 5"),
    # --- files that are not what their suffix says ---------------------------------------------
    Case("pkl-that-is-an-npz", lambda d: os.replace(_npz(keypoints=np.ones((2, 143, 3)))(d), d / "a.pkl") or d / "a.pkl",
         None, None, "suffix '.pkl' says a pickle but the content is an .npz"),
    Case("npz-that-is-a-pickle", lambda d: _write(d / "a.npz", pickle.dumps({"keypoints": 1}, protocol=4)), None,
         None, "says an .npz (zip) archive but the content is a pickle"),
    Case("pose-that-is-json", lambda d: _write(d / "a.pose", b'{"people": []}'), None, None,
         "says a .pose file but the content is JSON"),
    Case("empty-file", lambda d: _write(d / "a.pkl", b""), None, None, "empty"),
    Case("folder-without-keypoint-files", lambda d: _write(d / "notes.txt", b"hello").parent, None, None,
         "directory holds no .pose files"),
    Case("pts-folder-with-one-bad-file", lambda d: [_write(d / f"{n}.pts", t.encode()) for n, t in
                                                    (("a", f"version: 1\nn_points: 68\n{{\n{_PTS_OK_ROWS}\n}}\n"),
                                                     ("b", "version: 1\nn_points: 5\n{\n1 1\n}\n"))][0].parent,
         1, "n_points", "declares 5"),
    Case("unknown-suffix-and-content", lambda d: _write(d / "a.bin", b"\x01\x02\x03"), None, None, "unknown format"),
    # --- issue 17, class 2: a small file asking for gigabytes -----------------------------------
    Case("pickle-bytearray-of-1.5e9", _raw("x.pkl", pickle4(glob("builtins", "bytearray") + int4(1_500_000_000)
                                                          + b"\x85R")), None, None, "would materialise 1.5 GB"),
    Case("pickle-list-of-bytes-2e8", _raw("x.pkl", pickle4(glob("builtins", "list") + glob("builtins", "bytes")
                                                         + int4(200_000_000) + b"\x85R\x85R")), None, None,
         "builtins.bytes() of int 200000000"),
    Case("pickle-list-of-a-number", _raw("x.pkl", pickle4(glob("builtins", "list") + int4(5) + b"\x85R")),
         None, None, "builtins.list() of a int"),
    Case("pickle-ndarray-of-2e9", _raw("x.pkl", pickle4(glob("numpy", "ndarray") + int4(2_000_000_000)
                                                      + b"\x85R")), None, None, "numpy.ndarray of shape (2000000000,)"),
    Case("pickle-object-array-state-of-1e9", _raw("x.pkl", _object_array_state(1_000_000_000, 0)), None, None,
         "numpy array of shape (1000000000,) and dtype object"),
    Case("pickle-object-array-state-short", _raw("x.pkl", _object_array_state(10, 2)), None, None,
         "object array of 10 elements whose data is not a list of them"),
    Case("pickle-codecs-to-hex", _raw("x.pkl", pickle4(glob("_codecs", "encode") + ustr("a")
                                                     + ustr("hex") + b"\x86R")), None, None, "'hex'"),
    Case("pickle-nested-33-deep", _raw("x.pkl", _nested_lists(40)), None, None, "nested more than 32 levels"),
    Case("npz-frames-wider-than-keypoint-frames", _npz_of_zeros(8, 100_000), None, "keypoints",
         "more than 8 keypoint frames hold"),
    Case("npz-column-longer-than-the-frames", _npz(keypoints=np.full((4, 143, 3), 0.5, np.float32),
                                                   video_id=np.array(["v"] * 10)), None, "video_id",
         "expected one value per frame (4 frames)"),
    Case("fifo-named-x.pose", _fifo, None, None, "is a FIFO"),
    Case("pose-folder-holding-a-folder", _pose_folder_with_a_folder, None, None, "is a directory"),
    # --- class 3: silent wrong data -------------------------------------------------------------
    Case("outlier-3e38-in-1-of-4-frames", _pkl(_skeleton(_set(2, "face", lambda a: np.where(
        (np.arange(68) == 3)[:, None] & (np.arange(3) == 1), np.float32(3e38), a).astype(np.float32)))), 2, "face",
        "1 of 4 frames (25.0%) rejected for outlier coordinates", "train"),
    Case("frame-size-of-a-million-pixels", _pkl(_skeleton(frame_size=(1_000_000, 480))), None, "frame_size",
         "at most 100000 pixels"),
    # --- class 5: odd headers, deep nesting, huge numbers ---------------------------------------
    Case("json-nested-100000-deep", _json_text("[" * 100_000 + "]" * 100_000), 0, None, "nested too deeply"),
    Case("json-integer-of-5000-digits", _json_text('{"people": [{"pose_keypoints_2d": [' + "9" * 5000 + "]}]}"), 0,
         None, "not valid JSON"),
    Case("json-integer-beyond-float", _json_frames({"pose_keypoints_2d": [10 ** 400] + [1.0] * 74}), 1,
         "pose_keypoints_2d", "too large for a coordinate"),
    Case("json-1025-people", _json_text(json.dumps({"people": [{"pose_keypoints_2d": []}] * 1025})), 0, "people",
         "1025 people in one frame"),
    Case("pickle-frame-size-of-400-digits", _pkl(_skeleton(frame_size=(10 ** 400, 480))), None, "frame_size",
         "expected (width, height)"),
    Case("pickle-video-id-of-a-megabyte", _pkl(_skeleton(train={"keypoints": _frames(), "video_id": ["v" * (1 << 20)] * 4})),
         None, "video_id", "at most 1024", "train"),
    Case("pickle-ragged-video-ids", _pkl(_skeleton(train={"keypoints": _frames(), "video_id": [[1], [1, 2], [1], [1]]})),
         None, "video_id", "nested or mixed", "train"),
    Case("npy-header-that-does-not-parse", _npy_unparsable_header, None, None, "not a readable .npy array header"),
    Case("pts-next-to-a-decompression-bomb", _pts_next_to(_png(100_000, 100_000)), None, "frame_size",
         "DecompressionBombError"),
    Case("pts-next-to-a-broken-image", _pts_next_to(b"not an image"), None, "frame_size", "cannot take the frame size"),
]


def test_the_table_has_at_least_30_cases_with_unique_names():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_file_sample_and_field(tmp_path, case):
    folder = tmp_path / "input"
    folder.mkdir()
    path = case.build(folder)
    before = _snapshot(tmp_path)
    with pytest.raises(KeypointFormatError) as caught:
        read_keypoints(path)
    err = caught.value
    message = str(err)
    assert Path(err.file).resolve().is_relative_to(folder.resolve()), message
    assert message.startswith(err.file + ":"), message
    assert case.phrase in message, message
    assert (err.sample, err.field, err.split) == (case.sample, case.field, case.split), message
    if case.sample is not None:
        assert f"sample {case.sample}" in message
    if case.field is not None:
        assert f"field '{case.field}'" in message
    assert message.count("\n") == 0
    assert _snapshot(tmp_path) == before  # nothing written, nothing touched


@pytest.mark.parametrize("case", [c for c in CASES if c.id in {"face-has-70-points", "truncated-pose",
                                                                 "pickle-imports-os-system"}],
                         ids=lambda c: c.id)
def test_render_command_writes_nothing_for_bad_input(tmp_path, capsys, case):
    folder = tmp_path / "input"
    folder.mkdir()
    path = case.build(folder)
    out = tmp_path / "rendered"
    assert cli_main(["render", str(path), "--out", str(out)]) == 2
    assert not out.exists()
    assert case.phrase in capsys.readouterr().err


def test_missing_hands_are_not_an_error(tmp_path):
    data = _skeleton(lambda fr: [f.update(left_hand=np.zeros((21, 3), np.float32),
                                          right_hand=np.zeros((21, 3), np.float32)) for f in fr])
    got = read_keypoints(_pkl(data)(tmp_path))
    assert (got.keypoints[:, layout.LEFT_HAND] == 0).all() and len(got) == 4


def test_a_zip_that_is_not_numpy_is_refused(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("keypoints.npy", b"not numpy at all")
    with pytest.raises(KeypointFormatError, match="field 'keypoints'"):
        read_keypoints(path)
