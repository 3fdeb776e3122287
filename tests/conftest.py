"""Shared fixtures: a real S3 endpoint over HTTP (moto's server) for the whole test session, a tiny
preprocessed data set, and MLflow URIs isolated between tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server (a separate process) on a free loopback port.

    For the session, the environment points every boto3 client at it with fake credentials
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), so subprocesses and DataLoader workers use it too.
    """
    port = _free_loopback_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto server exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {endpoint} within 60 s")
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            # Keep a developer's real AWS profile and config out of the tests.
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
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
