"""One tracked training: run + callback + engine + log/register + promotion, for the stages to call."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from signpose.data import first_samples
from signpose.tasks import get_task
from signpose.tracking.callback import MlflowCallback
from signpose.tracking.datasets import log_training_data
from signpose.tracking.registry import PromotionDecision, log_and_register, promote
from signpose.tracking.retrain import data_report, lineage_tags, tag_drift
from signpose.tracking.runs import log_system_metrics_sample, start_training_run
from signpose.tracking.settings import MlflowSettings, load_mlflow_settings

log = logging.getLogger(__name__)

PANEL_SAMPLES = 4


class ExportedModel(nn.Module):
    """A registered (pt2) model as an ordinary module: ``model(src)`` and the face task's
    ``model(src, tgt)`` both work, and ``eval()``/``train()`` are accepted.

    MLflow's pt2 loader gives a ``torch.export`` GraphModule whose graph was exported in eval
    mode; it refuses ``eval()`` and takes only the exported input. The graph is kept outside the
    module tree so ``eval()`` does not reach it.
    """

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        object.__setattr__(self, "graph_module", graph_module)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> torch.Tensor:
        return self.graph_module(src.to("cpu").float())


def load_registered_model(model_uri: str) -> ExportedModel:
    """``models:/NAME@alias``, ``models:/NAME/3``, ``runs:/...``, a model folder -> a ready-to-run CPU
    module. Only the pt2 models signpose logs load; anything else is refused before any of it runs
    (:mod:`signpose.tracking.model_files`)."""
    from signpose.tracking.model_files import load_pt2_model

    return ExportedModel(load_pt2_model(model_uri))


def make_evaluator(task: str, val_ds: Dataset, cfg: Any, batch_size: int | None = None):
    """``evaluate(model_uri) -> metrics``: a registered model scored by the engine's own validation
    code on ``val_ds`` (the promotion gate's "same validation data")."""
    from signpose.train import engine
    from signpose.train.data_order import whole_stream

    whole = whole_stream(val_ds)  # every validation sample, even from a stream made for one rank

    def evaluate(model_uri: str) -> dict[str, float]:
        model = load_registered_model(model_uri)
        loader = DataLoader(whole, batch_size=batch_size or cfg.batch_size, shuffle=False)
        metrics = engine.evaluate(engine.make_task(task, cfg), model, loader, torch.device("cpu"), amp="off")
        log.info("re-evaluated %s on the current validation data: %s", model_uri, metrics)
        return metrics

    return evaluate


@dataclass(frozen=True)
class TrackedTraining:
    run_id: str
    model_name: str
    model_version: str
    alias: str
    reason: str
    metrics: dict[str, float]
    result: Any  # engine.TrainResult

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "model_name": self.model_name, "model_version": self.model_version,
                "alias": self.alias, "reason": self.reason, "metrics": dict(self.metrics)}


def tracked_fit(
    task: str,
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: Any,
    *,
    dataset_hash: str,
    manifest_uri: str,
    settings: MlflowSettings | None = None,
    run_name: str | None = None,
    pipeline_run_id: str | None = None,
    extra_callbacks: tuple = (),
    panel_samples: int = PANEL_SAMPLES,
    data_info: Mapping[str, Any] | None = None,
    eval_sets: Mapping[str, Dataset] | None = None,
) -> TrackedTraining:
    """Train with ``signpose.train.engine.fit`` inside an MLflow run, then log, register and gate
    the new version. The registered metrics are those of the weights that are logged (the engine's
    best epoch when ``cfg.restore_best``, else the last epoch), and the logged model is linked to that
    epoch's step. The data set is the run's dataset input (``data_info``: splits, sizes) with its data
    report, figure and drift from the champion's data set when the version has a report; the run and
    the version are tagged with the configuration and code hashes the retraining policy compares
    (:mod:`signpose.tracking.retrain`)."""
    from signpose.train import engine

    settings = settings or load_mlflow_settings()
    policy = settings.task(task)
    panel_inputs, panel_targets = first_samples(val_ds, panel_samples)
    with start_training_run(task, cfg, dataset_hash=dataset_hash, manifest_uri=manifest_uri, settings=settings,
                            run_name=run_name, pipeline_run_id=pipeline_run_id) as run:
        report = data_report((data_info or {}).get("manifest_uri", ""), dataset_hash)
        log_training_data(task, manifest_uri, dataset_hash, get_task(task).input_shape, data_info or {}, report)
        if report is not None:
            tag_drift(task, manifest_uri, dataset_hash, settings)
        lineage = lineage_tags(task, cfg)
        mlflow.set_tags(lineage)
        extra_panels = {name: first_samples(ds, panel_samples) for name, ds in (eval_sets or {}).items()}
        callback = MlflowCallback(task, panel_inputs, panel_targets, run_id=run.info.run_id,
                                  extra_panels=extra_panels)
        result = engine.fit(task, model, train_ds, val_ds, cfg, callbacks=[callback, *extra_callbacks],
                            eval_sets=eval_sets)
        if settings.system_metrics:
            log_system_metrics_sample(run.info.run_id, settings.tracking_uri)
        restored = getattr(cfg, "restore_best", False) and result.best_epoch >= 0
        final = result.best_metrics if restored else result.history[-1]
        weights_epoch = result.best_epoch if restored else len(result.history) - 1
        # Quality metrics only: throughput and learning rate say nothing about the model.
        metrics = {k: float(v) for k, v in final.items() if k.startswith(("val/", "val_real/", "val_real_baseline/")) or k == "train/loss"}
        mlflow.log_metric("best_epoch", result.best_epoch)
        run_id, version = log_and_register(result.model, cfg, panel_inputs[:2], policy.model_name, task=task,
                                           metrics=metrics, dataset_hash=dataset_hash, step=weights_epoch,
                                           tags=lineage)
        decision: PromotionDecision = promote(
            policy.model_name, version, metrics, policy, dataset_hash=dataset_hash,
            evaluate=make_evaluator(task, val_ds, cfg),
        )
        mlflow.set_tags({"registered_model": policy.model_name, "registered_version": version,
                         "promotion": decision.alias})
    return TrackedTraining(run_id, policy.model_name, version, decision.alias, decision.reason, metrics, result)
