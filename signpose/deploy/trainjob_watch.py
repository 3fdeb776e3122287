"""Submit a TrainJob, follow it to its end, and never leave a running one behind.

:func:`run_to_completion` is the task-side loop of :func:`signpose.deploy.trainjob.run_multinode_training`:
create the job (or take over the one an earlier attempt of the same task left), poll it, follow the
log of every node pod as it starts (each line prefixed ``[node-<i>]``), print a status line whenever
the node count per phase or a condition changes, and end on the ``Complete`` or ``Failed`` condition
that Kubeflow Trainer sets. A failed job raises :class:`~signpose.deploy.trainjob.TrainJobError` with
the condition's reason and message and each failed node's exit code. SIGTERM (KFP cancelling the
run stops the task's pod that way) and Ctrl-C delete the job, then raise :class:`TrainJobCancelled`
or ``KeyboardInterrupt``; any other error while watching deletes it too.

The Kubernetes calls, and so the RBAC the task's service account needs in the job's namespace
(charts/signpose, ``multiNode.enabled``): ``trainjobs`` create / get / delete, ``pods`` list,
``pods/log`` get.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from signpose.deploy.trainjob_manifest import (
    GROUP,
    JOBSET_NAME_LABEL,
    NODE,
    NODE_INDEX_LABEL,
    PLURAL,
    REPLICATED_JOB_LABEL,
    RUN_LABEL,
    TASK_LABEL,
    VERSION,
    TrainJobError,
    TrainJobFailed,
)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
LOG_TAIL_WAIT_S = 60.0  # after the job ends, how long the remaining log lines may take to arrive
GONE_WAIT_S = 600.0     # how long a replaced job may take to disappear


class TrainJobCancelled(BaseException):
    """The task was told to stop (SIGTERM) while its TrainJob ran; the job has been deleted.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


