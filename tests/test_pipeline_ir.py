"""The compiled pipeline's IR: what KFP will actually run on the cluster.

DAG edges, stage images, resources, GPU placement, secret environment, caching and retries are read
back from the YAML the compiler writes (pipeline spec + Kubernetes platform spec).
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
import os
import subprocess
import sys
from pathlib import Path

import kfp_driver
import pytest
import yaml

from signpose.deploy import cluster
from signpose.deploy.images import PREPROCESS_IMAGE, TRAIN_IMAGE

ROOT = Path(__file__).resolve().parents[1]
TRAINING_COMPONENTS = ("comp-train-skeleton", "comp-train-face")
NODES_COMPONENTS = ("comp-train-skeleton-2", "comp-train-face-2")  # nodes > 1: they submit a TrainJob
PREPROCESS_COMPONENTS = ("comp-plan-dataset", "comp-write-shards", "comp-commit-dataset")
SIZING_COMPONENT = "comp-size-training-pod"  # gpu_count -> the one-node training pods' CPUs and memory


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
        {"comp-for-loop-1", *PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, *NODES_COMPONENTS, SIZING_COMPONENT,
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
    # On one node the trainings wait for the step that sizes their pods, in their own branch.
    sizing_name, _ = task_for(ir, SIZING_COMPONENT)
    assert sizing_name in ir["spec"]["components"]["comp-condition-3"]["dag"]["tasks"]
    for component in TRAINING_COMPONENTS:
        assert task_for(ir, component)[1]["dependentTasks"] == [sizing_name], component


# ---- what the KFP v2 driver feeds the tasks (tests/kfp_driver.py: its rules, cited upstream) ------

WORK_ITEMS = [{"dataset_hash": "ab12", "start": 0, "stop": 3, "replaces": None},
              {"dataset_hash": "ab12", "start": 3, "stop": 5, "replaces": None}]
UPSTREAM_OUTPUTS = {"plan-dataset": {"Output": WORK_ITEMS}, "commit-dataset": {"Output": "s3://b/d/manifest.json"}}


def driver_run(ir, **params) -> kfp_driver.Run:
    """The driver's view of a run; the sizing step's outputs are what its component returns for gpu_count."""
    from components import POD_SIZE_FIELDS, size_training_pod

    sized = size_training_pod.python_func(gpu_count=params.get("gpu_count", "1"))
    outputs = dict(UPSTREAM_OUTPUTS, **{"size-training-pod": dict(zip(POD_SIZE_FIELDS, sized))})
    return kfp_driver.Run(ir["spec"], params=params, outputs=outputs)


def test_every_parallel_for_item_has_the_type_its_consumers_declare(ir):
    # The driver converts a STRING loop item to text, then refuses text for a STRUCT input.
    loops = 0
    for owner in (ir["spec"]["root"], *ir["spec"]["components"].values()):
        for task in owner.get("dag", {}).get("tasks", {}).values():
            if "parameterIterator" not in task:
                continue
            loops += 1
            loop = ir["spec"]["components"][task["componentRef"]["name"]]
            item = task["parameterIterator"]["itemInput"]
            item_type = loop["inputDefinitions"]["parameters"][item]["parameterType"]
            for name, inner in loop["dag"]["tasks"].items():
                declared = ir["spec"]["components"][inner["componentRef"]["name"]]["inputDefinitions"]["parameters"]
                for key, source in inner["inputs"]["parameters"].items():
                    if source.get("componentInputParameter") == item:
                        assert declared[key]["parameterType"] == item_type, (name, key)
    assert loops == 1


def test_the_v2_driver_gives_each_shard_writer_its_work_item_as_a_struct(ir):
    run = driver_run(ir)
    writers = [t for t in run.tasks() if t.component == "comp-write-shards"]
    assert [t.parameter_values["work_item"] for t in writers] == [kfp_driver.as_value(w) for w in WORK_ITEMS]
    [commit] = [t for t in run.tasks() if t.component == "comp-commit-dataset"]
    assert commit.parameter_values["work_items"] == kfp_driver.as_value(WORK_ITEMS)


def test_every_resource_placeholder_names_a_string_parameter(ir):
    # The driver reads the placeholder with GetStringValue(): a number reads as "" and no GPU is asked
    # for (a CPU or memory field fails the task).
    found = list(kfp_driver.placeholder_sources(ir["spec"]))
    assert {(task, fld) for task, fld, _, _ in found} >= {
        (t, f) for t in ("train-skeleton", "train-face") for f in ("resourceCount", *kfp_driver.POD_RESOURCE_FIELDS)}
    for task, fld, name, source_type in found:
        assert source_type == "STRING", f"{task}.{fld} <- {name} is {source_type}"


@pytest.mark.parametrize("gpu_count", [None, "2", "0"])
def test_the_v2_driver_puts_the_runs_gpu_count_into_the_training_pods_limits(ir, gpu_count):
    params = {} if gpu_count is None else {"gpu_count": gpu_count, "gpu_type": "nvidia.com/gpu"}
    run = driver_run(ir, **params)
    limits = {t.component: kfp_driver.accelerator_limit(run.executor(t), t.parameter_values) for t in run.tasks()}
    for component in TRAINING_COMPONENTS:
        assert limits[component] == ("nvidia.com/gpu", gpu_count or "1"), component
    for component in (*NODES_COMPONENTS, *PREPROCESS_COMPONENTS, SIZING_COMPONENT):
        assert limits[component] is None, component


@pytest.mark.parametrize("gpu_count", ["0", "1", "8"])
def test_the_v2_driver_gives_one_node_training_pods_cpus_and_memory_for_every_gpu(ir, gpu_count):
    from signpose.deploy.gpu_resources import training_resources

    run = driver_run(ir, gpu_count=gpu_count)
    expected = training_resources(int(gpu_count), cluster.DEFAULT_SETTINGS.training)
    for task in run.tasks():
        if task.component in TRAINING_COMPONENTS:
            assert kfp_driver.pod_resources(run.executor(task), task.parameter_values) == {
                "resourceCpuRequest": expected.cpu_request, "resourceCpuLimit": expected.cpu_limit,
                "resourceMemoryRequest": expected.memory_request, "resourceMemoryLimit": expected.memory_limit}
    if gpu_count == "8":  # CPU_PER_GPU = 6, MEMORY_PER_GPU_GI = 12
        assert (expected.cpu_request, expected.memory_request) == ("48", "96Gi")


def test_the_driver_rules_refuse_what_kfp_local_accepts(tmp_path):
    """The helper's rules are live: a bare ``list`` loop feeding a ``dict`` input, and an int GPU limit."""
    from kfp import compiler, dsl

    @dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
    def plan() -> list:
        return [{"a": 1}]

    @dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
    def consume(item: dict) -> str:
        return str(item)

    @dsl.pipeline(name="old-shapes")
    def old_shapes(gpus: int = 1):
        planned = plan()
        with dsl.ParallelFor(planned.output) as item:
            consume(item=item)
        consume(item={"b": 2}).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)

    out = tmp_path / "old.yaml"
    compiler.Compiler().compile(old_shapes, str(out))
    spec = kfp_driver.load_spec(out)
    with pytest.raises(kfp_driver.DriverError, match="'item' type mismatch: expect STRUCT, got string"):
        list(kfp_driver.Run(spec, outputs={"plan": {"Output": [{"a": 1}]}}).tasks())
    [(_, _, _, source_type)] = [p for p in kfp_driver.placeholder_sources(spec) if p[1] == "resourceCount"]
    assert source_type == "NUMBER_INTEGER"
    assert kfp_driver.pod_spec_parameter("{{$.inputs.parameters['n']}}", {"n": 1.0}) == ""
    # A CPU request placeholder reading a number gets "", which is no quantity: the task fails.
    with pytest.raises(kfp_driver.DriverError, match="resourceCpuRequest ''"):
        kfp_driver.pod_resources({"container": {"resources": {
            "resourceCpuRequest": "{{$.inputs.parameters['pipelinechannel--n']}}"}}}, {"pipelinechannel--n": 6.0})


