"""signpose.tracking against a SQLite store: settings, panels, the engine callback, logging +
registration, and the champion/challenger promotion gate (real models, real engine, tiny sizes)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from tracking_fixtures import build_model, face_config, face_data, reset_mlflow_globals, skeleton_config, skeleton_data

from signpose import layout
from signpose.panels import ORIGINAL_COLOUR, RECONSTRUCTION_COLOUR
from signpose.tracking import (
    CHALLENGER,
    CHAMPION,
    FINAL_PANEL_FILE,
    PANEL_KEY,
    MlflowCallback,
    TaskTracking,
    configure_mlflow,
    face_panel,
    flatten_params,
    load_mlflow_settings,
    promote,
    skeleton_panel,
    start_training_run,
)
from signpose.tracking.registry import eval_tag, metric_tag
from signpose.tracking.settings import resolve_store_uri
from signpose.tracking.training import load_registered_model, make_evaluator, tracked_fit
from signpose.train import engine

REPO = Path(__file__).resolve().parents[1]
# The promotion metric of the skeleton model (mlflow.yaml), the model the registry tests train.
METRIC = "val/weighted_loss"
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "SIGNPOSE_MLFLOW_CONFIG",
              "KFP_RUN_ID")


@pytest.fixture
def clean_mlflow_env(monkeypatch):
    """No MLflow environment from the developer's shell; MLflow's process-global URIs reset after."""
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    reset_mlflow_globals()


# --- settings ---------------------------------------------------------------------------------------

def test_shipped_mlflow_yaml_names_both_models_and_their_promotion_metrics(clean_mlflow_env, tmp_path):
    settings = load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path)
    assert settings.task("skeleton") == TaskTracking("signpose-skeleton", "skeleton-generator",
                                                     "val/weighted_loss", "lower")
    assert settings.task("face") == TaskTracking("signpose-face", "face-keypoint-autoencoder", "val/nme", "lower")
    # The default store is a SQLite file in the working folder, made absolute so subprocesses agree.
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert settings.effective_registry_uri == settings.tracking_uri
    assert settings.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert settings.system_metrics is True


def test_builtin_defaults_match_the_shipped_yaml(clean_mlflow_env, tmp_path):
    # Without any mlflow.yaml (an installed package in a container) the behaviour is the same.
    assert load_mlflow_settings(workdir=tmp_path) == load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path)


def test_mlflow_environment_variables_override_the_yaml(clean_mlflow_env, tmp_path):
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    clean_mlflow_env.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")
    clean_mlflow_env.setenv("MLFLOW_EXPERIMENT_NAME", "shared-experiment")
    settings = load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path)
    assert settings.tracking_uri == "http://mlflow.example:5000"
    assert settings.registry_uri == f"sqlite:///{tmp_path.resolve()}/registry.db"
    assert {t.experiment for t in settings.tasks.values()} == {"shared-experiment"}
    # A server decides where artifacts go; a local path from the yaml must not be sent to it.
    assert settings.experiment_artifact_location() is None


def test_settings_file_is_found_through_env_and_partial_task_sections_keep_defaults(clean_mlflow_env, tmp_path):
    config = tmp_path / "custom.yaml"
    config.write_text("tracking_uri: sqlite:////abs/store.db\nartifact_location: s3://bucket/artifacts\n"
                      "tasks:\n  face:\n    promotion_metric: val/mse\n    promotion_direction: lower\n")
    clean_mlflow_env.setenv("SIGNPOSE_MLFLOW_CONFIG", str(config))
    settings = load_mlflow_settings(workdir=tmp_path / "elsewhere")
    assert settings.tracking_uri == "sqlite:////abs/store.db"
    assert settings.artifact_location == "s3://bucket/artifacts"
    assert settings.task("face").promotion_metric == "val/mse"
    assert settings.task("face").model_name == "face-keypoint-autoencoder"


@pytest.mark.parametrize("text, message", [
    ("tracking_url: sqlite:///x.db\n", "unknown keys ['tracking_url']"),
    ("tasks:\n  face:\n    promotion_direction: smaller\n", "tasks.face: promotion_direction"),
    ("tasks:\n  face:\n    metric: val/nme\n", "tasks.face: unknown keys ['metric']"),
    ("tasks:\n  pose:\n    experiment: x\n", "tasks.pose: missing keys"),
    ("system_metrics: maybe\n", "system_metrics must be true or false"),
])
def test_bad_settings_file_is_refused_naming_file_and_key(clean_mlflow_env, tmp_path, text, message):
    config = tmp_path / "mlflow.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match="mlflow.yaml") as info:
        load_mlflow_settings(config, workdir=tmp_path)
    assert message in str(info.value)


LOCK_ENV = ("SIGNPOSE_PROMOTION_LOCK", "SIGNPOSE_PROMOTION_LOCK_TTL", "SIGNPOSE_PROMOTION_LOCK_WAIT")


def test_promotion_lock_settings_come_from_the_yaml_then_the_environment(clean_mlflow_env, tmp_path):
    for name in LOCK_ENV:
        clean_mlflow_env.delenv(name, raising=False)
    shipped = load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path)
    assert (shipped.promotion_lock, shipped.promotion_lock_ttl, shipped.promotion_lock_wait) == (None, 300, 1800)
    config = tmp_path / "mlflow.yaml"
    config.write_text("promotion_lock: locks\npromotion_lock_ttl: 60\npromotion_lock_wait: 0\n")
    settings = load_mlflow_settings(config, workdir=tmp_path)
    # A relative folder is made absolute once, like the other local locations.
    assert settings.promotion_lock == str(tmp_path.resolve() / "locks")
    assert (settings.promotion_lock_ttl, settings.promotion_lock_wait) == (60, 0)
    clean_mlflow_env.setenv("SIGNPOSE_PROMOTION_LOCK", "s3://bucket/locks")
    clean_mlflow_env.setenv("SIGNPOSE_PROMOTION_LOCK_TTL", "30")
    clean_mlflow_env.setenv("SIGNPOSE_PROMOTION_LOCK_WAIT", "90.5")
    settings = load_mlflow_settings(config, workdir=tmp_path)
    assert (settings.promotion_lock, settings.promotion_lock_ttl, settings.promotion_lock_wait) == (
        "s3://bucket/locks", 30, 90.5)
    clean_mlflow_env.setenv("SIGNPOSE_PROMOTION_LOCK", f"file://{tmp_path}/other")
    assert load_mlflow_settings(config, workdir=tmp_path).promotion_lock == str(tmp_path / "other")
    clean_mlflow_env.setenv("SIGNPOSE_PROMOTION_LOCK_TTL", "soon")
    with pytest.raises(ValueError, match="SIGNPOSE_PROMOTION_LOCK_TTL must be a number of seconds above 0"):
        load_mlflow_settings(config, workdir=tmp_path)


@pytest.mark.parametrize("text, message", [
    ("promotion_lock: gs://bucket/locks\n", "promotion_lock must be a folder or s3://bucket/prefix"),
    ("promotion_lock_ttl: 0\n", "promotion_lock_ttl must be a number of seconds above 0"),
    ("promotion_lock_ttl: true\n", "promotion_lock_ttl must be a number of seconds above 0"),
    ("promotion_lock_wait: -1\n", "promotion_lock_wait must be a number of seconds"),
])
def test_bad_promotion_lock_settings_are_refused_naming_the_file(clean_mlflow_env, tmp_path, text, message):
    for name in LOCK_ENV:
        clean_mlflow_env.delenv(name, raising=False)
    config = tmp_path / "mlflow.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match="mlflow.yaml") as info:
        load_mlflow_settings(config, workdir=tmp_path)
    assert message in str(info.value)


def test_promotion_lock_defaults_beside_a_local_registry_else_to_a_per_user_folder(tmp_path, monkeypatch, caplog):
    from signpose.tracking.lease import promotion_lock_location

    assert promotion_lock_location(f"sqlite:///{tmp_path}/mlruns.db") == f"{tmp_path.resolve()}/mlruns.db.locks"
    assert promotion_lock_location((tmp_path / "mlruns").as_uri()) == f"{tmp_path.resolve()}/mlruns.locks"
    assert promotion_lock_location(f"sqlite:///{tmp_path}/mlruns.db", "s3://bucket/locks") == "s3://bucket/locks"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="signpose.tracking.lease"):
        remote = promotion_lock_location("http://mlflow.settings-test:5000")
    assert remote == str(tmp_path / "cache" / "signpose" / "promotion-locks" / "mlflow.settings-test%3A5000")
    assert "only on this machine" in caplog.text and "SIGNPOSE_PROMOTION_LOCK" in caplog.text
    # Database credentials never end up in a folder name.
    assert "secret" not in promotion_lock_location("postgresql://user:secret@db.example:5432/mlflow")


def test_relative_store_uris_resolve_against_the_workdir_and_others_pass_through(tmp_path):
    assert resolve_store_uri("sqlite:///a/b.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/a/b.db"
    assert resolve_store_uri("sqlite:////abs.db", tmp_path) == "sqlite:////abs.db"
    assert resolve_store_uri("file:runs", tmp_path) == (tmp_path.resolve() / "runs").as_uri()
    assert resolve_store_uri("https://host:5000", tmp_path) == "https://host:5000"
    assert resolve_store_uri("postgresql://u@db/mlflow", tmp_path) == "postgresql://u@db/mlflow"


def test_promotion_direction_decides_what_beats_and_ties_never_do():
    lower = TaskTracking("e", "m", "val/nme", "lower")
    higher = TaskTracking("e", "m", "val/psnr", "higher")
    assert lower.is_better(0.1, 0.2) and not lower.is_better(0.2, 0.1) and not lower.is_better(0.1, 0.1)
    assert higher.is_better(30.0, 20.0) and not higher.is_better(20.0, 30.0) and not higher.is_better(5.0, 5.0)


def test_flatten_params_names_every_nested_config_field():
    cfg = face_config()
    flat = flatten_params({"train": cfg, "model": cfg.model_config(), "sizes": (1, 2)})
    assert flat["train.d_region"] == "16" and flat["model.d_global"] == "32"
    assert flat["sizes"] == "(1, 2)"
    assert {f"train.{f.name}" for f in dataclasses.fields(cfg)} <= set(flat)


# --- panels -------------------------------------------------------------------------------------------

def test_skeleton_panel_puts_keypoints_target_and_generated_side_by_side():
    keypoints = np.zeros((2, layout.N_POINTS, 3), np.float32)
    keypoints[0, 0] = (0.5, 0.5, 1.0)  # one present face point in the middle of sample 0
    target = np.zeros((2, 1, 32, 32), np.float32)
    target[:, :, :16] = 1.0  # top half white
    generated = np.zeros((2, 1, 32, 32), np.float32)
    generated[:, :, :, :16] = 1.0  # left half white
    panel = skeleton_panel(keypoints, torch.from_numpy(target), torch.from_numpy(generated))
    header, sep = 20, 2
    assert panel.shape == (header + 2 * 32 + sep, 3 * 32 + 2 * sep, 3) and panel.dtype == np.uint8
    row0 = panel[header:header + 32]
    keypoint_tile, target_tile, generated_tile = row0[:, :32], row0[:, 34:66], row0[:, 68:100]
    assert keypoint_tile[15:17, 15:17].max() > 0 and keypoint_tile[:8, :8].max() == 0
    assert target_tile[:16].min() == 255 and target_tile[16:].max() == 0
    assert generated_tile[:, :16].min() == 255 and generated_tile[:, 16:].max() == 0
    # Sample 1 has no present keypoint: nothing drawn in its keypoint tile.
    assert panel[header + 34:header + 66, :32].max() == 0


def test_face_panel_overlays_original_in_green_and_reconstruction_in_red_skipping_missing_points():
    original = np.zeros((1, 68, 3), np.float32)
    original[0, 36] = (0.25, 0.5, 1.0)
    original[0, 45] = (0.75, 0.5, 1.0)
    reconstruction = original.copy()
    reconstruction[0, 36, :2] = (0.25, 0.2)
    reconstruction[0, 10] = (0.9, 0.9, 1.0)  # missing in the original: not drawn
    panel = face_panel(original, reconstruction, size=100)
    tile = panel[20:]

    def colour_at(x, y):
        return tuple(int(c) for c in tile[int(round(y * 99)), int(round(x * 99))])

    assert colour_at(0.25, 0.5) == ORIGINAL_COLOUR
    assert colour_at(0.25, 0.2) == RECONSTRUCTION_COLOUR
    assert colour_at(0.75, 0.5) == RECONSTRUCTION_COLOUR  # drawn over the identical original point
    assert tile[85:95, 85:95].max() == 0


def test_panels_refuse_mismatched_batches():
    with pytest.raises(ValueError, match="sample count"):
        skeleton_panel(np.zeros((2, 143, 3)), np.zeros((2, 1, 8, 8)), np.zeros((3, 1, 8, 8)))
    with pytest.raises(ValueError, match="reconstruction: expected"):
        face_panel(np.zeros((2, 68, 3)), np.zeros((2, 143, 3)))


# --- runs, callback, registration, promotion -----------------------------------------------------------

def test_callback_refuses_to_work_without_a_run(clean_mlflow_env):
    with pytest.raises(RuntimeError, match="start_training_run"):
        MlflowCallback("face", torch.zeros(2, 68, 3), torch.zeros(2, 68, 3))


def test_face_callback_logs_metric_history_and_one_panel_per_epoch(store):
    settings = store[0]  # the module's SQLite store (creating one costs seconds of schema migrations)
    train_ds, val_ds = face_data(n_train=16, n_val=4)
    cfg = face_config(epochs=2)
    model = build_model(cfg)
    inputs = torch.stack([val_ds[i][0] for i in range(2)])
    targets = torch.stack([val_ds[i][1] for i in range(2)])
    with start_training_run("face", cfg, dataset_hash="d" * 16, manifest_uri="file:///data/manifest.json",
                            settings=settings) as run:
        callback = MlflowCallback("face", inputs, targets)
        engine.fit("face", model, train_ds, val_ds, cfg, callbacks=[callback])
    client = MlflowClient(settings.tracking_uri)
    for name in ("train/loss", "val/loss", "val/mse", "val/nme", "val/nme_jaw", "val/nme_inner_lips"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [0, 1], name
        assert all(np.isfinite(m.value) for m in history)
    artifacts = _all_artifacts(client, run.info.run_id)
    assert FINAL_PANEL_FILE in artifacts
    assert _panel_steps(artifacts) == [0, 1]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "signpose-face"
    assert experiment.artifact_location == settings.artifact_location


def _panel_steps(artifacts: list[str]) -> list[int]:
    """Steps of MLflow's image series for the panel key: images/<key>+step+<n>+timestamp+...png
    (MLflow's separator has been '%' and '+' across versions)."""
    pattern = re.compile(rf"^images/{PANEL_KEY}[+%]step[+%](\d+)[+%].*(?<!compressed)\.png$")
    return sorted(int(m.group(1)) for m in map(pattern.match, artifacts) if m)


def _all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_all_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


@pytest.fixture
def store(trained_store):
    """The module's store, with this process's MLflow client pointed at it (other tests reset that)."""
    configure_mlflow(trained_store[0])
    return trained_store


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    """One real tracked skeleton training (engine + callback + log + register + promote) on SQLite."""
    workdir = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        for name in MLFLOW_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("KFP_RUN_ID", "kfp-run-123")
        # MLflow's background monitor could not publish within this run: the system metrics the test
        # finds are the sample training logs at its end, whatever the run's duration.
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "3600")
        settings = load_mlflow_settings(REPO / "mlflow.yaml", workdir=workdir)
        train_ds, val_ds = skeleton_data(n_train=16, n_val=6)
        cfg = skeleton_config(epochs=3)
        model = build_model(cfg)
        tracked = tracked_fit("skeleton", model, train_ds, val_ds, cfg, dataset_hash="hash-A",
                              manifest_uri="s3://bucket/data/manifest.json", settings=settings)
        yield settings, tracked, cfg, val_ds
        reset_mlflow_globals()


