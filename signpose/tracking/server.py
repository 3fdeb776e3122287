"""Starting a real ``mlflow server`` (the UI and REST API) on a local or S3-backed store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from signpose.tracking.settings import MlflowSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def listening_ports(process: subprocess.Popen, host: str | None = DEFAULT_HOST) -> list[int]:
    """The TCP ports that ``process`` and its descendants listen on at ``host`` (None: any address),
    read from the kernel's socket table (empty while nothing listens yet). A server started with
    ``--port 0`` gets its port from the kernel when it binds, so no other process can take it between
    choosing and binding, and this reads it back."""
    try:
        root = psutil.Process(process.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    ports = set()
    for member in family:
        try:
            connections = member.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        ports.update(conn.laddr.port for conn in connections
                     if conn.status == psutil.CONN_LISTEN and conn.laddr and host in (None, conn.laddr.ip))
    return sorted(ports)


def wait_until_listening(process: subprocess.Popen, port: int | None = None, timeout_s: float = 120.0,
                         log_path: Path | None = None, host: str | None = DEFAULT_HOST) -> int:
    """Waits until ``process`` (or a child) listens on ``host`` (on ``port`` when given) and returns the
    port; fails as soon as it exits (e.g. the port was taken: "Address already in use")."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"server (pid {process.pid}) exited with code {process.returncode}:\n{tail}")
        found = listening_ports(process, host)
        if found and (port is None or port in found):
            return port or found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"server (pid {process.pid}) did not listen on {host or 'any address'}"
                               f"{f' port {port}' if port else ''} within {timeout_s:.0f} s")
        time.sleep(0.1)


def server_command(backend_store_uri: str, artifacts_destination: str | None, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORT, workers: int = 1) -> list[str]:
    """``mlflow server`` serving artifacts itself (clients upload through ``mlflow-artifacts:/``, so
    they need no credentials for the artifact store)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--host", host, "--port", str(port), "--workers", str(workers), "--serve-artifacts"]
    if artifacts_destination:
        command += ["--artifacts-destination", artifacts_destination]
    return command


def ui_command(settings: MlflowSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> list[str]:
    """The server for the local store of ``settings`` (what ``make ui`` runs)."""
    if settings.is_remote_server:
        raise ValueError(f"the tracking URI is already a server: {settings.tracking_uri}; open it in a browser")
    destination = settings.artifact_location
    if destination and destination.startswith("file:"):
        Path(destination[len("file://"):] if destination.startswith("file://") else destination[5:]).mkdir(
            parents=True, exist_ok=True)
    return server_command(settings.tracking_uri, destination, host, port)


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout_s: float = 120.0,
                       log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"mlflow server exited with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow server at {url} did not become healthy within {timeout_s:.0f} s")
        time.sleep(0.25)


@dataclass
class MlflowServer:
    """A running ``mlflow server`` subprocess; a context manager that stops it on exit.

    >>> with MlflowServer.start("sqlite:////tmp/db.sqlite", "s3://bucket/artifacts", log_dir) as server:
    ...     MlflowClient(server.url)
    """

    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, backend_store_uri: str, artifacts_destination: str | None, log_dir: str | os.PathLike,
              port: int | None = None, env: dict[str, str] | None = None, timeout_s: float = 120.0,
              workers: int = 1) -> "MlflowServer":
        """Starts the server and waits until it answers ``/health``. Without ``port`` it binds port 0
        (the kernel picks a free one when the server binds) and the port is read back from the server's
        own listening socket: nothing can take it in between. With ``port`` it must be free (a restart
        on the port clients already know)."""
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"mlflow_server_{port or 'auto'}_{os.getpid()}_{time.monotonic_ns()}.log"
        full_env = {**os.environ, **(env or {})}
        # The server must not inherit a client's tracking URI (it is the tracking server).
        full_env.pop("MLFLOW_TRACKING_URI", None)
        full_env.pop("MLFLOW_REGISTRY_URI", None)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(server_command(backend_store_uri, artifacts_destination, port=port or 0,
                                                      workers=workers),
                                       stdout=log_file, stderr=subprocess.STDOUT, env=full_env,
                                       start_new_session=True)
        server = cls("", process, log_path, dict(env or {}))
        try:
            deadline = time.monotonic() + timeout_s
            bound = wait_until_listening(process, port, timeout_s, log_path)
            server.url = f"http://{DEFAULT_HOST}:{bound}"
            wait_until_healthy(server.url, process, max(1.0, deadline - time.monotonic()), log_path)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # The server forks uvicorn workers into its own session: stop the whole group it leads.
        try:
            os.killpg(self.process.pid, 15)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
