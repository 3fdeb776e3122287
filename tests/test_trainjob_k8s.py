"""Submit -> watch -> Complete / Failed / cancelled, against a loopback stub of the Kubernetes API.

The Kubernetes client (the ``kubernetes`` package), the TrainJob object and the watch loop are real;
only the API server is tests/k8s_stub.py, which plays Kubeflow Trainer's part through a script of
frames (what the job and its pods look like at each look). Nothing waits on time: cancellation is
sent once the stub has seen the client look at the running job.
"""

from __future__ import annotations

import io
import os
import re
import signal
import threading

import pytest
import yaml
from k8s_stub import Frame, KubeStub, complete, running
from kubernetes import client

from signpose.deploy.trainjob import TrainJobCancelled, TrainJobError, TrainJobFailed, run_multinode_training
from signpose.deploy.trainjob_manifest import job_name

NS = "kubeflow"
TINY = ("--epochs", "1", "--batch_size", "4", "--d_region", "16", "--d_global", "8", "--n_heads", "2",
        "--region_layers", "1", "--interaction_layers", "1", "--decoder_layers", "1", "--device", "cpu",
        "--no_progress")
LOGS = {0: "rank 0: epoch 1/1 loss 0.12\nregistered face-keypoint-autoencoder version 1\n",
        1: "rank 1: epoch 1/1 loss 0.12\n"}


def api_client(stub: KubeStub):
    return client.ApiClient(client.Configuration(host=stub.url))


def run(stub: KubeStub, out: io.StringIO, *, args=("--data_path", "s3://signpose/datasets/d", *TINY, "--no_track"),
        run_id: str = "run-1", **kwargs):
    return run_multinode_training("face", 2, 1, "registry.example.com/signpose-train:0.1.0", list(args), NS,
                                  pipeline_run_id=run_id, api_client=api_client(stub), poll_interval_s=0.01, out=out,
                                  **kwargs)


@pytest.fixture(autouse=True)
def not_in_a_kfp_pod(monkeypatch):
    for var in ("KFP_POD_NAME", "KFP_POD_UID", "KFP_RUN_ID", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)


def send_when(stub: KubeStub, predicate, signum: int) -> threading.Thread:
    """Signal this process (its main thread runs the watch) once the stub has seen ``predicate``."""
    def go():
        stub.wait_for(predicate)
        os.kill(os.getpid(), signum)
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


# ---- the happy path -------------------------------------------------------------------------------------

def test_submit_watch_complete_streams_both_nodes_logs_and_status(monkeypatch):
    out = io.StringIO()
    with KubeStub(script=[Frame(("Pending", "Pending")), running(), complete()], logs=LOGS) as stub:
        outcome = run(stub, out)
        [posted] = stub.posted_jobs()
    name = job_name("face", "run-1")
    assert outcome == {"trainjob": name, "namespace": NS, "tracked": False}
    assert posted["metadata"]["name"] == name and posted["spec"]["trainer"]["numNodes"] == 2
    text = out.getvalue()
    assert f"TrainJob {NS}/{name}: submitted, 2 nodes x 1 processes" in text
    for line in ("[node-0] rank 0: epoch 1/1 loss 0.12", "[node-0] registered face-keypoint-autoencoder version 1",
                 "[node-1] rank 1: epoch 1/1 loss 0.12"):
        assert line in text, text
    # One status line per change, in order.
    assert text.index("2 pending") < text.index("2 running") < text.index("2 succeeded; Complete (JobsCompleted)")
    assert stub.count("DELETE", "trainjobs") == 0  # a finished job is left to its owner's garbage collection


def test_complete_reports_the_version_rank_0_registered_in_mlflow(tmp_path, tiny_dataset_uri, monkeypatch, capsys):
    """Rank 0's part for real: the training CLI, tracked on a fresh SQLite store with the KFP_RUN_ID a
    TrainJob's nodes get; then the task, seeing the job Complete, reads back what it registered."""
    from signpose.cli.train import main_for

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KFP_RUN_ID", "pipeline-run-42")
    monkeypatch.chdir(tmp_path)  # artifacts next to the store
    args = ["--data_path", tiny_dataset_uri, *TINY]
    assert main_for("face", args) == 0
    printed = capsys.readouterr().out
    monkeypatch.delenv("KFP_RUN_ID")
    out = io.StringIO()
    with KubeStub(script=[running(), complete()], logs=LOGS) as stub:
        outcome = run(stub, out, args=args, run_id="pipeline-run-42", mlflow_tracking_uri=uri)
    assert outcome["tracked"] and outcome["model_name"] == "face-keypoint-autoencoder"
    assert f"registered {outcome['model_name']} version {outcome['model_version']} ({outcome['alias']}" in printed
    assert f"MLflow run {outcome['run_id']}" in printed
    assert outcome["model_uri"] == f"models:/face-keypoint-autoencoder/{outcome['model_version']}"
    assert outcome["alias"] == "champion" and "val/nme" in outcome["metrics"]
    assert f"rank 0 registered face-keypoint-autoencoder version {outcome['model_version']}" in out.getvalue()
    env = {e["name"]: e.get("value") for e in stub.posted_jobs()[0]["spec"]["trainer"]["env"]}
    assert env["KFP_RUN_ID"] == "pipeline-run-42" and env["MLFLOW_TRACKING_URI"] == uri
    # Another pipeline run's job finds nothing of its own to report.
    with KubeStub(script=[complete()]) as stub, pytest.raises(TrainJobError, match="no MLflow run tagged"):
        run(stub, io.StringIO(), args=args, run_id="pipeline-run-43", mlflow_tracking_uri=uri)


