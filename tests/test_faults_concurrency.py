"""Two preprocess runs into the same store at once: one data set, no corruption, no two successes.

Both runs are subprocesses that meet at barriers (files in a shared folder) so their writes really
interleave: both are between shards at the same time, and both are about to commit the manifest at
the same time. The manifest commit is a conditional write (``If-None-Match: *`` on S3, a link under
``flock`` in a local folder) and decides: runs on the same data both succeed with one data set,
byte-identical to a single uninterrupted run; of runs on different data exactly one succeeds, the
other is refused in one line (exit 2), and the store holds the winner's data set, every shard verifying.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from faultproxy import store_snapshot

from signpose import stages
from signpose.shards import read_manifest, verify_dataset

ARGS = dict(image_size=32, shard_size=8, synthetic_frames_per_video=8, workers=1)

# argv: store_uri, run name, barrier folder, synthetic videos
RACING_PREPROCESS = r"""
import os, sys, time
from signpose import shards, stages, store

store_uri, name, barrier_dir, videos = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
RUNS = ("a", "b")

def meet(point):
    # Both runs wait here until both arrived: their next writes overlap.
    open(os.path.join(barrier_dir, f"{point}-{name}"), "w").close()
    deadline = time.monotonic() + 240
    while not all(os.path.exists(os.path.join(barrier_dir, f"{point}-{run}")) for run in RUNS):
        if time.monotonic() > deadline:
            sys.exit(f"run {name}: the other run never reached barrier {point!r}")
        time.sleep(0.02)

sidecars = []
def hooked(cls):
    real_put, real_create = cls.put_bytes, cls.put_if_absent
    def put_bytes(self, key, data):
        if key == shards.MANIFEST_NAME:
            meet("commit")
        real_put(self, key, data)
        if key.startswith(shards.SHARD_DIR + "/") and key.endswith(".json"):
            sidecars.append(key)
            if len(sidecars) == 1:
                meet("shards")
    def put_if_absent(self, key, data):
        if key == shards.MANIFEST_NAME:
            meet("commit")
        return real_create(self, key, data)
    cls.put_bytes, cls.put_if_absent = put_bytes, put_if_absent

hooked(store.LocalStore)
hooked(store.S3Store)
from signpose.cli import main
sys.exit(main(["preprocess", "--store", store_uri, "--synthetic_videos", str(videos)]
              + [f"--{k}={v}" for k, v in %r.items()]))
""" % (ARGS,)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])  # s3 in make test-all
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dataset")
    return request.getfixturevalue("s3_bucket") + "/datasets/shared"


def race(store_uri: str, barrier_dir, videos: dict[str, int]) -> dict[str, tuple[int, str, str]]:
    """Start both runs at once; return each run's (exit status, stdout, stderr)."""
    barrier_dir.mkdir()
    runs = {name: subprocess.Popen([sys.executable, "-c", RACING_PREPROCESS, store_uri, name, str(barrier_dir),
                                    str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, count in videos.items()}
    results = {}
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        results[name] = (process.returncode, out, err)
    return results


def committed_hash(result: tuple[int, str, str]) -> str:
    """The 12-character dataset hash a successful run printed."""
    status, out, err = result
    assert status == 0, err[-3000:]
    return out.split(": dataset ")[1][:12]


def test_two_concurrent_runs_on_the_same_data_commit_one_intact_data_set(store_uri, tmp_path):
    results = race(store_uri, tmp_path / "barriers", {"a": 4, "b": 4})
    hashes = {name: committed_hash(result) for name, result in results.items()}
    assert hashes["a"] == hashes["b"]
    manifest = verify_dataset(store_uri, progress=False)
    assert manifest.dataset_hash[:12] == hashes["a"]

    clean = tmp_path / "clean"
    stages.preprocess("", str(clean), synthetic_videos=4, **ARGS)
    assert store_snapshot(store_uri) == store_snapshot(str(clean))
    if "://" not in store_uri:  # no temporary file of either writer is left behind
        assert not [p for p in (tmp_path / "dataset").rglob("*") if p.name.endswith(".tmp-signpose")]


def test_two_concurrent_runs_on_different_data_exactly_one_succeeds(store_uri, tmp_path):
    results = race(store_uri, tmp_path / "barriers", {"a": 4, "b": 5})
    winners = [name for name, (status, _, _) in results.items() if status == 0]
    assert len(winners) == 1, {name: result[2][-2000:] for name, result in results.items()}
    loser = "b" if winners == ["a"] else "a"
    status, _, err = results[loser]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    won = committed_hash(results[winners[0]])
    assert f"another run committed data set {won}" in lines[0] and "--replace" in lines[0]
    # The store holds the winner's data set, whole: its manifest is consistent and every shard verifies.
    committed = verify_dataset(store_uri, progress=False)
    assert committed.dataset_hash[:12] == won
    assert read_manifest(store_uri).n_frames == {"a": 32, "b": 40}[winners[0]]