def test_the_executor_input_carries_the_resolved_values_and_an_output_place_per_output(ir):
    run = driver_run(ir, gpu_count="2")
    task = next(t for t in run.tasks() if t.component == "comp-train-face")
    executor_input = kfp_driver.executor_input(run, task, output_root="/out",
                                               artifacts={"dataset": [{"uri": "s3://b/d", "metadata": {}}]})
    values = executor_input["inputs"]["parameterValues"]
    assert values["gpu_count"] == "2" and values["epochs"] == 100 and values["gpu_node_selector"] == {}
    assert values["pipeline_run_id"] == run.job_uuid
    assert set(executor_input["outputs"]["artifacts"]) == {"model", "metrics"}
    assert executor_input["outputs"]["parameters"]["Output"] == {"outputFile": "/out/train-face/parameters/Output"}


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
    assert params["gpu_count"]["defaultValue"] == "1"
    assert params["gpu_node_selector"]["defaultValue"] == {}  # no node selector unless a run names one


def test_no_pipeline_parameter_carries_a_credential(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    for name, spec in params.items():
        assert not any(w in name.lower() for w in ("password", "secret", "token", "access_key", "credential"))
        default = str(spec.get("defaultValue", ""))
        assert "@" not in default, f"{name} default looks like it embeds credentials: {default!r}"


# ---- images ---------------------------------------------------------------------------------------

def test_each_stage_runs_in_its_own_image_from_images_env(ir):
    for component in (*PREPROCESS_COMPONENTS, SIZING_COMPONENT):  # sizing: no GPU, on the CPU nodes
        assert container(ir, component)["image"] == PREPROCESS_IMAGE
    for component in TRAINING_COMPONENTS:
        assert container(ir, component)["image"] == TRAIN_IMAGE


def test_images_do_not_pip_install_at_run_time(ir):
    # The images carry kfp and signpose (install_kfp_package=False): no network needed in the pod.
    for component in (*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, SIZING_COMPONENT):
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


def test_image_pull_secrets_from_the_image_settings_reach_every_task_pod(tmp_path):
    out = tmp_path / "p.yaml"
    code = ("from pipelines.training_pipeline import compile_pipeline; "
            f"compile_pipeline({str(out)!r})")
    env = dict(os.environ, SIGNPOSE_IMAGE_PULL_SECRETS="regcred, other-registry")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    spec, platform_doc = [d for d in yaml.safe_load_all(out.read_text()) if d]
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for label, k8s in executors.items():
        assert kfp_driver.image_pull_secrets(k8s, {}) == ["regcred", "other-registry"], label
        # ...and the task's code, which puts them on a TrainJob's pods, knows them too.
        env_vars = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][label]["container"]["env"]}
        assert env_vars["SIGNPOSE_IMAGE_PULL_SECRETS"] == "regcred,other-registry", label
        assert not [name for name in env_vars if cluster_credential(name)], label