# ---- failure ------------------------------------------------------------------------------------------

def test_a_failed_job_fails_the_task_naming_the_job_the_reason_and_the_failed_node():
    failed = Frame(("Failed", "Succeeded"), ("Failed", "FailedJobs", "jobset failed: node-0 exceeded its backoff limit"),
                   exit_codes={0: 137, 1: 0}, termination_reasons={0: "OOMKilled"})
    out = io.StringIO()
    with KubeStub(script=[running(), failed], logs={0: "CUDA out of memory\n"}) as stub:
        with pytest.raises(TrainJobFailed) as info:
            run(stub, out)
    message = str(info.value)
    name = job_name("face", "run-1")
    assert message.startswith(f"TrainJob {NS}/{name} failed: FailedJobs: jobset failed: node-0 exceeded")
    assert f"node-0 (pod {name}-node-0-0-00000): exit code 137 (OOMKilled)" in message
    assert "node-1" not in message.split("\n", 1)[1].split("(the nodes")[0]
    assert "[node-0] CUDA out of memory" in out.getvalue()
    assert stub.count("DELETE", "trainjobs") == 0  # kept for inspection; its pods hold nothing any more


def test_without_kubeflow_trainer_installed_the_error_says_what_to_install():
    with KubeStub(serves_trainjobs=False) as stub, pytest.raises(TrainJobError, match="install Kubeflow Trainer v2"):
        run(stub, io.StringIO())


def test_without_the_charts_rbac_the_error_names_the_chart_value():
    with KubeStub(forbidden=True) as stub, pytest.raises(TrainJobError, match="multiNode.enabled=true") as info:
        run(stub, io.StringIO())
    assert "cannot post resource" in str(info.value)


def test_a_data_set_replaced_since_the_pipeline_committed_it_stops_the_task_before_any_node_is_scheduled(
        tiny_dataset_uri):
    from signpose.shards import read_manifest
    from signpose.train.entry import DatasetReplacedError

    args = ("--data_path", tiny_dataset_uri, *TINY, "--no_track")
    with KubeStub(script=[complete()]) as stub:
        with pytest.raises(DatasetReplacedError, match="another run replaced it"):
            run(stub, io.StringIO(), args=args, expected_dataset_hash="0" * 64)
        assert stub.calls() == []
        run(stub, io.StringIO(), args=args, expected_dataset_hash=read_manifest(tiny_dataset_uri).dataset_hash)
        assert stub.count("POST", "trainjobs") == 1


# ---- cancellation -------------------------------------------------------------------------------------

