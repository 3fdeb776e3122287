"""Hostile and careless inputs, third round (issue 25): damaged commits, read-only commands, leftovers.

5. a store whose ``manifest.json`` cannot be read is neither empty nor the writer's: ``preprocess`` of
   another input and ``dataset gc`` refuse it in one line saying how to inspect or repair it, and
   delete nothing; ``--replace`` replaces it;
6. read-only commands (``dataset info|verify|history|diff``, ``dataset gc --dry_run``, ``inspect``)
   create, change and delete nothing, on a path that does not exist and on an existing store;
8. leftovers: a failed ``preprocess`` leaves no plan, a killed writer's temporary file is collected,
   a damaged plan is mended by a re-run of the same input, and one rule says which points are
   missing in every format (confidence 0; a negative or NaN confidence is an error).
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_error_line

from signpose.cli import main
from signpose.io import KeypointFormatError, read_keypoints
from signpose.io.writers import write_pose
from signpose.shards import read_manifest
from signpose.shards.commit import DamagedManifestError
from signpose.synth import generate_signer_frames

SMALL = ["--image_size", "32", "--shard_size", "8", "--synthetic_frames_per_video", "8", "--workers", "1"]


def _tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` with its kind, size and mtime (what a write would change)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            stat = os.lstat(path)
            found[os.path.relpath(path, root)] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def store(tiny_store_copy) -> Path:
    return tiny_store_copy


def _preprocess(store: Path, videos: int = 4, *more) -> list[str]:
    return ["preprocess", "--store", str(store), "--synthetic_videos", str(videos), *SMALL, *more]


# --- 5. a damaged commit ----------------------------------------------------------------------------

def _fan_out_plan(store: Path) -> int:
    """The pipeline's plan step (in-process; a user error raised is exit 2 in its component)."""
    from signpose import stages

    try:
        stages.plan_preprocess("", str(store), image_size=32, shard_size=8, synthetic_videos=5,
                               synthetic_frames_per_video=8)
    except DamagedManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


@pytest.mark.parametrize("command", ["preprocess", "fan-out plan", "gc"])
def test_a_store_whose_manifest_was_cut_in_half_is_refused_and_nothing_is_deleted(store, capsys, command):
    manifest = store / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    for obj in store.rglob("*"):  # old enough for any garbage collection to take
        os.utime(obj, (time.time() - 86400,) * 2)
    before = _tree(store)
    run = {"preprocess": lambda: main(_preprocess(store, 5)), "fan-out plan": lambda: _fan_out_plan(store),
           "gc": lambda: main(["dataset", "gc", str(store), "--grace_hours", "0"])}[command]
    assert run() == 2
    line = one_error_line(capsys.readouterr().err, "manifest.json", "cannot be read", "dataset info", "--replace")
    assert _tree(store) == before, line
    if command == "preprocess":
        assert main(_preprocess(store, 5, "--replace")) == 0
        assert read_manifest(store).n_frames == 40


# --- 6. read-only commands --------------------------------------------------------------------------

