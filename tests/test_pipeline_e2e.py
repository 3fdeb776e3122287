"""The real KFP DAG, executed by kfp.local on a tiny generated data set, ends in two registered models."""

from __future__ import annotations

import numpy as np
import pytest

TINY_RUN = dict(
    image_size=64,
    shard_size=32,
    render_tasks=2,
    synthetic_videos=6,
    synthetic_frames_per_video=16,
    skeleton_epochs=1,
    skeleton_batch_size=16,
    skeleton_overrides={"d_model": 32, "n_layers": 1, "n_heads": 2, "decoder_channels": 32, "num_workers": 0},
    face_epochs=1,
    face_batch_size=16,
    d_global=16,
    d_region=16,
    face_overrides={"n_heads": 2, "num_workers": 0},
)


@pytest.fixture(scope="module")
def finished_local_run(tmp_path_factory):
    from pipelines.local_run import run_local

    workdir = tmp_path_factory.mktemp("make-run")
    # MLflow's store follows the working folder (mlflow.yaml's relative sqlite:///mlruns.db), as in make run.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(name, raising=False)
        outcome = run_local(workdir, **TINY_RUN)
    return workdir, outcome


def test_local_dag_writes_manifest_and_shards(finished_local_run):
    from signpose.shards import read_manifest

    workdir, _ = finished_local_run
    manifest = read_manifest(str(workdir / "store"))
    assert sum(manifest.splits.values()) == 6 * 16
    assert manifest.image_size == 64
    assert all(shard.count > 0 for shard in manifest.shards)


def test_local_dag_registers_both_models_with_champion(finished_local_run):
    from mlflow import MlflowClient

    from signpose.tracking import load_mlflow_settings

    workdir, outcome = finished_local_run
    settings = load_mlflow_settings(workdir=workdir)
    assert outcome["tracking_uri"] == f"sqlite:///{workdir}/mlruns.db"
    client = MlflowClient(tracking_uri=outcome["tracking_uri"], registry_uri=outcome["tracking_uri"])
    for task in ("skeleton", "face"):
        name = settings.task(task).model_name
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1, name
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == versions[0].version
        run = client.get_run(champion.run_id)
        assert "val/loss" in run.data.metrics
        assert np.isfinite(run.data.metrics["val/loss"])
        # make run scores the real signers that ship with the package, next to the trivial baseline
        assert {"val_real/loss", "val_real_baseline/loss"} <= set(run.data.metrics), sorted(run.data.metrics)


def test_registered_skeleton_model_loads_and_renders(finished_local_run):
    import mlflow
    import torch

    from signpose.tracking import load_mlflow_settings

    workdir, outcome = finished_local_run
    settings = load_mlflow_settings(workdir=workdir)
    mlflow.set_tracking_uri(outcome["tracking_uri"])
    mlflow.set_registry_uri(outcome["tracking_uri"])
    model = mlflow.pytorch.load_model(f"models:/{settings.task('skeleton').model_name}@champion")
    keypoints = torch.rand(2, 143, 3)
    with torch.no_grad():
        image = model(keypoints)
    assert tuple(image.shape) == (2, 1, 64, 64)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_local_run_leaves_print_and_logging_as_it_found_them(finished_local_run):
    import builtins
    import logging

    # kfp.local's per-task print/logging patches race when tasks run in parallel threads.
    assert builtins.print.__module__ == "builtins"
    assert not any("Millisecond" in type(h.formatter).__name__ for h in logging.getLogger().handlers)


# Last in this module: it runs the DAG a second time in the same working folder.
def test_a_second_run_on_the_unchanged_corpus_trains_nothing_and_registers_nothing(finished_local_run, capfd):
    from mlflow import MlflowClient

    from pipelines.local_run import run_local
    from signpose.tracking import load_mlflow_settings
    from signpose.tracking.retrain import NOTHING_NEW

    workdir, outcome = finished_local_run
    client = MlflowClient(tracking_uri=outcome["tracking_uri"], registry_uri=outcome["tracking_uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs_before = len(client.search_runs(experiments))
    capfd.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(name, raising=False)
        again = run_local(workdir, **TINY_RUN)
    output = "".join(capfd.readouterr())
    assert output.count(NOTHING_NEW) >= 2, output[-3000:]  # the skeleton and the face task
    assert len(client.search_runs(experiments)) == runs_before
    settings = load_mlflow_settings(workdir=workdir)
    for task in ("skeleton", "face"):
        assert len(client.search_model_versions(f"name='{settings.task(task).model_name}'")) == 1, task
    print(f"second run on the unchanged corpus: {again['seconds']:.1f} s (first: {outcome['seconds']:.1f} s)")
