"""Scheduled retraining on a growing corpus (issue 23): a prefix is the corpus, versions render only new or
changed sources and share the other shards, no video changes split, a report per version, history /
diff / gc. Corpora of generated ``.pose`` files in a folder and in moto's S3 server (real parts)."""

from __future__ import annotations

import hashlib
import logging
import os

import boto3
import pytest

from signpose import stages
from signpose.cli import main
from signpose.data import load_split
from signpose.datasets.history import collect, diff, history
from signpose.datasets.listing import SKIP_EMPTY, SKIP_HIDDEN, SKIP_UNKNOWN, list_corpus
from signpose.datasets.report import read_report
from signpose.datasets.version import write_version
from signpose.render import RenderSettings
from signpose.shards import read_manifest, verify_dataset
from signpose.store import open_store
from signpose.synth import generate_signer_frames

N_FILES, DELIVERY = 200, 20
SETTINGS = RenderSettings(image_size=16)
SHARD = 64


@pytest.fixture(scope="module")
def pose_files() -> dict[str, bytes]:
    """220 generated signing videos of 3 frames each as .pose bytes, keyed by their corpus key."""
    from signpose.io.pose_files import holistic_pose_bytes

    frames = generate_signer_frames(N_FILES + DELIVERY, 3, seed=7)
    files = {}
    for i, video in enumerate(frames.videos()):
        kp = frames.keypoints[frames.video_id == video]
        files[f"signer{i % 4}/week{i // 50}/{video}.pose"] = holistic_pose_bytes(kp, 640, 480)
    return files


class Corpus:
    """A corpus under a local folder or an S3 prefix that the test writes into."""

    def __init__(self, uri: str):
        self.uri = uri
        self.store = open_store(uri)

    def put(self, files: dict[str, bytes]) -> None:
        for key, data in files.items():
            self.store.put_bytes(key, data)

    def delete(self, key: str) -> None:
        self.store.delete(key)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def corpus(request, tmp_path) -> Corpus:
    if request.param == "local":
        return Corpus(str(tmp_path / "corpus"))
    return Corpus(request.getfixturevalue("s3_bucket") + "/incoming/")


def _placements(manifest) -> dict[str, str]:
    return {video: where for source in manifest.sources for video, where in source["videos"].items()}


def _first_version(tmp_path, files: dict[str, bytes]):
    """A corpus folder holding ``files``, preprocessed once into a local store: (corpus, store, version)."""
    corpus = Corpus(str(tmp_path / "corpus"))
    corpus.put(files)
    store = str(tmp_path / "store")
    return corpus, store, write_version(corpus.uri, store, SETTINGS, SHARD)[0]


def _fan_out(corpus_uri: str, store_uri: str) -> tuple[list[dict], list[int]]:
    """The pipeline's preprocessing steps (plan -> one writer per item -> commit); frames per writer."""
    args = dict(image_size=SETTINGS.image_size, shard_size=SHARD)
    items = stages.plan_preprocess(corpus_uri, store_uri, render_tasks=3, **args)
    rendered = [stages.write_shards(corpus_uri, store_uri, item, workers=1, **args) for item in items]
    stages.commit_dataset(store_uri, items)
    return items, rendered


