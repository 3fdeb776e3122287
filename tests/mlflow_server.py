"""A real ``mlflow server`` for tests: SQLite backend, artifacts proxied to S3 (moto) or a folder.

Reuse from any test module::

    from mlflow_server import mlflow_server  # noqa: F401  (the fixture)

or call ``start_test_server(tmp_dir, s3_endpoint, "s3://bucket/prefix")`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signpose.tracking.server import MlflowServer


def start_test_server(tmp_dir: str | os.PathLike, s3_endpoint: str | None = None,
                      artifacts_destination: str | None = None) -> MlflowServer:
    """Start ``mlflow server`` on a free loopback port; the caller stops it (or uses ``with``).

    ``artifacts_destination``: ``s3://bucket/prefix`` on ``s3_endpoint`` (moto), or None for a
    folder under ``tmp_dir``.
    """
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    env = {}
    if s3_endpoint:
        # MLflow's S3 artifact repository reads MLFLOW_S3_ENDPOINT_URL; boto3 reads AWS_ENDPOINT_URL.
        env = {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "AWS_ENDPOINT_URL": s3_endpoint,
               "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
               "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
               "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    destination = artifacts_destination or (tmp / "artifacts").resolve().as_uri()
    return MlflowServer.start(f"sqlite:///{(tmp / 'mlflow.db').resolve()}", destination, tmp, env=env)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, s3_endpoint):
    """A module-wide MLflow server whose artifacts live in a fresh bucket on the moto S3 server."""
    import uuid

    import boto3

    bucket = f"mlflow-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    with start_test_server(tmp_path_factory.mktemp("mlflow_server"), s3_endpoint,
                           f"s3://{bucket}/mlartifacts") as server:
        server.bucket = bucket
        yield server
