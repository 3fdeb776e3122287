"""The stage entry points the KFP components call: inputs from S3, the fan-out, idempotence."""

from __future__ import annotations

import boto3
import numpy as np
import pytest

from signpose import stages
from signpose.shards import read_manifest, read_shard
from signpose.synth import generate_signer_data, write_seed_pickle

SMALL = dict(image_size=64, shard_size=16, synthetic_videos=4, synthetic_frames_per_video=10)


def _fan_out(store_uri: str, input_uri: str = "", render_tasks: int = 2, **settings):
    items = stages.plan_preprocess(input_uri, store_uri, render_tasks=render_tasks, **settings)
    for item in items:
        stages.write_shards(input_uri, store_uri, item, image_size=settings["image_size"],
                            shard_size=settings["shard_size"], synthetic_videos=settings["synthetic_videos"],
                            synthetic_frames_per_video=settings["synthetic_frames_per_video"], workers=1)
    return items, stages.commit_dataset(store_uri, items)


def test_fan_out_writes_the_same_shards_as_the_single_process_stage(tmp_path):
    items, fanned = _fan_out(str(tmp_path / "fan-out"), **SMALL)
    single = stages.preprocess("", str(tmp_path / "single"), workers=1, **SMALL)
    assert len(items) == 2 and items[0]["start"] == 0 and items[-1]["stop"] == len(single.shards)
    assert fanned.dataset_hash == single.dataset_hash
    assert [(s.key, s.sha256, s.count) for s in fanned.shards] == [(s.key, s.sha256, s.count) for s in single.shards]


def test_planning_a_committed_data_set_yields_one_empty_work_item(tmp_path):
    store = str(tmp_path / "store")
    _, manifest = _fan_out(store, **SMALL)
    again = stages.plan_preprocess("", store, render_tasks=2, **SMALL)
    assert again == [{"dataset_hash": manifest.dataset_hash, "start": 0, "stop": 0,
                      "replaces": manifest.dataset_hash}]
    assert stages.write_shards("", store, again[0], **SMALL) == 0
    assert stages.commit_dataset(store, again).dataset_hash == manifest.dataset_hash


def test_a_writer_refuses_to_write_when_the_input_changed_after_planning(tmp_path):
    store = str(tmp_path / "store")
    items = stages.plan_preprocess("", store, render_tasks=1, **SMALL)
    changed = dict(SMALL, synthetic_videos=5)
    with pytest.raises(RuntimeError, match="input changed after planning"):
        stages.write_shards("", store, items[0], **changed)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_commit_names_the_missing_shards_when_a_writer_did_not_run(tmp_path):
    store = str(tmp_path / "store")
    items = stages.plan_preprocess("", store, render_tasks=2, **SMALL)
    stages.write_shards("", store, items[0], workers=1, **SMALL)
    with pytest.raises(Exception, match="not written"):
        stages.commit_dataset(store, items)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_preprocess_reads_a_seed_pickle_from_s3_and_writes_shards_to_s3(tmp_path, s3_bucket):
    data = generate_signer_data(n_videos=3, frames_per_video=8, seed=3)
    local = tmp_path / "phoenix_keypoints.pkl"
    write_seed_pickle(local, data)
    bucket = s3_bucket.removeprefix("s3://")
    boto3.client("s3").upload_file(str(local), bucket, "incoming/phoenix_keypoints.pkl")

    manifest = stages.preprocess(f"{s3_bucket}/incoming/phoenix_keypoints.pkl", f"{s3_bucket}/datasets/a",
                                 image_size=64, shard_size=8, workers=1)
    assert read_manifest(f"{s3_bucket}/datasets/a").dataset_hash == manifest.dataset_hash
    assert sum(manifest.splits.values()) == 3 * 8
    first = read_shard(f"{s3_bucket}/datasets/a", manifest.shards[0])
    assert first["images"].shape[1:] == (64, 64) and first["images"].max() > 0


def test_an_input_prefix_means_every_object_under_it(tmp_path, s3_bucket):
    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3")
    for name, videos in (("2026-11-01.pkl", 2), ("deliveries/2026-11-08.pkl", 3)):
        path = tmp_path / "one.pkl"
        write_seed_pickle(path, generate_signer_data(n_videos=videos, frames_per_video=6, seed=videos))
        client.upload_file(str(path), bucket, f"incoming/{name}")
    frames = stages.load_input_frames(f"{s3_bucket}/incoming/")
    assert len(np.unique(frames.video_id)) == 5
    assert {v.split("#")[0] for v in frames.video_id.tolist()} == {"2026-11-01.pkl", "deliveries/2026-11-08.pkl"}


def test_an_empty_input_prefix_is_a_clear_error(s3_bucket):
    with pytest.raises(FileNotFoundError, match="no input objects under this prefix"):
        stages.load_input_frames(f"{s3_bucket}/nothing-here/")


def test_a_store_is_required_for_the_fan_out():
    with pytest.raises(ValueError, match="store_uri is required"):
        stages.plan_preprocess("", "", **SMALL)


def test_training_refuses_a_store_whose_data_set_was_replaced_by_another_run(tmp_path):
    store = str(tmp_path / "store")
    first = stages.preprocess("", store, workers=1, **SMALL)
    replaced = stages.preprocess("", store, workers=1, replace=True, **dict(SMALL, synthetic_videos=5))
    assert replaced.dataset_hash != first.dataset_hash
    with pytest.raises(RuntimeError, match="another run replaced it"):
        stages.train_task("face", store, f"sqlite:///{tmp_path}/mlruns.db", {"epochs": 1},
                          expected_dataset_hash=first.dataset_hash)


# ---- GPUs: what the pod sees against what the run asked for -----------------------------------------

def test_a_training_pod_that_sees_fewer_gpus_than_gpu_count_stops_at_once_with_one_line(capsys):
    # No GPU on this machine: a pod whose GPU limit never reached it looks like this. Checked before
    # the data set is read (the artifact here would fail any later step).
    with pytest.raises(SystemExit) as stopped:
        stages.training_stage("face", object(), object(), object(), config={}, gpu_count="1")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: gpu_count=1: this pod sees 0 GPU(s)"), err
    assert "gpu_count=0" in err  # says what to do


def test_the_gpu_check_compares_the_count_asked_for_with_the_devices_visible():
    stages.require_visible_gpus(0, visible=0)  # gpu_count 0: the CPU, nothing to check
    stages.require_visible_gpus(2, visible=4)
    with pytest.raises(stages.GpuCountError, match=r"gpu_count=4: this pod sees 2 GPU\(s\)"):
        stages.require_visible_gpus(4, visible=2)


@pytest.mark.parametrize("text, count", [("0", 0), ("1", 1), (" 8 ", 8), (2, 2)])
def test_gpu_count_is_a_string_parameter_read_as_a_whole_number(text, count):
    assert stages.parse_gpu_count(text) == count


@pytest.mark.parametrize("text", ["", "one", "-1", "1.5"])
def test_a_gpu_count_that_is_no_whole_number_is_a_user_error(text):
    with pytest.raises(stages.GpuCountError, match="whole number"):
        stages.parse_gpu_count(text)
