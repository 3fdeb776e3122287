"""The multi-node TrainJob object, validated against Kubeflow Trainer v2.3.0's own CRD (vendored in
tests/crds/, see its README), and the training command line it carries."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from signpose.deploy.cluster import DEFAULT_SETTINGS
from signpose.deploy.trainjob_manifest import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NODE,
    VERSION,
    TrainJobRequest,
    build_trainjob,
    check_command_args,
    config_to_cli_args,
    job_name,
    task_pod_owner,
    torchrun_command,
)

CRDS = Path(__file__).parent / "crds" / "kubeflow-trainer-v2.3.0"
CRD = yaml.safe_load((CRDS / "trainer.kubeflow.org_trainjobs.yaml").read_text())
RUNTIME = yaml.safe_load((CRDS / "torch_distributed.yaml").read_text())
ARGS = ("--data_path", "s3://signpose/datasets/default", "--epochs", "3", "--batch_size", "8", "--no_progress")
# CEL rules of the CRD this test understands; any other rule on a field we set fails the test.
TRANSITION_RULE = "self == oldSelf"  # immutability: checked by the API server on update only
NAME_RULES = {"self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
              lambda obj: re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]) is not None,
              "size(self.metadata.name) <= 63": lambda obj: len(obj["metadata"]["name"]) <= 63}


def request(**overrides) -> TrainJobRequest:
    values = dict(name=job_name("skeleton", "run-0f3c"), namespace="kubeflow-user-example-com", task="skeleton",
                  nodes=2, gpus_per_node=4, image="registry.example.com/signpose-train:0.1.0", command_args=ARGS,
                  env={"SIGNPOSE_EXTRA": "1"}, pipeline_run_id="run-0f3c",
                  owner={"name": "signpose-training-abc-1234", "uid": "6f1c2a8e-0000-4000-8000-000000000001"})
    values.update(overrides)
    return TrainJobRequest(**values)


def crd_schema(strict: bool = True) -> dict:
    [version] = [v for v in CRD["spec"]["versions"] if v["name"] == VERSION]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    if strict:
        _close_objects(schema)
    return schema


def _close_objects(node) -> None:
    """The API server prunes fields a structural schema does not declare (silently losing them):
    treat them as errors, as `kubectl --validate=strict` does."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def schema_errors(obj: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(crd_schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def cel_problems(obj, schema=None, path="") -> list[str]:
    """Evaluate the CRD's x-kubernetes-validations on every field ``obj`` sets."""
    schema = crd_schema(strict=False) if schema is None else schema
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"] == TRANSITION_RULE:
            continue
        check = NAME_RULES.get(rule["rule"]) if path == "" else None
        if check is None:
            problems.append(f"{path or '.'}: CEL rule not understood by this test: {rule['rule']}")
        elif not check(obj):
            problems.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in schema.get("properties", {}):
                problems += cel_problems(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for value in obj:
            problems += cel_problems(value, schema["items"], f"{path}[]")
    return problems


# ---- against the upstream CRD ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},
    {"nodes": 8, "gpus_per_node": 8, "accelerator_type": "nvidia.com/gpu"},
    {"gpus_per_node": 0, "owner": None, "pipeline_run_id": "", "env": {}},
    {"node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}, "tolerations": ()},
], ids=["2x4-gpu", "8x8-gpu", "cpu-no-owner", "custom-placement"])
def test_trainjob_is_valid_against_the_upstream_crd_schema_and_its_cel_rules(overrides):
    obj = build_trainjob(request(**overrides))
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND
    assert CRD["spec"]["group"] == GROUP and CRD["spec"]["names"]["kind"] == KIND
    assert not schema_errors(obj), "\n".join(schema_errors(obj))
    assert not cel_problems(obj), cel_problems(obj)


def test_the_schema_check_is_live_it_rejects_an_undeclared_field_and_a_wrong_type():
    obj = build_trainjob(request())
    obj["spec"]["trainer"]["numNode"] = 2
    obj["spec"]["trainer"]["numProcPerNode"] = "auto"  # v2.3 takes an integer
    errors = "\n".join(schema_errors(obj))
    assert "numNode" in errors and "numProcPerNode" in errors, errors
    obj = build_trainjob(request())
    obj["metadata"]["name"] = "Signpose_Job"
    assert any("RFC 1035" in p for p in cel_problems(obj))


def test_trainjob_metadata_is_valid_object_meta():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    # The CRD leaves metadata to the API server's ObjectMeta: check it as any object's metadata.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": build_trainjob(request())["metadata"]}
    kubernetes_validate.validate(carrier, "1.37.0", strict=True)


