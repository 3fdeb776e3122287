"""One training entry: config -> data -> model -> fit, with MLflow tracking or without.

The CLI (``signpose train <task>``, ``python -m signpose.train.<task>``) and the pipeline's training
stage (:func:`signpose.stages.train_task`) both call :func:`run`; ``track`` decides whether the run is
an MLflow run whose model is registered and gated (:func:`signpose.tracking.training.tracked_fit`).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence

import torch

from signpose.errors import UserError
from signpose.io.atomic import atomic_write_bytes
from signpose.models import build_model, cpu_state_dict, selected_entry
from signpose.train.config import TrainConfig
from signpose.train.distributed import check_device_available, seed_everything
from signpose.train.engine import TrainResult, fit
from signpose.train.inputs import TaskData, load_task_data
from signpose.train.real_eval import REAL_EVAL_NAME, load_real_eval

log = logging.getLogger(__name__)


class DatasetReplacedError(UserError, RuntimeError):
    """The store holds another data set than the one this pipeline run committed."""


def run(cfg: TrainConfig, callbacks: Sequence = (), *, track: bool = False, mlflow_tracking_uri: str = "",
        pipeline_run_id: str = "", expected_dataset_hash: str = "", data: TaskData | None = None) -> TrainResult:
    """Train ``cfg.task`` on ``cfg.data_path``; write ``cfg.output_dir`` when set.

    ``track``: train inside an MLflow run, then register the model and gate its promotion; the outcome
    (run id, registered version, alias) is ``result.extra["tracking"]`` (on rank 0; the other ranks of
    a distributed run train without MLflow and get None).
    ``expected_dataset_hash``: the hash the upstream pipeline task committed; if another run has
    committed different data to the same store since, training stops instead of using that data.
    ``data``: the task's data when the caller loaded it already (the CLI, for the retraining policy)."""
    check_device_available(cfg.device)
    data = data or load_task_data(cfg.task, cfg)
    if expected_dataset_hash and data.dataset_hash != expected_dataset_hash:
        raise DatasetReplacedError(f"{cfg.data_path}: holds data set {data.dataset_hash[:12]}, but this pipeline "
                        f"committed {expected_dataset_hash[:12]}; another run replaced it. Re-run "
                        "the pipeline (or give each input its own store_uri).")
    real = load_real_eval(cfg.task, cfg.real_eval_path, getattr(cfg, "image_size", 0))
    eval_sets = {REAL_EVAL_NAME: real} if real is not None else {}
    seed_everything(cfg.seed)
    model = build_model(cfg)
    # Under torchrun every rank trains (and all-reduces); only rank 0 talks to MLflow: one run, one version.
    if track and int(os.environ.get("RANK", "0")) == 0:
        from signpose.tracking import load_mlflow_settings
        from signpose.tracking.training import tracked_fit

        outcome = tracked_fit(cfg.task, model, data.train, data.val, cfg, dataset_hash=data.dataset_hash,
                              manifest_uri=cfg.data_path,
                              settings=load_mlflow_settings(tracking_uri=mlflow_tracking_uri or None),
                              pipeline_run_id=pipeline_run_id or None, extra_callbacks=tuple(callbacks),
                              data_info=data.info, eval_sets=eval_sets)
        result = outcome.result
        result.extra["tracking"] = outcome
    else:
        result = fit(cfg.task, model, data.train, data.val, cfg, callbacks, eval_sets=eval_sets)
    result.extra["data"] = {"source": data.source, "dataset_hash": data.dataset_hash, **data.info}
    # Under torchrun every rank gets here with the same weights; one writes.
    if cfg.output_dir and int(os.environ.get("RANK", "0")) == 0:
        write_outputs(result, cfg.output_dir)
        log.info("wrote %s/model.pt and metrics.json", cfg.output_dir)
    return result


def write_outputs(result: TrainResult, output_dir: str) -> None:
    """``model.pt`` (state dict, registered model name + model config; load with
    ``torch.load(weights_only=True)``) and ``metrics.json`` (best epoch's metrics and the whole history)."""
    buffer = io.BytesIO()
    torch.save({"task": result.config.task, "model": selected_entry(result.config).name,
                "model_config": result.config.model_config().to_dict(),
                "state_dict": cpu_state_dict(result.model)}, buffer)
    atomic_write_bytes(os.path.join(output_dir, "model.pt"), buffer.getvalue())
    summary = {"task": result.config.task, "best_epoch": result.best_epoch, "best_metrics": result.best_metrics,
               "global_step": result.global_step, "stopped_early": result.stopped_early,
               "history": result.history, "config": result.config.to_dict()}
    atomic_write_bytes(os.path.join(output_dir, "metrics.json"), (json.dumps(summary, indent=2) + "\n").encode())
