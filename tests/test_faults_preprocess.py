"""Preprocess killed with SIGKILL at several points, then run again.

The stage runs in a subprocess that installs a hook at a precise point (a wrapper around the
renderer or the store's writes) and kills itself there with SIGKILL: no exception handler, no
``finally``, no atexit runs, exactly as when a preemptible node disappears. The kill points are
deterministic (counted calls), not timed.

What must hold after every kill: no manifest (so every reader refuses the data set, naming what is
missing), and a re-run completes with objects byte-identical to an uninterrupted run's. The manifest
records its commit time in ``created_at``; that one field is left out of the comparison
(``faultproxy.store_snapshot``), every other byte of the manifest, the plan and the shards is compared.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultproxy import store_snapshot

from signpose import stages
from signpose.shards import ManifestNotFoundError, read_manifest
from signpose.store import open_store

ARGS = dict(image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8)
N_SHARDS = 4  # 32 frames (16 train, 8 dev, 8 test) in shards of 8

# argv: store_uri, kill point, k, workers, marker file
KILLED_PREPROCESS = r"""
import os, signal, sys
from signpose import shards, stages, store

store_uri, point, k, workers, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

renders = []
real_render = shards.codec.render_frames
def render_frames(keypoints, settings):
    images = real_render(keypoints, settings)
    if point == "render" and len(renders) == k:
        die()  # the (k+1)-th shard is rendered and about to be encoded: killed mid-rendering work
    renders.append(1)
    return images
shards.codec.render_frames = render_frames

written = []
real_put = store.LocalStore.put_bytes
def put_bytes(self, key, data):
    if point == "manifest" and key == shards.MANIFEST_NAME:
        die()  # every shard is written, the commit is next
    if point == "manifest-rename" and key == shards.MANIFEST_NAME:
        real_replace = os.replace
        def replace(src, dst):
            die()  # the manifest's bytes are in a temporary file, not yet renamed into place
        store.os.replace = replace
    real_put(self, key, data)
    written.append(key)
    shard_files = [w for w in written if w.endswith(".npz")]
    sidecars = [w for w in written if w.startswith("shards/") and w.endswith(".json")]
    if point == "after-shard" and key.endswith(".npz") and len(shard_files) == k:
        die()  # shard k is uploaded, its sidecar record is not
    if point == "between-shards" and key in sidecars and len(sidecars) == k:
        die()  # k shards complete, the next not started
    if point == "pause" and key in sidecars and len(sidecars) == k:
        open(marker, "w").close()
        signal.pause()  # the test kills the whole process group (render workers included) here
store.LocalStore.put_bytes = put_bytes

real_create = store.LocalStore.put_if_absent
def put_if_absent(self, key, data):  # the manifest's commit is a conditional create (signpose.shards.commit)
    if point == "manifest" and key == shards.MANIFEST_NAME:
        die()  # every shard is written, the commit is next
    if point == "manifest-rename" and key == shards.MANIFEST_NAME:
        def link(src, dst):
            die()  # the manifest's bytes are in a temporary file, not yet linked into place
        store.os.link = link
    return real_create(self, key, data)
store.LocalStore.put_if_absent = put_if_absent

args = %r
if len(sys.argv) > 6:  # one writer task of the KFP fan-out: its work item as JSON
    import json
    stages.write_shards("", store_uri, json.loads(sys.argv[6]), workers=workers, **args)
else:
    stages.preprocess("", store_uri, workers=workers, **args)