def test_a_delivery_of_20_files_renders_exactly_those_and_moves_no_video(corpus, pose_files, tmp_path):
    keys = sorted(pose_files)
    delivery = keys[3::11][:DELIVERY]  # spread over the corpus, not appended at its end
    first = {k: pose_files[k] for k in keys if k not in delivery}
    corpus.put(first)
    store = str(tmp_path / "store")
    v1, rendered = write_version(corpus.uri, store, SETTINGS, SHARD)
    assert rendered == 3 * N_FILES and len(v1.sources) == N_FILES

    corpus.put({k: pose_files[k] for k in delivery})
    items, per_writer = _fan_out(corpus.uri, store)
    v2 = read_manifest(store)
    assert len(items) == 3 and sum(per_writer) == 3 * DELIVERY and all(n > 0 for n in per_writer)
    assert v2.parent == v1.dataset_hash and v2.changes == {"added": delivery, "changed": [], "removed": []}
    assert diff(v1, v2).added == delivery
    old = _placements(v1)
    assert {v: _placements(v2)[v] for v in old} == old  # no existing video changed split
    shared = {s.key for s in v1.shards} & {s.key for s in v2.shards}
    assert len(shared) == len(v1.shards)  # the new version reuses every shard of the old one
    report = read_report(store, v2.dataset_hash)
    assert [row["key"] for row in report["sources"]] == keys
    for row in report["sources"]:
        assert row["frames_read"] == 3 and row["videos"] == 1
        assert row["content_hash"] == hashlib.sha256(pose_files[row["key"]]).hexdigest()
    assert report["splits"]["train"]["frames"] == v2.splits["train"]
    assert sum(v["videos"] for v in report["splits"].values()) == N_FILES + DELIVERY
    assert sorted(report["regions"]) == ["body", "face", "left_hand", "right_hand"]
    assert report["added"] == delivery and report["parent"] == v1.dataset_hash
    assert len(load_split(store, "train")) == v2.splits["train"]


def test_a_local_folder_and_an_s3_prefix_of_the_same_files_are_the_same_data_set(pose_files, tmp_path, s3_bucket):
    files = dict(sorted(pose_files.items())[:12])
    local, remote = Corpus(str(tmp_path / "corpus")), Corpus(f"{s3_bucket}/deliveries/")
    local.put(files)
    remote.put(files)
    a, _ = write_version(local.uri, str(tmp_path / "a"), SETTINGS, SHARD)
    b, _ = write_version(remote.uri, f"{s3_bucket}/store", SETTINGS, SHARD)
    assert a.dataset_hash == b.dataset_hash and a.splits == b.splits


def test_a_changed_file_is_rendered_again_and_a_removed_one_dropped(pose_files, tmp_path):
    files = dict(sorted(pose_files.items())[:12])
    corpus, store, v1 = _first_version(tmp_path, files)
    changed, removed = sorted(files)[2], sorted(files)[5]
    corpus.put({changed: pose_files[sorted(pose_files)[-1]]})  # other bytes under the same key
    corpus.delete(removed)
    v2, rendered = write_version(corpus.uri, store, SETTINGS, SHARD)
    assert rendered == 3 and v2.changes == {"added": [], "changed": [changed], "removed": [removed]}
    assert removed not in {s["key"] for s in v2.sources}
    assert _placements(v2)[changed] == _placements(v1)[changed]  # a changed video keeps its split
    assert v2.n_frames == v1.n_frames - 3
    verify_dataset(store, progress=False)


def test_an_unchanged_corpus_is_the_same_version_and_renders_nothing(pose_files, tmp_path):
    corpus, store, v1 = _first_version(tmp_path, dict(sorted(pose_files.items())[:6]))
    before = sorted(open_store(store).list())
    items, rendered = _fan_out(corpus.uri, store)
    assert [(i["start"], i["stop"]) for i in items] == [(0, 0)] and rendered == [0]
    assert read_manifest(store).dataset_hash == v1.dataset_hash and sorted(open_store(store).list()) == before


def test_half_uploaded_and_hidden_objects_never_enter_a_version(pose_files, s3_bucket, tmp_path):
    corpus = Corpus(f"{s3_bucket}/incoming/")
    files = dict(sorted(pose_files.items())[:5])
    corpus.put(files)
    client = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    client.put_object(Bucket=bucket, Key="incoming/arriving.pose", Body=b"")  # a zero-byte placeholder
    client.put_object(Bucket=bucket, Key="incoming/_tmp/partial.pose", Body=b"\x00" * 100)
    client.put_object(Bucket=bucket, Key="incoming/.upload.pose.part", Body=b"\x00" * 100)
    client.put_object(Bucket=bucket, Key="incoming/notes.txt", Body=b"recorded on tuesday")
    listed = list_corpus(corpus.uri)
    assert [s.key for s in listed.sources] == sorted(files)
    assert listed.skipped == {SKIP_HIDDEN: 2, SKIP_EMPTY: 1, SKIP_UNKNOWN: 1}
    manifest, _ = write_version(corpus.uri, str(tmp_path / "store"), SETTINGS, SHARD)
    assert sorted(s["key"] for s in manifest.sources) == sorted(files)
    assert read_report(str(tmp_path / "store"), manifest.dataset_hash)["skipped"] == listed.skipped


