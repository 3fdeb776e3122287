"""The retraining policy in the training stage (signpose.tracking.retrain): nothing new since the
champion trains nothing, force_training trains anyway, the data report goes with the data set, and
drift from the champion's data is tagged, or stops the training with fail_on_drift.

Real parts: the preprocess stage's data sets, the training stage with its KFP artifacts, a SQLite
MLflow registry, tiny face models."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace

import mlflow
import pytest
from mlflow import MlflowClient
from report_fixtures import signing_sources

from signpose import stages
from signpose.cli import main
from signpose.datasets.report import read_report, report_key
from signpose.store import open_store
from signpose.tasks import get_task
from signpose.tracking import load_mlflow_settings
from signpose.tracking.datasets import REPORT_ARTIFACT, REPORT_FIGURE
from signpose.tracking.retrain import (
    NOTHING_NEW,
    TAG_CODE_HASH,
    TAG_CONFIG_HASH,
    DataDriftError,
    decide,
    drift_against_champion,
)

DATA = dict(image_size=32, shard_size=16, synthetic_videos=4, synthetic_frames_per_video=8, workers=1)
FACE = {"epochs": 1, "batch_size": 16, "d_region": 16, "d_global": 16, "n_heads": 2, "region_layers": 1,
        "interaction_layers": 1, "decoder_layers": 1, "dropout": 0.0, "device": "cpu", "amp": "off",
        "progress": False, "num_workers": 0}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "SIGNPOSE_MLFLOW_CONFIG", "KFP_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def _train(tmp_path, registry, manifest, name: str, **config):
    """The face training stage, as the pipeline's component calls it: (returned URI, model artifact)."""
    from kfp.dsl import Dataset, Metrics, Model

    dataset = Dataset(uri=str(tmp_path / "kfp" / name / "dataset"),
                      metadata={"manifest_uri": manifest.uri, "dataset_hash": manifest.dataset_hash})
    model = Model(uri=str(tmp_path / "kfp" / name / "model"))
    metrics = Metrics(uri=str(tmp_path / "kfp" / name / "metrics"))
    uri = stages.training_stage("face", dataset, model, metrics, config={**FACE, **config},
                                mlflow_tracking_uri=registry, gpu_count="0")  # this machine's CPU
    return uri, model