""" % (ARGS,)


def run_killed(store_uri: str, point: str, k: int, workers: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLED_PREPROCESS, store_uri, point, str(k), str(workers), ""],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clean_snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "dataset"
    stages.preprocess("", str(root), workers=1, **ARGS)
    return store_snapshot(str(root))


def assert_no_reader_accepts(store_uri: str, capsys_err) -> None:
    """Every way of reading a data set refuses one without a manifest, saying so."""
    from signpose.data import ShardStream
    from signpose.tasks import FaceTrainConfig
    from signpose.train.inputs import load_task_data

    with pytest.raises(ManifestNotFoundError, match="no manifest"):
        read_manifest(store_uri)
    with pytest.raises(ManifestNotFoundError):
        ShardStream(store_uri, "train", task="face")
    with pytest.raises((ManifestNotFoundError, FileNotFoundError, ValueError)) as refused:
        load_task_data("face", FaceTrainConfig(data_path=store_uri + "/manifest.json"))
    assert "manifest" in str(refused.value)
    # `dataset info` (signpose.cli.dataset), in-process: a subprocess would cost a torch import.
    from signpose.cli.dataset import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dataset", "info", store_uri])
    assert args.func(args) != 0
    assert "no manifest" in capsys_err()


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("*.npz")}


@pytest.mark.parametrize("point, k, survivors", [
    ("render", 2, 2),           # rendering shard 3 of 4
    ("after-shard", 2, 1),      # shard 2 uploaded, its record not: it is not trusted, and rewritten
    ("between-shards", 3, 3),   # 3 of 4 shards complete
    ("manifest", 0, 4),         # all shards complete, manifest not started
    ("manifest-rename", 0, 4),  # manifest written to its temporary file, not yet renamed
])
def test_preprocess_killed_then_rerun_is_byte_identical_to_an_uninterrupted_run(
        tmp_path, clean_snapshot, capsys, point, k, survivors):
    store_uri = str(tmp_path / "dataset")
    killed = run_killed(store_uri, point, k)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert_no_reader_accepts(store_uri, lambda: capsys.readouterr().err)
    complete = [key for key in open_store(store_uri).list("shards/") if key.endswith(".json")]
    assert len(complete) == survivors

    kept = {key: ino for key, ino in inodes(tmp_path / "dataset").items()
            if key.replace(".npz", ".json") in complete}
    manifest = stages.preprocess("", store_uri, workers=1, **ARGS)
    assert len(manifest.shards) == N_SHARDS
    assert store_snapshot(store_uri) == clean_snapshot
    # Complete shards were kept, not rendered and written again.
    assert {key: ino for key, ino in inodes(tmp_path / "dataset").items() if key in kept} == kept


def test_preprocess_with_render_workers_killed_as_a_process_group_resumes_byte_identical(tmp_path, clean_snapshot,
                                                                                      capsys):
    """A preempted pod: the stage and its render worker processes die together, mid-run."""
    store_uri = str(tmp_path / "dataset")
    marker = tmp_path / "paused"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PREPROCESS, store_uri, "pause", "1", "2", str(marker)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Wait for the child to reach its pause point (it announces it with the marker file); the
        # deadline only turns a hang into a failure.
        deadline = time.monotonic() + 300
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"preprocess exited with {child.returncode} before its pause point:\n"
                            f"{child.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("preprocess did not reach its pause point within 300 s")
            time.sleep(0.05)
        assert_no_reader_accepts(store_uri, lambda: capsys.readouterr().err)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert_no_reader_accepts(store_uri, lambda: capsys.readouterr().err)
    stages.preprocess("", store_uri, workers=2, **ARGS)
    assert store_snapshot(store_uri) == clean_snapshot


def test_fan_out_writer_killed_mid_range_blocks_the_commit_until_its_retry_finishes(tmp_path, clean_snapshot,
                                                                                    capsys):
    """The KFP path: plan -> parallel writer tasks -> commit. A writer dies; the commit refuses,
    naming the missing shards; the retried writer completes its range and the commit is byte-identical."""
    import json

    from signpose.shards import ShardError

    store_uri = str(tmp_path / "dataset")
    work_items = stages.plan_preprocess("", store_uri, render_tasks=2, **{k: v for k, v in ARGS.items()})
    assert [(w["start"], w["stop"]) for w in work_items] == [(0, 2), (2, 4)]
    assert stages.write_shards("", store_uri, work_items[0], workers=1, **ARGS) == 16
    killed = subprocess.run([sys.executable, "-c", KILLED_PREPROCESS, store_uri, "between-shards", "1", "1", "",
                             json.dumps(work_items[1])], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    with pytest.raises(ShardError, match=r"1 of 4 shards not written: shards/\w+-00003\.npz"):
        stages.commit_dataset(store_uri, work_items)
    assert_no_reader_accepts(store_uri, lambda: capsys.readouterr().err)

    stages.write_shards("", store_uri, work_items[1], workers=1, **ARGS)  # the task's retry
    stages.commit_dataset(store_uri, work_items)
    assert store_snapshot(store_uri) == clean_snapshot


def test_rerun_after_a_completed_run_changes_no_byte(tmp_path, clean_snapshot):
    store_uri = str(tmp_path / "dataset")
    stages.preprocess("", store_uri, workers=1, **ARGS)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "dataset").rglob("*") if p.is_file()}
    stages.preprocess("", store_uri, workers=1, **ARGS)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "dataset").rglob("*") if p.is_file()}
    assert before == after
    assert store_snapshot(store_uri) == clean_snapshot