def test_tracked_training_run_carries_config_lineage_and_pipeline_run_id(store):
    settings, tracked, cfg, _ = store
    run = MlflowClient(settings.tracking_uri).get_run(tracked.run_id)
    params = run.data.params
    for field in dataclasses.fields(cfg):
        assert params[field.name] == str(getattr(cfg, field.name)), field.name
    assert params["dataset_hash"] == "hash-A"
    assert params["manifest_uri"] == "s3://bucket/data/manifest.json"
    assert params["pipeline_run_id"] == "kfp-run-123"
    assert params["code_version"]  # a git sha here; the package version where there is no git
    assert run.data.tags["signpose.task"] == "skeleton"


def test_tracked_training_logs_epoch_metrics_system_metrics_panels_and_config(store):
    settings, tracked, cfg, _ = store
    client = MlflowClient(settings.tracking_uri)
    for name in ("train/loss", "val/loss", "val/weighted_loss", "val/psnr", "val/ssim", "val/mse_hands", "val/mse_face"):
        assert [m.step for m in client.get_metric_history(tracked.run_id, name)] == [0, 1, 2], name
    metrics = client.get_run(tracked.run_id).data.metrics
    assert any(key.startswith("system/") for key in metrics), sorted(metrics)
    artifacts = _all_artifacts(client, tracked.run_id)
    assert FINAL_PANEL_FILE in artifacts
    assert _panel_steps(artifacts) == [0, 1, 2]
    config = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=tracked.run_id, artifact_path="config.json", tracking_uri=settings.tracking_uri)).read_text())
    assert config == json.loads(json.dumps(dataclasses.asdict(cfg)))


