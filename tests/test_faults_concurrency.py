"""Two preprocess runs into the same store at once: one data set, no corruption.

Both runs are subprocesses that meet at barriers (files in a shared folder) so their writes really
interleave: both are between shards at the same time, and both are about to commit the manifest at
the same time. The manifest commit decides; whatever the interleaving, the store ends holding one
complete data set whose every shard verifies, byte-identical to a single uninterrupted run.
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
    real_put = cls.put_bytes
    def put_bytes(self, key, data):
        if key == shards.MANIFEST_NAME:
            meet("commit")
        real_put(self, key, data)
        if key.startswith(shards.SHARD_DIR + "/") and key.endswith(".json"):
            sidecars.append(key)
            if len(sidecars) == 1:
                meet("shards")
    cls.put_bytes = put_bytes

hooked(store.LocalStore)
hooked(store.S3Store)
manifest = stages.preprocess("", store_uri, synthetic_videos=videos, **%r)
print("HASH", manifest.dataset_hash)
""" % (ARGS,)


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dataset")
    return request.getfixturevalue("s3_bucket") + "/datasets/shared"


def race(store_uri: str, barrier_dir, videos: dict[str, int]) -> dict[str, str]:
    """Start both runs at once; return each run's committed dataset hash."""
    barrier_dir.mkdir()
    runs = {name: subprocess.Popen([sys.executable, "-c", RACING_PREPROCESS, store_uri, name, str(barrier_dir),
                                    str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, count in videos.items()}
    hashes = {}
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"run {name} failed:\n{err[-3000:]}"
        hashes[name] = out.split("HASH ")[1].strip()
    return hashes


def test_two_concurrent_runs_on_the_same_data_commit_one_intact_data_set(store_uri, tmp_path):
    hashes = race(store_uri, tmp_path / "barriers", {"a": 4, "b": 4})
    assert hashes["a"] == hashes["b"]
    manifest = verify_dataset(store_uri, progress=False)
    assert manifest.dataset_hash == hashes["a"]

    clean = tmp_path / "clean"
    stages.preprocess("", str(clean), synthetic_videos=4, **ARGS)
    assert store_snapshot(store_uri) == store_snapshot(str(clean))
    if "://" not in store_uri:  # no temporary file of either writer is left behind
        assert not [p for p in (tmp_path / "dataset").rglob("*") if p.name.endswith(".tmp-signpose")]


def test_two_concurrent_runs_on_different_data_leave_one_complete_data_set(tmp_path):
    store_uri = str(tmp_path / "dataset")
    hashes = race(store_uri, tmp_path / "barriers", {"a": 4, "b": 5})
    assert hashes["a"] != hashes["b"]
    # Last commit wins; whichever it is, its manifest and every shard it names are intact.
    committed = verify_dataset(store_uri, progress=False)
    assert committed.dataset_hash in hashes.values()
    assert read_manifest(store_uri).n_frames == {hashes["a"]: 32, hashes["b"]: 40}[committed.dataset_hash]
