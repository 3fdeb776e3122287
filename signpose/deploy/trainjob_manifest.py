"""The Kubeflow Trainer v2 ``TrainJob`` of a multi-node training: names, the object, the command line.

:func:`build_trainjob` is a pure function of a :class:`TrainJobRequest` (tested against the upstream
CRD's schema, tests/crds/); :mod:`signpose.deploy.trainjob` submits it. See that module for the why.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from signpose.deploy.cluster import DEFAULT_SETTINGS, ClusterSettings, SecretRefs
from signpose.process_env import SAFE_ENV

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
# The ClusterTrainingRuntime Kubeflow Trainer's manifests/chart install for PyTorch (mlPolicy.torch).
DEFAULT_RUNTIME = "torch-distributed"
# The runtime's trainer replicated job and container ("node"), and the labels JobSet puts on its pods.
NODE = "node"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
NODE_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
# Kubeflow's profile namespaces inject Istio's sidecar into every pod (the profile controller labels them
# istio-injection=enabled). A non-native istio-proxy breaks torchrun's rendezvous and keeps a finished
# node's pod running, so the job never completes (kubeflow/trainer#2794; Trainer's own v1 guides give
# every job's pods this annotation). KFP's pods carry it too. Trainer v2.3.0 copies a runtime patch's
# pod template metadata (labels and annotations only) into the JobSet's pods
# (pkg/runtime/core/trainingruntime.go, mergeRuntimePatches; PodTemplatePatch in trainjob_types.go).
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
# torchrun's settings, set by Trainer's torch plugin; a TrainJob that sets them itself is refused.
TORCHRUN_RESERVED_ENV = frozenset({"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                                   "PET_MASTER_PORT"})
# The MLflow run of the job's rank 0 carries this pipeline run id as its kfp.run_id tag
# (signpose.tracking.runs.PIPELINE_RUN_ID_ENV): that is how the task finds what rank 0 registered.
PIPELINE_RUN_ID_ENV = "KFP_RUN_ID"
PATCH_MANAGER = "signpose.deploy/trainjob"
TASK_LABEL = "signpose.io/task"
RUN_LABEL = "signpose.io/pipeline-run"
# JobSet names pods <job>-node-<i>-<j>-<suffix> and the pods' host names <job>-node-<i>-<j>, a DNS label.
MAX_NAME_LENGTH = 40
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


class TrainJobError(RuntimeError):
    """A TrainJob that could not be submitted or followed."""


class TrainJobFailed(TrainJobError):
    """The TrainJob ran and failed (its Failed condition); the message names the job and the reason."""


@dataclass(frozen=True)
class TrainJobRequest:
    """What one multi-node training asks for; :func:`build_trainjob` turns it into the object."""

    name: str
    namespace: str
    task: str
    nodes: int
    gpus_per_node: int
    image: str
    command_args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    pipeline_run_id: str = ""
    accelerator_type: str = "nvidia.com/gpu"
    node_selector: Mapping[str, str] | None = None  # None: the GPU pool's when gpus_per_node > 0
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    owner: Mapping[str, str] | None = None  # {"name": pod name, "uid": pod uid} of the KFP task
    runtime: str = DEFAULT_RUNTIME
    settings: ClusterSettings = DEFAULT_SETTINGS

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be 0 (CPU) or more, got {self.gpus_per_node}")
        if not _DNS_LABEL.match(self.name) or len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(f"TrainJob name {self.name!r}: lowercase letters, digits and '-', starting "
                             f"with a letter, at most {MAX_NAME_LENGTH} characters")
        reserved = sorted(TORCHRUN_RESERVED_ENV & set(self.env))
        if reserved:
            raise ValueError(f"env {reserved}: Kubeflow Trainer sets these torchrun variables itself")
        secret_names = _secret_env_names(self.settings.secrets)
        given = sorted(secret_names & set(self.env))
        if given:
            raise ValueError(f"env {given}: credentials reach the pods from Secrets "
                             "(signpose.deploy.cluster.SecretRefs), never as plain values in the TrainJob")


def _secret_env_names(secrets: SecretRefs) -> set[str]:
    """The env var names the Secrets fill (SecretRefs map Secret key -> env var), and the Secret keys."""
    names: set[str] = set()
    if secrets.s3_secret:
        names |= set(secrets.s3_keys) | set(secrets.s3_keys.values())
    if secrets.mlflow_secret:
        names |= set(secrets.mlflow_keys) | set(secrets.mlflow_keys.values())
    return names


def job_name(task: str, pipeline_run_id: str = "") -> str:
    """``signpose-<task>-<10 hex>``: the same for every attempt of one pipeline run's task (a retried
    task finds the job of the attempt before it), random without a pipeline run id."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:18] or "task"
    token = (hashlib.sha256(f"{pipeline_run_id}\0{task}".encode()).hexdigest() if pipeline_run_id
             else uuid.uuid4().hex)[:10]
    return f"signpose-{slug}-{token}"


def torchrun_command(task: str) -> tuple[list[str], list[str]]:
    """(command, leading args) of a node: torch's launcher (``torchrun``), reading its settings from
    the ``PET_*`` variables, running the training module of ``task``."""
    return ["python", "-m", "torch.distributed.run"], ["-m", f"signpose.train.{task}"]