def test_first_version_is_registered_tagged_and_becomes_champion(store):
    settings, tracked, _, _ = store
    client = MlflowClient(settings.tracking_uri)
    name = settings.task("skeleton").model_name
    version = client.get_model_version(name, tracked.model_version)
    assert tracked.alias == CHAMPION
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == tracked.model_version
    assert version.run_id == tracked.run_id
    assert version.tags["run_id"] == tracked.run_id
    assert version.tags["dataset_hash"] == "hash-A"
    assert float(version.tags[metric_tag(METRIC)]) == pytest.approx(tracked.metrics[METRIC])
    assert version.tags["promotion"] == CHAMPION and "first version" in version.tags["promotion_reason"]


def test_champion_loads_back_as_a_ready_model_matching_the_trained_one(store):
    settings, tracked, _, val_ds = store
    name = settings.task("skeleton").model_name
    loaded = load_registered_model(f"models:/{name}@{CHAMPION}")
    # What mlflow.pytorch.load_model gives: the exported graph, runnable as is.
    assert isinstance(loaded.graph_module, torch.fx.GraphModule)
    batch = torch.stack([val_ds[i][0] for i in range(5)])  # another batch size than the example's
    trained = tracked.result.model.eval()
    with torch.no_grad():
        expected = trained(batch)
        assert torch.allclose(loaded.graph_module(batch), expected, atol=1e-5)
        # The wrapper also takes the engine's model(src, tgt) call and eval().
        assert torch.allclose(loaded.eval()(batch, batch), expected, atol=1e-5)


