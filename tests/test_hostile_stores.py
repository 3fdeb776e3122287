"""Hostile and careless inputs, second round (issue 25): stores, sizes, flags, leftover tracebacks.

2. a FIFO in place of a shard or of ``manifest.json`` is refused in one line by every command that
   opens it (``dataset info|verify``, ``train``, ``preprocess``), never waited on;
3. a sparse file (a few kB on disk, gigabytes long) is refused by its kind's size ceiling before it is
   read -- manifest, plan, shard, ``.pose``, pickle, ``.npz`` -- with the memory of the command capped
   by ``RLIMIT_AS``; each ceiling is named in the error and set by its environment variable;
4. every numeric flag has a range checked before any work: one line, exit status 2;
7. checkpoints, manifests, paths, a full disk and a bad shard under streamed training end in one
   ``error:`` line, never a traceback.

The commands run in a subprocess (:func:`run_commands`) where a hang or the memory cap could strike:
the timeout there is a guard against a hang, never a timing assertion.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from signpose.cli import main
from signpose.io.limits import MANIFEST_BYTES, PLAN_BYTES, SHARD_BYTES, store_ceiling
from signpose.io.pose_files import holistic_pose_bytes
from signpose.ranges import RangeError
from signpose.store import LocalStore, StoreError
from signpose.synth import generate_signer_frames

LINUX = sys.platform.startswith("linux")
_HANG_GUARD_S = 600
SMALL = ["--image_size", "32", "--shard_size", "8", "--synthetic_frames_per_video", "8", "--workers", "1"]

_CHILD = """
import contextlib, io, json, resource, signal, sys
memory, fsize = int(sys.argv[1]), int(sys.argv[2])
commands = json.loads(sys.argv[4])
from signpose.cli import main
if memory:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
results = []
if fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
for argv in commands:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException as exc:
            import traceback
            traceback.print_exc(file=err)
            code = "raised " + type(exc).__name__
    results.append({"argv": argv, "code": code, "err": err.getvalue()[-4000:]})  # fits under a small fsize
with open(sys.argv[3], "w") as out:
    json.dump(results, out)