def test_the_runtime_patch_targets_the_torch_distributed_runtimes_node_job_and_container():
    obj = build_trainjob(request())
    assert obj["spec"]["runtimeRef"] == {"apiGroup": GROUP, "kind": RUNTIME["kind"], "name": RUNTIME["metadata"]["name"]}
    assert "torch" in RUNTIME["spec"]["mlPolicy"]  # the torch plugin: PET_* env for torchrun
    jobs = {j["name"]: j for j in RUNTIME["spec"]["template"]["spec"]["replicatedJobs"]}
    runtime_containers = {c["name"] for c in jobs[NODE]["template"]["spec"]["template"]["spec"]["containers"]}
    assert jobs[NODE]["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    [patch] = obj["spec"]["runtimePatches"]
    for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
        assert job["name"] in jobs
        pod = job["template"]["spec"]["template"]
        assert {c["name"] for c in pod["spec"]["containers"]} <= runtime_containers
        # The chart's NetworkPolicy admits pods with the pipeline's label to MinIO.
        assert pod["metadata"]["labels"].items() >= dict(DEFAULT_SETTINGS.pod_labels).items()
        mounts = {m["name"]: m["mountPath"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        assert mounts == {"dshm": "/dev/shm"} and pod["spec"]["volumes"][0]["emptyDir"]["medium"] == "Memory"



def test_node_pods_opt_out_of_istio_sidecar_injection_of_kubeflow_profile_namespaces():
    """A profile namespace injects istio-proxy into every pod; as a non-native sidecar it breaks the
    rendezvous and keeps the job from completing (kubeflow/trainer#2794)."""
    obj = build_trainjob(request())
    [patch] = obj["spec"]["runtimePatches"]
    for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
        # The pod template's metadata (Trainer merges it into the JobSet's pods), not the Job's.
        assert job["template"]["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Where the CRD declares it: pod template metadata, string values.
    pod_meta = (crd_schema(strict=False)["properties"]["spec"]["properties"]["runtimePatches"]["items"]["properties"]
                ["trainingRuntimeSpec"]["properties"]["template"]["properties"]["spec"]["properties"]["replicatedJobs"]
                ["items"]["properties"]["template"]["properties"]["spec"]["properties"]["template"]["properties"]
                ["metadata"])
    assert "Pod template metadata" in pod_meta["description"]
    assert pod_meta["properties"]["annotations"]["additionalProperties"] == {"type": "string"}
    assert not schema_errors(obj)


# ---- resources, placement, env ------------------------------------------------------------------------

def test_gpus_per_node_become_the_node_resources_and_processes_per_node_on_the_gpu_pool():
    trainer = build_trainjob(request(nodes=3, gpus_per_node=4))["spec"]["trainer"]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    pod = build_trainjob(request())["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    # No node label by default (nvidia.com/gpu.present is the GPU Operator's): the GPU limit places the pods.
    assert "nodeSelector" not in pod and dict(DEFAULT_SETTINGS.gpu.node_selector) == {}
    assert pod["tolerations"] == [dict(t) for t in DEFAULT_SETTINGS.gpu.tolerations]
    chosen = build_trainjob(request(node_selector={"nvidia.com/gpu.present": "true"}))["spec"]["runtimePatches"][0][
        "trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert chosen["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    cpu = build_trainjob(request(gpus_per_node=0))
    assert cpu["spec"]["trainer"]["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in cpu["spec"]["trainer"]["resourcesPerNode"]["limits"]
    cpu_pod = cpu["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu_pod and "tolerations" not in cpu_pod


def test_credentials_reach_the_nodes_only_by_reference_to_the_pipelines_secrets():
    obj = build_trainjob(request())
    env = {e["name"]: e for e in obj["spec"]["trainer"]["env"]}
    secrets = DEFAULT_SETTINGS.secrets
    for key, var in (*secrets.s3_keys.items(), *secrets.mlflow_keys.items()):
        assert "value" not in env[var] and env[var]["valueFrom"]["secretKeyRef"]["name"] in {
            secrets.s3_secret, secrets.mlflow_secret}
        assert env[var]["valueFrom"]["secretKeyRef"]["key"] == key
    # signpose's S3 identity under its own names, never AWS_* (the KFP launcher's default chain)
    assert env["SIGNPOSE_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": secrets.s3_secret, "key": "AWS_SECRET_ACCESS_KEY"}
    assert not [name for name in env if name.startswith("AWS_")]
    with pytest.raises(ValueError, match="Secrets"):
        request(env={"SIGNPOSE_S3_SECRET_ACCESS_KEY": "plain-text"})
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"] == {
        "name": secrets.env_config_map, "key": "MLFLOW_TRACKING_URI", "optional": True}
    assert env["KFP_RUN_ID"] == {"name": "KFP_RUN_ID", "value": "run-0f3c"}
    with pytest.raises(ValueError, match="Secrets"):
        request(env={"AWS_SECRET_ACCESS_KEY": "plain-text"})
    # An explicit tracking URI replaces the ConfigMap's.
    explicit = {e["name"]: e for e in build_trainjob(request(env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"}))[
        "spec"]["trainer"]["env"]}
    assert explicit["MLFLOW_TRACKING_URI"] == {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}


def test_image_pull_secrets_of_the_settings_reach_the_node_pods():
    from dataclasses import replace

    def pod_of(settings):
        return build_trainjob(request(settings=settings))["spec"]["runtimePatches"][0]["trainingRuntimeSpec"][
            "template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]

    with_secrets = replace(DEFAULT_SETTINGS, image_pull_secrets=("regcred", "mirror"))
    assert pod_of(with_secrets)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    obj = build_trainjob(request(settings=with_secrets))
    assert not schema_errors(obj), "\n".join(schema_errors(obj))
    assert "imagePullSecrets" not in pod_of(replace(DEFAULT_SETTINGS, image_pull_secrets=()))


def test_torchruns_own_settings_are_left_to_the_trainer_and_refused_in_env():
    with pytest.raises(ValueError, match="PET_NNODES"):
        request(env={"PET_NNODES": "4"})
    assert not any(e["name"].startswith("PET_") for e in build_trainjob(request())["spec"]["trainer"]["env"])


def test_the_job_is_owned_by_the_kfp_task_pod_when_the_task_knows_it():
    meta = build_trainjob(request())["metadata"]
    [owner] = meta["ownerReferences"]
    assert owner == {"apiVersion": "v1", "kind": "Pod", "name": "signpose-training-abc-1234",
                     "uid": "6f1c2a8e-0000-4000-8000-000000000001"}
    assert "blockOwnerDeletion" not in owner  # would need update on pods/finalizers
    assert task_pod_owner({"KFP_POD_NAME": "p", "KFP_POD_UID": "u"}) == {"name": "p", "uid": "u"}
    assert task_pod_owner({}) is None
    assert "ownerReferences" not in build_trainjob(request(owner=None))["metadata"]


# ---- names and the command line -----------------------------------------------------------------------

def test_job_names_are_stable_per_pipeline_run_and_task_and_fit_jobsets_pod_host_names():
    assert job_name("face", "run-1") == job_name("face", "run-1")
    assert len({job_name("face", "run-1"), job_name("skeleton", "run-1"), job_name("face", "run-2")}) == 3
    assert job_name("face") != job_name("face")  # no run id: a fresh name each time
    for name in (job_name("face", "r"), job_name("a-task_with.ODD-name-that-is-long", "r")):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= MAX_NAME_LENGTH
        assert len(f"{name}-{NODE}-99-0") <= 63  # JobSet's pod host name <job>-<replicated job>-<i>-<j>
    with pytest.raises(ValueError, match="name"):
        request(name="Not_A_Name")


def test_every_node_runs_the_training_cli_under_torchrun_with_the_given_flags():
    trainer = build_trainjob(request(task="face"))["spec"]["trainer"]
    command, module = torchrun_command("face")
    assert trainer["command"] == command == ["python", "-m", "torch.distributed.run"]
    assert trainer["args"] == [*module, *ARGS] and module == ["-m", "signpose.train.face"]
    # torchrun takes no flags of its own here: every rendezvous setting comes from Trainer's PET_* env.
    assert not any(a.startswith("--nnodes") or a.startswith("--rdzv") for a in trainer["args"])


def test_a_config_dict_becomes_cli_flags_that_the_real_parser_reads_back():
    from signpose.cli.train import config_from_args, make_parser
    from signpose.tasks import get_task

    config = {"epochs": 3.0, "batch_size": 8, "lr": 0.001, "progress": False, "compile": True,
              "restore_best": True, "d_global": 256, "checkpoint_dir": "s3://b/ckpt", "amp": "bf16"}
    args = ["--data_path", "s3://b/data", *config_to_cli_args("face", config)]
    spec = get_task("face")
    parsed = config_from_args(make_parser(spec.config_cls, "").parse_args(args), spec.config_cls)
    assert parsed == spec.config_cls.from_dict({**config, "data_path": "s3://b/data"})
    assert "--restore_best" not in args and "--no_progress" in args and "--compile" in args
    with pytest.raises(ValueError, match="unknown"):
        config_to_cli_args("face", {"epochz": 3})


def test_a_bad_flag_fails_before_anything_is_submitted():
    check_command_args("face", ARGS)
    with pytest.raises(ValueError, match="--epochz"):
        check_command_args("face", ["--data_path", "x", "--epochz", "3"])


def test_the_object_serialises_to_plain_json():
    obj = build_trainjob(request())
    assert json.loads(json.dumps(obj)) == obj



def test_every_node_runs_with_mlflow_pickle_loading_off_whatever_the_request_says():
    for env in ({}, {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}):
        entries = [e for e in build_trainjob(request(env=env))["spec"]["trainer"]["env"]
                   if e["name"] == "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
        assert entries == [{"name": "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "value": "false"}]