def _register_copy(settings, tracked, dataset_hash: str, value: float) -> str:
    """A new registered version of the same logged model, with the metric it claims."""
    client = MlflowClient(settings.tracking_uri)
    name = settings.task("skeleton").model_name
    source = client.get_model_version(name, tracked.model_version)
    version = client.create_model_version(name, source.source, run_id=tracked.run_id,
                                          tags={"dataset_hash": dataset_hash, metric_tag(METRIC): repr(value)})
    return str(version.version)


def test_promotion_gate_on_the_same_data_better_wins_worse_and_equal_become_challenger(store):
    settings, tracked, _, _ = store
    client = MlflowClient(settings.tracking_uri)
    policy = settings.task("skeleton")
    name = policy.model_name
    incumbent = client.get_model_version_by_alias(name, CHAMPION)
    best = float(incumbent.tags[metric_tag(METRIC)])

    worse = _register_copy(settings, tracked, "hash-A", best * 1.5)
    decision = promote(name, worse, {METRIC: best * 1.5}, policy, dataset_hash="hash-A")
    assert decision.alias == CHALLENGER and not decision.promoted
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == str(incumbent.version)
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == worse
    reason = client.get_model_version(name, worse).tags["promotion_reason"]
    assert "does not beat" in reason and f"champion v{incumbent.version}" in reason

    tie = _register_copy(settings, tracked, "hash-A", best)
    assert promote(name, tie, {METRIC: best}, policy, dataset_hash="hash-A").alias == CHALLENGER

    better = _register_copy(settings, tracked, "hash-A", best * 0.5)
    decision = promote(name, better, {METRIC: best * 0.5}, policy, dataset_hash="hash-A")
    assert decision.promoted and decision.previous_champion == str(incumbent.version)
    assert decision.champion_value == pytest.approx(best)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == better
    assert client.get_model_version(name, better).tags["promotion"] == CHAMPION

    nan = _register_copy(settings, tracked, "hash-A", float("nan"))
    assert promote(name, nan, {METRIC: float("nan")}, policy, dataset_hash="hash-A").alias == CHALLENGER
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == better


