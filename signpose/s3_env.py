"""signpose's own S3 settings variables, kept apart from the ``AWS_*`` ones.

A KFP task's launcher runs in the task's own container and, when its pipeline root is configured
``fromEnv``, uploads the task's artifacts with the AWS SDK's default configuration: the container's
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` (kubeflow/pipelines
``backend/src/v2/objectstore/object_store.go``, ``createS3BucketSession`` / ``newS3Client`` ->
``awsconfig.LoadDefaultConfig``, at commit 7b70c7b95f6832772efd6fd0029a4024491a0f44). Pipeline pods
therefore get signpose's S3 identity under the names below (signpose/deploy/cluster.py, the chart's
``signpose-pipeline-env`` objects), and :class:`signpose.store.S3Store` maps them onto its boto3 client
explicitly. When they are absent (a developer's shell, IRSA / workload identity) boto3's standard chain
and ``AWS_*`` apply as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from signpose.errors import UserError

ACCESS_KEY_ID = "SIGNPOSE_S3_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "SIGNPOSE_S3_SECRET_ACCESS_KEY"
SESSION_TOKEN = "SIGNPOSE_S3_SESSION_TOKEN"
ENDPOINT_URL = "SIGNPOSE_S3_ENDPOINT_URL"
REGION = "SIGNPOSE_S3_REGION"


class S3EnvError(UserError, ValueError):
    """Half a key pair: the message names the variable to set."""


def session_kwargs(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Keyword arguments for ``boto3.session.Session``: signpose's key pair when set, else nothing
    (boto3's default chain: ``AWS_*``, profiles, web identity)."""
    environ = os.environ if environ is None else environ
    key, secret = environ.get(ACCESS_KEY_ID, ""), environ.get(SECRET_ACCESS_KEY, "")
    if bool(key) != bool(secret):
        missing = SECRET_ACCESS_KEY if key else ACCESS_KEY_ID
        raise S3EnvError(f"{missing} is not set but {ACCESS_KEY_ID if key else SECRET_ACCESS_KEY} is: "
                         "set both (signpose's S3 key pair) or neither (the standard AWS chain)")
    if not key:
        return {}
    kwargs = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if environ.get(SESSION_TOKEN):
        kwargs["aws_session_token"] = environ[SESSION_TOKEN]
    return kwargs


def endpoint_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint when none is given: ``SIGNPOSE_S3_ENDPOINT_URL``, else None where boto3 reads
    ``AWS_ENDPOINT_URL(_S3)`` itself, else ``MLFLOW_S3_ENDPOINT_URL`` (what MLflow-on-MinIO set-ups export)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENDPOINT_URL):
        return environ[ENDPOINT_URL]
    if environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"):
        return None
    return environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def region(environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return environ.get(REGION) or None
