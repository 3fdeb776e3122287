"""The compiled pipeline's tasks executed inside their own images, as a KFP backend would run them.

From pipelines/compiled/signpose_training.yaml, in DAG order (kfp_executor_input.DagWalk): each
executor's image, command and arguments exactly as compiled, with the executor input a KFP backend
hands it (parameter values and artifact URIs as JSON), run with ``buildah run --isolation chroot`` as
the image's user, with the environment the platform spec gives the pod (the chart's ConfigMap and
Secrets: S3 endpoint and keys, the MLflow URI) pointing at moto's S3 server and an MLflow server on
loopback. What KFP's launcher does around a container is done here the same way: input artifacts are
downloaded from S3 into the container under /s3/..., output artifacts uploaded from there to their URIs,
and the executor output file read back for the next task's inputs.

The run commits a data set and registers both models, as `make run` does outside the images; and no
task writes outside KFP's artifact folders, HOME and the temp dir (a read-only root file system with
those as volumes would run it). Slow (minutes): `make image-test`.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest
from kfp_executor_input import (
    DagWalk,
    TaskOutputs,
    container_argv,
    load_ir,
    local_path,
    pod_env_names,
    read_executor_output,
)
from mlflow_server import start_test_server
from oci import Container, image_env, require_image, under

from signpose.deploy.images import PREPROCESS_IMAGE, TRAIN_IMAGE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / "pipelines" / "compiled" / "signpose_training.yaml"
TINY = dict(image_size=64, shard_size=8, render_tasks=2, synthetic_videos=4, synthetic_frames_per_video=8,
            skeleton_epochs=1, skeleton_batch_size=8, face_epochs=1, face_batch_size=8, d_global=16, d_region=8,
            skeleton_overrides={"d_model": 32, "n_layers": 1, "n_heads": 2, "decoder_channels": 32, "num_workers": 0},
            face_overrides={"n_heads": 2, "num_workers": 0},
            gpu_count=0)  # no GPU here (the stand-in image has CPU torch); a GPU count the pod lacks is refused
KFP_PATHS = ["/gcs", "/minio", "/s3", "/tmp"]


def s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class Launcher:
    """KFP's launcher around one container: stage inputs, run, upload outputs, read the executor output."""

    def __init__(self, spec: dict, platform: dict, env: dict[str, str], s3):
        self.spec, self.platform, self.env, self.s3 = spec, platform, env, s3
        self.written: dict[str, set[str]] = {}
        self.logs: dict[str, str] = {}

    def __call__(self, path: str, label: str, component: dict, executor_input: dict) -> TaskOutputs:
        executor = self.spec["deploymentSpec"]["executors"][label]
        image = executor["container"]["image"]
        names = pod_env_names(self.platform.get("deploymentSpec", {}).get("executors", {}).get(label, {}))
        env = {name: self.env[name] for name in names if name in self.env}
        with Container(image) as container:
            for entry in executor_input["inputs"]["artifacts"].values():
                self._download(container, entry["artifacts"][0]["uri"])
            result = container.run(container_argv(executor, executor_input), env=env)
            self.logs[path] = result.stdout[-4000:] + result.stderr[-8000:]
            assert result.returncode == 0, f"{path} ({image}) exited {result.returncode}:\n{self.logs[path]}"
            outputs = executor_input["outputs"]
            rootfs = container.rootfs
            output_file = rootfs / outputs["outputFile"].lstrip("/")
            parameter_files = {name: (rootfs / spec["outputFile"].lstrip("/")).read_text()
                               for name, spec in outputs["parameters"].items()
                               if (rootfs / spec["outputFile"].lstrip("/")).exists()}
            produced = read_executor_output(output_file.read_text() if output_file.exists() else "", executor_input,
                                            parameter_files)
            for artifact in produced.artifacts.values():
                self._upload(rootfs / local_path(artifact["uri"]).lstrip("/"), artifact["uri"])
            home = image_env(image).get("HOME", "/root")
            self.written[path] = under(container.written_paths(), KFP_PATHS + [home])
        return produced

    def _download(self, container: Container, uri: str) -> None:
        bucket, key = s3_parts(uri)
        listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        assert listing, f"input artifact {uri} is not in S3"
        with tempfile.TemporaryDirectory() as folder:
            for obj in listing:
                relative = obj["Key"][len(key):].lstrip("/")
                file = Path(folder) / uuid.uuid4().hex
                self.s3.download_file(bucket, obj["Key"], str(file))
                container.copy_in(file, local_path(uri) + ("/" + relative if relative else ""))

    def _upload(self, local: Path, uri: str) -> None:
        bucket, key = s3_parts(uri)
        if local.is_file():
            self.s3.upload_file(str(local), bucket, key)
        elif local.is_dir():
            for file in (p for p in local.rglob("*") if p.is_file()):
                self.s3.upload_file(str(file), bucket, f"{key}/{file.relative_to(local)}")