def test_champion_from_other_data_is_reevaluated_on_this_validation_set_and_cached(store):
    settings, tracked, cfg, val_ds = store
    client = MlflowClient(settings.tracking_uri)
    policy = settings.task("skeleton")
    name = policy.model_name
    # The champion claims an excellent NME, but measured on another dataset: it must not count.
    champion = _register_copy(settings, tracked, "hash-OTHER", 1e-9)
    client.set_registered_model_alias(name, CHAMPION, champion)
    calls = []
    real_evaluate = make_evaluator("skeleton", val_ds, cfg)

    def counting_evaluate(uri):
        calls.append(uri)
        return real_evaluate(uri)

    true_value = tracked.metrics[METRIC]  # the same weights, evaluated by the engine on val_ds
    candidate = _register_copy(settings, tracked, "hash-A", true_value * 0.9)
    decision = promote(name, candidate, {METRIC: true_value * 0.9}, policy, dataset_hash="hash-A",
                       evaluate=counting_evaluate)
    assert calls == [f"models:/{name}/{champion}"]
    assert decision.champion_value == pytest.approx(true_value, rel=1e-4)
    assert decision.promoted, decision.reason
    assert "re-evaluated on this dataset" in decision.reason
    assert float(client.get_model_version(name, champion).tags[eval_tag("hash-A", METRIC)]) == pytest.approx(
        true_value, rel=1e-4)

    # Back to the old champion: its cached value on hash-A is used, no second evaluation.
    client.set_registered_model_alias(name, CHAMPION, champion)
    later = _register_copy(settings, tracked, "hash-A", true_value * 1.1)
    decision = promote(name, later, {METRIC: true_value * 1.1}, policy, dataset_hash="hash-A",
                       evaluate=counting_evaluate)
    assert len(calls) == 1 and decision.alias == CHALLENGER


