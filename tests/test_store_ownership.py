"""One data set per store prefix (issue 17, class 4: the committed data set cannot be replaced without
anyone noticing).

- a different input into a committed prefix is refused in one line (exit 2) naming the store, both
  hashes and ``--replace``, and nothing in the store changes;
- ``--replace`` swaps the data set atomically (every new object written before the manifest, the old
  data set's objects deleted only after it) and leaves exactly the new data set;
- a re-run verifies the committed shards' checksums and rewrites a shard with a same-size bit flip;
- ``dataset verify`` checks the manifest's own consistency, one line naming the manifest and field;
- without conditional writes (a store without them; an S3 endpoint answering 501 to the conditional
  headers) the commit falls back to a read-back and still refuses another input.

Two writers racing on one prefix are in tests/test_faults_concurrency.py.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from faultproxy import store_snapshot

from signpose import stages
from signpose.cli import main
from signpose.render import RenderSettings
from signpose.shards import MANIFEST_NAME, plan_dataset, read_manifest, verify_dataset, write_dataset
from signpose.shards.commit import DatasetExistsError, used_keys
from signpose.store import LocalStore, ObjectStore, open_store

SMALL = ["--image_size", "32", "--shard_size", "8", "--synthetic_frames_per_video", "8", "--workers", "1"]
ARGS = dict(image_size=32, shard_size=8, synthetic_frames_per_video=8, workers=1)
SETTINGS = RenderSettings(image_size=32)


def preprocess(store: str, videos: int, *more: str) -> int:
    return main(["preprocess", "--store", store, "--synthetic_videos", str(videos), *SMALL, *more])


def one_error_line(err: str, *names: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/datasets/one"


def test_a_different_input_into_a_committed_prefix_is_refused_and_the_store_unchanged(store_uri, capsys):
    assert preprocess(store_uri, 3) == 0
    committed = read_manifest(store_uri)
    before = store_snapshot(store_uri)
    capsys.readouterr()
    assert preprocess(store_uri, 4) == 2
    line = one_error_line(capsys.readouterr().err, open_store(store_uri).uri, committed.dataset_hash[:12], "--replace")
    assert plan_dataset(stages.load_input_frames("", 4, 8), SETTINGS, 8).dataset_hash[:12] in line
    assert store_snapshot(store_uri) == before
    # The same input again is still a no-op.
    assert preprocess(store_uri, 3) == 0 and store_snapshot(store_uri) == before


class RecordingStore(LocalStore):
    """A local store that records the order of its writes and deletes (the store itself is real)."""

    def __init__(self, root):
        super().__init__(root)
        self.events: list[tuple[str, str]] = []

    def put_bytes(self, key, data):
        super().put_bytes(key, data)
        self.events.append(("put", key))

    def put_if_absent(self, key, data):
        etag = super().put_if_absent(key, data)
        self.events.append(("put", key))
        return etag

    def replace_if_match(self, key, data, etag):
        new = super().replace_if_match(key, data, etag)
        self.events.append(("put", key))
        return new

    def delete(self, key):
        super().delete(key)
        self.events.append(("delete", key))


def test_replace_commits_the_new_data_set_last_then_deletes_the_old_ones_objects(store_uri, tmp_path, capsys):
    assert preprocess(store_uri, 3) == 0
    old = read_manifest(store_uri)
    old_keys = used_keys(old)
    assert preprocess(store_uri, 4, "--replace") == 0
    new = verify_dataset(store_uri, progress=False)
    assert new.dataset_hash != old.dataset_hash and new.n_frames == 32
    report = f"reports/{new.dataset_hash}.json"  # the stage writes the data report beside the manifest
    assert set(open_store(store_uri).list()) == used_keys(new) | {MANIFEST_NAME, report}

    # The order, on a recording local store: every new object, then the manifest, then the deletes.
    recording = RecordingStore(tmp_path / "recorded")
    settings = SETTINGS
    write_dataset(stages.load_input_frames("", 3, 8), recording, settings, shard_size=8, workers=1, progress=False)
    recording.events.clear()
    replaced = write_dataset(stages.load_input_frames("", 4, 8), recording, settings, shard_size=8, workers=1,
                             progress=False, replace=True)
    commit = recording.events.index(("put", MANIFEST_NAME))
    assert {key for _, key in recording.events[:commit]} == used_keys(replaced)
    assert all(kind == "delete" for kind, _ in recording.events[commit + 1:])
    assert {key for _, key in recording.events[commit + 1:]} == old_keys


def test_replace_deletes_the_old_data_sets_report_even_when_it_is_not_older_than_the_new_manifest(tmp_path):
    # An S3 time has whole seconds: the old report and the new manifest can carry the same one (CI saw it).
    # A report stamped in the future stands in for that second, deterministically.
    store = str(tmp_path / "store")
    assert preprocess(store, 3) == 0
    old_report = tmp_path / "store" / "reports" / f"{read_manifest(store).dataset_hash}.json"
    an_hour_late = time.time() + 3600
    os.utime(old_report, (an_hour_late, an_hour_late))
    assert preprocess(store, 4, "--replace") == 0
    assert not old_report.exists()
    assert (tmp_path / "store" / "reports" / f"{read_manifest(store).dataset_hash}.json").is_file()


def test_a_commit_collects_what_a_crashed_writer_of_another_input_left(tmp_path):
    from signpose.shards import write_shard_range

    store = str(tmp_path / "store")
    crashed = write_shard_range(stages.load_input_frames("", 3, 8), store, SETTINGS, [0, 1], shard_size=8,
                                workers=1, progress=False)  # never committed
    assert all(open_store(store).exists(info.key) for info in crashed)
    manifest = write_dataset(stages.load_input_frames("", 4, 8), store, SETTINGS, shard_size=8, workers=1,
                             progress=False)
    assert set(open_store(store).list()) == used_keys(manifest) | {MANIFEST_NAME}


def test_a_rerun_finds_a_same_size_bit_flip_in_a_committed_shard_and_rewrites_it(store_uri, caplog):
    assert preprocess(store_uri, 3) == 0
    manifest = read_manifest(store_uri)
    store = open_store(store_uri)
    victim = manifest.shards[1]
    original = store.get_bytes(victim.key)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    store.put_bytes(victim.key, bytes(flipped))
    with pytest.raises(Exception, match="checksum mismatch"):
        verify_dataset(store_uri, progress=False)
    with caplog.at_level(logging.INFO):
        assert preprocess(store_uri, 3) == 0
    assert "1 shards are missing or damaged" in caplog.text and "nothing to do" not in caplog.text
    assert store.get_bytes(victim.key) == original
    assert verify_dataset(store_uri, progress=False) == manifest


def test_the_fan_out_plan_step_refuses_another_input_and_hands_the_writers_a_repair(tmp_path):
    store = str(tmp_path / "store")
    items = stages.plan_preprocess("", store, 32, 8, 3, 8, render_tasks=2)
    for item in items:
        stages.write_shards("", store, item, 32, 8, 3, 8, workers=1)
    manifest = stages.commit_dataset(store, items)
    before = store_snapshot(store)
    with pytest.raises(DatasetExistsError, match="--replace"):
        stages.plan_preprocess("", store, 32, 8, 4, 8, render_tasks=2)
    assert store_snapshot(store) == before
    assert stages.plan_preprocess("", store, 32, 8, 3, 8, render_tasks=2)[0]["stop"] == 0  # committed: no-op
    (tmp_path / "store" / manifest.shards[0].key).write_bytes(b"x" * manifest.shards[0].bytes)
    items = stages.plan_preprocess("", store, 32, 8, 3, 8, render_tasks=2)
    assert sum(item["stop"] - item["start"] for item in items) == len(manifest.shards)
    for item in items:
        stages.write_shards("", store, item, 32, 8, 3, 8, workers=1)
    assert stages.commit_dataset(store, items) == manifest and verify_dataset(store, progress=False) == manifest


def test_a_fan_out_commit_is_refused_when_another_run_committed_after_its_plan(tmp_path):
    store = str(tmp_path / "store")
    items = stages.plan_preprocess("", store, 32, 8, 3, 8, render_tasks=1, replace=True)
    for item in items:
        stages.write_shards("", store, item, 32, 8, 3, 8, workers=1)
    other = stages.preprocess("", store, synthetic_videos=4, **ARGS)  # commits first
    with pytest.raises(DatasetExistsError, match=f"another run committed data set {other.dataset_hash[:12]}"):
        stages.commit_dataset(store, items, replace=True)
    assert verify_dataset(store, progress=False).dataset_hash == other.dataset_hash


# --- dataset verify checks the manifest itself ------------------------------------------------------

def _edit(manifest: dict, change: str) -> str:
    """Apply one inconsistency; returns the field the error must name."""
    shards = manifest["shards"]
    if change == "no-shards":
        manifest["shards"] = []
        return "shards"
    if change == "n_frames":
        manifest["n_frames"] += 1
        return "n_frames"
    if change == "splits":
        manifest["splits"]["train"] += 8
        return "splits"
    if change == "duplicate-key":
        shards[1]["key"] = shards[0]["key"]
        return "shards[1].key"
    if change == "key-outside-shards":
        shards[0]["key"] = "elsewhere/" + shards[0]["key"]
        return "shards[0].key"
    if change == "gap-in-frames":
        shards[1]["start"] += 1
        return "shards[1].start"
    if change == "shard-splits":
        shards[0]["splits"] = {"train": shards[0]["count"] + 1}
        return "shards[0].splits"
    if change == "hash":
        manifest["dataset_hash"] = "not-a-hash"
        return "dataset_hash"
    raise AssertionError(change)


CHANGES = ["no-shards", "n_frames", "splits", "duplicate-key", "key-outside-shards", "gap-in-frames", "shard-splits",
           "hash"]


@pytest.mark.parametrize("change", CHANGES)
def test_verify_refuses_an_inconsistent_manifest_naming_the_field(tmp_path, capsys, change):
    store = tmp_path / "store"
    assert preprocess(str(store), 3) == 0
    path = store / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    field = _edit(manifest, change)
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["dataset", "verify", str(store)]) == 1
    line = one_error_line(capsys.readouterr().err, str(path), f"field {field!r}")
    assert "verified" not in line


# --- no conditional writes: the read-back fallback ----------------------------------------------------

class PlainLocalStore(LocalStore):
    """A local folder as a store without conditional writes (the base class's behaviour)."""

    put_if_absent = ObjectStore.put_if_absent
    get_with_etag = ObjectStore.get_with_etag
    replace_if_match = ObjectStore.replace_if_match


def test_without_conditional_writes_the_commit_reads_back_and_still_refuses_another_input(tmp_path, caplog):
    store = PlainLocalStore(tmp_path / "store")
    settings = SETTINGS
    with caplog.at_level(logging.WARNING):
        first = write_dataset(stages.load_input_frames("", 3, 8), store, settings, shard_size=8, workers=1,
                              progress=False)
    assert "no conditional writes" in caplog.text
    assert verify_dataset(store, progress=False) == first
    with pytest.raises(DatasetExistsError, match=first.dataset_hash[:12]):
        write_dataset(stages.load_input_frames("", 4, 8), store, settings, shard_size=8, workers=1, progress=False)
    second = write_dataset(stages.load_input_frames("", 4, 8), store, settings, shard_size=8, workers=1,
                           progress=False, replace=True)
    assert verify_dataset(store, progress=False) == second
    assert set(store.list()) == used_keys(second) | {MANIFEST_NAME}


def test_an_s3_endpoint_without_conditional_writes_gets_the_read_back_fallback(s3_endpoint, s3_bucket, monkeypatch,
                                                                                caplog):
    """An endpoint answering ``501 NotImplemented`` to ``If-None-Match`` / ``If-Match`` (a real S3
    endpoint behind a proxy that answers so): the commit falls back, and one data set per prefix holds."""
    from faultproxy import FaultPlan, FaultProxy

    uri = s3_bucket + "/no-conditionals"
    with (FaultProxy(s3_endpoint, FaultPlan(kinds=("501",), from_n=0, conditional_only=True)) as proxy,
          monkeypatch.context() as env):
        env.setenv("AWS_ENDPOINT_URL", proxy.url)
        with caplog.at_level(logging.WARNING):
            first = write_dataset(stages.load_input_frames("", 3, 8), uri, SETTINGS, shard_size=8, workers=1,
                                  progress=False)
        assert proxy.faults("501") and "no conditional writes" in caplog.text
        with pytest.raises(DatasetExistsError, match=first.dataset_hash[:12]):
            write_dataset(stages.load_input_frames("", 4, 8), uri, SETTINGS, shard_size=8, workers=1, progress=False)
        second = write_dataset(stages.load_input_frames("", 4, 8), uri, SETTINGS, shard_size=8, workers=1,
                               progress=False, replace=True)
    assert verify_dataset(uri, progress=False) == second
    assert set(open_store(uri).list()) == used_keys(second) | {MANIFEST_NAME}
