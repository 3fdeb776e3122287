"""Starting a training run: tracking/registry URIs, the experiment, lineage params and tags."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from signpose.tracking.settings import MlflowSettings, load_mlflow_settings

log = logging.getLogger(__name__)

# KFP does not export its run id into the container; the component passes
# dsl.PIPELINE_JOB_ID_PLACEHOLDER as an argument or this variable carries it.
PIPELINE_RUN_ID_ENV = "KFP_RUN_ID"
MAX_PARAM_VALUE_CHARS = 6000  # MLflow's limit for one param value

# Param/tag keys shared across runs (the compare view lines up on them).
PARAM_DATASET_HASH = "dataset_hash"
PARAM_MANIFEST_URI = "manifest_uri"
PARAM_CODE_VERSION = "code_version"
PARAM_PIPELINE_RUN_ID = "pipeline_run_id"
TAG_TASK = "signpose.task"
TAG_PIPELINE_RUN_ID = "kfp.run_id"


def configure_mlflow(settings: MlflowSettings | None = None) -> MlflowSettings:
    """Point the MLflow client of this process at the configured tracking and registry stores."""
    settings = settings or load_mlflow_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.effective_registry_uri)
    return settings


def ensure_experiment(settings: MlflowSettings, task: str) -> str:
    """The experiment id for ``task``, created with the configured artifact location if new."""
    name = settings.task(task).experiment
    client = MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=settings.experiment_artifact_location())
    except mlflow.exceptions.MlflowException:
        # Another stage created it between our lookup and create (skeleton and face train in parallel).
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """Dataclasses / mappings -> {"a.b": "value"}; sequences are kept whole as their repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten_params(item, f"{prefix}{key}."))
        return flat
    if isinstance(value, Path):
        value = str(value)
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (tuple, list)) else str(value)
    return {prefix[:-1]: text[:MAX_PARAM_VALUE_CHARS]}


def code_version() -> str:
    """The git commit of the source tree (``+dirty`` when modified), else the installed package version."""
    source_dir = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source_dir, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source_dir, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"signpose=={version('signpose')}"
    except PackageNotFoundError:
        return "unknown"


def find_pipeline_task_run(settings: MlflowSettings, experiment_id: str, task: str, pipeline_run_id: str):
    """The MLflow run an earlier attempt of this pipeline run's ``task`` started, if any."""
    if "'" in pipeline_run_id or "'" in task:
        raise ValueError(f"pipeline run id {pipeline_run_id!r} / task {task!r}: quotes are not allowed")
    client = MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`{TAG_PIPELINE_RUN_ID}` = '{pipeline_run_id}' "
                                            f"and tags.`{TAG_TASK}` = '{task}'")
    return runs[0] if runs else None


def start_training_run(
    task: str,
    config: Any,
    *,
    dataset_hash: str,
    manifest_uri: str,
    settings: MlflowSettings | None = None,
    run_name: str | None = None,
    pipeline_run_id: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> mlflow.ActiveRun:
    """Start (and activate) the MLflow run of one training: every config field flattened as a param,
    plus lineage (dataset hash, manifest URI, code version, KFP run id). Use as a context manager.

    With a ``pipeline_run_id``, a run that an earlier attempt of the same pipeline task started is
    continued instead (a KFP retry): one MLflow run per pipeline run and task."""
    settings = configure_mlflow(settings)
    experiment_id = ensure_experiment(settings, task)
    pipeline_run_id = pipeline_run_id or os.environ.get(PIPELINE_RUN_ID_ENV) or ""
    tags = {TAG_TASK: task, PARAM_DATASET_HASH: dataset_hash}
    if pipeline_run_id:
        tags[TAG_PIPELINE_RUN_ID] = pipeline_run_id
    earlier = find_pipeline_task_run(settings, experiment_id, task, pipeline_run_id) if pipeline_run_id else None
    if earlier is not None:
        # A retried pipeline task continues the run its earlier attempt started (one run per task).
        log.info("MLflow run %s of an earlier attempt of pipeline run %s (%s): continuing it",
                 earlier.info.run_id, pipeline_run_id, earlier.info.status)
        run = mlflow.start_run(run_id=earlier.info.run_id, log_system_metrics=settings.system_metrics)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                               log_system_metrics=settings.system_metrics)
    params = flatten_params(config)
    params.update(
        {
            PARAM_DATASET_HASH: dataset_hash,
            PARAM_MANIFEST_URI: manifest_uri,
            PARAM_CODE_VERSION: code_version(),
            "task": task,
        }
    )
    if pipeline_run_id:
        params[PARAM_PIPELINE_RUN_ID] = pipeline_run_id
    params.update(flatten_params(dict(extra_params or {})))
    mlflow.log_params(params)
    log.info("MLflow run %s in experiment %r (%s)", run.info.run_id, settings.task(task).experiment,
             settings.tracking_uri)
    return run


def log_system_metrics_sample(run_id: str, tracking_uri: str | None = None) -> None:
    """Log one system-metrics sample (CPU, memory, disk, network, GPU) to ``run_id`` now.

    MLflow's background monitor publishes only after a full sampling interval (10 s by default), so a
    run shorter than that would show no system metrics at all; training logs one sample at its end.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=tracking_uri)
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()
