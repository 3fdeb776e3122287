"""Hostile and careless inputs (issue 17), one section per class of the report:

1. nothing is written outside the output folder, and what ``render`` reports is what exists;
2. tiny files cannot make a reader allocate gigabytes: memory is bounded with ``RLIMIT_AS`` in a
   subprocess, FIFOs and devices are refused, links leaving an input folder are refused, the frame
   ceiling (``--max_frames``) is checked before allocation in every format;
3. an outlier coordinate never rescales a file: its frame is rejected and counted, the other frames
   read exactly as without it, and too many rejected frames fail the run;
5. odd inputs end in one ``error: ...`` line and exit status 2 in every command, never a traceback.

(Class 4, the committed data set, is tests/test_store_ownership.py. The ceilings as flags of ``train``
(class 2) and ``predict``'s file names (class 1) are at the end of this file.)
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_error_line

from signpose.cli import main
from signpose.io import KeypointFormatError, read_keypoints
from signpose.io.pose_files import holistic_pose_bytes
from signpose.io.writers import write_all_formats
from signpose.synth import generate_signer_frames

LINUX = sys.platform.startswith("linux")


def _seed_dict(n_videos=3, frames=10, seed=2) -> dict:
    return generate_signer_frames(n_videos, frames, seed=seed).to_seed_dict()


def _write_pickle(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- 1. nothing written outside the output folder ---------------------------------------------------

HOSTILE_IDS = ["..", ".", "../../escaped", "/tmp/absolute", "", "a\x00b", "v" * 5000, ".hidden", "a/b/c"]


@pytest.mark.parametrize("video_id", HOSTILE_IDS, ids=lambda v: repr(v[:20]))
def test_render_writes_every_file_inside_out_whatever_the_video_id(tmp_path, capsys, video_id):
    data = _seed_dict(1, 6)
    data["train"]["video_id"] = [video_id] * len(data["train"]["keypoints"])
    data["train"]["video_id"] = [v[:1024] for v in data["train"]["video_id"]]  # ids are at most 1024 characters
    source = _write_pickle(tmp_path / "in" / "x.pkl", data)
    work = tmp_path / "work"
    out = work / "deep" / "out"
    work.mkdir()
    before = _tree(tmp_path)
    assert main(["render", str(source), "--out", str(out), "--split", "train"]) == 0
    written = _tree(tmp_path) - before
    assert written and all((tmp_path / p).resolve().is_relative_to(out.resolve()) or out.is_relative_to(tmp_path / p)
                           for p in written), sorted(written)
    pngs = list(out.rglob("*.png"))
    assert len(pngs) == len(data["train"]["keypoints"])
    assert f"wrote {len(pngs)} PNGs" in capsys.readouterr().out


def test_render_gives_colliding_video_ids_distinct_folders_and_reports_what_exists(tmp_path, capsys):
    data = _seed_dict(1, 12)
    n = len(data["train"]["keypoints"])
    ids = ["a b", "a_b", "A_B", "a_b.gif"]
    data["train"]["video_id"] = [ids[i % 4] for i in range(n)]
    source = _write_pickle(tmp_path / "x.pkl", data)
    out = tmp_path / "out"
    assert main(["render", str(source), "--out", str(out), "--split", "train", "--animation", "gif"]) == 0
    report = capsys.readouterr().out
    pngs = list(out.rglob("*.png"))
    gifs = [p for p in out.iterdir() if p.is_file() and p.suffix == ".gif"]
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(pngs) == n and len(folders) == 4 and len(gifs) == 4, sorted(map(str, out.iterdir()))
    assert f"wrote {n} PNGs for 4 video(s)" in report and "4 gif animation(s)" in report
    assert (out / "a_b").is_dir() and (out / "a_b.gif").is_file()  # the first video keeps the plain name


def test_render_refuses_repeated_frame_indices_before_writing_anything(tmp_path, capsys):
    data = _seed_dict(1, 9)
    n = len(data["train"]["keypoints"])
    data["train"]["video_id"] = ["v"] * n
    data["train"]["frame_index"] = [i % 3 for i in range(n)]
    source = _write_pickle(tmp_path / "x.pkl", data)
    out = tmp_path / "out"
    assert main(["render", str(source), "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(source), "frame index 0 more than once")
    assert not out.exists()


@pytest.mark.parametrize("store", ["", "   ", "file://"])
def test_preprocess_refuses_a_store_that_names_no_folder(tmp_path, monkeypatch, capsys, store):
    source = _write_pickle(tmp_path / "in" / "x.pkl", _seed_dict(1, 6))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["preprocess", "--data_path", str(source), "--store", store, "--image_size", "16"]) == 2
    one_error_line(capsys.readouterr().err, "store_uri is required")
    assert list(work.iterdir()) == []


# --- 2. bounded memory ------------------------------------------------------------------------------

_LIMITED_CHILD = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from signpose.cli import main
code = main(sys.argv[3:])
with open("/proc/self/status") as status:
    peak = next(line for line in status if line.startswith("VmPeak:")).split()[1]
with open(sys.argv[2], "w") as out:
    out.write(peak)
sys.exit(code)
"""
_HANG_GUARD_S = 300  # a guard against a hang (a FIFO waited on), not a timing assertion