def test_a_corpus_listing_follows_pagination(s3_bucket):
    client = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    for i in range(12):
        client.put_object(Bucket=bucket, Key=f"incoming/_markers/{i:04d}", Body=b"x")
    client.put_object(Bucket=bucket, Key="incoming/zz/last.pose", Body=b"x")
    listed = list_corpus(f"{s3_bucket}/incoming/", page_size=5)  # three pages
    assert [s.key for s in listed.sources] == ["zz/last.pose"] and listed.skipped == {SKIP_HIDDEN: 12}


def test_gc_keeps_every_kept_versions_shards_and_young_orphans(pose_files, tmp_path, capsys):
    keys = sorted(pose_files)[:8]
    corpus, store, v1 = _first_version(tmp_path, {k: pose_files[k] for k in keys[:6]})
    corpus.delete(keys[0])
    corpus.put({k: pose_files[k] for k in keys[6:]})
    v2, _ = write_version(corpus.uri, store, SETTINGS, SHARD)
    assert [m.dataset_hash for m in history(store)] == [v2.dataset_hash, v1.dataset_hash]
    orphan = "shards/0123456789abcdef-00000.npz"  # a writer's shard, not committed yet
    open_store(store).put_bytes(orphan, b"in flight")
    only_v1 = {s.key for s in v1.shards} - {s.key for s in v2.shards}
    assert len(only_v1) == 1
    assert main(["dataset", "gc", store, "--keep", "2", "--grace_hours", "0", "--dry_run"]) == 0
    assert orphan in capsys.readouterr().out and open_store(store).exists(orphan)
    assert collect(store, keep=2, grace_s=3600)["objects"] == []  # the orphan is young: kept
    done = collect(store, keep=1, grace_s=0)
    assert done["versions"] == [v1.dataset_hash] and only_v1 | {orphan} <= set(done["objects"])
    assert all(open_store(store).exists(s.key) for s in v2.shards)
    verify_dataset(store, progress=False)
    assert [m.dataset_hash for m in history(store)] == [v2.dataset_hash]