def default_api_client():
    """A Kubernetes API client: the pod's service account in a cluster, else the kubeconfig
    (``KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        # KUBECONFIG as it is now (the client reads its default location once, at import).
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return client.ApiClient(configuration)


def current_namespace() -> str:
    """The task pod's namespace, else the kubeconfig context's, else ``default``."""
    if os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as fh:
            return fh.read().strip()
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
    except (config.ConfigException, OSError):
        return "default"
    return (active or {}).get("context", {}).get("namespace") or "default"


def _api_message(exc) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


class TrainJobApi:
    """The few Kubernetes calls a TrainJob needs, in one namespace."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def where(self, name: str) -> str:
        return f"TrainJob {self.namespace}/{name}"

    def create(self, body: dict) -> str | None:
        """Create the job; None when one of that name exists already."""
        from kubernetes.client import ApiException

        name = body["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                return None
            hint = {
                404: f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: install Kubeflow Trainer v2 "
                     "and its torch-distributed runtime (docs/deploy.md, 'Many GPUs')",
                403: "the task's service account may not create TrainJobs here: install the signpose chart "
                     "with multiNode.enabled=true (and multiNode.serviceAccountName) in this namespace",
            }.get(exc.status, "refused")
            raise TrainJobError(f"{self.where(name)}: {hint}: {_api_message(exc)}") from exc
        return name

    def get(self, name: str) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise TrainJobError(f"{self.where(name)}: cannot read it: {_api_message(exc)}") from exc

    def delete(self, name: str) -> bool:
        """Delete the job (its JobSet and pods follow); False when it was gone already."""
        from kubernetes.client import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                        propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise TrainJobError(f"{self.where(name)}: cannot delete it: {_api_message(exc)}") from exc
        return True

    def node_pods(self, name: str) -> list:
        selector = f"{JOBSET_NAME_LABEL}={name},{REPLICATED_JOB_LABEL}={NODE}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def follow_log(self, pod_name: str) -> Iterator[str]:
        response = self.core.read_namespaced_pod_log(pod_name, self.namespace, container=NODE, follow=True,
                                                     _preload_content=False)
        try:
            for line in response:
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            response.release_conn()


# ---- what a job and its pods say --------------------------------------------------------------------

def _condition(job: dict, kind: str) -> dict | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def node_index(pod) -> str:
    return (pod.metadata.labels or {}).get(NODE_INDEX_LABEL, "?")


def status_line(api: TrainJobApi, name: str, job: dict, pods: list) -> str:
    phases: dict[str, int] = {}
    for pod in pods:
        phase = (pod.status.phase if pod.status else None) or "Pending"
        phases[phase] = phases.get(phase, 0) + 1
    nodes = (job.get("spec", {}).get("trainer") or {}).get("numNodes", "?")
    counts = ", ".join(f"{n} {phase.lower()}" for phase, n in sorted(phases.items())) or "no pods yet"
    conditions = [f"{c['type']}" + (f" ({c.get('reason')})" if c.get("reason") else "")
                  for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    return f"{api.where(name)}: {nodes} nodes: {counts}" + (f"; {', '.join(conditions)}" if conditions else "")


def failed_nodes(pods: list) -> list[str]:
    """``node-<i> (pod ...): exit code N (Reason): message`` for each node whose container failed."""
    found = []
    for pod in sorted(pods, key=node_index):
        for status in (pod.status.container_statuses or []) if pod.status else []:
            state = status.state.terminated if status.state else None
            if state is None and status.last_state is not None:
                state = status.last_state.terminated
            if status.name != NODE or state is None or not state.exit_code:
                continue
            detail = f" ({state.reason})" if state.reason else ""
            message = f": {state.message.strip()}" if state.message else ""
            found.append(f"node-{node_index(pod)} (pod {pod.metadata.name}): exit code {state.exit_code}{detail}"
                         f"{message}")
    return found


def failure_message(api: TrainJobApi, name: str, job: dict, pods: list) -> str:
    cond = _condition(job, "Failed") or {}
    text = f"{api.where(name)} failed: {cond.get('reason') or 'no reason given'}"
    if cond.get("message"):
        text += f": {cond['message']}"
    nodes = failed_nodes(pods)
    if nodes:
        text += "\n  " + "\n  ".join(nodes)
    return text + "\n(the nodes' logs are above, prefixed [node-<i>])"


# ---- following the nodes' logs ----------------------------------------------------------------------

class LogFollowers:
    """One thread per node pod, copying its log to ``out`` line by line with a ``[node-<i>]`` prefix."""

    def __init__(self, api: TrainJobApi, out: TextIO):
        self.api, self.out = api, out
        self.lock = threading.Lock()
        self.threads: dict[str, threading.Thread] = {}

    def update(self, pods: list) -> None:
        for pod in pods:
            uid = pod.metadata.uid or pod.metadata.name
            phase = pod.status.phase if pod.status else None
            if uid in self.threads or phase not in {"Running", "Succeeded", "Failed"}:
                continue
            thread = threading.Thread(target=self._copy, args=(pod.metadata.name, node_index(pod)), daemon=True,
                                      name=f"log-{pod.metadata.name}")
            self.threads[uid] = thread
            thread.start()

    def _copy(self, pod_name: str, index: str) -> None:
        try:
            for line in self.api.follow_log(pod_name):
                self.write(f"[node-{index}] {line}")
        except Exception as exc:  # noqa: BLE001 - a lost log stream must not stop the watch
            self.write(f"[node-{index}] (log stream of pod {pod_name} ended: {exc})")

    def write(self, line: str) -> None:
        with self.lock:
            print(line, file=self.out, flush=True)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in list(self.threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))


# ---- the loop -----------------------------------------------------------------------------------------

@dataclass
class Finished:
    name: str
    job: dict
    adopted: bool


@contextlib.contextmanager
def sigterm_cancels() -> Iterator[None]:
    """While inside: SIGTERM raises :class:`TrainJobCancelled` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TrainJobCancelled(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _same_request(existing: dict, body: dict) -> bool:
    labels = lambda obj: (obj.get("metadata") or {}).get("labels") or {}  # noqa: E731
    return all(labels(existing).get(k) == labels(body).get(k) for k in (TASK_LABEL, RUN_LABEL))


def submit(api: TrainJobApi, body: dict, out: TextIO, poll_interval_s: float) -> bool:
    """Create the job; when an earlier attempt of the same task left one: follow it if it runs or
    completed, replace it if it failed. Returns True when an existing job is followed."""
    name = body["metadata"]["name"]
    while api.create(body) is None:
        existing = api.get(name)
        if existing is None:
            continue  # deleted between our create and get: create again
        if not _same_request(existing, body):
            raise TrainJobError(f"{api.where(name)} exists and belongs to another task or pipeline run")
        if not _condition(existing, "Failed"):
            print(f"{api.where(name)}: an earlier attempt of this task started it; following it", file=out, flush=True)
            return True
        print(f"{api.where(name)}: an earlier attempt's job failed; replacing it", file=out, flush=True)
        api.delete(name)
        deadline = time.monotonic() + GONE_WAIT_S
        while api.get(name) is not None:
            if time.monotonic() > deadline:
                raise TrainJobError(f"{api.where(name)}: still there {GONE_WAIT_S:.0f} s after deleting it")
            time.sleep(poll_interval_s)
    spec = body["spec"]["trainer"]
    print(f"{api.where(name)}: submitted, {spec['numNodes']} nodes x {spec['numProcPerNode']} processes of "
          f"{spec['image']} on runtime {body['spec']['runtimeRef']['name']}", file=out, flush=True)
    return False


def watch(api: TrainJobApi, name: str, out: TextIO, poll_interval_s: float) -> dict:
    """Poll until Complete or Failed, following logs and printing status changes; returns the job."""
    followers = LogFollowers(api, out)
    last = None
    while True:
        job = api.get(name)
        if job is None:
            raise TrainJobError(f"{api.where(name)} disappeared while it ran (deleted by someone else?)")
        pods = api.node_pods(name)
        followers.update(pods)
        line = status_line(api, name, job, pods)
        if line != last:
            followers.write(line)
            last = line
        if _condition(job, "Complete") or _condition(job, "Failed"):
            break
        time.sleep(poll_interval_s)
    followers.join(LOG_TAIL_WAIT_S)
    if _condition(job, "Failed"):
        raise TrainJobFailed(failure_message(api, name, job, pods))
    return job


def _delete_on_the_way_out(api: TrainJobApi, name: str, why: str, out: TextIO) -> None:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not stop the delete
    try:
        deleted = api.delete(name)
        print(f"{api.where(name)}: {why}: {'deleted' if deleted else 'already gone'}", file=out, flush=True)
    except Exception as exc:  # noqa: BLE001 - report, then let the original exception through
        print(f"{api.where(name)}: {why}, but deleting it failed: {exc}", file=out, flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_to_completion(api: TrainJobApi, body: dict, *, out: TextIO, poll_interval_s: float = 10.0) -> Finished:
    """Submit ``body`` and follow it to Complete (returned) or Failed (raised); delete it if the task
    is stopped or the watch breaks."""
    name = body["metadata"]["name"]
    with sigterm_cancels():
        adopted = submit(api, body, out, poll_interval_s)
        try:
            job = watch(api, name, out, poll_interval_s)
        except TrainJobFailed:
            raise  # the job ended on its own: kept for inspection (its pods hold no resources)
        except TrainJobCancelled:
            _delete_on_the_way_out(api, name, "the task was stopped", out)
            raise
        except KeyboardInterrupt:
            _delete_on_the_way_out(api, name, "interrupted", out)
            raise
        except BaseException:
            _delete_on_the_way_out(api, name, "the watch broke", out)
            raise
    return Finished(name, job, adopted)
