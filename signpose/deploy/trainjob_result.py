"""What rank 0 of a finished TrainJob registered, read back from MLflow.

The job's nodes run the training CLI with ``KFP_RUN_ID`` set (the pipeline run id, or the job's name
outside a pipeline); rank 0's MLflow run carries it as its ``kfp.run_id`` tag next to
``signpose.task``, and ends with ``registered_model``/``registered_version`` tags once the model is
registered and gated. The KFP task, which already holds the MLflow credentials, looks that run up:
MLflow is the one record of the outcome, and a retried task that finds the job already complete gets
the same answer.
"""

from __future__ import annotations

import logging
from typing import Any

from signpose.deploy.trainjob_manifest import TrainJobError

log = logging.getLogger(__name__)

TAG_PIPELINE_RUN_ID = "kfp.run_id"  # signpose.tracking.runs sets it from KFP_RUN_ID


def rank0_registration(task: str, run_key: str, mlflow_tracking_uri: str = "", *, job: str = "") -> dict[str, Any]:
    """``run_id, model_name, model_version, alias, reason, metrics, model_uri`` of the MLflow run
    tagged ``kfp.run_id = run_key`` and ``signpose.task = task`` that registered a model."""
    from mlflow import MlflowClient

    from signpose.tracking.registry import METRIC_TAG_PREFIX, TAG_PROMOTION, TAG_PROMOTION_REASON
    from signpose.tracking.runs import TAG_TASK
    from signpose.tracking.settings import load_mlflow_settings

    if "'" in run_key or "'" in task:
        raise ValueError(f"pipeline run id {run_key!r} / task {task!r}: quotes are not allowed")
    settings = load_mlflow_settings(tracking_uri=mlflow_tracking_uri or None)
    client = MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    experiment_name = settings.task(task).experiment
    where = f"TrainJob {job}" if job else f"pipeline run {run_key}"
    experiment = client.get_experiment_by_name(experiment_name)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=10,
        filter_string=f"tags.`{TAG_PIPELINE_RUN_ID}` = '{run_key}' and tags.`{TAG_TASK}` = '{task}'")
    registered = [r for r in runs if r.data.tags.get("registered_version")]
    if not registered:
        raise TrainJobError(f"{where} completed, but no MLflow run tagged {TAG_PIPELINE_RUN_ID}={run_key} and "
                            f"{TAG_TASK}={task} in experiment {experiment_name!r} ({settings.tracking_uri}) registered "
                            f"a model ({len(runs)} run(s) found): did rank 0 reach registration?")
    if len(registered) > 1:
        log.warning("%s: %d MLflow runs registered a model for %s / %s; reporting the newest, %s", where,
                    len(registered), run_key, task, registered[0].info.run_id)
    run = registered[0]
    model_name, version = run.data.tags["registered_model"], run.data.tags["registered_version"]
    tags = client.get_model_version(model_name, version).tags or {}
    metrics = {key[len(METRIC_TAG_PREFIX):]: float(value) for key, value in tags.items()
               if key.startswith(METRIC_TAG_PREFIX)}
    return {"run_id": run.info.run_id, "model_name": model_name, "model_version": str(version),
            "alias": tags.get(TAG_PROMOTION) or run.data.tags.get("promotion", ""),
            "reason": tags.get(TAG_PROMOTION_REASON, ""), "metrics": metrics,
            "model_uri": f"models:/{model_name}/{version}"}