def test_history_and_diff_on_the_command_line(pose_files, tmp_path, capsys):
    keys = sorted(pose_files)[:5]
    corpus, store, v1 = _first_version(tmp_path, {k: pose_files[k] for k in keys[:4]})
    corpus.put({keys[4]: pose_files[keys[4]]})
    assert main(["preprocess", "--data_path", corpus.uri, "--store", store, "--image_size", "16", "--shard_size", str(SHARD)]) == 0
    out = capsys.readouterr().out
    assert "1 added, 0 changed, 0 removed" in out and "regions: " in out and "left_hand" in out
    v2 = read_manifest(store)
    assert main(["dataset", "history", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [v2.dataset_hash[:12], v1.dataset_hash[:12]]
    assert main(["dataset", "diff", "--store", store, v1.dataset_hash[:12], v2.dataset_hash[:12]]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"+ {keys[4]}"]
    assert main(["dataset", "diff", f"{store}@{v2.dataset_hash[:8]}", f"{store}@{v1.dataset_hash[:8]}"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"- {keys[4]}"]
    assert main(["dataset", "diff", "--store", store, "nope", v2.dataset_hash]) == 2
    assert main(["dataset", "info", store]) == 0
    assert f"version of 5 sources, parent {v1.dataset_hash}: 1 added, 0 changed, 0 removed" in capsys.readouterr().out
    assert os.path.exists(os.path.join(store, "versions", f"{v1.dataset_hash}.json"))


def test_a_writer_whose_parent_was_replaced_meanwhile_is_refused_and_its_rerun_renders_nothing_twice(
        pose_files, tmp_path):
    from signpose.datasets.version import commit_version, plan_version, render_planned
    from signpose.shards.commit import DatasetExistsError

    keys = sorted(pose_files)[:8]
    corpus, store, v1 = _first_version(tmp_path, {k: pose_files[k] for k in keys[:5]})
    corpus.put({keys[5]: pose_files[keys[5]]})
    slow = plan_version(corpus.uri, store, SETTINGS, SHARD)  # a writer that plans, then takes its time
    corpus.put({keys[6]: pose_files[keys[6]]})
    fast, _ = write_version(corpus.uri, store, SETTINGS, SHARD)  # another run commits first
    assert render_planned(store, slow) == 0  # keys[5] was rendered by the other run: found by render key
    with pytest.raises(DatasetExistsError, match="another run committed"):
        commit_version(store, slow["dataset_hash"], slow)
    assert read_manifest(store).dataset_hash == fast.dataset_hash and fast.parent == v1.dataset_hash
    v3, rendered = write_version(corpus.uri, store, SETTINGS, SHARD)
    assert rendered == 0 and v3.dataset_hash == fast.dataset_hash


def test_a_store_holding_a_single_input_needs_replace_to_hold_a_corpus(pose_files, tmp_path):
    from signpose.shards.commit import DatasetExistsError

    store = str(tmp_path / "store")
    stages.preprocess("", store, image_size=16, shard_size=SHARD, synthetic_videos=3, synthetic_frames_per_video=4,
                      workers=1)
    legacy = read_manifest(store)
    assert not legacy.is_version and legacy.schema_version == 1  # a manifest of the first schema still reads
    corpus = Corpus(str(tmp_path / "corpus"))
    corpus.put(dict(sorted(pose_files.items())[:4]))
    with pytest.raises(DatasetExistsError, match="--replace"):
        write_version(corpus.uri, store, SETTINGS, SHARD)
    version, _ = write_version(corpus.uri, store, SETTINGS, SHARD, replace=True)
    assert version.parent is None and read_manifest(store).dataset_hash == version.dataset_hash
    assert not any(open_store(store).exists(s.key) for s in legacy.shards)  # the replaced data set is collected


def test_frame_folders_and_seed_pickles_are_sources_and_a_pickles_splits_stay_as_given(tmp_path, s3_bucket):
    from signpose.io.writers import write_openpose_json, write_seed_pickle
    from signpose.synth import generate_signer_data

    local = tmp_path / "corpus"
    write_openpose_json(local / "clips" / "clip-1", generate_signer_frames(1, 4, seed=5).keypoints, 500, 500)
    write_seed_pickle(local / "phoenix.pkl", generate_signer_data(n_videos=4, frames_per_video=3, seed=6))
    remote = Corpus(f"{s3_bucket}/mixed/")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        remote.put({path.relative_to(local).as_posix(): path.read_bytes()})
    a, _ = write_version(str(local), str(tmp_path / "a"), SETTINGS, SHARD)
    b, _ = write_version(remote.uri, f"{s3_bucket}/store", SETTINGS, SHARD)
    assert a.dataset_hash == b.dataset_hash
    sources = {s["key"]: s for s in a.sources}
    assert sorted(sources) == ["clips/clip-1", "phoenix.pkl"]
    assert list(sources["clips/clip-1"]["videos"]) == ["clips/clip-1"]
    given = generate_signer_data(n_videos=4, frames_per_video=3, seed=6)
    assert {split: sources["phoenix.pkl"]["frames"].get(split, 0) for split in ("train", "dev", "test")} == {
        split: len(given[split]["keypoints"]) if split in given else 0 for split in ("train", "dev", "test")}


def test_changed_split_fractions_move_no_placed_video_new_videos_follow_them_and_a_note_says_so(
        pose_files, tmp_path, capsys, caplog):
    from signpose.datasets.splits import hash_split

    corpus = Corpus(str(tmp_path / "corpus"))
    keys = sorted(pose_files)[:120]
    old_keys, new_keys = keys[::2], keys[1::2]  # 60 placed at the default 0.1 / 0.1, then 60 new ones
    corpus.put({k: pose_files[k] for k in old_keys})
    store = str(tmp_path / "store")
    flags = ["preprocess", "--data_path", corpus.uri, "--store", store, "--image_size", "16", "--shard_size",
             str(SHARD), "--workers", "1"]
    assert main(flags) == 0
    v1 = read_manifest(store)
    assert v1.split_policy["dev_fraction"] == 0.1 and "note" not in capsys.readouterr().out

    corpus.put({k: pose_files[k] for k in new_keys})
    assert main(flags + ["--dev_fraction", "0.4", "--test_fraction", "0.35"]) == 0
    v2 = read_manifest(store)
    old, placed = _placements(v1), _placements(v2)
    assert {v: placed[v] for v in old} == old  # not one placed video moved
    new = {v: where for v, where in placed.items() if v not in old}
    assert len(new) == len(new_keys)
    assert all(where == hash_split(v, 0.4, 0.35) for v, where in new.items())
    new_train = sum(where == "train" for where in new.values()) / len(new)
    old_train = sum(where == "train" for where in old.values()) / len(old)
    assert new_train < 0.45 < 0.65 < old_train  # expected 0.25 against 0.8 (3+ standard deviations each)
    assert v2.split_policy == {"dev_fraction": 0.4, "test_fraction": 0.35, "seed": 0}
    note = read_report(store, v2.dataset_hash)["notes"]
    assert len(note) == 1 and "dev 0.1 / test 0.1" in note[0] and "dev 0.4 / test 0.35" in note[0]
    assert "new videos only" in note[0] and v1.dataset_hash[:12] in note[0]
    assert f"note: {note[0]}" in capsys.readouterr().out
    assert any(r.levelname == "WARNING" and note[0] in r.getMessage() for r in caplog.records)
    assert read_report(store, v1.dataset_hash)["notes"] == []


def test_the_fraction_flags_together_at_1_or_more_are_one_line_and_status_2_before_any_work(tmp_path, capsys):
    from cli_errors import one_error_line

    from signpose.ranges import RangeError

    store = tmp_path / "store"
    assert main(["preprocess", "--store", str(store), "--dev_fraction", "0.6", "--test_fraction", "0.4"]) == 2
    one_error_line(capsys.readouterr().err, "--dev_fraction 0.6", "--test_fraction 0.4", "below 1")
    with pytest.raises(RangeError, match="--test_fraction"):  # a pipeline's parameters are checked alike
        stages.plan_preprocess("", str(store), test_fraction=1.5)
    assert not store.exists()


def test_a_corpus_renders_its_new_sources_in_worker_processes_into_the_same_objects_as_one(
        pose_files, tmp_path, monkeypatch, caplog):
    from signpose.shards import write as shard_write

    corpus = Corpus(str(tmp_path / "corpus"))
    corpus.put(dict(sorted(pose_files.items())[:8]))
    pools = []
    real_pool = shard_write.render_pool
    monkeypatch.setattr(shard_write, "render_pool", lambda n: pools.append(n) or real_pool(n))
    args = dict(image_size=SETTINGS.image_size, shard_size=4)
    one = stages.preprocess(corpus.uri, str(tmp_path / "one"), workers=1, **args)
    assert pools == []
    caplog.set_level(logging.DEBUG, logger="signpose.datasets.render")
    two = stages.preprocess(corpus.uri, str(tmp_path / "two"), workers=2, **args)
    assert pools == [2]
    rendered = [r for r in caplog.records if r.getMessage().startswith(f"{tmp_path / 'two'}: rendered 3 frames")]
    assert len(rendered) == 8 and os.getpid() not in {r.process for r in rendered}  # relayed from the workers
    assert two.dataset_hash == one.dataset_hash and two.sources == one.sources
    assert [(s.key, s.sha256, s.splits) for s in two.shards] == [(s.key, s.sha256, s.splits) for s in one.shards]
    for info in one.shards:
        assert (tmp_path / "two" / info.key).read_bytes() == (tmp_path / "one" / info.key).read_bytes()
    records = sorted(p.name for p in (tmp_path / "one" / "sources").iterdir())
    assert records == sorted(p.name for p in (tmp_path / "two" / "sources").iterdir()) and len(records) == 8
