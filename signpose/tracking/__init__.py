"""MLflow for signpose: settings (``mlflow.yaml`` + env overrides), the training-run callback,
model logging + registration, and the champion/challenger promotion gate.

Typical use in a training stage::

    settings = load_mlflow_settings()
    policy = settings.task("skeleton")
    with start_training_run("skeleton", cfg, dataset_hash=manifest.dataset_hash,
                            manifest_uri=manifest.uri, settings=settings):
        callback = MlflowCallback("skeleton", panel_inputs, panel_targets)
        result = fit("skeleton", model, train_ds, val_ds, cfg, callbacks=[callback])
        run_id, version = log_and_register(model, cfg, example_input, policy.model_name,
                                           task="skeleton", metrics=final_val_metrics)
        decision = promote(policy.model_name, version, final_val_metrics, policy,
                           dataset_hash=manifest.dataset_hash, evaluate=evaluator)
"""

from signpose.panels import face_panel, skeleton_panel
from signpose.tracking.callback import FINAL_PANEL_FILE, PANEL_KEY, MlflowCallback
from signpose.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    CONFIG_ARTIFACT,
    PromotionDecision,
    log_and_register,
    promote,
)
from signpose.tracking.runs import (
    PIPELINE_RUN_ID_ENV,
    code_version,
    configure_mlflow,
    ensure_experiment,
    flatten_params,
    start_training_run,
)
from signpose.tracking.settings import MlflowSettings, TaskTracking, load_mlflow_settings

__all__ = [
    "CHALLENGER", "CHAMPION", "CONFIG_ARTIFACT", "FINAL_PANEL_FILE", "PANEL_KEY", "PIPELINE_RUN_ID_ENV",
    "MlflowCallback", "MlflowSettings", "PromotionDecision", "TaskTracking", "code_version",
    "configure_mlflow", "ensure_experiment", "face_panel", "flatten_params", "load_mlflow_settings",
    "log_and_register", "promote", "skeleton_panel", "start_training_run",
]
