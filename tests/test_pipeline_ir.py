"""The compiled pipeline's IR: what KFP will actually run on the cluster.

DAG edges, stage images, resources, GPU placement, secret environment, caching and retries are read
back from the YAML the compiler writes (pipeline spec + Kubernetes platform spec).
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from signpose.deploy import cluster
from signpose.deploy.images import PREPROCESS_IMAGE, TRAIN_IMAGE

ROOT = Path(__file__).resolve().parents[1]
TRAINING_COMPONENTS = ("comp-train-skeleton", "comp-train-face")
NODES_COMPONENTS = ("comp-train-skeleton-2", "comp-train-face-2")  # nodes > 1: they submit a TrainJob
PREPROCESS_COMPONENTS = ("comp-plan-dataset", "comp-write-shards", "comp-commit-dataset")


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    from pipelines.training_pipeline import compile_pipeline

    path = Path(compile_pipeline(tmp_path_factory.mktemp("ir") / "signpose_training.yaml"))
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 2, "expected the pipeline spec and a Kubernetes platform spec"
    return {"spec": docs[0], "platform": docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
            "text": path.read_text()}


def tasks(ir) -> dict[str, dict]:
    return ir["spec"]["root"]["dag"]["tasks"]


def all_tasks(ir) -> dict[str, dict]:
    """Root tasks and the tasks inside sub-DAGs (the ParallelFor body)."""
    found = dict(tasks(ir))
    for component in ir["spec"]["components"].values():
        found.update(component.get("dag", {}).get("tasks", {}))
    return found


def task_for(ir, component: str) -> tuple[str, dict]:
    found = [(name, t) for name, t in all_tasks(ir).items() if t["componentRef"]["name"] == component]
    assert len(found) == 1, f"expected one task of {component}, got {[n for n, _ in found]}"
    return found[0]


def executor_label(ir, component: str) -> str:
    return ir["spec"]["components"][component]["executorLabel"]


def container(ir, component: str) -> dict:
    return ir["spec"]["deploymentSpec"]["executors"][executor_label(ir, component)]["container"]


def platform(ir, component: str) -> dict:
    return ir["platform"].get(executor_label(ir, component), {})


# ---- DAG ------------------------------------------------------------------------------------------

def test_dag_is_plan_then_parallel_shard_writers_then_commit_then_the_two_trainings(ir):
    assert {t["componentRef"]["name"] for t in all_tasks(ir).values()} == \
        {"comp-for-loop-1", *PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, *NODES_COMPONENTS,
         "comp-condition-branches-2", "comp-condition-3", "comp-condition-4"}
    plan_name, plan = task_for(ir, "comp-plan-dataset")
    assert not plan.get("dependentTasks")
    loop_name, loop = task_for(ir, "comp-for-loop-1")
    assert loop["dependentTasks"] == [plan_name]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-dataset-Output"
    _, writer = task_for(ir, "comp-write-shards")
    assert writer["inputs"]["parameters"]["work_item"]["componentInputParameter"] == \
        "pipelinechannel--plan-dataset-Output-loop-item"
    commit_name, commit = task_for(ir, "comp-commit-dataset")
    assert set(commit["dependentTasks"]) == {plan_name, loop_name}
    # The trainings run after the commit, on its data set: on one node, or on several (nodes > 1).
    _, branches = task_for(ir, "comp-condition-branches-2")
    assert branches["dependentTasks"] == [commit_name]
    _, one_node = task_for(ir, "comp-condition-3")
    _, many_nodes = task_for(ir, "comp-condition-4")
    assert one_node["triggerPolicy"]["condition"] == "int(inputs.parameter_values['pipelinechannel--nodes']) <= 1"
    assert many_nodes["triggerPolicy"]["condition"] == f"!({one_node['triggerPolicy']['condition']})"
    for component in (*TRAINING_COMPONENTS, *NODES_COMPONENTS):
        _, train = task_for(ir, component)
        dataset = train["inputs"]["artifacts"]["dataset"]["componentInputArtifact"]
        assert dataset == "pipelinechannel--commit-dataset-dataset", component


@pytest.mark.parametrize("component", NODES_COMPONENTS)
def test_on_several_nodes_the_training_task_only_launches_a_trainjob_and_asks_for_no_gpu(ir, component):
    assert "accelerator" not in container(ir, component)["resources"]
    assert "nodeSelector" not in platform(ir, component) and "tolerations" not in platform(ir, component)
    _, task = task_for(ir, component)
    wired = task["inputs"]["parameters"]
    assert wired["nodes"]["componentInputParameter"] == "pipelinechannel--nodes"
    assert wired["train_image"]["runtimeValue"]["constant"] == TRAIN_IMAGE


def test_pipeline_parameters_cover_data_tracking_hyperparameters_image_size_and_gpu(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    for name in ("input_uri", "store_uri", "mlflow_tracking_uri", "image_size", "skeleton_epochs",
                 "skeleton_batch_size", "face_epochs", "face_batch_size", "gpu_type", "gpu_count"):
        assert name in params, name
    assert params["gpu_type"]["defaultValue"] == "nvidia.com/gpu"
    assert int(params["gpu_count"]["defaultValue"]) == 1


def test_no_pipeline_parameter_carries_a_credential(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    for name, spec in params.items():
        assert not any(w in name.lower() for w in ("password", "secret", "token", "access_key", "credential"))
        default = str(spec.get("defaultValue", ""))
        assert "@" not in default, f"{name} default looks like it embeds credentials: {default!r}"


# ---- images ---------------------------------------------------------------------------------------

def test_each_stage_runs_in_its_own_image_from_images_env(ir):
    for component in PREPROCESS_COMPONENTS:
        assert container(ir, component)["image"] == PREPROCESS_IMAGE
    for component in TRAINING_COMPONENTS:
        assert container(ir, component)["image"] == TRAIN_IMAGE


def test_images_do_not_pip_install_at_run_time(ir):
    # The images carry kfp and signpose (install_kfp_package=False): no network needed in the pod.
    for component in (*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS):
        command = " ".join(container(ir, component)["command"])
        assert "pip install" not in command, component


def test_image_tag_comes_from_the_environment_at_compile_time(tmp_path):
    out = tmp_path / "p.yaml"
    code = ("from pipelines.training_pipeline import compile_pipeline; "
            f"compile_pipeline({str(out)!r})")
    env = dict(os.environ, SIGNPOSE_REGISTRY="registry.example.com/ml", SIGNPOSE_IMAGE_TAG="9.9.9")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    text = out.read_text()
    assert "image: registry.example.com/ml/signpose-preprocess:9.9.9" in text
    assert "image: registry.example.com/ml/signpose-train:9.9.9" in text


# ---- resources and GPU placement ------------------------------------------------------------------

def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS])
def test_every_task_requests_and_limits_cpu_and_memory(ir, component):
    res = container(ir, component)["resources"]
    for kind in ("Cpu", "Memory"):
        request, limit = res[f"resource{kind}Request"], res[f"resource{kind}Limit"]
        assert 0 < _quantity(request) <= _quantity(limit), f"{component} {kind}: {request} > {limit}"


@pytest.mark.parametrize("component", TRAINING_COMPONENTS)
def test_training_requests_the_gpu_chosen_by_pipeline_parameters(ir, component):
    accelerator = container(ir, component)["resources"]["accelerator"]
    assert "pipelinechannel--gpu_type" in accelerator["resourceType"]
    assert "pipelinechannel--gpu_count" in accelerator["resourceCount"]
    _, task = task_for(ir, component)
    wired = task["inputs"]["parameters"]
    assert wired["pipelinechannel--gpu_type"]["componentInputParameter"] == "pipelinechannel--gpu_type"
    assert wired["pipelinechannel--gpu_count"]["componentInputParameter"] == "pipelinechannel--gpu_count"


@pytest.mark.parametrize("component", PREPROCESS_COMPONENTS)
def test_preprocessing_asks_for_no_gpu_and_stays_off_the_gpu_pool(ir, component):
    assert "accelerator" not in container(ir, component)["resources"]
    spec = platform(ir, component)
    assert not spec.get("nodeSelector") and not spec.get("tolerations")


@pytest.mark.parametrize("component", TRAINING_COMPONENTS)
def test_training_is_placed_on_the_gpu_pool_with_selector_and_toleration(ir, component):
    spec = platform(ir, component)
    key, value = cluster.GPU_NODE_LABEL
    assert spec["nodeSelector"]["labels"] == {key: value}
    assert cluster.GPU_TOLERATION in [
        {k: t[k] for k in ("key", "operator", "effect") if k in t} for t in spec["tolerations"]]


@pytest.mark.parametrize("component", TRAINING_COMPONENTS)
def test_training_gets_a_memory_backed_dev_shm_for_dataloader_workers(ir, component):
    mounts = platform(ir, component)["emptyDirMounts"]
    assert {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory"}.items() <= mounts[0].items()


# ---- secrets --------------------------------------------------------------------------------------

def _secret_env(ir, component) -> dict[str, dict[str, str]]:
    return {s["secretName"]: {k["envVar"]: k["secretKey"] for k in s["keyToEnv"]}
            for s in platform(ir, component).get("secretAsEnv", [])}


@pytest.mark.parametrize("component", PREPROCESS_COMPONENTS)
def test_preprocessing_reads_s3_credentials_from_a_secret(ir, component):
    refs = cluster.SecretRefs()
    env = _secret_env(ir, component)
    assert env[refs.s3_secret] == dict(refs.s3_keys)
    assert refs.mlflow_secret not in env


@pytest.mark.parametrize("component", TRAINING_COMPONENTS)
def test_training_reads_s3_and_mlflow_credentials_from_secrets(ir, component):
    refs = cluster.SecretRefs()
    env = _secret_env(ir, component)
    assert env[refs.s3_secret] == dict(refs.s3_keys)
    assert env[refs.mlflow_secret] == dict(refs.mlflow_keys)


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS])
def test_endpoints_come_from_an_optional_configmap(ir, component):
    refs = cluster.SecretRefs()
    [cm] = platform(ir, component)["configMapAsEnv"]
    assert cm["configMapName"] == refs.env_config_map and cm["optional"] is True
    assert {k["envVar"] for k in cm["keyToEnv"]} == set(refs.env_config_keys)


def test_credentials_are_never_set_as_plain_environment_values(ir):
    for label, executor in ir["spec"]["deploymentSpec"]["executors"].items():
        for env in executor["container"].get("env", []):
            assert not cluster_credential(env["name"]), f"{label}: {env['name']} set in the clear"


def cluster_credential(name: str) -> bool:
    return any(w in name.upper() for w in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY"))


# ---- caching and retries --------------------------------------------------------------------------

def test_shard_writing_is_cached_on_the_input_content_hash_and_training_always_runs(ir):
    # The writers and the commit take the plan's work items (which carry the dataset hash) as input,
    # so KFP's cache key (component + input values) follows the input's content; the plan always runs.
    for component, param in (("comp-write-shards", "work_item"), ("comp-commit-dataset", "work_items")):
        _, prep = task_for(ir, component)
        assert prep["cachingOptions"].get("enableCache") is True, component
        assert "cacheKey" not in prep["cachingOptions"]
        assert param in prep["inputs"]["parameters"], component
    _, plan = task_for(ir, "comp-plan-dataset")
    assert not plan.get("cachingOptions", {}).get("enableCache")
    for component in TRAINING_COMPONENTS:
        _, train = task_for(ir, component)
        assert not train.get("cachingOptions", {}).get("enableCache"), component


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS])
def test_every_task_retries_transient_failures_with_backoff(ir, component):
    _, task = task_for(ir, component)
    policy = task["retryPolicy"]
    assert policy["maxRetryCount"] >= 1 and policy["backoffDuration"] and policy["backoffFactor"] > 1


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS])
def test_every_task_has_a_deadline(ir, component):
    assert int(platform(ir, component)["activeDeadlineSeconds"]) > 0


# ---- cluster settings as code ---------------------------------------------------------------------

def test_custom_cluster_settings_reach_the_ir(tmp_path):
    from kfp import compiler, dsl

    @dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
    def fit(epochs: int) -> str:
        return str(epochs)

    settings = cluster.ClusterSettings(
        training=cluster.Resources("1", "2", "1Gi", "2Gi"),
        gpu=cluster.GpuPool(accelerator_type="nvidia.com/gpu", accelerator_limit=2,
                            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                            tolerations=({"key": "gpu", "operator": "Equal", "value": "l4",
                                          "effect": "NoSchedule"},)),
        secrets=cluster.SecretRefs(mlflow_secret=None))

    @dsl.pipeline(name="custom")
    def custom(epochs: int = 1):
        cluster.configure_training_task(fit(epochs=epochs), settings)

    out = tmp_path / "custom.yaml"
    compiler.Compiler().compile(custom, str(out))
    spec, platform_doc = [d for d in yaml.safe_load_all(out.read_text()) if d]
    [executor] = spec["deploymentSpec"]["executors"].values()
    resources = executor["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "2"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["resourceMemoryLimit"] == "2Gi" and resources["resourceCpuRequest"] == "1"
    [k8s] = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert k8s["tolerations"][0]["value"] == "l4"
    assert [s["secretName"] for s in k8s["secretAsEnv"]] == ["signpose-s3"]  # MLflow secret left out


def test_unknown_toleration_field_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['tolerance'\]"):
        cluster._toleration_kwargs({"key": "gpu", "tolerance": "x"})


def test_every_task_runs_with_mlflow_pickle_loading_off(ir):
    """A registered model is data a registry user controls: no task may unpickle one (signpose.process_env)."""
    for label, executor in ir["spec"]["deploymentSpec"]["executors"].items():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") == "false", label
