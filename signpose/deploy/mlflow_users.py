"""The MLflow users of a deployment, with exactly the permissions each needs (the chart's hook Job).

Run as MLflow's admin after every ``helm install``/``upgrade``, through the basic-auth app's REST API:

    python -m signpose.deploy.mlflow_users \\
        --experiment signpose-skeleton --experiment signpose-face \\
        --model skeleton-generator --model face-keypoint-autoencoder

- the **pipeline user** (``SIGNPOSE_PIPELINE_USERNAME``/``_PASSWORD``) gets ``EDIT`` on each
  ``--experiment`` and ``--model``: create runs in those experiments and log params, metrics,
  inputs, artifacts and models to them; create versions of those registered models, tag them and
  move their aliases (``champion``/``challenger``). Not ``MANAGE``: it cannot delete them, rename
  them or change who may use them; it is never an admin (a user found as admin is demoted).
- the optional **read-only user** (``SIGNPOSE_READER_USERNAME``/``_PASSWORD``) gets ``READ`` on the
  same experiments and models, explicitly, so it keeps them even where ``default_permission`` is
  ``NO_PERMISSIONS``.

Missing experiments and registered models are created (by the admin) first: grants are per resource,
and a resource created later by the pipeline would give it ``MANAGE`` as its creator.

Everything is idempotent: a user that exists gets the password from its Secret (so rotating the
Secret and upgrading rotates the login), a grant that exists at another level is replaced. Admin
login: ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME``, ``MLFLOW_TRACKING_PASSWORD``, the
environment MLflow's own client reads. Passwords are never printed.

Standard library only: the MLflow server image carries this package without its dependencies.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

API2 = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"
PIPELINE_PERMISSION = "EDIT"
READER_PERMISSION = "READ"


class MlflowApiError(RuntimeError):
    def __init__(self, status: int, code: str, message: str, what: str):
        super().__init__(f"{what}: HTTP {status} {code or ''} {message}".strip())
        self.status, self.code = status, code


@dataclass(frozen=True)
class Login:
    username: str
    password: str


@dataclass(frozen=True)
class AuthApi:
    """MLflow's REST API as one user (basic auth)."""

    url: str
    login: Login
    timeout_s: float = 30.0

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict[str, Any]:
        url = self.url.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        token = base64.b64encode(f"{self.login.username}:{self.login.password}".encode()).decode()
        request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Basic {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {"message": raw.decode(errors="replace")[:300]}
            raise MlflowApiError(exc.code, detail.get("error_code", ""), detail.get("message", ""),
                                 f"{method} {path}") from None
        return json.loads(raw) if raw.strip() else {}


def wait_for_server(url: str, timeout_s: float, interval_s: float = 5.0) -> None:
    """Until ``/health`` answers 200 (the hook runs while the server may still be starting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10) as response:
                if response.status == 200:
                    return
        except OSError as exc:  # URLError and connection errors
            if time.monotonic() > deadline:
                raise TimeoutError(f"MLflow at {url} did not answer /health within {timeout_s:.0f} s: {exc}") from None
            print(f"waiting for MLflow at {url}: {exc}", flush=True)
        time.sleep(interval_s)


def _absent(exc: MlflowApiError) -> bool:
    return exc.status == 404 or exc.code == "RESOURCE_DOES_NOT_EXIST"


def ensure_user(api: AuthApi, login: Login) -> str:
    """Create ``login`` as a non-admin user, or set its password and demote it if it exists."""
    try:
        user = api.call("GET", f"{API2}/users/get", query={"username": login.username})["user"]
    except MlflowApiError as exc:
        if not _absent(exc):
            raise
        api.call("POST", f"{API2}/users/create", {"username": login.username, "password": login.password})
        return "created"
    api.call("PATCH", f"{API2}/users/update-password", {"username": login.username, "password": login.password})
    if user.get("is_admin"):
        api.call("PATCH", f"{API2}/users/update-admin", {"username": login.username, "is_admin": False})
        return "password set, admin rights removed"
    return "password set"


def ensure_experiment(api: AuthApi, name: str) -> tuple[str, str]:
    """(experiment id, what was done)."""
    try:
        return api.call("GET", f"{API2}/experiments/get-by-name",
                        query={"experiment_name": name})["experiment"]["experiment_id"], "exists"
    except MlflowApiError as exc:
        if not _absent(exc):
            raise
    return api.call("POST", f"{API2}/experiments/create", {"name": name})["experiment_id"], "created"


def ensure_registered_model(api: AuthApi, name: str) -> str:
    try:
        api.call("GET", f"{API2}/registered-models/get", query={"name": name})
        return "exists"
    except MlflowApiError as exc:
        if not _absent(exc):
            raise
    api.call("POST", f"{API2}/registered-models/create", {"name": name})
    return "created"


def effective_permission(api: AuthApi, username: str, resource_type: str, resource_id: str) -> str:
    """What a request by ``username`` on that resource would be allowed, as the server resolves it."""
    return api.call("GET", f"{API3}/users/permissions/get",
                    query={"username": username, "resource_type": resource_type,
                           "resource_id": resource_id})["permission"]


def ensure_grant(api: AuthApi, username: str, resource_type: str, resource_id: str, permission: str) -> str:
    """An explicit grant of exactly ``permission``; one at another level (e.g. the MANAGE a creator
    gets) is replaced."""
    grant = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    try:
        api.call("POST", f"{API3}/users/permissions/grant", {**grant, "permission": permission})
        return f"{permission} granted"
    except MlflowApiError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
    current = effective_permission(api, username, resource_type, resource_id)
    if current == permission:
        return f"{permission} (unchanged)"
    api.call("POST", f"{API3}/users/permissions/revoke", grant)
    api.call("POST", f"{API3}/users/permissions/grant", {**grant, "permission": permission})
    return f"{permission} (was {current})"


def _login_from_env(prefix: str, environ: dict[str, str], required: bool) -> Login | None:
    username, password = environ.get(f"{prefix}_USERNAME", ""), environ.get(f"{prefix}_PASSWORD", "")
    if username and password:
        return Login(username, password)
    if required or username or password:
        raise SystemExit(f"error: set both {prefix}_USERNAME and {prefix}_PASSWORD")
    return None


def set_up_users(api: AuthApi, pipeline: Login, reader: Login | None, experiments: list[str],
                 models: list[str]) -> list[str]:
    """Users, resources and grants; returns one report line per step (no passwords)."""
    if pipeline.username == api.login.username or (reader and reader.username == api.login.username):
        raise SystemExit(f"error: the pipeline and read-only users must not be the admin {api.login.username!r}")
    grantees = [(pipeline, PIPELINE_PERMISSION)] + ([(reader, READER_PERMISSION)] if reader else [])
    report = [f"user {login.username}: {ensure_user(api, login)}" for login, _ in grantees]
    resources = []
    for name in experiments:
        experiment_id, done = ensure_experiment(api, name)
        resources.append(("experiment", experiment_id, f"experiment {name} (id {experiment_id}): {done}"))
    for name in models:
        resources.append(("registered_model", name, f"registered model {name}: {ensure_registered_model(api, name)}"))
    for resource_type, resource_id, line in resources:
        grants = [f"{login.username} {ensure_grant(api, login.username, resource_type, resource_id, permission)}"
                  for login, permission in grantees]
        report.append(f"{line}; " + "; ".join(grants))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m signpose.deploy.mlflow_users",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", action="append", default=[], metavar="NAME",
                        help="an experiment the pipeline logs to (repeatable); created if missing")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="a registered model the pipeline registers versions of (repeatable); created if missing")
    parser.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                        help="how long to wait for the server to answer /health (default 600)")
    return parser


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    url = env.get("MLFLOW_TRACKING_URI", "")
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"error: MLFLOW_TRACKING_URI must be the server's http(s) URL, got {url!r}")
    admin = _login_from_env("MLFLOW_TRACKING", env, required=True)
    pipeline = _login_from_env("SIGNPOSE_PIPELINE", env, required=True)
    reader = _login_from_env("SIGNPOSE_READER", env, required=False)
    wait_for_server(url, args.wait)
    try:
        for line in set_up_users(AuthApi(url, admin), pipeline, reader, args.experiment, args.model):
            print(line, flush=True)
    except MlflowApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