def test_no_image_pull_secret_by_default(ir):
    assert not any("imagePullSecret" in k8s for k8s in ir["platform"].values())


# ---- resources and GPU placement ------------------------------------------------------------------

def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def test_every_task_requests_and_limits_cpu_and_memory(ir):
    # As the driver puts them into the pods: the trainings' come from the sizing step's outputs.
    run = driver_run(ir)
    seen = set()
    for task in run.tasks():
        seen.add(task.component)
        res = kfp_driver.pod_resources(run.executor(task), task.parameter_values)
        for kind in ("Cpu", "Memory"):
            request, limit = res[f"resource{kind}Request"], res[f"resource{kind}Limit"]
            assert 0 < _quantity(request) <= _quantity(limit), f"{task.where} {kind}: {request} > {limit}"
    assert seen >= {*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, SIZING_COMPONENT}


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
def test_training_tolerates_the_gpu_taint_and_takes_its_node_selector_from_a_parameter(ir, component):
    spec = platform(ir, component)
    # nvidia.com/gpu.present is GPU Operator's label, missing on plain device-plugin pools: no fixed
    # selector, the run's gpu_node_selector (default {}) instead.
    assert "labels" not in spec["nodeSelector"]
    assert spec["nodeSelector"]["nodeSelectorJson"] == {"componentInputParameter": "pipelinechannel--gpu_node_selector"}
    assert cluster.GPU_TOLERATION in [
        {k: t[k] for k in ("key", "operator", "effect") if k in t} for t in spec["tolerations"]]


