"""Training on several nodes: a Kubeflow Trainer v2 ``TrainJob`` that runs the training CLI under torchrun.

The pipeline's training task calls :func:`run_multinode_training` when its ``nodes`` parameter is more
than 1. It builds a ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) on the ``torch-distributed``
ClusterTrainingRuntime that Kubeflow Trainer installs: ``nodes`` pods of the training image, each
running the same command the CLI documents,

    python -m torch.distributed.run -m signpose.train.<task> --data_path ... [flags]

with ``gpus_per_node`` processes per pod. Trainer's torch plugin gives each pod the torchrun settings
as ``PET_*`` variables (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK from the pod's completion index,
PET_MASTER_ADDR = node 0's stable host name, PET_MASTER_PORT 29500), so the command carries no
rendezvous flags. Then the task submits the job, streams every node's log and the job's status into
its own log, fails with the job's reason when it fails, deletes the job when the task is cancelled
(SIGTERM or Ctrl-C), and returns what rank 0 registered in MLflow (signpose/deploy/trainjob_result.py).

Credentials never enter the TrainJob object: the pods read them from the same Secrets and ConfigMap as
the KFP tasks (:class:`signpose.deploy.cluster.SecretRefs`), by reference. The job is owned by the KFP
task's pod when the task knows its pod (``KFP_POD_NAME``/``KFP_POD_UID``, which KFP's launcher sets),
so deleting the pod (or the run) garbage-collects the job even when the task had no chance to.

Why the Kubernetes client and not the ``kubeflow`` SDK's ``TrainerClient`` (0.5.0, which installs
alongside the lock): its ``TrainJob`` view reports ``Failed`` without the condition's reason or
message; every ``train``/``get_job`` resolves the runtime (GET on namespaced TrainingRuntimes and on
cluster-scoped ClusterTrainingRuntimes, so a ClusterRole) and its constructor reads a ConfigMap in
``kubeflow-system``; its metadata options cannot set ``ownerReferences``; its container trainer takes
plain-text env values only. What this module needs is three calls on one custom object plus pod logs
(see the chart's ``multiNode`` Role), which the ``kubernetes`` client of the lock already does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from signpose.deploy import cluster, trainjob_watch
from signpose.deploy.cluster import DEFAULT_SETTINGS, ClusterSettings, Resources
from signpose.deploy.trainjob_manifest import (
    PIPELINE_RUN_ID_ENV,
    TrainJobError,
    TrainJobFailed,
    TrainJobRequest,
    build_trainjob,
    check_command_args,
    config_to_cli_args,
    job_name,
    task_pod_owner,
)
from signpose.deploy.trainjob_watch import TrainJobCancelled

__all__ = ["TrainJobCancelled", "TrainJobError", "TrainJobFailed", "build_trainjob", "config_to_cli_args",
           "configure_launcher_task", "run_multinode_training"]

# The KFP task of a multi-node training only submits and follows the job: no GPU, little CPU/memory.
LAUNCHER_RESOURCES = Resources("500m", "2", "1Gi", "4Gi")


def configure_launcher_task(task, settings: ClusterSettings = DEFAULT_SETTINGS):
    """KFP settings of a training task that runs :func:`run_multinode_training`: CPU only, the S3 and
    MLflow secrets (it checks the data set and reads rank 0's registration), the pipeline's pod label,
    the training retries and deadline, never cached."""
    from kfp import kubernetes

    cluster._set_resources(task, LAUNCHER_RESOURCES)
    cluster._set_retry(task, settings.training_retry)
    task.set_caching_options(enable_caching=False)
    cluster.inject_secrets(task, settings.secrets, mlflow=True)
    cluster.set_safe_env(task)
    kubernetes.set_timeout(task, settings.training_timeout_s)
    cluster._label(task, settings)
    return task


def is_tracked(command_args: Sequence[str]) -> bool:
    return "--no_track" not in command_args


def run_multinode_training(task: str, nodes: int, gpus_per_node: int, image: str, command_args: Sequence[str],
                           namespace: str | None = None, env: Mapping[str, str] | None = None, *,
                           pipeline_run_id: str = "", mlflow_tracking_uri: str = "",
                           expected_dataset_hash: str = "", accelerator_type: str = "nvidia.com/gpu",
                           node_selector: Mapping[str, str] | None = None,
                           tolerations: Sequence[Mapping[str, Any]] | None = None,
                           settings: ClusterSettings = DEFAULT_SETTINGS, api_client=None,
                           poll_interval_s: float = 10.0, out: TextIO | None = None) -> dict:
    """Train ``task`` on ``nodes`` x ``gpus_per_node`` processes as a TrainJob; block until it ends.

    ``command_args``: the flags of ``python -m signpose.train.<task>`` (``--data_path`` first among
    them; :func:`config_to_cli_args` makes them from a config dict). ``namespace``: where the job runs
    (default: the task pod's own namespace). ``env``: extra plain variables for the nodes (never
    credentials). ``mlflow_tracking_uri``: the MLflow server, when not the ConfigMap's.

    Returns ``{"trainjob", "namespace", "tracked"}`` plus, when tracked, what rank 0 registered:
    ``run_id, model_name, model_version, alias, reason, metrics, model_uri``. Raises
    :class:`TrainJobFailed` naming the job and its reason when it fails, :class:`TrainJobError` when it
    cannot be submitted or followed, and :class:`TrainJobCancelled` (or ``KeyboardInterrupt``) after
    deleting the job when the task is stopped (SIGTERM) or interrupted."""
    out = out or sys.stdout
    command_args = tuple(str(a) for a in command_args)
    check_command_args(task, command_args)
    if expected_dataset_hash:
        _check_dataset(command_args, expected_dataset_hash)
    extra_env = dict(env or {})
    if mlflow_tracking_uri:
        extra_env.setdefault("MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    pipeline_run_id = pipeline_run_id or os.environ.get(PIPELINE_RUN_ID_ENV, "")
    name = job_name(task, pipeline_run_id)
    run_key = pipeline_run_id or name  # rank 0's MLflow run carries it as its kfp.run_id tag
    api = trainjob_watch.TrainJobApi(api_client or trainjob_watch.default_api_client(),
                                     namespace or trainjob_watch.current_namespace())
    request = TrainJobRequest(name=name, namespace=api.namespace, task=task, nodes=nodes,
                              gpus_per_node=gpus_per_node, image=image, command_args=command_args, env=extra_env,
                              pipeline_run_id=run_key, accelerator_type=accelerator_type,
                              node_selector=node_selector,
                              tolerations=None if tolerations is None else tuple(tolerations),
                              owner=task_pod_owner(), settings=settings)
    trainjob_watch.run_to_completion(api, build_trainjob(request), out=out, poll_interval_s=poll_interval_s)
    outcome: dict[str, Any] = {"trainjob": name, "namespace": api.namespace, "tracked": is_tracked(command_args)}
    if outcome["tracked"]:
        from signpose.deploy.trainjob_result import rank0_registration

        outcome.update(rank0_registration(task, run_key, mlflow_tracking_uri, job=name))
        print(f"TrainJob {name}: rank 0 registered {outcome['model_name']} version {outcome['model_version']} "
              f"({outcome['alias']}); MLflow run {outcome['run_id']}", file=out, flush=True)
    return outcome


def _check_dataset(command_args: Sequence[str], expected_dataset_hash: str) -> None:
    """Stop before scheduling nodes when the store holds another data set than the pipeline committed."""
    from signpose.shards import read_manifest
    from signpose.train.entry import DatasetReplacedError

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data_path", default="")
    data_path = parser.parse_known_args(list(command_args))[0].data_path
    found = read_manifest(data_path).dataset_hash
    if found != expected_dataset_hash:
        raise DatasetReplacedError(f"{data_path}: holds data set {found[:12]}, but this pipeline committed "
                                   f"{expected_dataset_hash[:12]}; another run replaced it. Re-run the pipeline "
                                   "(or give each input its own store_uri).")
