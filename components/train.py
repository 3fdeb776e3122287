from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from signpose.deploy.images import PREPROCESS_IMAGE, TRAIN_IMAGE

# The outputs of size_training_pod, in signpose.deploy.cluster.Resources' order.
POD_SIZE_FIELDS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


# The preprocessing image: the step needs no GPU and runs where the preprocessing pods ran.
@dsl.component(base_image=PREPROCESS_IMAGE, install_kfp_package=False)
def size_training_pod(gpu_count: str) -> NamedTuple("PodSize", [("cpu_request", str), ("cpu_limit", str),
                                                              ("memory_request", str), ("memory_limit", str)]):
    """CPU and memory for a one-node training pod of gpu_count GPUs (signpose/deploy/gpu_resources.py)."""
    from signpose import stages

    return stages.training_pod_size(gpu_count)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_skeleton(
    dataset: Input[Dataset],
    mlflow_tracking_uri: str,
    epochs: int,
    batch_size: int,
    image_size: int,
    use_weighted_loss: bool,
    hand_weight: float,
    face_weight: float,
    overrides: dict,
    pipeline_run_id: str,
    gpu_count: str,
    gpu_node_selector: dict,
    checkpoint_every: int,
    nodes: int,
    gpu_type: str,
    train_image: str,
    real_eval_uri: str,
    force_training: bool,
    fail_on_drift: bool,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Train HierarchicalSkeletonTransformer on the shards; log, register and gate it in MLflow (nothing
    when the champion was trained on the same data, config and code, unless force_training)."""
    from signpose import stages

    config = dict(overrides, checkpoint_every=checkpoint_every, real_eval_path=real_eval_uri, epochs=epochs,
                  batch_size=batch_size, image_size=image_size, use_weighted_loss=use_weighted_loss, hand_weight=hand_weight,
                  face_weight=face_weight, force_training=force_training, fail_on_drift=fail_on_drift)
    return stages.training_stage("skeleton", dataset, model, metrics, config=config,
                                 mlflow_tracking_uri=mlflow_tracking_uri, pipeline_run_id=pipeline_run_id,
                                 nodes=nodes, gpu_count=gpu_count, gpu_type=gpu_type, train_image=train_image,
                                 gpu_node_selector=gpu_node_selector)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_face(
    dataset: Input[Dataset],
    mlflow_tracking_uri: str,
    epochs: int,
    batch_size: int,
    d_global: int,
    d_region: int,
    overrides: dict,
    pipeline_run_id: str,
    gpu_count: str,
    gpu_node_selector: dict,
    checkpoint_every: int,
    nodes: int,
    gpu_type: str,
    train_image: str,
    real_eval_uri: str,
    force_training: bool,
    fail_on_drift: bool,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Train the HierarchicalKeypointTransformer face auto-encoder; log, register and gate it (nothing
    when the champion was trained on the same data, config and code, unless force_training)."""
    from signpose import stages

    config = dict(overrides, checkpoint_every=checkpoint_every, real_eval_path=real_eval_uri, epochs=epochs,
                  batch_size=batch_size, d_global=d_global, d_region=d_region, force_training=force_training,
                  fail_on_drift=fail_on_drift)
    return stages.training_stage("face", dataset, model, metrics, config=config,
                                 mlflow_tracking_uri=mlflow_tracking_uri, pipeline_run_id=pipeline_run_id,
                                 nodes=nodes, gpu_count=gpu_count, gpu_type=gpu_type, train_image=train_image,
                                 gpu_node_selector=gpu_node_selector)