def test_read_only_commands_create_change_and_delete_nothing(tmp_path, store, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    digest = read_manifest(store).dataset_hash
    (tmp_path / "video.pkl").write_bytes(pickle.dumps(generate_signer_frames(1, 4, seed=3).to_seed_dict()))
    commands = []
    for where in (str(tmp_path / "absent" / "deeper"), "relative/absent", "absent2/manifest.json", str(store),
                  str(store / "manifest.json")):
        commands += [["dataset", "info", where], ["dataset", "verify", where]]
    for where in (str(tmp_path / "absent" / "deeper"), "relative/absent", str(store)):
        commands += [["dataset", "history", where], ["dataset", "gc", where, "--dry_run", "--grace_hours", "0"],
                     ["dataset", "diff", f"{where}@{digest[:8]}", f"{where}@{digest[:8]}"]]
    commands += [["inspect", str(tmp_path / "absent" / "x.pose")], ["inspect", "absent3"],
                 ["inspect", str(tmp_path / "video.pkl")]]
    before = _tree(tmp_path)
    codes = [main(argv) for argv in commands]
    assert _tree(tmp_path) == before
    assert set(codes) <= {0, 2}, list(zip(codes, commands))
    assert "Traceback" not in capsys.readouterr().err


# --- 8. leftovers -----------------------------------------------------------------------------------

def test_a_failed_preprocess_leaves_no_plan_behind(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_pose(corpus / "a.pose", generate_signer_frames(1, 8, seed=1).keypoints)
    (corpus / "b.pose").write_bytes(b"not a pose file" * 8)
    store = tmp_path / "store"
    assert main(["preprocess", "--data_path", str(corpus), "--store", str(store), *SMALL[:4], "--workers", "1"]) == 2
    one_error_line(capsys.readouterr().err, "b.pose")
    assert not list(store.glob("plans/*"))


def test_a_killed_writers_temporary_files_are_collected_by_the_next_commit_and_by_gc(store):
    hour_ago = time.time() - 3600
    left = [store / "shards" / ".aaaa-00000.npz.x1.tmp-signpose", store / ".manifest.json.x2.tmp-signpose"]
    for path in left:
        path.write_bytes(b"half a write")
        os.utime(path, (hour_ago, hour_ago))
    assert main(_preprocess(store, 5, "--replace")) == 0
    assert not any(path.exists() for path in left)

    stale = store / "sources" / ".b.json.x3.tmp-signpose"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"{")
    os.utime(stale, (hour_ago, hour_ago))
    assert main(["dataset", "gc", str(store), "--grace_hours", "2", "--dry_run"]) == 0 and stale.exists()
    assert main(["dataset", "gc", str(store), "--grace_hours", "0.5"]) == 0
    assert not stale.exists()


def test_a_damaged_plan_fails_verify_in_one_line_and_a_rerun_of_the_same_input_mends_it(store, capsys):
    (plan,) = store.glob("plans/*.json")
    plan.write_text('{"ranges": [[0, ')
    assert main(["dataset", "verify", str(store)]) == 1
    one_error_line(capsys.readouterr().err, plan.name, "unreadable plan", "preprocess")
    assert main(_preprocess(store)) == 0
    assert main(["dataset", "verify", str(store)]) == 0


def _holistic_video(tmp_path: Path, point) -> Path:
    """A .pose file whose face point 20 of frame 2 is ``point`` (x, y in frame units), set in the file's
    own arrays: our writer would never write a negative confidence."""
    from pose_format import Pose

    from signpose.io.pose_files import HOLISTIC_FACE_TO_IBUG68

    path = tmp_path / "video.pose"
    write_pose(path, generate_signer_frames(1, 6, seed=4).keypoints)
    if point is not None:
        pose = Pose.read(path.read_bytes())
        mesh = len(pose.header.components[0].points) + list(HOLISTIC_FACE_TO_IBUG68)[20]
        pose.body.data.data[2, 0, mesh, :2] = point[0] * 640, point[1] * 480
        pose.body.data.mask[2, 0, mesh] = False
        pose.body.confidence[2, 0, mesh] = point[2]
        with path.open("wb") as out:
            pose.write(out)
    return path


def _pickle(tmp_path: Path, point) -> Path:
    data = generate_signer_frames(2, 6, seed=4).to_seed_dict()
    if point is not None:
        data["train"]["keypoints"][2]["face"][20] = point
    path = tmp_path / "seed.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


@pytest.mark.parametrize("write", [_holistic_video, _pickle], ids=["pose", "pickle"])
def test_one_rule_for_missing_points_in_every_format(tmp_path, write):
    clean = read_keypoints(write(tmp_path, None)).keypoints
    read = read_keypoints(write(tmp_path, (np.nan, np.nan, 0.0))).keypoints  # as pose-format leaves them
    changed = np.argwhere((read != clean).any(-1))
    assert len(changed) == 1 and read[tuple(changed[0])].tolist() == [0.0, 0.0, 0.0]  # missing, x and y ignored
    for bad, words in (((0.5, 0.5, -0.25), "confidence -0.25"), ((0.5, 0.5, np.nan), "non-finite c")):
        with pytest.raises(KeypointFormatError, match=words):
            read_keypoints(write(tmp_path, bad))