def check_command_args(task: str, command_args: Sequence[str]) -> None:
    """Parse ``command_args`` with the task's real CLI parser, so a bad flag fails the KFP task
    before any node is scheduled."""
    from signpose.cli.train import make_parser
    from signpose.tasks import get_task

    spec = get_task(task)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            make_parser(spec.config_cls, spec.description).parse_args(list(command_args))
    except SystemExit as exc:
        problem = (errors.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
        raise ValueError(f"python -m signpose.train.{task} {shlex.join(command_args)}: {problem}") from exc


def config_to_cli_args(task: str, config: Mapping[str, Any]) -> list[str]:
    """The command-line flags of ``signpose train <task>`` that reproduce ``config`` (the training
    components' config dict; values that crossed KFP as floats are coerced back first)."""
    from signpose.tasks import get_task

    config_cls = get_task(task).config_cls
    values = config_cls.from_dict(dict(config))
    defaults = {f.name: f.default for f in fields(config_cls)}
    args: list[str] = []
    for name in config:
        value = getattr(values, name)
        if isinstance(value, bool):
            if value != defaults[name]:
                args.append(f"--{name}" if value else f"--no_{name}")
            continue
        args += [f"--{name}", str(value)]
    return args


def _label_value(text: str) -> str:
    return _LABEL_VALUE.sub("-", text)[:63].strip("-_.")


def _env(request: TrainJobRequest) -> list[dict]:
    secrets = request.settings.secrets
    given = {**request.env, **SAFE_ENV}  # forced: a request cannot turn pickled models back on
    env = [{"name": k, "value": str(v)} for k, v in sorted(given.items())]
    if request.pipeline_run_id and PIPELINE_RUN_ID_ENV not in request.env:
        env.append({"name": PIPELINE_RUN_ID_ENV, "value": request.pipeline_run_id})
    for secret, keys in ((secrets.s3_secret, secrets.s3_keys), (secrets.mlflow_secret, secrets.mlflow_keys)):
        if secret:
            env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                    for key, var in keys.items()]
    if secrets.env_config_map:
        env += [{"name": var, "valueFrom": {"configMapKeyRef": {"name": secrets.env_config_map, "key": key,
                                                                "optional": True}}}
                for key, var in secrets.env_config_keys.items() if var not in given]
    return env


def _resources(request: TrainJobRequest) -> dict:
    from signpose.deploy.gpu_resources import training_resources

    res = training_resources(request.gpus_per_node, request.settings.training)  # CPUs for every GPU's rank
    limits: dict[str, Any] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if request.gpus_per_node:
        limits[request.accelerator_type] = request.gpus_per_node
    return {"requests": {"cpu": res.cpu_request, "memory": res.memory_request}, "limits": limits}


def _pod_patch(request: TrainJobRequest) -> dict:
    """What the runtime's node pods get on top of the runtime: labels (the chart's NetworkPolicy admits
    them to MinIO), no Istio sidecar (POD_ANNOTATIONS), /dev/shm for DataLoader workers, GPU placement,
    image pull secrets, a non-root security context."""
    gpu = request.settings.gpu
    node_selector = request.node_selector
    tolerations = request.tolerations
    if request.gpus_per_node:
        node_selector = gpu.node_selector if node_selector is None else node_selector
        tolerations = gpu.tolerations if tolerations is None else tolerations
    spec: dict[str, Any] = {
        "containers": [{"name": NODE, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory",
                                                  "sizeLimit": request.settings.training_shm_size}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if request.settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in request.settings.image_pull_secrets]
    pod = {"metadata": {"labels": {**request.settings.pod_labels, TASK_LABEL: _label_value(request.task)},
                        "annotations": dict(POD_ANNOTATIONS)},
           "spec": spec}
    job = {"name": NODE, "template": {"spec": {"template": pod}}}
    return {"manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def build_trainjob(request: TrainJobRequest) -> dict:
    """The ``TrainJob`` object for ``request`` (what is POSTed to the Kubernetes API)."""
    command, module_args = torchrun_command(request.task)
    labels = {**request.settings.pod_labels, "app.kubernetes.io/component": "training",
              TASK_LABEL: _label_value(request.task)}
    if request.pipeline_run_id:
        labels[RUN_LABEL] = _label_value(request.pipeline_run_id)
    metadata: dict[str, Any] = {"name": request.name, "namespace": request.namespace, "labels": labels}
    if request.owner:
        # No blockOwnerDeletion: setting it would need update on the pod's finalizers.
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": request.owner["name"],
                                        "uid": request.owner["uid"]}]
    trainer = {
        "image": request.image,
        "command": command,
        "args": [*module_args, *request.command_args],
        "numNodes": request.nodes,
        "numProcPerNode": max(1, request.gpus_per_node),
        "resourcesPerNode": _resources(request),
        "env": _env(request),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": request.runtime},
            "trainer": trainer,
            "activeDeadlineSeconds": request.settings.training_timeout_s,
            "runtimePatches": [_pod_patch(request)],
        },
    }


def task_pod_owner(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The KFP task's own pod (KFP's launcher sets KFP_POD_NAME and KFP_POD_UID), else None."""
    environ = os.environ if environ is None else environ
    name, uid = environ.get("KFP_POD_NAME"), environ.get("KFP_POD_UID")
    return {"name": name, "uid": uid} if name and uid else None