def run_limited(tmp_path: Path, limit: int, *argv) -> tuple[int, str, int | None]:
    """``signpose *argv`` in a subprocess whose address space is capped at ``limit`` bytes (0: none);
    returns (exit status, stderr, peak virtual memory in bytes, None when it died before reporting)."""
    peak_file = tmp_path / f"peak-{os.getpid()}-{len(list(tmp_path.iterdir()))}"
    result = subprocess.run([sys.executable, "-c", _LIMITED_CHILD, str(limit), str(peak_file), *map(str, argv)],
                            capture_output=True, text=True, timeout=_HANG_GUARD_S, cwd=tmp_path)
    peak = int(peak_file.read_text()) * 1024 if peak_file.exists() else None
    return result.returncode, result.stderr, peak


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> int:
    """Peak virtual memory of ``signpose inspect`` on a tiny legitimate file: the interpreter, torch,
    numpy and their thread pools -- what every limit below is added to."""
    folder = tmp_path_factory.mktemp("baseline")
    source = _write_pickle(folder / "ok.pkl", _seed_dict(1, 6))
    code, err, peak = run_limited(folder, 0, "inspect", source)
    assert code == 0 and peak, err
    return peak


def _bytes_pickle(n: int) -> bytes:
    """58 bytes that ask for builtins.bytearray(n)."""
    return (b"\x80\x04\x95" + struct.pack("<Q", 0) + b"\x8c\x08builtins\x8c\x09bytearray\x93J" + struct.pack("<i", n)
            + b"\x85R.")


def _list_of_bytes_pickle(n: int) -> bytes:
    """71 bytes that ask for list(bytes(n)): n bytes, then n list slots."""
    return (b"\x80\x04\x95" + struct.pack("<Q", 0) + b"\x8c\x08builtins\x8c\x04list\x93\x8c\x08builtins\x8c\x05bytes"
            b"\x93J" + struct.pack("<i", n) + b"\x85R\x85R.")


def _array_state_pickle(n: int) -> bytes:
    """numpy's own reconstruction (an empty array, then its state) declaring an object array of n
    elements with no data: numpy allocates the n pointers before it checks the list."""
    return (b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93\x8c\x05numpy\x8c\x07ndarray\x93K\x00"
            b"\x85C\x01b\x87R(K\x01J" + struct.pack("<i", n) + b"\x85\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02O8\x89\x88"
            b"\x87R(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?t\x62\x89]t\x62.")


def _ndarray_pickle(n: int) -> bytes:
    """numpy.ndarray((n,)) called directly: n float64 allocated."""
    return b"\x80\x04\x8c\x05numpy\x8c\x07ndarray\x93J" + struct.pack("<i", n) + b"\x85R."


