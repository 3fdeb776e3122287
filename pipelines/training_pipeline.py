"""The KFP DAG: preprocess (plan -> ParallelFor write shards -> commit) -> (train_skeleton || train_face).

``make compile`` writes it to ``pipelines/compiled/signpose_training.yaml``; ``make run`` executes the
same function locally through ``kfp.local``; ``signpose submit`` sends the compiled YAML to a cluster.
"""


from pathlib import Path

from kfp import compiler, dsl

from components import (
    POD_SIZE_FIELDS,
    commit_dataset,
    plan_dataset,
    size_training_pod,
    train_face,
    train_skeleton,
    write_shards,
)
from signpose.deploy import cluster
from signpose.deploy.images import TRAIN_IMAGE
from signpose.deploy.trainjob import configure_launcher_task

PIPELINE_NAME = "signpose-training"
COMPILED_PATH = Path(__file__).parent / "compiled" / "signpose_training.yaml"


@dsl.pipeline(name=PIPELINE_NAME,
              description="Sign-language keypoints -> rendered shards -> skeleton generator + face auto-encoder, tracked and registered in MLflow.")
def signpose_training(
    input_uri: str = "",
    store_uri: str = "s3://signpose/datasets/default",
    mlflow_tracking_uri: str = "",
    image_size: int = 256,
    shard_size: int = 4096,
    render_tasks: int = 4,
    replace_dataset: bool = True,
    synthetic_videos: int = 24,
    synthetic_frames_per_video: int = 64,
    # Shares of new videos held out for dev / test; a video an earlier version placed never moves.
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    skeleton_epochs: int = 100,
    skeleton_batch_size: int = 16,
    use_weighted_loss: bool = True,
    hand_weight: float = 2.0,
    face_weight: float = 1.5,
    skeleton_overrides: dict = {},
    face_epochs: int = 100,
    face_batch_size: int = 32,
    d_global: int = 256,
    d_region: int = 128,
    face_overrides: dict = {},
    gpu_type: str = "nvidia.com/gpu",
    # A string: KFP's driver reads the GPU limit's placeholder as a string value and silently drops a
    # number (docs/deploy.md, "GPU count"). "0" trains on the CPU.
    gpu_count: str = "1",
    # Node labels the training pods must match, e.g. {"nvidia.com/gpu.present": "true"} (NVIDIA GPU
    # Operator) or {"cloud.google.com/gke-accelerator": "nvidia-l4"}; empty: the GPU limit decides.
    gpu_node_selector: dict = {},
    checkpoint_every: int = 500,
    real_eval_uri: str = "",
    nodes: int = 1,
    force_training: bool = False,
    fail_on_drift: bool = False,
):
    source = dict(input_uri=input_uri, store_uri=store_uri, image_size=image_size, shard_size=shard_size,
                  synthetic_videos=synthetic_videos, synthetic_frames_per_video=synthetic_frames_per_video,
                  dev_fraction=dev_fraction, test_fraction=test_fraction)
    # replace_dataset: each (scheduled) run commits its input's data set to store_uri, replacing the last
    # one; False refuses an input other than the committed one. Runs racing on one store: one commits.
    plan = plan_dataset(render_tasks=render_tasks, replace_dataset=replace_dataset,
                        **source).set_display_name("plan-dataset")
    cluster.configure_preprocess_task(plan)
    plan.set_caching_options(enable_caching=False)  # it must look at the input every time
    with dsl.ParallelFor(plan.output, parallelism=16) as work_item:
        writer = write_shards(work_item=work_item, **source).set_display_name("write-shards")
        cluster.configure_preprocess_task(writer)
    commit = commit_dataset(store_uri=store_uri, work_items=plan.output, replace_dataset=replace_dataset)
    commit.set_display_name("commit-dataset").after(writer)
    cluster.configure_preprocess_task(commit)
    dataset = commit.outputs["dataset"]

    skeleton_args = dict(
        dataset=dataset,
        mlflow_tracking_uri=mlflow_tracking_uri,
        epochs=skeleton_epochs,
        batch_size=skeleton_batch_size,
        image_size=image_size,
        use_weighted_loss=use_weighted_loss,
        hand_weight=hand_weight,
        face_weight=face_weight,
        overrides=skeleton_overrides,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        gpu_count=gpu_count,
        gpu_node_selector=gpu_node_selector,
        checkpoint_every=checkpoint_every,
        nodes=nodes, gpu_type=gpu_type, train_image=TRAIN_IMAGE, real_eval_uri=real_eval_uri,
        force_training=force_training, fail_on_drift=fail_on_drift,
    )
    face_args = dict(
        dataset=dataset,
        mlflow_tracking_uri=mlflow_tracking_uri,
        epochs=face_epochs,
        batch_size=face_batch_size,
        d_global=d_global,
        d_region=d_region,
        overrides=face_overrides,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        gpu_count=gpu_count,
        gpu_node_selector=gpu_node_selector,
        checkpoint_every=checkpoint_every,
        nodes=nodes, gpu_type=gpu_type, train_image=TRAIN_IMAGE, real_eval_uri=real_eval_uri,
        force_training=force_training, fail_on_drift=fail_on_drift,
    )
    # One node: the task trains on its own gpu_count GPUs. Several: a CPU-only task submits and follows
    # a Kubeflow Trainer TrainJob of `nodes` pods x gpu_count GPUs (docs/deploy.md, "Many GPUs").
    with dsl.If(nodes <= 1, name="one-node"):
        # CPUs and memory grow with gpu_count (signpose/deploy/gpu_resources.py). KFP's driver copies a
        # resource placeholder's string value and cannot compute, so a step computes them; it sits in this
        # branch because KFP 2.17's compiler does not carry an output used only in resources into a dsl.If.
        size = size_training_pod(gpu_count=gpu_count).set_display_name("size-training-pod")
        cluster.configure_sizing_task(size)
        pod = cluster.Resources(*(size.outputs[name] for name in POD_SIZE_FIELDS))
        skeleton = train_skeleton(**skeleton_args).set_display_name("train-skeleton").after(size)
        cluster.configure_training_task(skeleton, resources=pod, accelerator_type=gpu_type,
                                        accelerator_limit=gpu_count, node_selector=gpu_node_selector)
        face = train_face(**face_args).set_display_name("train-face-autoencoder").after(size)
        cluster.configure_training_task(face, resources=pod, accelerator_type=gpu_type,
                                        accelerator_limit=gpu_count, node_selector=gpu_node_selector)
    with dsl.Else(name="many-nodes"):
        configure_launcher_task(train_skeleton(**skeleton_args).set_display_name("train-skeleton-on-nodes"))
        configure_launcher_task(train_face(**face_args).set_display_name("train-face-autoencoder-on-nodes"))


def compile_pipeline(path=COMPILED_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(signpose_training, str(path))
    return path


if __name__ == "__main__":
    print(compile_pipeline())
