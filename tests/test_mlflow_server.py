"""Integration: a real ``mlflow server`` process (SQLite backend, artifacts proxied to S3 on moto's
server) on a free loopback port; both real models trained through the real engine against it, then
everything checked back through the MLflow client: runs, metric histories, images, registered
versions, aliases after a better and after a worse retraining, and the CLI (models, predict)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import cv2
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from tracking_fixtures import IMAGE_SIZE, build_model, face_config, reset_mlflow_globals, skeleton_config

from signpose.cli import main as registry_main
from signpose.data import KeypointDataset, SkeletonDataset
from signpose.io import KeypointFrames, writers
from signpose.synth import generate_signer_frames
from signpose.tracking import CHALLENGER, CHAMPION, FINAL_PANEL_FILE, PANEL_KEY, load_mlflow_settings
from signpose.tracking.registry import metric_tag
from signpose.tracking.training import tracked_fit

REPO = Path(__file__).resolve().parents[1]
DATASET_HASH = "synthetic-seed3-v1"


@pytest.fixture(scope="module")
def frames():
    """Synthetic signing: 3 videos; the first 2 train, the last one validates (an unseen video)."""
    frames = generate_signer_frames(n_videos=3, frames_per_video=10, seed=3)
    is_val = frames.video_id == frames.video_id[-1]
    return frames, frames.subset(~is_val), frames.subset(is_val)


@pytest.fixture(scope="module")
def server_settings(mlflow_server):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "SIGNPOSE_MLFLOW_CONFIG", "KFP_RUN_ID"):
            mp.delenv(name, raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mp.chdir(REPO)  # the shipped mlflow.yaml, as the CLI reads it
        yield load_mlflow_settings()
        reset_mlflow_globals()


def _datasets(task, frames):
    _, train, val = frames
    if task == "skeleton":
        return SkeletonDataset(train.keypoints, image_size=IMAGE_SIZE), SkeletonDataset(val.keypoints,
                                                                                         image_size=IMAGE_SIZE)
    return KeypointDataset(train.keypoints), KeypointDataset(val.keypoints)


def _train(task, frames, settings, pipeline_run_id="kfp-run-it", **overrides):
    # One pipeline run trains a task once (a second call with its id is a retry of that training):
    # each retraining is a pipeline run of its own.
    cfg = (skeleton_config if task == "skeleton" else face_config)(**overrides)
    train_ds, val_ds = _datasets(task, frames)
    return tracked_fit(task, build_model(cfg), train_ds, val_ds, cfg, dataset_hash=DATASET_HASH,
                       manifest_uri="s3://data/synthetic/manifest.json", settings=settings,
                       pipeline_run_id=pipeline_run_id)


@pytest.fixture(scope="module")
def first_trainings(server_settings, frames):
    return {task: _train(task, frames, server_settings, epochs=2) for task in ("skeleton", "face")}


def _artifact_paths(client, run_id, path=None):
    paths = []
    for item in client.list_artifacts(run_id, path):
        paths.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return paths


def test_both_trainings_are_runs_on_the_server_with_metric_histories_and_panels(server_settings, first_trainings,
                                                                                mlflow_server):  # noqa: F811
    client = MlflowClient(mlflow_server.url)
    expected_metrics = {"skeleton": ("train/loss", "val/loss", "val/weighted_loss", "val/psnr", "val/ssim",
                                     "val/mse_hands", "val/mse_face", "val/mse_body"),
                        "face": ("train/loss", "val/loss", "val/nme", "val/nme_jaw", "val/nme_inner_lips")}
    for task, tracked in first_trainings.items():
        run = client.get_run(tracked.run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.name == server_settings.task(task).experiment
        # Artifacts go through the server (no client-side S3 access needed).
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        assert run.data.params["pipeline_run_id"] == "kfp-run-it"
        assert run.data.params["dataset_hash"] == DATASET_HASH
        for name in expected_metrics[task]:
            history = client.get_metric_history(tracked.run_id, name)
            assert [m.step for m in history] == [0, 1], (task, name)
        assert any(key.startswith("system/") for key in run.data.metrics)
        artifacts = _artifact_paths(client, tracked.run_id)
        steps = sorted(int(m.group(1)) for p in artifacts
                       if (m := re.match(rf"images/{PANEL_KEY}[+%]step[+%](\d+)[+%].*(?<!compressed)\.png$", p)))
        assert steps == [0, 1], artifacts
        assert FINAL_PANEL_FILE in artifacts and "config.json" in artifacts
        panel_path = mlflow.artifacts.download_artifacts(run_id=tracked.run_id, artifact_path=FINAL_PANEL_FILE,
                                                         tracking_uri=mlflow_server.url)
        panel = cv2.imread(panel_path)
        assert panel is not None and panel.shape[0] > IMAGE_SIZE and panel.std() > 0


def test_artifacts_land_in_the_s3_bucket_behind_the_server(first_trainings, mlflow_server):  # noqa: F811
    keys = [obj["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(
        Bucket=mlflow_server.bucket) for obj in page.get("Contents", [])]
    assert any(key.endswith("model.pt2") for key in keys), keys[:20]
    assert any(f"/images/{PANEL_KEY}" in key for key in keys)
    assert any(key.endswith(FINAL_PANEL_FILE) for key in keys)


def test_first_versions_are_registered_as_champions_and_load_back(server_settings, first_trainings,
                                                                  mlflow_server):  # noqa: F811
    client = MlflowClient(mlflow_server.url)
    for task, tracked in first_trainings.items():
        name = server_settings.task(task).model_name
        version = client.get_model_version_by_alias(name, CHAMPION)
        assert str(version.version) == tracked.model_version == "1"
        assert version.tags["dataset_hash"] == DATASET_HASH and version.tags["run_id"] == tracked.run_id
        metric = server_settings.task(task).promotion_metric
        assert float(version.tags[metric_tag(metric)]) == pytest.approx(tracked.metrics[metric])
    generator = mlflow.pytorch.load_model("models:/skeleton-generator@champion")
    import torch

    out = generator(torch.rand(3, 143, 3))
    assert tuple(out.shape) == (3, 1, IMAGE_SIZE, IMAGE_SIZE)


def test_models_cli_lists_versions_with_aliases_and_metrics(first_trainings, capsys):
    assert registry_main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_model = {row["model"]: row for row in rows if row["version"] == "1"}
    assert by_model["skeleton-generator"]["aliases"] == [CHAMPION]
    assert by_model["skeleton-generator"]["metric"] == "val/weighted_loss"
    assert by_model["face-keypoint-autoencoder"]["value"] == pytest.approx(
        first_trainings["face"].metrics["val/nme"])
    assert registry_main(["models"]) == 0
    table = capsys.readouterr().out
    assert "skeleton-generator" in table and "champion" in table


def test_predict_cli_renders_skeletons_and_face_overlays_for_a_new_pickle(first_trainings, frames, tmp_path):
    _, _, val = frames
    # A new recording in the seed's skeleton pickle format (all of it under 'train', as the seed wrote it).
    new = KeypointFrames(val.keypoints, np.full(len(val.keypoints), "train"), val.video_id, val.frame_index,
                         "new_signer", "synthetic")
    source = tmp_path / "new_signer.pkl"
    writers.write_seed_pickle(str(source), new.to_seed_dict())

    skeleton_out = tmp_path / "skeleton"
    assert registry_main(["predict", "--model", "models:/skeleton-generator@champion", str(source),
                          "--out", str(skeleton_out), "--limit", "3"]) == 0
    pngs = sorted(skeleton_out.glob("*.png"))
    assert len(pngs) == 3
    image = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE)
    with np.load(skeleton_out / "predictions.npz") as saved:
        assert saved["outputs"].shape == (3, 1, IMAGE_SIZE, IMAGE_SIZE)

    face_out = tmp_path / "face"
    assert registry_main(["predict", "--model", "models:/face-keypoint-autoencoder@champion", str(source),
                          "--out", str(face_out)]) == 0
    overlays = sorted(face_out.glob("*.png"))
    assert len(overlays) == len(val.keypoints)
    overlay = cv2.imread(str(overlays[0]))
    # Green (original) and red (reconstruction) landmarks both drawn (OpenCV reads BGR).
    assert ((overlay[..., 1] > 150) & (overlay[..., 2] < 100)).any()
    assert ((overlay[..., 2] > 150) & (overlay[..., 1] < 100)).any()


def _retrain_and_check(task, frames, settings, client):
    policy = settings.task(task)
    name, metric = policy.model_name, policy.promotion_metric
    champion = client.get_model_version_by_alias(name, CHAMPION)
    champion_value = float(champion.tags[metric_tag(metric)])

    better = _train(task, frames, settings, pipeline_run_id="kfp-run-better", epochs=6)
    assert better.metrics[metric] < champion_value, "precondition: longer training must lower the metric"
    assert better.alias == CHAMPION, better.reason
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == better.model_version

    worse = _train(task, frames, settings, pipeline_run_id="kfp-run-worse", epochs=1, lr=1e-6)
    assert worse.metrics[metric] > better.metrics[metric], "precondition: an untrained model must be worse"
    assert worse.alias == CHALLENGER
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == better.model_version
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == worse.model_version
    tags = client.get_model_version(name, worse.model_version).tags
    assert tags["promotion"] == CHALLENGER
    assert "does not beat" in tags["promotion_reason"] and f"champion v{better.model_version}" in tags[
        "promotion_reason"]


def test_skeleton_retraining_better_takes_champion_worse_becomes_challenger(server_settings, first_trainings,
                                                                              frames, mlflow_server):  # noqa: F811
    _retrain_and_check("skeleton", frames, server_settings, MlflowClient(mlflow_server.url))


@pytest.mark.slow  # the face model's torch.export is the slowest part (~15 s CPU per logged version)
def test_face_retraining_better_takes_champion_worse_becomes_challenger(server_settings, first_trainings, frames,
                                                                          mlflow_server):  # noqa: F811
    _retrain_and_check("face", frames, server_settings, MlflowClient(mlflow_server.url))