"""


def run_commands(tmp_path: Path, commands: list[list], *, memory: int = 0, fsize: int = 0,
                 env: dict | None = None) -> list[dict]:
    """Each ``signpose`` command line of ``commands`` in one subprocess (address space capped at
    ``memory`` bytes, files at ``fsize``; 0: no cap): ``[{"argv", "code", "err"}]``."""
    out = tmp_path / f"results-{len(list(tmp_path.iterdir()))}.json"
    argv = [[str(a) for a in command] for command in commands]
    done = subprocess.run([sys.executable, "-c", _CHILD, str(memory), str(fsize), str(out), json.dumps(argv)],
                          capture_output=True, text=True, timeout=_HANG_GUARD_S, cwd=tmp_path,
                          env={**os.environ, **(env or {})})
    assert out.exists(), done.stderr[-3000:]
    return json.loads(out.read_text())


def error_line(err: str, *names: str) -> str:
    """The one ``error: ...`` line (log lines and progress bars aside), naming ``names``; no traceback."""
    assert "Traceback" not in err and 'File "' not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    line = lines[0][lines[0].index("error:"):]
    for name in names:
        assert name in line, line
    return line


def _seed_pickle(path: Path, videos: int = 2, frames: int = 10) -> Path:
    path.write_bytes(pickle.dumps(generate_signer_frames(videos, frames, seed=2).to_seed_dict(), protocol=4))
    return path


@pytest.fixture
def store(tiny_store_copy) -> Path:
    return tiny_store_copy


def _first_shard(store: Path) -> Path:
    return sorted((store / "shards").glob("*.npz"))[0]


def _preprocess(store: Path) -> list:
    return ["preprocess", "--store", store, "--synthetic_videos", "4", *SMALL]


def _train(data: Path, *more) -> list:
    return ["train", "face", "--data_path", data, "--epochs", "1", "--no_track", "--d_region", "16", "--d_global",
            "32", "--num_workers", "0", *more]


# --- 2. special files inside a store ------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_shard_or_manifest_is_refused_by_every_command_not_waited_on(tmp_path, store):
    fifo_store = tmp_path / "fifo-manifest"
    shutil.copytree(store, fifo_store)
    (fifo_store / "manifest.json").unlink()
    os.mkfifo(fifo_store / "manifest.json")
    shard = _first_shard(store)
    shard.unlink()
    os.mkfifo(shard)
    commands = {str(fifo_store / "manifest.json"): [["dataset", "info", fifo_store], ["dataset", "verify", fifo_store],
                                                    _train(fifo_store), _preprocess(fifo_store)],
                str(shard): [["dataset", "verify", store], _train(store), _preprocess(store)]}
    results = run_commands(tmp_path, [argv for group in commands.values() for argv in group])
    names = [name for name, group in commands.items() for _ in group]
    assert len(results) == 7
    for name, result in zip(names, results):
        assert result["code"] == 2, result
        error_line(result["err"], name, "FIFO")


def test_the_store_reads_regular_files_only_in_one_place(tmp_path):
    local = LocalStore(tmp_path)
    os.mkfifo(tmp_path / "manifest.json")
    with pytest.raises(StoreError, match="FIFO"):
        local.get_bytes("manifest.json")
    with pytest.raises(StoreError, match="FIFO"):
        local.get_with_etag("manifest.json")


# --- 3. size ceilings before reading ------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> int:
    """Peak virtual memory of a tiny legitimate ``inspect``: what the caps below are added to."""
    folder = tmp_path_factory.mktemp("baseline")
    source = _seed_pickle(folder / "ok.pkl", 1, 6)
    code = ("import resource, subprocess, sys\nfrom signpose.cli import main\nmain(sys.argv[1:])\n"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmPeak:')).split()[1])")
    done = subprocess.run([sys.executable, "-c", code, "inspect", str(source)], capture_output=True, text=True,
                          timeout=_HANG_GUARD_S, cwd=folder)
    return int(done.stdout.strip().splitlines()[-1]) * 1024


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    path.write_bytes(head)
    os.truncate(path, size)
    return path


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc are Linux's")
def test_sparse_files_are_refused_by_their_size_ceiling_before_they_are_read(tmp_path, store, baseline):
    sparse_store = tmp_path / "sparse-manifest"
    shutil.copytree(store, sparse_store)
    manifest = _sparse(sparse_store / "manifest.json", 3_000_000_000, (store / "manifest.json").read_bytes())
    shard = _first_shard(store)
    os.truncate(shard, 6_000_000_000)
    pose = _sparse(tmp_path / "x.pose", 5_000_000_000,
                   holistic_pose_bytes(generate_signer_frames(1, 4, seed=3).keypoints, 640, 480))
    pkl = _sparse(tmp_path / "x.pkl", 5_000_000_000, b"\x80\x04")
    npz = _sparse(tmp_path / "x.npz", 5_000_000_000)
    cases = [(["dataset", "info", sparse_store], manifest, "manifest ceiling", "SIGNPOSE_MAX_MANIFEST_BYTES"),
             (_preprocess(sparse_store), manifest, "manifest ceiling", "SIGNPOSE_MAX_MANIFEST_BYTES"),
             (["dataset", "verify", store], shard, "shard ceiling", "SIGNPOSE_MAX_SHARD_BYTES"),
             (_train(store), shard, "shard ceiling", "SIGNPOSE_MAX_SHARD_BYTES")]
    cases += [(["inspect", path], path, "keypoint file ceiling", "SIGNPOSE_MAX_INPUT_BYTES") for path in (pose, pkl, npz)]
    results = run_commands(tmp_path, [argv for argv, *_ in cases], memory=baseline + (256 << 20))
    for (_, path, ceiling, env), result in zip(cases, results):
        assert result["code"] == 2, result
        error_line(result["err"], str(path), ceiling, env)


def test_each_store_object_kind_has_its_own_ceiling_set_by_its_variable(tmp_path, monkeypatch):
    assert store_ceiling("manifest.json") is MANIFEST_BYTES and store_ceiling("plans/abc.json") is PLAN_BYTES
    assert store_ceiling("shards/abc-00000.npz") is SHARD_BYTES
    local = LocalStore(tmp_path)
    local.put_bytes("plans/abc.json", b"{}" * 100)
    monkeypatch.setenv("SIGNPOSE_MAX_PLAN_BYTES", "100")
    with pytest.raises(StoreError, match="more than the plan ceiling of 100 bytes; set SIGNPOSE_MAX_PLAN_BYTES"):
        local.get_bytes("plans/abc.json")
    monkeypatch.setenv("SIGNPOSE_MAX_PLAN_BYTES", "1000")
    assert local.get_bytes("plans/abc.json") == b"{}" * 100


# --- 4. numeric flags: a range each, checked before any work ----------------------------------------

def _flag_cases(tmp: str) -> dict[str, list[str]]:
    data = ["--data_path", f"{tmp}/x.pkl", "--no_track", "--output_dir", f"{tmp}/out"]
    return {
        "render --image_size 100000": ["render", f"{tmp}/x.pkl", "--out", f"{tmp}/out", "--image_size", "100000"],
        "render --fps 0": ["render", f"{tmp}/x.pkl", "--out", f"{tmp}/out", "--fps", "0"],
        "render --fps nan": ["render", f"{tmp}/x.pkl", "--out", f"{tmp}/out", "--fps", "nan"],
        "preprocess --image_size 65536": ["preprocess", "--store", f"{tmp}/out", "--image_size", "65536"],
        "preprocess --synthetic_videos 1e9": ["preprocess", "--store", f"{tmp}/out", "--synthetic_videos",
                                              "1000000000"],
        "preprocess --shard_size 0": ["preprocess", "--store", f"{tmp}/out", "--shard_size", "0"],
        "preprocess --dev_fraction 1.5": ["preprocess", "--store", f"{tmp}/out", "--dev_fraction", "1.5"],
        "preprocess --test_fraction -0.1": ["preprocess", "--store", f"{tmp}/out", "--test_fraction", "-0.1"],
        "train --batch_size 0": ["train", "face", *data, "--batch_size", "0"],
        "train --epochs -1": ["train", "face", *data, "--epochs", "-1"],
        "train --lr nan": ["train", "skeleton", *data, "--lr", "nan"],
        "train --lr inf": ["train", "face", *data, "--lr", "inf"],
        "train --dropout 2": ["train", "face", *data, "--dropout", "2"],
        "train --image_size 100000": ["train", "skeleton", *data, "--image_size", "100000"],
    }


@pytest.mark.parametrize("case", sorted(_flag_cases("T")))
def test_a_numeric_flag_outside_its_range_is_one_line_and_status_2_before_any_work(tmp_path, capsys, case):
    _seed_pickle(tmp_path / "x.pkl")
    argv = _flag_cases(str(tmp_path))[case]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    flag = case.split()[1]
    line = error_line(capsys.readouterr().err, flag, "must be")
    assert "[" in line or "(" in line  # the range is named
    assert not (tmp_path / "out").exists()


def test_generated_data_beyond_the_frame_ceiling_is_refused_before_it_is_generated(tmp_path, capsys):
    assert main(["preprocess", "--store", str(tmp_path / "out"), "--synthetic_videos", "100000"]) == 2
    error_line(capsys.readouterr().err, "--synthetic_videos 100,000", "ceiling of 1,000,000 frames")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_a_device_this_machine_lacks_is_one_line_before_any_work(tmp_path, capsys):
    source = _seed_pickle(tmp_path / "x.pkl")
    assert main(["train", "face", "--data_path", str(source), "--no_track", "--device", "cuda:7",
                 "--output_dir", str(tmp_path / "out")]) == 2
    error_line(capsys.readouterr().err, "--device cuda:7", "CUDA device(s) visible")
    assert not (tmp_path / "out").exists()


def test_configs_built_without_the_command_line_check_the_same_ranges():
    from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig

    for bad in ({"batch_size": 0}, {"lr": math.nan}, {"epochs": -1}, {"warmup_fraction": 1.5}):
        with pytest.raises(RangeError, match=f"--{next(iter(bad))}"):
            FaceTrainConfig.from_dict(bad)
    with pytest.raises(RangeError, match="power of two"):
        SkeletonTrainConfig(image_size=96)


def test_the_ranges_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[8, 4,096]" in text and "(0, 1000]" in text


# --- 7. no traceback left ---------------------------------------------------------------------------

class _Touch:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _checkpoints(tmp_path: Path) -> dict[str, bytes]:
    def saved(obj) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()
    return {"payload": pickle.dumps(_Touch(tmp_path / "owned")), "garbage": b"\x00not a checkpoint" * 10,
            "list": saved([1, 2, 3]), "dict-without-task": saved({"format": 2, "model": {}}),
            "a-skeleton-model.pt": saved({"task": "skeleton", "model": "x", "model_config": {}, "state_dict": {}})}


@pytest.mark.parametrize("kind", sorted(_checkpoints(Path("."))))
def test_a_latest_pt_that_is_not_a_checkpoint_is_one_line_and_nothing_runs(tmp_path, capsys, kind):
    from signpose.train.state import CHECKPOINT_FORMAT, CHECKPOINT_KEY

    data = _checkpoints(tmp_path)[kind]
    if kind == "dict-without-task":
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "model": {}}, buffer)
        data = buffer.getvalue()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / CHECKPOINT_KEY).write_bytes(data)
    source = _seed_pickle(tmp_path / "x.pkl")
    assert main(_train_args(source, "--checkpoint_dir", tmp_path / "ckpt")) == 2
    error_line(capsys.readouterr().err, str(tmp_path / "ckpt" / CHECKPOINT_KEY), "--no_resume")
    assert not (tmp_path / "owned").exists()


def _train_args(data: Path, *more) -> list[str]:
    return [str(a) for a in _train(data, *more)]


def test_a_manifest_whose_top_level_is_a_list_is_one_line(store, capsys):
    (store / "manifest.json").write_text("[1, 2]")
    for command, status in (("info", 2), ("verify", 1)):  # verify: 1 = "the data set is bad"
        assert main(["dataset", command, str(store)]) == status
        error_line(capsys.readouterr().err, "manifest.json", "is a list, not an object")


def test_a_manifest_listing_no_shards_but_frames_is_one_line_for_training(store, capsys):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["shards"] = []
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert main(_train_args(store)) == 2
    error_line(capsys.readouterr().err, "has no frames")


def test_training_on_a_path_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert main(_train_args(tmp_path / "nothing")) == 2
    error_line(capsys.readouterr().err, str(tmp_path / "nothing"), "no such keypoint file")


def test_preprocess_into_an_http_store_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["preprocess", "--store", "http://example.com/data", *SMALL]) == 2
    error_line(capsys.readouterr().err, "unsupported store URI", "s3://")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_render_or_training_output_is_one_line_naming_the_file(tmp_path):
    source = _seed_pickle(tmp_path / "x.pkl")
    results = run_commands(tmp_path, [["render", source, "--out", tmp_path / "renders"],
                                      _train(source, "--output_dir", tmp_path / "out")], fsize=20_000)
    for result, folder in zip(results, ("renders", "out")):
        assert result["code"] == 2, result
        error_line(result["err"], str(tmp_path / folder), "File too large")


def test_a_shard_key_with_a_newline_is_one_line(store, capsys):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["shards"][0]["key"] = "shards/a\nb.npz"
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert main(["dataset", "verify", str(store)]) == 1  # verify: 1 = "the data set is bad"
    error_line(capsys.readouterr().err, "shards[0].key")
    assert main(_train_args(store)) == 2
    error_line(capsys.readouterr().err, "missing from the store")


def test_streamed_training_on_a_corrupt_shard_prints_the_shard_and_the_reason_only(tmp_path, store):
    shard = _first_shard(store)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    [result] = run_commands(tmp_path, [_train(store, "--num_workers", "1")])
    assert result["code"] == 2, result
    line = error_line(result["err"], shard.name, "sha256")
    assert len(line) < 400 and "DataLoader worker" not in line, line
