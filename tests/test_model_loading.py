"""No code runs from a model folder (issue 25, class 1).

signpose loads only the pt2 (``torch.export``) models it logs. A model folder in MLflow's pickle
serialisation whose ``data/model.pth`` is a payload, a folder shipping a ``code`` module that
MLflow imports, a pt2 archive holding a pickled record: each is refused in one line naming the file
and the flavour, through every path that loads a model signpose did not just write -- a local folder
(``predict --model DIR``), a ``models:/`` URI, and the promotion gate re-evaluating a champion that
was replaced by such a model -- and a marker file proves the payload never ran. Controls in a
subprocess prove each payload is real: plain MLflow runs it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import pytest
import torch
from cli_errors import one_error_line
from mlflow import MlflowClient
from tracking_fixtures import reset_mlflow_globals, skeleton_config, skeleton_data

from signpose.cli import main
from signpose.io.writers import write_all_formats
from signpose.process_env import PICKLE_MODELS_ENV
from signpose.synth import generate_signer_frames
from signpose.tracking import CHALLENGER, CHAMPION, configure_mlflow, load_mlflow_settings, promote
from signpose.tracking.model_files import UnsafeModelError, check_model_folder
from signpose.tracking.registry import metric_tag
from signpose.tracking.training import load_registered_model, make_evaluator

REPO = Path(__file__).resolve().parents[1]
METRIC = "val/weighted_loss"


class _Touch:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plain_mlflow_load(folder: Path, allow_pickle: str) -> subprocess.CompletedProcess:
    """``mlflow.pytorch.load_model(folder)`` in a process without signpose (the control)."""
    code = "import sys, mlflow.pytorch\ntry: mlflow.pytorch.load_model(sys.argv[1])\nexcept Exception: pass\n"
    env = {**os.environ, PICKLE_MODELS_ENV: allow_pickle}
    return subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, timeout=300)


def pickled_model(folder: Path, marker: Path) -> Path:
    """An MLflow pytorch model in the pickle serialisation whose ``data/model.pth`` touches ``marker``."""
    mlflow.pytorch.save_model(torch.nn.Linear(3, 2), str(folder), serialization_format="pickle",
                              pip_requirements=[], metadata={"task": "face"})
    (folder / "data" / "model.pth").write_bytes(pickle.dumps(_Touch(marker)))
    return folder


def code_folder_model(folder: Path, marker: Path) -> Path:
    """A pickle-serialisation model whose ``code`` folder holds the "pickle module" MLflow imports
    before its pickle check: the import touches ``marker``."""
    pickled_model(folder, marker.with_name("unused"))
    (folder / "code").mkdir()
    (folder / "code" / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "data" / "pickle_module_info.txt").write_text("evilmod")
    mlmodel = folder / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("code: null", "code: code"))
    return folder


@pytest.fixture(scope="module")
def pt2_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pt2") / "model"
    mlflow.pytorch.save_model(torch.nn.Linear(3, 2), str(folder), input_example=torch.rand(2, 3).numpy(),
                              serialization_format="pt2", pip_requirements=[], metadata={"task": "face"})
    return folder


@pytest.fixture(scope="module")
def keypoints(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kp")
    return Path(write_all_formats(folder, generate_signer_frames(1, 6, seed=1), max_pts_files=1)["npz"])


def test_every_signpose_process_has_mlflow_pickle_loading_off():
    """MLflow reads the variable at each load: importing signpose has turned it off, whatever the shell said."""
    code = f"import os, signpose; print(os.environ[{PICKLE_MODELS_ENV!r}])"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, PICKLE_MODELS_ENV: "true"},
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.stdout.strip() == "false", done.stderr


def test_predict_refuses_a_pickled_model_folder_and_its_payload_never_runs(tmp_path, capsys, keypoints):
    marker = tmp_path / "owned"
    folder = pickled_model(tmp_path / "model", marker)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(folder), str(keypoints), "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(folder / "data" / "model.pth"), "pickle serialisation",
                    "pt2")
    assert not marker.exists() and not out.exists()
    # Control: MLflow's default (pickle allowed) runs the payload.
    _plain_mlflow_load(folder, "true")
    assert marker.exists()


def test_a_model_shipping_a_code_module_is_refused_before_mlflow_would_import_it(tmp_path, capsys, keypoints):
    marker = tmp_path / "owned"
    folder = code_folder_model(tmp_path / "model", marker)
    assert main(["predict", "--model", str(folder), str(keypoints), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys.readouterr().err, str(folder / "code"), "code folder")
    assert not marker.exists()
    # Control: MLflow imports the module even with its pickle switch off -- why the folder is checked first.
    _plain_mlflow_load(folder, "false")
    assert marker.exists()


def test_a_pt2_archive_holding_a_pickled_record_is_refused(tmp_path, pt2_model):
    marker = tmp_path / "owned"
    folder = tmp_path / "model"
    subprocess.run(["cp", "-r", str(pt2_model), str(folder)], check=True)
    with zipfile.ZipFile(folder / "data" / "model.pt2", "a") as archive:
        prefix = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{prefix}/data/constants/evil.pt", pickle.dumps(_Touch(marker)))
    with pytest.raises(UnsafeModelError, match="pickled records"):
        load_registered_model(str(folder))
    assert not marker.exists()


def test_the_pt2_model_signpose_logs_still_loads(pt2_model):
    assert check_model_folder(pt2_model).name == "model.pt2"
    model = load_registered_model(str(pt2_model))
    assert model(torch.rand(4, 3)).shape == (4, 2)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_model_folder_whose_mlmodel_is_a_fifo_is_refused_not_waited_on(tmp_path, pt2_model):
    folder = tmp_path / "model"
    subprocess.run(["cp", "-r", str(pt2_model), str(folder)], check=True)
    (folder / "MLmodel").unlink()
    os.mkfifo(folder / "MLmodel")
    with pytest.raises(UnsafeModelError, match="FIFO"):
        check_model_folder(folder)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A SQLite registry (mlflow.yaml's layout under ``tmp_path``) this process points at."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "SIGNPOSE_MLFLOW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = configure_mlflow(load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path))
    yield settings
    reset_mlflow_globals()


def _register_pickled(name: str, marker: Path, tags: dict[str, str]) -> str:
    """A registered version of a pickle-serialisation model whose stored ``model.pth`` is a payload."""
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(torch.nn.Linear(3, 2), name="model", serialization_format="pickle",
                                        pip_requirements=[], metadata={"task": "skeleton"})
    stored = Path(mlflow.artifacts.download_artifacts(info.model_uri))  # the artifact store's own files
    (stored / "data" / "model.pth").write_bytes(pickle.dumps(_Touch(marker)))
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)


def test_predict_refuses_a_registered_pickled_model_by_its_models_uri(registry, tmp_path, capsys, keypoints):
    marker = tmp_path / "owned"
    version = _register_pickled("evil", marker, {})
    capsys.readouterr()
    argv = ["predict", "--model", f"models:/evil/{version}", str(keypoints), "--out", str(tmp_path / "out"),
            "--config", str(REPO / "mlflow.yaml")]
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, f"models:/evil/{version}", "model.pth", "pickle serialisation")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_promotion_gate_never_runs_a_champion_replaced_by_a_pickled_model(registry, tmp_path):
    policy = registry.task("skeleton")
    name = policy.model_name
    marker = tmp_path / "owned"
    champion = _register_pickled(name, marker, {"dataset_hash": "hash-OTHER", metric_tag(METRIC): "1e-9"})
    client = MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, champion)
    candidate = str(client.create_model_version(name, client.get_model_version(name, champion).source,
                                                tags={"dataset_hash": "hash-A"}).version)
    _, val_ds = skeleton_data(n_train=4, n_val=4)
    decision = promote(name, candidate, {METRIC: 0.5}, policy, dataset_hash="hash-A",
                       evaluate=make_evaluator("skeleton", val_ds, skeleton_config()), lock=str(tmp_path / "locks"),
                       lock_ttl_s=60, lock_wait_s=30)
    assert not marker.exists()
    assert decision.alias == CHALLENGER and "refused, not loaded" in decision.reason and "model.pth" in decision.reason
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == champion
