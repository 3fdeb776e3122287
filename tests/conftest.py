"""Shared fixtures: a real S3 endpoint over HTTP (moto's server) for the whole test session, a tiny
preprocessed data set, and MLflow URIs isolated between tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

# The server binds port 0 itself and prints the port it got: a port picked here and passed on could be
# taken by another process (another test run on this machine) before the server binds it.
_MOTO_SERVER = """
import os, threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
port = server.get_host_and_port()[1]
os.environ["MOTO_PORT"] = str(port)  # as moto's own command line does
print(port, flush=True)
os.dup2(2, 1)  # nobody reads the pipe after the port: later output goes to the log
threading.Event().wait()
"""
_SERVER_START_GUARD_S = 120  # a hang guard only: the server is up in seconds, slower on a loaded machine


def _read_port(server: subprocess.Popen, log_path, deadline: float) -> int:
    """The port the server process announces on its first stdout line, waiting for it until ``deadline``."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        while not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                server.kill()
                pytest.fail(f"moto server announced no port within {_SERVER_START_GUARD_S} s: "
                            f"{log_path.read_text()[-2000:]}")
    line = server.stdout.readline()
    if not line.strip().isdigit():
        server.wait()
        pytest.fail(f"moto server exited with {server.returncode}: {log_path.read_text()[-2000:]}")
    return int(line)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server (a separate process) on a free loopback port.

    For the session, the environment points every boto3 client at it with fake credentials
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), so subprocesses and DataLoader workers use it too.
    """
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen([sys.executable, "-c", _MOTO_SERVER], stdout=subprocess.PIPE, stderr=log_file)
    try:
        deadline = time.monotonic() + _SERVER_START_GUARD_S
        endpoint = f"http://127.0.0.1:{_read_port(server, log_path, deadline)}"
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto server exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {endpoint} within {_SERVER_START_GUARD_S} s")
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            # Keep a developer's real AWS profile and config out of the tests.
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
                         # signpose's own S3 variables win over AWS_* (signpose/s3_env.py)
                         "SIGNPOSE_S3_ENDPOINT_URL", "SIGNPOSE_S3_ACCESS_KEY_ID", "SIGNPOSE_S3_SECRET_ACCESS_KEY",
                         "SIGNPOSE_S3_SESSION_TOKEN", "SIGNPOSE_S3_REGION"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_CONFIG_FILE", os.devnull)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()


@pytest.fixture(scope="session")
def tiny_dataset_uri(tmp_path_factory) -> str:
    """A preprocessed data set of 4 generated videos x 8 frames at 32 px (shard size 8), written once
    per session by the real preprocess stage. Read-only: tests that write must make their own."""
    from signpose import stages

    root = tmp_path_factory.mktemp("tiny-data") / "dataset"
    stages.preprocess("", str(root), image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8,
                      workers=1)
    return str(root)


@pytest.fixture
def tiny_store_copy(tmp_path, tiny_dataset_uri):
    """A private, writable copy of :func:`tiny_dataset_uri` at ``tmp_path / "store"`` (a ``Path``), for tests
    that damage or add to a committed store."""
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(tiny_dataset_uri, copy)
    return copy


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the session's S3 endpoint; returns ``s3://<bucket>``."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris():
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI into ``os.environ``: without this,
    one test's (since stopped) server would become every later test's default tracking URI."""
    from tracking_fixtures import set_environ, set_mlflow_uris

    saved = {name: os.environ.get(name) for name in _MLFLOW_URI_VARS}
    yield
    if "mlflow" in sys.modules:  # MLflow's globals too (importing it here just to reset would be slow)
        set_mlflow_uris(saved["MLFLOW_TRACKING_URI"], saved["MLFLOW_REGISTRY_URI"])
    else:
        set_environ(saved)


@pytest.fixture(scope="session", autouse=True)
def _promotion_locks_in_a_temporary_cache(tmp_path_factory):
    """Promotions against a test's MLflow server without a configured lock use a per-user cache folder
    (signpose/tracking/lease.py); keep those lease records out of the developer's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