@pytest.fixture(scope="module")
def pipeline_run(s3_endpoint, tmp_path_factory):
    import boto3

    for image in (PREPROCESS_IMAGE, TRAIN_IMAGE):
        require_image(image)
    spec, platform = load_ir(COMPILED)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {PREPROCESS_IMAGE, TRAIN_IMAGE}, f"the compiled pipeline names other images: {images}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"signpose-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    run_id = str(uuid.uuid4())
    with start_test_server(tmp_path_factory.mktemp("mlflow"), s3_endpoint, f"s3://{bucket}/mlartifacts") as server:
        # What the chart's ConfigMap and Secrets give a pipeline pod (docs/deploy.md), here for loopback:
        # signpose's S3 identity under its own names (signpose/s3_env.py), no AWS_* variable.
        pod_env = {"SIGNPOSE_S3_ENDPOINT_URL": s3_endpoint, "SIGNPOSE_S3_REGION": "us-east-1",
                   "SIGNPOSE_S3_ACCESS_KEY_ID": "testing", "SIGNPOSE_S3_SECRET_ACCESS_KEY": "testing",
                   "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_TRACKING_URI": server.url,
                   "SIGNPOSE_PROMOTION_LOCK": f"s3://{bucket}/locks",
                   # the server here has no auth: a pod's credentials are sent and ignored
                   "MLFLOW_TRACKING_USERNAME": "signpose", "MLFLOW_TRACKING_PASSWORD": "testing"}
        mapped = {name for executor in platform["deploymentSpec"]["executors"].values()
                  for name in pod_env_names(executor)}
        assert mapped == set(pod_env), f"the pipeline's pods get other variables now: {sorted(mapped ^ set(pod_env))}"
        launcher = Launcher(spec, platform, pod_env, s3)
        walk = DagWalk(spec, launcher, f"s3://{bucket}/pipeline-root", run_id)
        walk.walk(dict(TINY, store_uri=f"s3://{bucket}/datasets/default", input_uri="", mlflow_tracking_uri="",
                       real_eval_uri=""))
        yield walk, launcher, server, s3, bucket, run_id


def test_every_executor_ran_in_its_image_in_dag_order(pipeline_run):
    walk, *_ = pipeline_run
    ran = walk.executed
    assert ran[0] == "exec-plan-dataset"
    assert ran.count("exec-write-shards") == TINY["render_tasks"]
    assert ran.index("exec-commit-dataset") > max(i for i, label in enumerate(ran) if label == "exec-write-shards")
    training = ran[ran.index("exec-commit-dataset") + 1:]
    # The one-node branch sizes the training pods from gpu_count first (pipelines/training_pipeline.py).
    assert training[0] == "exec-size-training-pod", ran
    assert sorted(training[1:]) == ["exec-train-face", "exec-train-skeleton"], ran


def test_the_run_commits_a_data_set_in_s3(pipeline_run):
    _, _, _, s3, bucket, _ = pipeline_run
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="datasets/default/manifest.json")["Body"].read())
    assert sum(manifest["splits"].values()) == TINY["synthetic_videos"] * TINY["synthetic_frames_per_video"]
    assert manifest["image_size"] == TINY["image_size"]


def test_the_run_registers_both_models_tagged_with_the_pipeline_run(pipeline_run):
    from mlflow import MlflowClient

    from signpose.tracking.settings import MlflowSettings

    _, _, server, _, _, run_id = pipeline_run
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    for task in ("skeleton", "face"):
        name = MlflowSettings().task(task).model_name
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1, (name, versions)
        run = client.get_run(versions[0].run_id)
        assert run.data.tags.get("kfp.run_id") == run_id
        assert run.info.status == "FINISHED"


def test_model_artifacts_were_uploaded_where_the_launcher_puts_them(pipeline_run):
    _, _, _, s3, bucket, run_id = pipeline_run
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"pipeline-root/{run_id}/")["Contents"]]
    for task in ("train-skeleton", "train-face", "commit-dataset"):
        assert any(f"/{task}/" in key for key in keys), (task, keys)


def test_no_task_writes_outside_kfp_folders_home_and_tmp(pipeline_run):
    _, launcher, *_ = pipeline_run
    assert launcher.written and not any(launcher.written.values()), launcher.written