def test_champion_from_other_data_without_an_evaluator_is_not_replaced(store):
    settings, tracked, _, _ = store
    client = MlflowClient(settings.tracking_uri)
    policy = settings.task("skeleton")
    name = policy.model_name
    champion = _register_copy(settings, tracked, "hash-B", 0.5)
    client.set_registered_model_alias(name, CHAMPION, champion)
    candidate = _register_copy(settings, tracked, "hash-C", 0.1)
    decision = promote(name, candidate, {METRIC: 0.1}, policy, dataset_hash="hash-C")
    assert decision.alias == CHALLENGER and "not comparable" in decision.reason
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == champion


# --- ui -----------------------------------------------------------------------------------------------

def test_ui_serves_the_configured_local_store_and_its_artifact_folder(clean_mlflow_env, tmp_path):
    from signpose.tracking.server import ui_command

    settings = load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path)
    command = ui_command(settings, port=5123)
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert command[command.index("--artifacts-destination") + 1] == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert command[command.index("--port") + 1] == "5123" and (tmp_path / "mlartifacts").is_dir()
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.cluster:5000")
    with pytest.raises(ValueError, match="already a server"):
        ui_command(load_mlflow_settings(REPO / "mlflow.yaml", workdir=tmp_path))


def test_the_run_logs_its_data_set_as_an_mlflow_dataset_input(store):
    settings, tracked, _, _ = store
    run = MlflowClient(settings.tracking_uri).get_run(tracked.run_id)
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.digest == "hash-A"
    assert json.loads(dataset.source)["uri"] == "s3://bucket/data/manifest.json"
    assert [tag.value for tag in dataset_input.tags if tag.key == "mlflow.data.context"] == ["training"]
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [(c["name"], c["tensor-spec"]["shape"]) for c in columns] == [("keypoints", [-1, 143, 3])]


def test_a_manifests_splits_and_image_size_are_the_dataset_profile_and_schema():
    from signpose.tracking.datasets import training_dataset

    dataset = training_dataset("d", "s3://b/data/manifest.json", "f" * 64, (143, 3),
                               {"image_size": 64, "splits": {"train": 30, "dev": 4}, "manifest_uri": "x"})
    as_logged = dataset.to_dict()
    assert json.loads(as_logged["profile"]) == {"image_size": 64, "splits": {"dev": 4, "train": 30}}
    columns = json.loads(as_logged["schema"])["mlflow_colspec"]
    assert [(c["name"], c["tensor-spec"]["dtype"], c["tensor-spec"]["shape"]) for c in columns] == [
        ("keypoints", "float32", [-1, 143, 3]), ("image", "uint8", [-1, 64, 64])]
    assert as_logged["digest"] == "f" * 36 and as_logged["source_type"] == "s3"


