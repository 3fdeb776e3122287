"""A retried pipeline training task resumes from its checkpoint, continues its MLflow run and never
registers a second version (signpose.stages.train_task, as the KFP component calls it).

The first attempt runs in a subprocess that SIGKILLs itself at a chosen point (right after the k-th
checkpoint is written, or right after the model version is registered); the retry is the same call
with the same pipeline run id, in another subprocess, as KFP's retry would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from mlflow import MlflowClient

from signpose import stages
from signpose.store import open_store
from signpose.train.state import CHECKPOINT_KEY, load_checkpoint

CONFIG = dict(batch_size=4, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
              decoder_layers=1, dropout=0.1, lr=3e-3, progress=False, device="cpu", amp="off", num_workers=0,
              checkpoint_every=2)
MODEL_NAME = "face-keypoint-autoencoder"

ATTEMPT = r"""
import json, logging, os, signal, sys
from signpose import stages
import signpose.train.engine as engine
import signpose.tracking.training as training

store, tracking_uri, run_id, config, kill, k = sys.argv[1:7]
k = int(k)
logging.basicConfig(level=logging.INFO)

if kill == "after-checkpoint":
    real_save, saved = engine.save_checkpoint, []
    def save_checkpoint(*args, **kwargs):
        uri = real_save(*args, **kwargs)
        saved.append(uri)
        if len(saved) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return uri
    engine.save_checkpoint = save_checkpoint
elif kill == "after-registration":
    def promote(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    training.promote = promote

outcome = stages.train_task("face", store, tracking_uri, json.loads(config), pipeline_run_id=run_id)
weights = {k: v for k, v in outcome.result.model.state_dict().items()}
import torch
torch.save({"version": outcome.model_version, "run_id": outcome.run_id, "alias": outcome.alias,
            "weights": weights, "steps": outcome.result.global_step}, os.path.join(os.path.dirname(store), run_id + ".pt"))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("retries") / "dataset"
    stages.preprocess("", str(root), image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8,
                      workers=1)
    return str(root)


def attempt(store, tracking_uri, run_id, kill="none", k=0):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", ATTEMPT, store, tracking_uri, run_id, json.dumps(CONFIG), kill,
                           str(k)], env=env, capture_output=True, text=True, timeout=600)


def finished(store, run_id) -> dict:
    return torch.load(os.path.join(os.path.dirname(store), run_id + ".pt"), weights_only=True)


def runs_of(tracking_uri, run_id):
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`kfp.run_id` = '{run_id}'")


def versions(tracking_uri):
    return MlflowClient(tracking_uri, tracking_uri).search_model_versions(f"name = '{MODEL_NAME}'")


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow-clean')}/mlruns.db"
    done = attempt(store, tracking_uri, "run-clean")
    assert done.returncode == 0, done.stderr[-4000:]
    return finished(store, "run-clean")


def test_a_task_killed_mid_epoch_resumes_from_its_checkpoint_in_the_same_run_and_version(store, uninterrupted,
                                                                                         tmp_path):
    tracking_uri = f"sqlite:///{tmp_path}/mlruns.db"
    killed = attempt(store, tracking_uri, "run-a", "after-checkpoint", 2)  # the 2nd checkpoint: step 4, mid-epoch 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    checkpoint_dir = stages.task_checkpoint_dir(store, "run-a", "face")
    assert load_checkpoint(checkpoint_dir)["global_step"] == 4
    [run] = runs_of(tracking_uri, "run-a")
    assert run.info.status == "RUNNING"  # the killed attempt could not end it

    retry = attempt(store, tracking_uri, "run-a")
    assert retry.returncode == 0, retry.stderr[-4000:]
    assert "resumed from" in retry.stderr and "continuing it" in retry.stderr
    result = finished(store, "run-a")
    for name, tensor in uninterrupted["weights"].items():
        assert torch.equal(result["weights"][name], tensor), name  # exact resume: as if never killed
    [run] = runs_of(tracking_uri, "run-a")
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/loss")
    assert sorted(m.step for m in history) == [0, 1]
    assert [str(v.version) for v in versions(tracking_uri)] == [result["version"]] == ["1"]


@pytest.mark.slow  # a training killed after registration, then its retry: ~30 s; make test-all
def test_a_task_killed_after_registration_registers_nothing_new_on_retry(store, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path}/mlruns.db"
    killed = attempt(store, tracking_uri, "run-b", "after-registration")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert [str(v.version) for v in versions(tracking_uri)] == ["1"]

    retry = attempt(store, tracking_uri, "run-b")
    assert retry.returncode == 0, retry.stderr[-4000:]
    assert "already registered" in retry.stderr
    result = finished(store, "run-b")
    assert [str(v.version) for v in versions(tracking_uri)] == [result["version"]] == ["1"]
    assert result["alias"] == "champion"  # the gate the killed attempt never reached ran on the retry
    [run] = runs_of(tracking_uri, "run-b")
    assert run.info.status == "FINISHED"


def test_a_finished_task_removes_its_checkpoint(store, uninterrupted):
    checkpoint_dir = stages.task_checkpoint_dir(store, "run-clean", "face")
    assert open_store(checkpoint_dir).exists(CHECKPOINT_KEY)

    class Outcome:
        class result:
            class config:
                checkpoint_dir = stages.task_checkpoint_dir(store, "run-clean", "face")

    stages.remove_task_checkpoints(Outcome)
    assert not open_store(checkpoint_dir).exists(CHECKPOINT_KEY)


def test_the_checkpoint_location_is_next_to_the_data_set_and_per_pipeline_run_and_task():
    assert stages.task_checkpoint_dir("s3://b/data/manifest.json", "run/1", "face") == \
        "s3://b/data/checkpoints/run_1/face"
    assert stages.task_checkpoint_dir("/srv/data", "abc", "skeleton") == "/srv/data/checkpoints/abc/skeleton"