def _versions(registry) -> list:
    name = load_mlflow_settings().task("face").model_name
    return sorted(MlflowClient(registry, registry).search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def _runs(registry) -> list:
    client = MlflowClient(registry, registry)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_nothing_new_since_the_champion_trains_nothing_unless_forced(tmp_path, registry, caplog, capsys):
    manifest = stages.preprocess("", str(tmp_path / "store"), **DATA)
    store = open_store(manifest.uri)
    if store.exists(report_key(manifest.dataset_hash)):  # a data set written before data reports
        store.delete(report_key(manifest.dataset_hash))
    caplog.set_level(logging.INFO, logger="signpose")
    first_uri, _ = _train(tmp_path, registry, manifest, "first")
    (champion,) = _versions(registry)
    assert first_uri == f"models:/{champion.name}/{champion.version}"
    assert {TAG_CONFIG_HASH, TAG_CODE_HASH} <= set(champion.tags)
    # This data set has no report (written before reports): one line says so, nothing else is logged.
    assert sum("has no data report" in r.getMessage() for r in caplog.records) == 1
    assert not any(key.startswith("data.") for key in _runs(registry)[0].data.tags)

    uri, model = _train(tmp_path, registry, manifest, "again")
    assert uri == first_uri and len(_versions(registry)) == 1 and len(_runs(registry)) == 1
    assert any(NOTHING_NEW in record.getMessage() for record in caplog.records)
    assert model.metadata["trained"] is False and model.metadata["version"] == str(champion.version)
    assert json.loads((tmp_path / "kfp" / "again" / "model").read_text())["model_uri"] == first_uri
    # Where checkpoints go and how many workers load data is not the training configuration.
    _train(tmp_path, registry, manifest, "checkpointed", checkpoint_every=3, num_workers=1)
    assert len(_versions(registry)) == 1

    flags = [arg for key, value in FACE.items() if key != "progress" for arg in (f"--{key}", str(value))]
    assert main(["train", "face", "--data_path", manifest.uri, "--no_progress", *flags]) == 0
    assert NOTHING_NEW in capsys.readouterr().out and len(_versions(registry)) == 1

    settings = load_mlflow_settings()
    cfg = get_task("face").config(**FACE, data_path=manifest.uri)
    for changed, trains in ((dict(force_training=True), True), (dict(lr=1e-3), True), (dict(epochs=2), True),
                            (dict(output_dir="elsewhere", stream=False), False)):
        decision = decide("face", replace(cfg, **changed), manifest.dataset_hash, manifest.uri, settings)
        assert decision.train is trains, changed
    assert decide("face", cfg, "another-data-set", manifest.uri, settings).train


def _deliver(corpus, sources: dict) -> None:
    """Write recorded videos (``{corpus key: frames}``) into the corpus folder as .pose files."""
    from signpose.io.pose_files import holistic_pose_bytes

    for key, frames in sources.items():
        (corpus / key).parent.mkdir(parents=True, exist_ok=True)
        (corpus / key).write_bytes(holistic_pose_bytes(frames, 640, 480))


def test_drift_from_the_champions_data_is_tagged_or_stops_the_training(tmp_path, registry, capsys):
    store, corpus = str(tmp_path / "store"), tmp_path / "incoming"
    _deliver(corpus, signing_sources(20))
    old = stages.preprocess(str(corpus), store, **DATA)
    _train(tmp_path, registry, old, "champion")
    # The next delivery, a new version of the corpus (the champion's version is its parent and keeps
    # its report): 4 more videos whose left hand is missing in 40 % of the frames.
    _deliver(corpus, signing_sources(4, first=20, left_hand_missing=0.4))
    new = stages.preprocess(str(corpus), store, **DATA)
    assert new.dataset_hash != old.dataset_hash
    client = MlflowClient(registry, registry)
    (first_run,) = _runs(registry)
    assert first_run.data.tags.get("data.drift") is None  # no champion to compare with yet
    assert {REPORT_ARTIFACT, REPORT_FIGURE} <= {a.path for a in client.list_artifacts(first_run.info.run_id, "data")}

    # fail_on_drift: stopped before a model or a run exists, with one line (exit 2 on the command line).
    with pytest.raises(DataDriftError, match="not trained: data drift against the champion's data set .*left_hand"):
        _train(tmp_path, registry, new, "stopped", fail_on_drift=True)
    capsys.readouterr()
    assert main(["train", "face", "--data_path", new.uri, "--epochs", "1", "--fail_on_drift"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "left_hand" in lines[0] and "fail_on_drift" in lines[0]
    assert len(_runs(registry)) == 1

    _train(tmp_path, registry, new, "drifted")
    run = max(_runs(registry), key=lambda r: r.info.start_time)
    assert run.data.tags["data.drift"] == "true"
    left_hand = run.data.tags["data.drift.left_hand"]
    assert "new sources" in left_hand
    delivery_share = float(re.search(r"missing share 0\.0% -> ([0-9.]+)%", left_hand).group(1)) / 100
    assert not any(key.startswith(("data.drift.face", "data.drift.body", "data.drift.right")) for key in run.data.tags)
    (dataset_input,) = run.inputs.dataset_inputs
    profile = json.loads(dataset_input.dataset.profile)
    assert profile["report"]["sources"] == 24
    # The whole version barely moves (4 of 24 videos are the delivery): what stopped the training is the
    # delivery's own share, about 40 % of its frames without a left hand.
    whole_share = read_report(store, new.dataset_hash)["regions"]["left_hand"]["missing_share"]
    assert profile["report"]["regions"]["left_hand"]["missing_share"] == pytest.approx(whole_share, abs=1e-6)
    assert 0 < whole_share < 0.1 < 0.25 < delivery_share < 0.55
    report = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{REPORT_ARTIFACT}")
    assert report["dataset_hash"] == new.dataset_hash

    # The first version's data set loses its report (collected, or the version lives in another store).
    open_store(store).delete(report_key(old.dataset_hash))
    first = client.get_model_version(load_mlflow_settings().task("face").model_name, "1")
    drift = drift_against_champion(client, first, new.uri, new.dataset_hash, load_mlflow_settings().drift)
    assert not drift.computed and not drift.drifted and drift.tags()["data.drift"] == "unknown"
    assert drift.summary().startswith("data drift against the champion's data set")
    assert "could not be computed" in drift.summary() and "has no report" in drift.summary()