HOSTILE_PICKLES = {
    "bytearray-1.5e9": (_bytes_pickle(1_500_000_000), "builtins.bytearray"),
    "list-of-bytes-2e8": (_list_of_bytes_pickle(200_000_000), "builtins.bytes"),
    "object-array-state-1e9": (_array_state_pickle(1_000_000_000), "numpy array of shape (1000000000,)"),
    "ndarray-2e9": (_ndarray_pickle(2_000_000_000), "numpy.ndarray of shape (2000000000,)"),
}


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("name", sorted(HOSTILE_PICKLES))
def test_a_tiny_pickle_asking_for_gigabytes_is_refused_before_the_allocation(tmp_path, baseline, name):
    payload, what = HOSTILE_PICKLES[name]
    source = tmp_path / "x.pkl"
    source.write_bytes(payload)
    assert len(payload) < 200
    code, err, _ = run_limited(tmp_path, baseline + (128 << 20), "inspect", source)
    line = one_error_line(err, str(source), "refused to load", what)
    assert code == 2 and "MemoryError" not in line, err


def _deflated_npz(path: Path, frames: int) -> Path:
    """A valid .npz whose keypoints (frames x 143 x 3 zeros) deflate to a few hundred kB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("keypoints.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (frames, 143, 3)})
            member.write(header.getvalue())
            block = bytes(4 * 143 * 3 * 1024)
            for _ in range(frames // 1024):
                member.write(block)
    return path


def _sparse_npy(path: Path, frames: int) -> Path:
    """An .npy declaring ``frames`` frames whose data is a hole in a sparse file (nothing on disk)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (frames, 143, 3)})
    with open(path, "wb") as handle:
        handle.write(header.getvalue())
        handle.truncate(len(header.getvalue()) + frames * 143 * 3 * 4)
    return path


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
def test_an_npz_member_inflating_beyond_the_frame_ceiling_is_refused_from_its_header(tmp_path, baseline):
    """Refused by its decoded size against the frame ceiling (issue 25: not by the ratio alone)."""
    source = _deflated_npz(tmp_path / "bomb.npz", 200 * 1024)  # 343 MB of zeros in about 0.3 MB
    assert source.stat().st_size < 2 << 20
    code, err, _ = run_limited(tmp_path, baseline + (128 << 20), "inspect", source, "--max_frames", "100000")
    assert code == 2
    one_error_line(err, str(source), "field 'keypoints'", "204,800 frames", "ceiling of 100,000")


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
def test_a_valid_npz_compressing_200x_within_the_frame_ceiling_is_read(tmp_path, baseline):
    """Mostly missing points deflate 200x and more: a valid file the frame ceiling allows is read (issue 25)."""
    frames = 60_000
    keypoints = np.zeros((frames, 143, 3), np.float32)
    keypoints[:, 100:133] = (0.5, 0.5, 1.0)  # the body only: the face and the hands missing
    keypoints[:, 100, 0] = np.linspace(0.2, 0.8, frames, dtype=np.float32)
    source = tmp_path / "sparse.npz"
    np.savez_compressed(source, keypoints=keypoints)
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("keypoints.npy")
        assert info.file_size > 100 * info.compress_size  # far beyond the old 32x refusal
    code, err, _ = run_limited(tmp_path, baseline + 3 * keypoints.nbytes, "inspect", source)
    assert code == 0, err


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
def test_a_file_declaring_more_frames_than_the_ceiling_is_refused_before_it_is_read(tmp_path, baseline):
    source = _sparse_npy(tmp_path / "huge.npy", 2_000_000)  # 3.4 GB declared, nothing on disk
    code, err, _ = run_limited(tmp_path, baseline + (128 << 20), "inspect", source)
    assert code == 2
    one_error_line(err, str(source), "2,000,000 frames", "ceiling of 1,000,000", "--max_frames")


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_a_large_valid_file_reads_within_twice_its_keypoints(tmp_path, baseline, suffix):
    """100,000 frames (172 MB of float32 keypoints) are read and summarised by ``inspect`` with 2 x
    that above the baseline; before the readers checked in blocks and stopped copying, it took 4 x."""
    rng = np.random.default_rng(0)
    keypoints = rng.random((100_000, 143, 3), dtype=np.float32)
    keypoints[..., 2] = 1.0
    source = tmp_path / f"big{suffix}"
    np.savez(source, keypoints=keypoints) if suffix == ".npz" else np.save(source, keypoints)
    data = keypoints.nbytes
    del keypoints
    code, err, peak = run_limited(tmp_path, baseline + 2 * data, "inspect", source)
    assert code == 0, err
    assert peak - baseline < 2 * data


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_a_keypoint_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "x.pose"
    os.mkfifo(fifo)
    code, err, _ = run_limited(tmp_path, 0, "inspect", fifo)  # no writer ever opens it: a wait would hang
    assert code == 2
    one_error_line(err, str(fifo), "FIFO")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_pose_file_linked_to_dev_zero_is_refused_not_read(tmp_path, baseline):
    link = tmp_path / "in" / "x.pose"
    link.parent.mkdir()
    link.symlink_to("/dev/zero")
    code, err, _ = run_limited(tmp_path, baseline + (128 << 20) if LINUX else 0, "inspect", link)
    assert code == 2
    one_error_line(err, str(link), "character device")


