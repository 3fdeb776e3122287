"""`signpose submit` / `signpose schedule` against a stub KFP API server on loopback.

The client (kfp.Client), the request bodies and the compiled pipeline are real; only the server is
a stub that records every request and answers like KFP's v2beta1 REST API.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from signpose.cli import kfp
from signpose.cli import main as cli_main

API = "/apis/v2beta1"


class KfpStub:
    """Records requests; keeps experiments and recurring runs like the real API server does."""

    def __init__(self):
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self._ids = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                record = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": json.loads(raw) if raw else None}
                stub.requests.append(record)
                status, payload = stub.answer(record)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def next_id(self, prefix):
        return f"{prefix}-{next(self._ids)}"

    def answer(self, r):
        method, path, body = r["method"], r["path"], r["body"]
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments":
            if method == "GET":
                wanted = _filter_name(r["query"])
                found = [e for e in self.experiments.values() if e["display_name"] == wanted]
                return 200, {"experiments": found, "total_size": len(found)} if found else {}
            if method == "POST":
                exp = dict(body, experiment_id=self.next_id("exp"))
                self.experiments[exp["experiment_id"]] = exp
                return 200, exp
        if method == "POST" and path == f"{API}/runs":
            return 200, dict(body, run_id=self.next_id("run"), state="PENDING")
        if path == f"{API}/recurringruns":
            if method == "GET":
                wanted = _filter_name(r["query"])
                found = [j for j in self.recurring_runs.values()
                         if j["display_name"] == wanted
                         and j.get("experiment_id") == r["query"].get("experiment_id", [None])[0]]
                return 200, {"recurringRuns": found, "total_size": len(found)} if found else {}
            if method == "POST":
                job = dict(body, recurring_run_id=self.next_id("rr"), status="ENABLED")
                self.recurring_runs[job["recurring_run_id"]] = job
                return 200, job
        if method == "DELETE" and path.startswith(f"{API}/recurringruns/"):
            self.recurring_runs.pop(path.rsplit("/", 1)[1], None)
            return 200, {}
        return 404, {"error": f"stub has no route for {method} {path}"}

    def posted(self, path):
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == f"{API}/{path}"]


def _filter_name(query):
    predicates = json.loads(query.get("filter", ["{}"])[0]).get("predicates", [])
    return next((p.get("stringValue") or p.get("string_value") for p in predicates
                 if p["key"] == "display_name"), None)


@pytest.fixture
def kfp_server():
    stub = KfpStub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture(autouse=True)
def hermetic_client(monkeypatch, tmp_path):
    import kfp.client.client as kfp_client

    # No user context file, token or in-cluster ServiceAccount token from this machine.
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT",
                "SIGNPOSE_PIPELINE_PACKAGE", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The project's real pipeline, compiled."""
    from pipelines.training_pipeline import compile_pipeline

    return Path(compile_pipeline(tmp_path_factory.mktemp("compiled") / "signpose_training.yaml"))


@pytest.fixture(scope="module")
def compiled(package) -> dict:
    """{'pipeline_spec': first YAML document, 'platform_spec': the Kubernetes one}."""
    docs = [d for d in yaml.safe_load_all(package.read_text()) if d]
    return {"pipeline_spec": docs[0], "platform_spec": docs[1] if len(docs) > 1 else None}


def run_cli(*argv) -> int:
    return cli_main([str(a) for a in argv])


# ---- submit ---------------------------------------------------------------------------------------