@pytest.mark.parametrize("component", TRAINING_COMPONENTS)
def test_training_gets_a_memory_backed_dev_shm_for_dataloader_workers(ir, component):
    mounts = platform(ir, component)["emptyDirMounts"]
    assert {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory"}.items() <= mounts[0].items()


# ---- secrets --------------------------------------------------------------------------------------

def _secret_env(ir, component) -> dict[str, dict[str, str]]:
    """Secret name -> {Secret key: env var} (SecretRefs' direction)."""
    return {s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]}
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
    assert {k["configMapKey"]: k["envVar"] for k in cm["keyToEnv"]} == dict(refs.env_config_keys)


def test_no_task_container_gets_aws_variables_that_kfps_launcher_would_use_for_its_own_uploads(ir):
    # The launcher runs in the task's container; with a fromEnv pipeline root it uploads with the AWS
    # SDK's default chain (kubeflow/pipelines backend/src/v2/objectstore/object_store.go, newS3Client).
    for label, executor in ir["platform"].items():
        names = [k["envVar"] for s in executor.get("secretAsEnv", []) for k in s["keyToEnv"]]
        names += [k["envVar"] for c in executor.get("configMapAsEnv", []) for k in c["keyToEnv"]]
        names += [e["name"] for e in ir["spec"]["deploymentSpec"]["executors"][label]["container"].get("env", [])]
        assert not [n for n in names if n.startswith("AWS_")], f"{label}: {names}"
        if label.startswith(("exec-write", "exec-train-s", "exec-train-f")):
            assert {"SIGNPOSE_S3_ACCESS_KEY_ID", "SIGNPOSE_S3_SECRET_ACCESS_KEY", "SIGNPOSE_S3_ENDPOINT_URL"} <= set(names)


def test_credentials_are_never_set_as_plain_environment_values(ir):
    for label, executor in ir["spec"]["deploymentSpec"]["executors"].items():
        for env in executor["container"].get("env", []):
            assert not cluster_credential(env["name"]), f"{label}: {env['name']} set in the clear"


# Names of Kubernetes Secrets (the image pull secrets the task passes on to a TrainJob), never a value.
NOT_CREDENTIALS = {"SIGNPOSE_IMAGE_PULL_SECRETS"}


def cluster_credential(name: str) -> bool:
    return name not in NOT_CREDENTIALS and any(w in name.upper() for w in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY"))


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
    for component in (*TRAINING_COMPONENTS, SIZING_COMPONENT):  # the sizing's figures live in the image
        _, train = task_for(ir, component)
        assert not train.get("cachingOptions", {}).get("enableCache"), component


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, SIZING_COMPONENT])
def test_every_task_retries_transient_failures_with_backoff(ir, component):
    _, task = task_for(ir, component)
    policy = task["retryPolicy"]
    assert policy["maxRetryCount"] >= 1 and policy["backoffDuration"] and policy["backoffFactor"] > 1


@pytest.mark.parametrize("component", [*PREPROCESS_COMPONENTS, *TRAINING_COMPONENTS, SIZING_COMPONENT])
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
