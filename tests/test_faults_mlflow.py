"""The MLflow server goes away during a tracked training (a real ``mlflow server`` subprocess, SQLite
backend, artifacts served by the server, stopped and restarted on the same port and database).

* Unreachable after the first epoch: the training fails loudly (the error names the server), its
  checkpoints are kept, nothing is registered; once the server is back, the re-run resumes from the
  checkpoint and registers exactly one version.
* Restarted mid-run: MLflow's HTTP retries carry the run over the outage; the registered version's
  model loads and computes what the trained model computes.
* Gone while the model's files are uploading: registration never happens, so no registered version
  points at a half-logged model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from signpose.models import build_model
from signpose.tasks import FaceTrainConfig
from signpose.tracking.server import MlflowServer
from signpose.tracking.settings import MlflowSettings
from signpose.train.engine import load_checkpoint
from signpose.train.inputs import load_task_data

TINY = dict(batch_size=8, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
            decoder_layers=1, dropout=0.1, lr=3e-3, progress=False, device="cpu", amp="off")
MODEL_NAME = "face-keypoint-autoencoder"


class Server:
    """An ``mlflow server`` that can be stopped and started again on the same port and database."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port: int | None = None  # the kernel's pick at the first start; restarts reuse it
        self.backend = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.artifacts = (folder / "artifacts").resolve().as_uri()
        self.process: MlflowServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = MlflowServer.start(self.backend, self.artifacts, self.folder, port=self.port)
        self.port = self.process.port

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def versions(self) -> list:
        # Read the registry straight from the server's database: works while the server is down.
        return MlflowClient(self.backend, self.backend).search_model_versions(f"name='{MODEL_NAME}'")


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "mlflow")
    srv.folder.mkdir()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def few_retries(monkeypatch):
    # MLflow's defaults retry a dead server for minutes; the "stays down" tests give up fast.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


class AtEpochEnd:
    def __init__(self, epoch: int, action):
        self.epoch, self.action = epoch, action

    def on_epoch_end(self, epoch, metrics, model):
        if epoch == self.epoch:
            self.action()


def tracked(server: Server, manifest_uri: str, checkpoint_dir: str, callbacks=()):
    from signpose.tracking.training import tracked_fit

    cfg = FaceTrainConfig(data_path=manifest_uri, checkpoint_dir=checkpoint_dir, **TINY)
    data = load_task_data("face", cfg)
    settings = MlflowSettings(tracking_uri=server.url, artifact_location=None, system_metrics=False)
    return tracked_fit("face", build_model(cfg), data.train, data.val, cfg, dataset_hash=data.dataset_hash,
                       manifest_uri=manifest_uri, settings=settings, extra_callbacks=tuple(callbacks))


def test_server_lost_mid_run_fails_loudly_keeps_checkpoints_and_registers_nothing(server, tiny_dataset_uri, tmp_path,
                                                                                  few_retries):
    checkpoints = str(tmp_path / "ckpt")
    with pytest.raises(Exception) as failure:
        tracked(server, tiny_dataset_uri, checkpoints, [AtEpochEnd(0, server.stop)])
    assert f"127.0.0.1:{server.port}" in str(failure.value), failure.value

    # Each epoch is checkpointed before it is reported to MLflow: the failed report lost nothing.
    saved = load_checkpoint(checkpoints)
    assert saved is not None and saved["epoch"] == TINY["epochs"], "a finished epoch's checkpoint was lost"
    assert server.versions() == []


@pytest.mark.slow
def test_rerun_after_the_outage_resumes_from_the_checkpoint_and_registers_once(server, tiny_dataset_uri, tmp_path,
                                                                               monkeypatch):
    checkpoints = str(tmp_path / "ckpt")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with pytest.raises(Exception):  # noqa: B017 -- whatever MLflow's client raises for a lost server
        tracked(server, tiny_dataset_uri, checkpoints, [AtEpochEnd(0, server.stop)])
    monkeypatch.undo()
    server.start()
    outcome = tracked(server, tiny_dataset_uri, checkpoints)
    assert outcome.result.global_step == load_checkpoint(checkpoints)["global_step"]
    assert [str(v.version) for v in server.versions()] == [outcome.model_version] == ["1"]


@pytest.mark.slow
def test_server_restarted_mid_run_is_ridden_out_by_retries_and_the_model_registers_whole(server, tiny_dataset_uri,
                                                                                         tmp_path):
    from signpose.tracking.training import load_registered_model

    restarted = threading.Event()

    def restart():
        server.stop()

        def start_again():
            server.start()
            restarted.set()
        threading.Thread(target=start_again, daemon=True).start()

    outcome = tracked(server, tiny_dataset_uri, str(tmp_path / "ckpt"), [AtEpochEnd(0, restart)])
    # The client can get through before the restarting thread's health poll sees the server up: wait for
    # that thread rather than assume it has finished (the timeout only guards against a hang).
    assert restarted.wait(timeout=300), "the server never came back"
    [version] = server.versions()
    assert str(version.version) == outcome.model_version
    run = MlflowClient(server.url).get_run(outcome.run_id)
    assert {"val/loss", "val/nme"} <= set(run.data.metrics)
    history = MlflowClient(server.url).get_metric_history(outcome.run_id, "val/loss")
    assert sorted(m.step for m in history) == [0, 1], "an epoch's metrics were lost in the restart"

    import mlflow
    mlflow.set_tracking_uri(server.url)
    loaded = load_registered_model(f"models:/{MODEL_NAME}/{version.version}")
    sample = torch.rand(4, 68, 3)
    trained = outcome.result.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(sample), trained(sample), atol=1e-5)


@pytest.mark.slow
def test_server_lost_while_the_model_uploads_never_registers_a_half_logged_model(server, tiny_dataset_uri, tmp_path,
                                                                                 monkeypatch, few_retries):
    import mlflow.pytorch
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    uploads: list[str] = []
    armed = threading.Event()
    real_log_model = mlflow.pytorch.log_model
    real_log_artifact = HttpArtifactRepository.log_artifact

    def log_model(*args, **kwargs):
        armed.set()
        return real_log_model(*args, **kwargs)

    def log_artifact(self, local_file, artifact_path=None):
        if armed.is_set():
            uploads.append(str(local_file))
            if len(uploads) == 2:
                server.stop()  # one model file is on the server, the rest never arrive
        return real_log_artifact(self, local_file, artifact_path)

    monkeypatch.setattr(mlflow.pytorch, "log_model", log_model)
    monkeypatch.setattr(HttpArtifactRepository, "log_artifact", log_artifact)
    with pytest.raises(Exception):  # noqa: B017 -- whatever MLflow's client raises for a lost server
        tracked(server, tiny_dataset_uri, str(tmp_path / "ckpt"))
    assert len(uploads) >= 2, "the outage did not hit the model upload"
    assert server.versions() == []
    assert load_checkpoint(str(tmp_path / "ckpt"))["epoch"] == TINY["epochs"]
