"""Cluster settings for the pipeline's KFP tasks: resources, GPU placement, secrets, retries, caching.

The pipeline calls one function per kind of task right after creating it::

    prep = preprocess(...);      cluster.configure_preprocess_task(prep)
    skel = train_skeleton(...);  cluster.configure_training_task(skel, accelerator_type=gpu_type,
                                                                 accelerator_limit=gpu_count)

Everything lands in the compiled pipeline (resources and caching in the task spec, node selector,
tolerations, secret and ConfigMap references in the Kubernetes platform spec) and is ignored by
``kfp.local``. Credentials never pass through pipeline parameters: pods read them from Kubernetes
Secrets as environment variables, and the compiled YAML holds only secret *names* and *keys*. The
names below are the ones the Helm chart (charts/signpose, ``pipelineEnv``) creates in the KFP namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from kfp import dsl
from kfp.dsl.pipeline_channel import PipelineChannel

from signpose import s3_env
from signpose.deploy.images import IMAGE_PULL_SECRETS, IMAGE_PULL_SECRETS_VAR
from signpose.process_env import SAFE_ENV

StrOrParam = Union[str, PipelineChannel]
IntOrParam = Union[int, str, PipelineChannel]

# The taint most managed GPU node pools (GKE, AKS, EKS GPU AMIs with the device plugin docs) carry.
# No node selector by default: the GPU limit alone makes the scheduler pick a node that has the GPUs,
# and labels differ between pools (NVIDIA's GPU feature discovery, part of the GPU Operator, sets
# nvidia.com/gpu.present=true; the plain device plugin and many managed pools do not). The pipeline's
# gpu_node_selector parameter names one where it is wanted (docs/deploy.md).
GPU_OPERATOR_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Resources:
    cpu_request: StrOrParam
    cpu_limit: StrOrParam
    memory_request: StrOrParam
    memory_limit: StrOrParam


@dataclass(frozen=True)
class GpuPool:
    """Which accelerator a training task asks for and how it reaches the GPU nodes."""

    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = (GPU_TOLERATION,)


@dataclass(frozen=True)
class SecretRefs:
    """Secret / ConfigMap names and (Secret or ConfigMap key) -> env var maps. Only names and keys,
    never values.

    ``None`` for a name leaves that source out (e.g. S3 access through IAM roles for service accounts).
    signpose's S3 identity reaches the pods as ``SIGNPOSE_S3_*`` (signpose/s3_env.py), never as
    ``AWS_*``: KFP's launcher, in the same container, would use those for its own artifact uploads.
    The Secret keeps the conventional key names, so a Secret made for any S3 client fits.
    """

    s3_secret: str | None = "signpose-s3"
    s3_keys: Mapping[str, str] = field(default_factory=lambda: {
        "AWS_ACCESS_KEY_ID": s3_env.ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": s3_env.SECRET_ACCESS_KEY,
    })
    mlflow_secret: str | None = "signpose-mlflow"
    mlflow_keys: Mapping[str, str] = field(default_factory=lambda: {
        "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    })
    # Non-secret endpoint settings (S3 endpoint for MinIO, region); optional so that plain AWS works
    # without it.
    env_config_map: str | None = "signpose-pipeline-env"
    # MLFLOW_TRACKING_URI there is the chart's in-cluster MLflow Service: the fallback MLflow itself
    # uses when the pipeline's mlflow_tracking_uri parameter is left empty.
    env_config_keys: Mapping[str, str] = field(default_factory=lambda: {
        s3_env.ENDPOINT_URL: s3_env.ENDPOINT_URL,
        s3_env.REGION: s3_env.REGION,
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
        # Where concurrent promotions of a model take turns (signpose/tracking/lease.py).
        "SIGNPOSE_PROMOTION_LOCK": "SIGNPOSE_PROMOTION_LOCK",
    })


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int
    backoff_duration: str = "30s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclass(frozen=True)
class ClusterSettings:
    preprocess: Resources = Resources("2", "4", "4Gi", "8Gi")
    # What one GPU's pod gets; pods of more GPUs get more (signpose/deploy/gpu_resources.py).
    training: Resources = Resources("4", "8", "16Gi", "32Gi")
    # The step that turns gpu_count into the training pod's resources: a Python process importing kfp.
    sizing: Resources = Resources("100m", "1", "256Mi", "512Mi")
    gpu: GpuPool = field(default_factory=GpuPool)
    secrets: SecretRefs = field(default_factory=SecretRefs)
    preprocess_retry: RetryPolicy = RetryPolicy(num_retries=3)
    # A retry resumes from the task's last checkpoint (<store>/checkpoints/<run>/<task>) and continues
    # its MLflow run and registered version (signpose.stages.train_task).
    training_retry: RetryPolicy = RetryPolicy(num_retries=3, backoff_duration="60s")
    # Preprocessing is a pure function of its inputs: KFP's cache key (component + input values)
    # is exactly "keyed by the input". Training logs and registers models in MLflow, a side effect a
    # cache hit would silently skip, so it always runs.
    preprocess_caching: bool = True
    training_caching: bool = False
    # PyTorch DataLoader workers pass batches through /dev/shm; Kubernetes gives pods 64 MiB.
    training_shm_size: str = "8Gi"
    preprocess_timeout_s: int = 6 * 3600
    training_timeout_s: int = 48 * 3600
    pod_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/part-of": "signpose"})
    # Secrets (in the pipeline's namespace) to pull the stage images from a private registry; chosen
    # with the registry at compile time (images.env / SIGNPOSE_IMAGE_PULL_SECRETS).
    image_pull_secrets: tuple[str, ...] = IMAGE_PULL_SECRETS


DEFAULT_SETTINGS = ClusterSettings()

# kfp.kubernetes is imported where a task is configured, never at import: inside every task pod KFP's
# runtime (_KFP_RUNTIME=true) leaves PipelineTask out of kfp.dsl and kfp.kubernetes fails to import,
# while the tasks' code (trainjob, the sizing step) needs this module's settings.


def _set_resources(task: dsl.PipelineTask, resources: Resources) -> None:
    (task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
     .set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit))


def _set_retry(task: dsl.PipelineTask, policy: RetryPolicy) -> None:
    task.set_retry(num_retries=policy.num_retries, backoff_duration=policy.backoff_duration,
                   backoff_factor=policy.backoff_factor,
                   backoff_max_duration=policy.backoff_max_duration)


def inject_secrets(task: dsl.PipelineTask, secrets: SecretRefs, *, mlflow: bool) -> dsl.PipelineTask:
    """S3 credentials (and MLflow's when ``mlflow``) from Secrets, endpoints from a ConfigMap."""
    from kfp import kubernetes

    if secrets.s3_secret:
        kubernetes.use_secret_as_env(task, secret_name=secrets.s3_secret,
                                     secret_key_to_env=dict(secrets.s3_keys))
    if mlflow and secrets.mlflow_secret:
        kubernetes.use_secret_as_env(task, secret_name=secrets.mlflow_secret,
                                     secret_key_to_env=dict(secrets.mlflow_keys))
    if secrets.env_config_map:
        kubernetes.use_config_map_as_env(task, config_map_name=secrets.env_config_map,
                                         config_map_key_to_env=dict(secrets.env_config_keys),
                                         optional=True)
    return task


def set_safe_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The container environment every signpose task runs with (``signpose.process_env``: MLflow
    never unpickles a model), in the task spec too, so it holds before any code of the task runs."""
    for name, value in SAFE_ENV.items():
        task.set_env_variable(name, value)
    return task


def _label(task: dsl.PipelineTask, settings: ClusterSettings) -> None:
    """Pod labels and image pull secrets: what every task pod carries."""
    from kfp import kubernetes

    for key, value in settings.pod_labels.items():
        kubernetes.add_pod_label(task, key, value)
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))
        # The task's code (a TrainJob's pods, signpose/deploy/trainjob.py) reads the same names.
        task.set_env_variable(IMAGE_PULL_SECRETS_VAR, ",".join(settings.image_pull_secrets))


def configure_preprocess_task(task: dsl.PipelineTask,
                              settings: ClusterSettings = DEFAULT_SETTINGS) -> dsl.PipelineTask:
    """CPU task: requests/limits, S3 secrets, retries, caching on (keyed by the inputs)."""
    from kfp import kubernetes

    _set_resources(task, settings.preprocess)
    _set_retry(task, settings.preprocess_retry)
    task.set_caching_options(enable_caching=settings.preprocess_caching)
    inject_secrets(task, settings.secrets, mlflow=False)
    set_safe_env(task)
    kubernetes.set_timeout(task, settings.preprocess_timeout_s)
    _label(task, settings)
    return task


def configure_sizing_task(task: dsl.PipelineTask,
                          settings: ClusterSettings = DEFAULT_SETTINGS) -> dsl.PipelineTask:
    """The small CPU step that sizes the training pods. Never cached: KFP's cache key is the component
    spec and gpu_count, but the figures live in the image's signpose, which a re-pushed tag changes."""
    from kfp import kubernetes

    _set_resources(task, settings.sizing)
    _set_retry(task, settings.preprocess_retry)
    task.set_caching_options(enable_caching=False)
    set_safe_env(task)
    kubernetes.set_timeout(task, 600)
    _label(task, settings)
    return task


def configure_training_task(task: dsl.PipelineTask,
                            settings: ClusterSettings = DEFAULT_SETTINGS,
                            *,
                            resources: Resources | None = None,
                            accelerator_type: StrOrParam | None = None,
                            accelerator_limit: IntOrParam | None = None,
                            node_selector: Mapping[str, str] | PipelineChannel | None = None,
                            tolerations: list[Mapping[str, Any]] | PipelineChannel | None = None,
                            ) -> dsl.PipelineTask:
    """GPU task: requests/limits, one GPU on the GPU pool, S3 + MLflow secrets, retries, no cache.

    The keyword arguments override ``settings.gpu`` and may be pipeline parameters (the GPU
    settings a run chooses): ``accelerator_type`` (e.g. ``nvidia.com/gpu``), ``accelerator_limit``,
    ``node_selector`` (a dict, e.g. ``{"cloud.google.com/gke-accelerator": "nvidia-l4"}``) and
    ``tolerations`` (a list of toleration dicts). An empty node selector / toleration list leaves
    placement to the scheduler. ``resources`` replaces ``settings.training``; its fields may be an
    upstream task's outputs (the pipeline's ``size_training_pod``), which KFP's driver puts into the pod.
    """
    from kfp import kubernetes

    gpu = settings.gpu
    _set_resources(task, resources if resources is not None else settings.training)
    task.set_accelerator_type(accelerator_type if accelerator_type is not None else gpu.accelerator_type)
    task.set_accelerator_limit(accelerator_limit if accelerator_limit is not None else gpu.accelerator_limit)

    selector = node_selector if node_selector is not None else gpu.node_selector
    if isinstance(selector, PipelineChannel):
        kubernetes.add_node_selector_json(task, selector)
    else:
        for key, value in selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)

    chosen = tolerations if tolerations is not None else gpu.tolerations
    if isinstance(chosen, PipelineChannel):
        kubernetes.add_toleration_json(task, chosen)
    else:
        for toleration in chosen:
            kubernetes.add_toleration(task, **_toleration_kwargs(toleration))

    _set_retry(task, settings.training_retry)
    task.set_caching_options(enable_caching=settings.training_caching)
    inject_secrets(task, settings.secrets, mlflow=True)
    set_safe_env(task)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=settings.training_shm_size)
    kubernetes.set_timeout(task, settings.training_timeout_s)
    _label(task, settings)
    return task


_TOLERATION_FIELDS = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
                      "tolerationSeconds": "toleration_seconds", "toleration_seconds": "toleration_seconds"}


def _toleration_kwargs(toleration: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(toleration) - set(_TOLERATION_FIELDS)
    if unknown:
        raise ValueError(f"toleration {dict(toleration)!r}: unknown field(s) {sorted(unknown)}; "
                         f"expected some of key, operator, value, effect, tolerationSeconds")
    return {_TOLERATION_FIELDS[k]: v for k, v in toleration.items()}