def test_the_logged_model_carries_the_metrics_of_the_epoch_whose_weights_it_holds(store):
    settings, tracked, cfg, _ = store
    client = MlflowClient(settings.tracking_uri)
    [output] = client.get_run(tracked.run_id).outputs.model_outputs
    logged = mlflow.get_logged_model(output.model_id)
    best = tracked.result.best_epoch
    assert best > 0, "precondition: the best epoch is not the first (MLflow's default step)"
    by_key = {m.key: m for m in logged.metrics}
    assert by_key["val/loss"].step == best
    assert by_key["val/loss"].value == pytest.approx(tracked.result.history[best]["val/loss"])


def test_a_gate_set_to_no_regression_on_the_real_set_keeps_a_champion_that_is_better_on_real_signers(store):
    settings, tracked, _, _ = store
    client = MlflowClient(settings.tracking_uri)
    policy = dataclasses.replace(settings.task("skeleton"), no_regression_on="val_real/ssim:higher")
    name = policy.model_name
    champion = client.get_model_version_by_alias(name, CHAMPION)  # earlier tests moved it: use its data
    data, best = champion.tags["dataset_hash"], float(champion.tags[metric_tag(METRIC)])
    real_champion = _register_copy(settings, tracked, data, best * 0.9)
    client.set_model_version_tag(name, real_champion, metric_tag("val_real/ssim"), repr(0.8))
    assert promote(name, real_champion, {METRIC: best * 0.9, "val_real/ssim": 0.8}, policy,
                   dataset_hash=data).promoted

    # Better on the generated validation, worse on real signers: refused, and the reason says why.
    candidate = _register_copy(settings, tracked, data, best * 0.5)
    decision = promote(name, candidate, {METRIC: best * 0.5, "val_real/ssim": 0.7}, policy, dataset_hash=data)
    assert decision.alias == CHALLENGER
    assert "val_real/ssim 0.7 regresses from 0.8" in decision.reason and f"v{real_champion}" in decision.reason
    # Not measured on the real set at all: refused too, while the gate asks for it.
    unmeasured = _register_copy(settings, tracked, data, best * 0.5)
    assert "was not measured" in promote(name, unmeasured, {METRIC: best * 0.5}, policy,
                                         dataset_hash=data).reason
    # As good on real signers and better on the generated data: promoted.
    fine = _register_copy(settings, tracked, data, best * 0.5)
    assert promote(name, fine, {METRIC: best * 0.5, "val_real/ssim": 0.8}, policy, dataset_hash=data).promoted
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == fine


def test_a_malformed_no_regression_setting_is_refused():
    from signpose.tracking.settings import TaskTracking

    with pytest.raises(ValueError, match="'val_real/nme' is not 'metric:lower' or 'metric:higher'"):
        TaskTracking("e", "m", "val/nme", no_regression_on="val_real/nme")


def test_a_slow_mlflow_server_does_not_hold_the_training_loop_at_epoch_ends(store):
    import threading

    settings = store[0]
    answered = threading.Event()

    class SlowServer(MlflowClient):
        """An MLflow server that answers log-batch only when the test lets it (a retrying, slow one)."""

        def log_batch(self, *args, **kwargs):
            assert answered.wait(timeout=300), "the test never let the server answer"
            return super().log_batch(*args, **kwargs)

    cfg = face_config(epochs=1)
    model = build_model(cfg)
    # Its own pipeline run id: the module's KFP_RUN_ID would continue another test's face run.
    with start_training_run("face", cfg, dataset_hash="5" * 16, manifest_uri="file:///data/manifest.json",
                            settings=settings, pipeline_run_id="kfp-run-slow-server") as run:
        callback = MlflowCallback("face", torch.zeros(2, 68, 3), torch.zeros(2, 68, 3),
                                  client=SlowServer(settings.tracking_uri))
        callback.on_epoch_end(0, {"epoch": 0.0, "val/loss": 0.5}, model)  # returns with the server still silent
        assert not answered.is_set()
        answered.set()
        callback.on_train_end()  # waits for the uploads
    logged = MlflowClient(settings.tracking_uri).get_metric_history(run.info.run_id, "val/loss")
    assert [(m.step, m.value) for m in logged] == [(0, 0.5)]