def test_submit_sends_the_compiled_pipeline_with_typed_parameters_and_prints_id_and_link(
        kfp_server, package, compiled, capsys):
    rc = run_cli("submit", "--host", kfp_server.url, "--package", package, "--experiment", "signpose-dev",
                 "--run_name", "first", "--param", "input_uri=s3://signpose/incoming/",
                 "--param", "skeleton_epochs=5", "--param", "hand_weight=3",
                 "--param", 'face_overrides={"n_heads": 4}', "--param", "gpu_count=2")
    out = capsys.readouterr().out
    assert rc == 0, out
    [run] = kfp_server.posted("runs")
    body = run["body"]
    assert body["display_name"] == "first"
    assert body["experiment_id"] in kfp_server.experiments
    assert kfp_server.experiments[body["experiment_id"]]["display_name"] == "signpose-dev"
    # The whole compiled pipeline, Kubernetes platform spec included, travels in the request unchanged.
    assert body["pipeline_spec"] == compiled
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "signpose-training"
    assert compiled["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    params = body["runtime_config"]["parameters"]
    # gpu_count is a STRING parameter (the KFP driver reads the GPU limit only from a string): 2 -> "2"
    assert params == {"input_uri": "s3://signpose/incoming/", "skeleton_epochs": 5, "hand_weight": 3.0,
                      "face_overrides": {"n_heads": 4}, "gpu_count": "2"}
    run_id = re.search(r"run id: (\S+)", out)
    assert run_id and run_id.group(1).startswith("run-"), out
    assert f"run link: {kfp_server.url}/#/runs/details/{run_id.group(1)}" in out, out


def test_submit_creates_the_experiment_once_and_reuses_it(kfp_server, package, capsys):
    for _ in range(2):
        assert run_cli("submit", "--host", kfp_server.url, "--package", package) == 0
    assert len(kfp_server.posted("experiments")) == 1
    assert kfp_server.posted("experiments")[0]["body"]["display_name"] == "signpose"
    runs = kfp_server.posted("runs")
    assert len(runs) == 2 and runs[0]["body"]["experiment_id"] == runs[1]["body"]["experiment_id"]


def test_submit_sends_the_token_as_a_bearer_header_and_never_prints_it(kfp_server, package, tmp_path,
                                                                        capsys):
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-t0ken\n")
    assert run_cli("submit", "--host", kfp_server.url, "--package", package, "--token_file", token_file) == 0
    [run] = kfp_server.posted("runs")
    assert run["headers"].get("authorization") == "Bearer s3cr3t-t0ken"
    captured = capsys.readouterr()
    assert "s3cr3t" not in captured.out + captured.err


def test_compiled_pipeline_sent_to_kfp_names_secrets_but_holds_no_credential_values(kfp_server, package):
    assert run_cli("submit", "--host", kfp_server.url, "--package", package) == 0
    [run] = kfp_server.posted("runs")
    sent = json.dumps(run["body"])
    assert "signpose-s3" in sent and "AWS_SECRET_ACCESS_KEY" in sent  # names and keys only
    for param in run["body"]["pipeline_spec"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]:
        assert not any(w in param.lower() for w in ("password", "secret", "token", "access_key"))


def test_submit_refuses_an_unknown_parameter_before_contacting_kfp(kfp_server, package, capsys):
    rc = run_cli("submit", "--host", kfp_server.url, "--package", package, "--param", "epochs=3")
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown pipeline parameter(s) ['epochs']" in err and "skeleton_epochs" in err
    assert kfp_server.requests == []


def test_submit_refuses_a_wrongly_typed_parameter(kfp_server, package, capsys):
    rc = run_cli("submit", "--host", kfp_server.url, "--package", package, "--param", "skeleton_epochs=many")
    assert rc == 2 and "expects NUMBER_INTEGER" in capsys.readouterr().err
    assert kfp_server.requests == []


def test_submit_refuses_credentials_embedded_in_a_uri_parameter(kfp_server, package, capsys):
    rc = run_cli("submit", "--host", kfp_server.url, "--package", package,
                 "--param", "mlflow_tracking_uri=http://admin:hunter2hunter2@mlflow:5000")
    assert rc == 2 and "Kubernetes Secrets" in capsys.readouterr().err
    assert kfp_server.requests == []


def test_submit_without_host_says_how_to_give_one(package, capsys):
    assert run_cli("submit", "--package", package) == 2
    assert "--host is required" in capsys.readouterr().err


def test_missing_package_is_named(kfp_server, tmp_path, capsys):
    assert run_cli("submit", "--host", kfp_server.url, "--package", tmp_path / "nope.yaml") == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


# ---- schedule -------------------------------------------------------------------------------------

def schedule(kfp_server, package, *extra):
    return run_cli("schedule", "--host", kfp_server.url, "--package", package, "--cron", "0 0 3 * * 1",
                   "--param", "input_uri=s3://signpose/incoming/", *extra)


def test_schedule_creates_an_enabled_cron_recurring_run_and_prints_id_and_link(kfp_server, package,
                                                                               compiled, capsys):
    assert schedule(kfp_server, package, "--name", "weekly", "--max_concurrency", "2") == 0
    out = capsys.readouterr().out
    [job] = kfp_server.posted("recurringruns")
    body = job["body"]
    assert body["display_name"] == "weekly"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["mode"] == "ENABLE"
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["runtime_config"]["parameters"] == {"input_uri": "s3://signpose/incoming/"}
    assert body["pipeline_spec"] == compiled
    assert body["experiment_id"] in kfp_server.experiments
    job_id = next(iter(kfp_server.recurring_runs))
    assert f"recurring run id: {job_id}" in out
    assert f"recurring run link: {kfp_server.url}/#/recurringrun/details/{job_id}" in out


def test_schedule_refuses_to_duplicate_an_existing_recurring_run_without_replace(kfp_server, package,
                                                                                  capsys):
    assert schedule(kfp_server, package) == 0
    first = set(kfp_server.recurring_runs)
    assert schedule(kfp_server, package) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--replace" in err
    assert set(kfp_server.recurring_runs) == first
    assert len(kfp_server.posted("recurringruns")) == 1


def test_schedule_with_replace_deletes_the_old_recurring_run_and_creates_a_new_one(kfp_server, package):
    assert schedule(kfp_server, package) == 0
    [old] = kfp_server.recurring_runs
    assert schedule(kfp_server, package, "--replace") == 0
    deletes = [r for r in kfp_server.requests if r["method"] == "DELETE"]
    assert [d["path"] for d in deletes] == [f"{API}/recurringruns/{old}"]
    assert len(kfp_server.recurring_runs) == 1 and old not in kfp_server.recurring_runs
    # Delete happens before the new one is created.
    order = [(r["method"], r["path"]) for r in kfp_server.requests if "recurringruns" in r["path"]]
    assert order.index(("DELETE", f"{API}/recurringruns/{old}")) < len(order) - 1
    assert order[-1] == ("POST", f"{API}/recurringruns")


def test_schedule_rejects_a_five_field_cron_and_explains_kfps_seconds_field(kfp_server, package, capsys):
    rc = run_cli("schedule", "--host", kfp_server.url, "--package", package, "--cron", "0 3 * * 1")
    assert rc == 2
    err = capsys.readouterr().err
    assert "expected 6 space-separated fields, got 5" in err and "seconds field first" in err
    assert kfp_server.requests == []


def test_params_json_and_param_flags_merge_with_flags_winning(kfp_server, package):
    rc = run_cli("schedule", "--host", kfp_server.url, "--package", package, "--cron", "0 0 3 * * 1",
                 "--params_json", '{"input_uri": "s3://a/", "store_uri": "s3://b/"}',
                 "--param", "input_uri=s3://c/")
    assert rc == 0
    params = kfp_server.posted("recurringruns")[0]["body"]["runtime_config"]["parameters"]
    assert params == {"input_uri": "s3://c/", "store_uri": "s3://b/"}


def test_add_parser_registers_both_commands_on_a_host_cli():
    import argparse

    parser = argparse.ArgumentParser(prog="signpose")
    kfp.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["schedule", "--host", "http://kfp", "--cron", "0 0 3 * * 1"])
    assert args.func is kfp.run_schedule_command
    args = parser.parse_args(["submit", "--host", "http://kfp"])
    assert args.func is kfp.run_submit_command
