"""A loopback stub of the Kubernetes API: just what a TrainJob's submit / watch / cancel path calls.

It serves the ``trainer.kubeflow.org/v1alpha1`` ``trainjobs`` custom objects (create, get, delete), the
pods Kubeflow Trainer's JobSet would create for them (list by label) and their logs, and records every
request. The "controller" is a script of :class:`Frame` s per job: each GET of the job moves it to the
next frame (the last one stays), so a test decides what the client sees on its 1st, 2nd, ... look
without depending on time. Answers have the shapes of the real API server (JSON objects with
``kind``/``apiVersion``, ``Status`` objects for errors); the job's status has the CRD's shape
(tests/test_trainjob_manifest.py validates the stub's status objects against the upstream schema).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
STAMP = "2026-11-30T12:00:00Z"


@dataclass
class Frame:
    """What the job and its node pods look like at one look."""

    phases: tuple[str, ...] = ()            # one pod phase per node ("Pending", "Running", "Succeeded", "Failed")
    condition: tuple[str, str, str] | None = None  # (type, reason, message): Complete / Failed / Suspended
    exit_codes: dict[int, int] = field(default_factory=dict)  # node index -> its container's exit code
    termination_reasons: dict[int, str] = field(default_factory=dict)


def running(nodes: int = 2) -> Frame:
    return Frame(("Running",) * nodes)


def complete(nodes: int = 2) -> Frame:
    return Frame(("Succeeded",) * nodes, ("Complete", "JobsCompleted", "jobset completed successfully"),
                 dict.fromkeys(range(nodes), 0))


def status_object(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class KubeStub:
    def __init__(self, *, script: list[Frame] | None = None, logs: dict[int, str] | None = None,
                 serves_trainjobs: bool = True, forbidden: bool = False):
        self.script = list(script or [running(), complete()])
        self.logs = dict(logs or {})
        self.serves_trainjobs = serves_trainjobs
        self.forbidden = forbidden
        self.requests: list[dict] = []
        self.jobs: dict[tuple[str, str], dict] = {}
        self.looks: dict[tuple[str, str], int] = {}
        self.changed = threading.Condition(threading.RLock())
        self._uids = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                record = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": json.loads(raw) if raw else None}
                with stub.changed:  # recorded before the client can see the answer
                    stub.requests.append(record)
                    status, payload = stub.answer(record)
                    stub.changed.notify_all()
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    # ---- the test's side ----------------------------------------------------------------------------

    def __enter__(self) -> KubeStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 120.0) -> None:
        """Block until ``predicate()`` holds after some request (the timeout only guards against a hang)."""
        with self.changed:
            if not self.changed.wait_for(predicate, timeout=timeout_s):
                raise AssertionError(f"stub: condition not reached; requests: {self.calls()}")

    def calls(self) -> list[tuple[str, str]]:
        with self.changed:
            return [(r["method"], r["path"]) for r in self.requests]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.calls() if m == method and re.search(pattern, p))

    def posted_jobs(self) -> list[dict]:
        with self.changed:
            return [r["body"] for r in self.requests if r["method"] == "POST" and TRAINJOBS.match(r["path"])]

    def add_job(self, body: dict, frame: Frame | None = None) -> None:
        """A job that exists before the client starts (an earlier attempt's), showing ``frame``."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.jobs[key] = self._created(body, [frame] if frame else None)

    # ---- the API server's side ----------------------------------------------------------------------

    def answer(self, r: dict):
        path, method = r["path"], r["method"]
        if match := TRAINJOBS.match(path):
            if self.forbidden:
                return 403, status_object(403, "Forbidden", f'trainjobs.trainer.kubeflow.org is forbidden: User '
                                          f'"system:serviceaccount:{match.group(1)}:default-editor" cannot '
                                          f'{method.lower()} resource "trainjobs"')
            if not self.serves_trainjobs:
                return 404, status_object(404, "NotFound", "the server could not find the requested resource")
            return self._trainjob(method, match.group(1), match.group(2), r["body"])
        if (match := PODS.match(path)) and method == "GET":
            selector = r["query"].get("labelSelector", [""])[0]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                         "items": self._pods(match.group(1), selector)}
        if (match := POD_LOG.match(path)) and method == "GET":
            index = int(match.group(2).split("-node-")[1].split("-")[0])
            return 200, self.logs.get(index, "")
        return 404, status_object(404, "NotFound", f"stub has no route for {method} {path}")

    def _created(self, body: dict, script: list[Frame] | None) -> dict:
        job = json.loads(json.dumps(body))
        job["metadata"].update(uid=str(uuid.UUID(int=next(self._uids))), creationTimestamp=STAMP,
                               resourceVersion="1", generation=1)
        job["_script"] = list(script or self.script)
        return job

    def _trainjob(self, method: str, namespace: str, name: str | None, body: dict | None):
        with self.changed:
            if method == "POST" and name is None:
                key = (namespace, body["metadata"]["name"])
                if key in self.jobs:
                    return 409, status_object(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{key[1]}" '
                                              "already exists")
                self.jobs[key] = self._created(body, None)
                return 201, self._public(self.jobs[key])
            key = (namespace, name)
            if key not in self.jobs:
                return 404, status_object(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
            if method == "GET":
                self.looks[key] = self.looks.get(key, 0) + 1
                return 200, self._public(self.jobs[key])
            if method == "DELETE":
                del self.jobs[key]
                return 200, status_object(200, "", "") | {"status": "Success"}
        return 405, status_object(405, "MethodNotAllowed", f"{method} not allowed")

    def frame(self, key: tuple[str, str]) -> Frame:
        script = self.jobs[key]["_script"]
        return script[min(max(self.looks.get(key, 1), 1), len(script)) - 1]

    def _public(self, job: dict) -> dict:
        out = {k: v for k, v in job.items() if k != "_script"}
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        condition = self.frame(key).condition if self.looks.get(key) else None
        out["status"] = {"conditions": [] if condition is None else [
            {"type": condition[0], "status": "True", "reason": condition[1], "message": condition[2],
             "lastTransitionTime": STAMP}]}
        return out

    def _pods(self, namespace: str, selector: str) -> list[dict]:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        pods = []
        with self.changed:
            for ns, name in list(self.jobs):
                if ns != namespace or not self.looks.get((ns, name)):
                    continue
                frame = self.frame((ns, name))
                for index, phase in enumerate(frame.phases):
                    labels = {"jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                              "batch.kubernetes.io/job-completion-index": str(index)}
                    if all(labels.get(k) == v for k, v in wanted.items()):
                        pods.append(self._pod(ns, name, index, phase, frame))
        return pods

    @staticmethod
    def _pod(namespace: str, job: str, index: int, phase: str, frame: Frame) -> dict:
        state: dict = {"running": {"startedAt": STAMP}} if phase == "Running" else {"waiting": {"reason": "Pending"}}
        if phase in {"Succeeded", "Failed"}:
            code = frame.exit_codes.get(index, 0 if phase == "Succeeded" else 1)
            state = {"terminated": {"exitCode": code, "reason": frame.termination_reasons.get(
                index, "Completed" if code == 0 else "Error"), "startedAt": STAMP, "finishedAt": STAMP}}
        pod_name = f"{job}-node-{index}-0-{index:05d}"
        return {"metadata": {"name": pod_name, "namespace": namespace, "uid": f"uid-{pod_name}",
                             "labels": {"jobset.sigs.k8s.io/jobset-name": job,
                                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                        "batch.kubernetes.io/job-completion-index": str(index)}},
                "spec": {"containers": [{"name": "node", "image": "signpose-train"}]},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "node", "image": "signpose-train", "imageID": "", "ready": phase == "Running",
                     "restartCount": 0, "state": state}]}}