def _pose_file(path: Path, frames: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(holistic_pose_bytes(generate_signer_frames(1, frames, seed=3).keypoints, 640, 480))
    return path


def test_links_leaving_an_input_folder_are_refused_and_links_inside_it_followed(tmp_path, capsys):
    folder = tmp_path / "in"
    _pose_file(folder / "a.pose")
    (folder / "sub").mkdir()
    _pose_file(folder / "sub" / "real.pose")
    (folder / "b.pose").symlink_to(folder / "sub" / "real.pose")
    assert len(read_keypoints(folder)) == 12
    outside = _pose_file(tmp_path / "elsewhere" / "secret.pose")
    (folder / "c.pose").symlink_to(outside)
    assert main(["inspect", str(folder)]) == 2
    one_error_line(capsys.readouterr().err, str(folder / "c.pose"), "outside the input folder")


@pytest.fixture(scope="module")
def every_format(tmp_path_factory) -> dict[str, Path]:
    frames = generate_signer_frames(2, 10, seed=4)
    folder = tmp_path_factory.mktemp("formats")
    paths = {k: Path(v) for k, v in write_all_formats(folder, frames, max_pts_files=8).items()}
    paths["pose-dir"] = paths["pose-holistic"].parent
    return paths


@pytest.mark.parametrize("kind", ["skeleton-pickle", "face-pickle", "npz", "npz-parts", "npy", "pose-holistic",
                                  "pose-dir", "openpose-json", "pts"])
def test_every_format_checks_the_frame_ceiling_against_what_it_declares(every_format, capsys, kind):
    path = every_format[kind]
    total = len(read_keypoints(path))
    assert len(read_keypoints(path, max_frames=total)) == total
    with pytest.raises(KeypointFormatError, match="more than the ceiling of 5 frames"):
        read_keypoints(path, max_frames=5)
    assert main(["inspect", str(path), "--max_frames", "5"]) == 2
    one_error_line(capsys.readouterr().err, "--max_frames")


def test_the_frame_ceiling_of_preprocess_leaves_the_store_untouched(tmp_path, capsys):
    source = _write_pickle(tmp_path / "x.pkl", _seed_dict(2, 10))
    store = tmp_path / "store"
    assert main(["preprocess", "--data_path", str(source), "--store", str(store), "--max_frames", "7"]) == 2
    one_error_line(capsys.readouterr().err, str(source), "ceiling of 7 frames")
    assert not store.exists()


def test_the_ceiling_can_come_from_the_environment(tmp_path, monkeypatch):
    source = _write_pickle(tmp_path / "x.pkl", _seed_dict(2, 10))
    monkeypatch.setenv("SIGNPOSE_MAX_FRAMES", "7")
    with pytest.raises(KeypointFormatError, match="ceiling of 7 frames"):
        read_keypoints(source)


# --- 3. outliers never rescale a file ---------------------------------------------------------------

def _with_outlier(data: dict, frame: int, part: str, point: int, axis: int, value: float) -> dict:
    data["train"]["keypoints"][frame][part][point, axis] = value
    return data


def _without(frames, split: str, position: int):
    keep = np.ones(len(frames), dtype=bool)
    keep[np.flatnonzero(frames.split == split)[position]] = False
    return frames.subset(keep)


@pytest.mark.parametrize("value", [3e38, -5.0, 1e6], ids=["3e38", "minus-5", "1e6"])
def test_one_outlier_rejects_its_frame_and_leaves_every_other_frame_as_it_was(tmp_path, value):
    clean = _write_pickle(tmp_path / "clean.pkl", _seed_dict(4, 60))
    bad = _write_pickle(tmp_path / "bad.pkl", _with_outlier(_seed_dict(4, 60), 7, "face", 3, 1, value))
    expected = _without(read_keypoints(clean), "train", 7)
    got = read_keypoints(bad)
    assert len(got) == len(expected)
    np.testing.assert_array_equal(got.keypoints, expected.keypoints)
    assert got.report.rejected == 1
    first = got.report.files[0].first_rejected
    assert (first["split"], first["sample"], first["field"], first["point"], first["axis"]) == \
        ("train", 7, "face", 3, "y")


def test_a_pixel_file_without_frame_size_keeps_its_canvas_despite_an_outlier(tmp_path):
    def pixels(data):
        for split in data.values():
            for frame in split["keypoints"]:
                for part in frame.values():
                    part[:, :2] *= 640.0
        return data
    clean = _write_pickle(tmp_path / "clean.pkl", pixels(_seed_dict(4, 60)))
    bad = _write_pickle(tmp_path / "bad.pkl", _with_outlier(pixels(_seed_dict(4, 60)), 3, "pose", 0, 0, 2e9))
    np.testing.assert_array_equal(read_keypoints(bad).keypoints, _without(read_keypoints(clean), "train", 3).keypoints)


def test_inspect_shows_the_rejected_frame_and_a_true_extent(tmp_path, capsys):
    bad = _write_pickle(tmp_path / "bad.pkl", _with_outlier(_seed_dict(4, 60), 7, "face", 3, 1, 3e38))
    assert main(["inspect", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "1 rejected (outlier coordinates)" in out and "field 'face' point 3 y = 3e+38" in out
    y_range = next(line for line in out.splitlines() if line.startswith("extent:"))
    assert "y 0.000..0.000" not in y_range


def test_too_many_rejected_frames_fail_every_command_and_write_nothing(tmp_path, capsys):
    bad = _write_pickle(tmp_path / "bad.pkl", _with_outlier(_seed_dict(3, 10), 4, "face", 3, 1, 3e38))  # 1 of 30
    store, out = tmp_path / "store", tmp_path / "renders"
    commands = [["inspect", str(bad)], ["render", str(bad), "--out", str(out)],
                ["preprocess", "--data_path", str(bad), "--store", str(store), "--image_size", "16"],
                ["train", "face", "--data_path", str(bad), "--epochs", "1", "--no_track"]]
    for argv in commands:
        assert main(argv) == 2, argv
        line = one_error_line(capsys.readouterr().err, str(bad), "split 'train', sample 4, field 'face'")
        assert "1 of 30 frames (3.3%) rejected" in line and "--max_rejected" in line
    assert not store.exists() and not out.exists()
    assert main(["inspect", str(bad), "--max_rejected", "0.05"]) == 0
    assert "frames:  29 in 3 video(s)" in capsys.readouterr().out


# --- 5. one line and status 2, never a traceback ----------------------------------------------------

def _png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


_PTS = "version: 1\nn_points: 68\n{\n" + "\n".join(f"{10 + i} {20 + i}" for i in range(68)) + "\n}\n"


def _json_frame(d: Path, text: str) -> Path:
    path = d / "clip_000000000000_keypoints.json"
    path.write_text(text)
    return path


def _npy_with_unparsable_header(d: Path) -> Path:
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, "
    text += " " * ((64 - (11 + len(text)) % 64) % 64) + "\n"
    path = d / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(32))
    return path


def _pts_with_image(d: Path, image: bytes) -> Path:
    (d / "f.png").write_bytes(image)
    (d / "f.pts").write_text(_PTS)
    return d / "f.pts"


def _pose_folder_with_a_directory(d: Path) -> Path:
    _pose_file(d / "in" / "a.pose")
    (d / "in" / "b.pose").mkdir()
    return d / "in"


def _uncommitted_store(d: Path) -> Path:
    for sub in ("shards", "plans"):
        (d / "store" / sub).mkdir(parents=True)
    return d / "store"


ODD_INPUTS = {
    "json-nested-100000-deep": (lambda d: _json_frame(d, "[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "json-integer-of-5000-digits": (lambda d: _json_frame(d, '{"people": [{"pose_keypoints_2d": [' + "9" * 5000
                                                          + "]}]}"), "not valid JSON"),
    "json-integer-beyond-float": (lambda d: _json_frame(d, json.dumps({"people": [{"pose_keypoints_2d": [10 ** 400]
                                                                                   + [1] * 74}]})), "too large"),
    "pickle-frame-size-of-400-digits": (lambda d: _write_pickle(d / "x.pkl", {**_seed_dict(1, 6),
                                                                            "frame_size": (10 ** 400, 480)}),
                                        "field 'frame_size'"),
    "npy-header-that-does-not-parse": (_npy_with_unparsable_header, "not a readable .npy array header"),
    "pts-next-to-a-decompression-bomb": (lambda d: _pts_with_image(d, _png(100_000, 100_000)),
                                         "DecompressionBombError"),
    "pts-next-to-a-broken-image": (lambda d: _pts_with_image(d, b"not an image"), "cannot take the frame size"),
    # A corpus (preprocess) reads a.pose and walks into the folder b.pose/, which holds no input.
    "pose-folder-holding-a-folder-named-b.pose": (_pose_folder_with_a_directory,
                                                  {"preprocess": None, "*": "is a directory"}),
    # preprocess reads a folder as a corpus (every input under it); the other commands want one file.
    "folder-named-x.pkl": (lambda d: (d / "x.pkl").mkdir() or d / "x.pkl",
                           {"preprocess": "no input objects under this prefix", "*": "directory holds no"}),
    "pickle-video-id-of-a-megabyte": (lambda d: _write_pickle(d / "x.pkl", {"keypoints": np.full((3, 68, 3), 0.5,
                                                                                                np.float32),
                                                                           "video_id": ["v" * (1 << 20)] * 3}),
                                      "ids and split names are at most"),
}


@pytest.mark.parametrize("name", sorted(ODD_INPUTS))
@pytest.mark.parametrize("command", ["inspect", "render", "preprocess", "train"])
def test_odd_inputs_are_one_line_and_status_2_in_every_command(tmp_path, capsys, name, command):
    build, phrase = ODD_INPUTS[name]
    if isinstance(phrase, dict):
        phrase = phrase.get(command, phrase["*"])
    source = build(tmp_path)
    if phrase is None:  # not an odd input for this command
        assert main(["preprocess", "--data_path", str(source), "--store", str(tmp_path / "store"),
                     "--image_size", "16"]) == 0
        return
    argv = {"inspect": ["inspect", source], "render": ["render", source, "--out", tmp_path / "out"],
            "preprocess": ["preprocess", "--data_path", source, "--store", tmp_path / "store", "--image_size", "16"],
            "train": ["train", "face", "--data_path", source, "--epochs", "1", "--no_track"]}[command]
    assert main([str(a) for a in argv]) == 2
    one_error_line(capsys.readouterr().err, phrase)
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_training_on_a_store_whose_preprocess_never_committed_says_so(tmp_path, capsys):
    store = _uncommitted_store(tmp_path)
    assert main(["train", "face", "--data_path", str(store), "--epochs", "1", "--no_track"]) == 2
    line = one_error_line(capsys.readouterr().err, str(store), "no manifest.json", "never committed")
    assert "no .pose files" not in line


def test_error_lines_stay_short_whatever_the_file_holds(tmp_path):
    data = _seed_dict(1, 6)
    data["k" * 100_000 + "\nsecond line"] = 1
    source = _write_pickle(tmp_path / "x.pkl", data)
    with pytest.raises(KeypointFormatError) as caught:
        read_keypoints(source)
    assert len(str(caught.value)) < 1000 and "\n" not in str(caught.value)


# --- 2. (train) the reader ceilings are flags of `signpose train` too -------------------------------

@pytest.mark.parametrize("task", ["skeleton", "face"])
def test_train_refuses_a_file_over_the_frame_ceiling_in_one_line(tmp_path, capsys, task):
    source = _write_pickle(tmp_path / "x.pkl", _seed_dict(2, 10))
    out = tmp_path / "out"
    argv = ["train", task, "--data_path", str(source), "--epochs", "1", "--no_track", "--output_dir", str(out)]
    assert main([*argv, "--max_frames", "7"]) == 2
    one_error_line(capsys.readouterr().err, str(source), "ceiling of 7 frames", "--max_frames")
    assert not out.exists()


def test_train_flags_of_the_reader_ceilings_have_help_and_set_the_rejection_ceiling(tmp_path, capsys):
    from signpose.io.limits import DEFAULT_MAX_FRAMES, DEFAULT_MAX_REJECTED

    with pytest.raises(SystemExit):
        main(["train", "face", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"else {DEFAULT_MAX_FRAMES:,} (default: None)" in text and f"else {DEFAULT_MAX_REJECTED:g}" in text
    data = _seed_dict(3, 10)
    for frame in (2, 4):  # 2 of 30 frames rejected: over a ceiling of 5 %
        data = _with_outlier(data, frame, "face", 3, 1, 3e38)
    source = _write_pickle(tmp_path / "x.pkl", data)
    assert main(["train", "face", "--data_path", str(source), "--epochs", "1", "--no_track",
                 "--max_rejected", "0.05"]) == 2
    line = one_error_line(capsys.readouterr().err, str(source), "2 of 30 frames")
    assert "--max_rejected 0.05 allows" in line


# --- 1. (predict) one file per prediction, whatever the video ids ------------------------------------

def test_predict_names_frames_of_colliding_video_ids_apart(tmp_path):
    """``a b`` and ``a_b`` clean to the same name, and a video may hold a frame index twice: predict
    names each frame's PNG apart with the helper render uses, so every prediction gets its file."""
    from signpose.cli.io import frame_file_names

    names = frame_file_names(["a b", "a_b", "a b", "A_B", ".."], [1, 1, 1, 1, 1])
    assert len(set(n.casefold() for n in names)) == 5 and names[0] == "a_b_000001.png"
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_predict_writes_one_png_per_frame_for_ids_that_clean_alike(tmp_path):
    import mlflow
    import torch
    from tracking_fixtures import build_model, face_config

    from signpose.cli.registry import predict

    model = build_model(face_config()).eval()
    example = torch.rand(2, 68, 3)
    model_dir = tmp_path / "model"
    mlflow.pytorch.save_model(model, str(model_dir), input_example=example.numpy(), serialization_format="pt2",
                              metadata={"task": "face"}, pip_requirements=[])
    data = _seed_dict(2, 10)
    n = len(data["train"]["keypoints"])
    data["train"]["video_id"] = ["a b", "a_b"] * (n // 2) + ["a b"] * (n % 2)  # clean to the same name
    data["train"]["frame_index"] = [i // 2 for i in range(n)]
    source = _write_pickle(tmp_path / "x.pkl", data)
    summary = predict(str(model_dir), str(source), str(tmp_path / "out"), split="train")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert n >= 4 and summary["frames"] == n and len(pngs) == n and sorted(summary["files"]) == pngs