@pytest.fixture
def python_ctrl_c():
    """A process started in the background by a non-interactive shell (as a CI runner may start the
    tests) inherits SIGINT ignored, and Python keeps it ignored: give the test Python's Ctrl-C handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, TrainJobCancelled), (signal.SIGINT, KeyboardInterrupt)],
                         ids=["sigterm", "ctrl-c"])
def test_stopping_the_task_while_it_watches_deletes_the_job(signum, raised, python_ctrl_c):
    out = io.StringIO()
    name = job_name("face", "run-1")
    with KubeStub(script=[running()], logs=LOGS) as stub:
        sender = send_when(stub, lambda: stub.looks.get((NS, name), 0) >= 2, signum)
        with pytest.raises(raised):
            run(stub, out)
        sender.join()
        deletes = [r for r in stub.requests if r["method"] == "DELETE"]
    assert [r["path"] for r in deletes] == [f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}"]
    assert deletes[0]["query"]["propagationPolicy"] == ["Background"]
    assert f"TrainJob {NS}/{name}: " in out.getvalue() and ": deleted" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the task's own handler is restored


# ---- a retried task -----------------------------------------------------------------------------------

def test_a_retried_task_follows_the_job_its_earlier_attempt_left_running():
    from signpose.deploy.trainjob_manifest import TrainJobRequest, build_trainjob

    name = job_name("face", "run-1")
    earlier = build_trainjob(TrainJobRequest(name=name, namespace=NS, task="face", nodes=2, gpus_per_node=1,
                                             image="x", command_args=(), pipeline_run_id="run-1"))
    out = io.StringIO()
    with KubeStub(script=[running(), complete()]) as stub:
        stub.add_job(earlier)
        outcome = run(stub, out)
        assert stub.count("POST", "trainjobs") == 1 and stub.count("DELETE", "trainjobs") == 0
    assert outcome["trainjob"] == name and "an earlier attempt of this task started it; following it" in out.getvalue()


def test_a_retried_task_replaces_the_job_its_earlier_attempt_left_failed():
    from signpose.deploy.trainjob_manifest import TrainJobRequest, build_trainjob

    name = job_name("face", "run-1")
    earlier = build_trainjob(TrainJobRequest(name=name, namespace=NS, task="face", nodes=2, gpus_per_node=1,
                                             image="x", command_args=(), pipeline_run_id="run-1"))
    failed = Frame(("Failed", "Failed"), ("Failed", "FailedJobs", "earlier"))
    out = io.StringIO()
    with KubeStub(script=[running(), complete()]) as stub:
        stub.add_job(earlier, failed)
        stub.looks[(NS, name)] = 1  # the earlier attempt looked at it
        run(stub, out)
        methods = [m for m, p in stub.calls() if "trainjobs" in p]
    assert methods[:3] == ["POST", "GET", "DELETE"] and methods.count("POST") == 2
    assert "replacing it" in out.getvalue()


def test_a_job_of_the_same_name_from_another_run_is_never_touched():
    from signpose.deploy.trainjob_manifest import TrainJobRequest, build_trainjob

    name = job_name("face", "run-1")
    foreign = build_trainjob(TrainJobRequest(name=name, namespace=NS, task="face", nodes=2, gpus_per_node=1,
                                             image="x", command_args=(), pipeline_run_id="another-run"))
    with KubeStub() as stub:
        stub.add_job(foreign)
        with pytest.raises(TrainJobError, match="belongs to another task or pipeline run"):
            run(stub, io.StringIO())
        assert stub.count("DELETE", "trainjobs") == 0


def test_the_stubs_job_status_has_the_crds_shape():
    """tests/k8s_stub.py answers with the status the CRD declares (so the watch tests read real shapes)."""
    from test_trainjob_manifest import request, schema_errors

    from signpose.deploy.trainjob_manifest import build_trainjob
    from signpose.deploy.trainjob_watch import TrainJobApi

    body = build_trainjob(request())
    with KubeStub(script=[running(), complete()]) as stub:
        api = TrainJobApi(api_client(stub), body["metadata"]["namespace"])
        api.create(body)
        for _ in range(2):
            job = api.get(body["metadata"]["name"])
            assert not schema_errors(job), schema_errors(job)
    assert job["status"]["conditions"][0]["type"] == "Complete"


# ---- the client's configuration -------------------------------------------------------------------

def test_outside_a_cluster_the_kubeconfig_names_server_namespace_and_token(tmp_path, monkeypatch):
    with KubeStub(script=[complete()]) as stub:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
            "users": [{"name": "task", "user": {"token": "sa-t0ken"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "task", "namespace": "team-a"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        outcome = run_multinode_training("face", 2, 0, "img", ["--data_path", "d", "--no_track"],
                                         pipeline_run_id="r", poll_interval_s=0.01, out=io.StringIO())
        [post] = [r for r in stub.requests if r["method"] == "POST"]
    assert outcome["namespace"] == "team-a" and post["path"].endswith("/namespaces/team-a/trainjobs")
    assert post["headers"]["authorization"] == "Bearer sa-t0ken"


# ---- RBAC: the chart grants exactly what the client calls ---------------------------------------------

def _rbac_calls(stub: KubeStub) -> set[tuple[str, str, str]]:
    """(api group, resource, verb) of every request the stub saw, as the API server's authorizer names them."""
    calls = set()
    for r in stub.requests:
        if m := re.match(r"^/apis/([^/]+)/[^/]+/namespaces/[^/]+/([^/]+)(/[^/]+)?$", r["path"]):
            group, resource, item = m.group(1), m.group(2), m.group(3)
        elif m := re.match(r"^/api/v1/namespaces/[^/]+/([^/]+)(/[^/]+)?(/[^/]+)?$", r["path"]):
            group, resource, item = "", m.group(1) + (m.group(3) or ""), m.group(2)
        else:
            raise AssertionError(f"unexpected call {r['method']} {r['path']}")
        verb = {"POST": "create", "DELETE": "delete", "GET": "get" if item else "list"}[r["method"]]
        calls.add((group, resource, verb))
    return calls


def test_the_charts_role_grants_exactly_the_calls_submit_watch_and_cancel_make():
    pytest.importorskip("helm_python")
    from tools import chartcheck

    name = job_name("face", "run-1")
    with KubeStub(script=[running(), complete()], logs=LOGS) as stub:
        run(stub, io.StringIO())
        made = _rbac_calls(stub)
    with KubeStub(script=[running()], logs=LOGS) as stub:
        send_when(stub, lambda: stub.looks.get((NS, name), 0) >= 2, signal.SIGTERM)
        with pytest.raises(TrainJobCancelled):
            run(stub, io.StringIO())
        made |= _rbac_calls(stub)
    objects, _ = chartcheck.render_chart({"multiNode": {"enabled": True}, "pipelineEnv": {"namespace": NS}},
                                         release="signpose", namespace="mlops")
    [role] = [o.doc for o in objects if o.kind == "Role" and o.name == "signpose-multinode-training"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert made == granted
