"""Send the compiled pipeline to Kubeflow Pipelines: one run now, or a recurring run (retraining).

The library behind ``signpose submit`` / ``signpose schedule`` (command line: signpose/cli/kfp.py):

    signpose submit   --host http://localhost:8080 [--param skeleton_epochs=50 ...]
    signpose schedule --host http://localhost:8080 --cron "0 0 3 * * 1" [--replace]

Both print the id and a link to it in the KFP UI. The pipeline package is the compiled YAML
(``make compile``); ``--package`` or ``SIGNPOSE_PIPELINE_PACKAGE`` point at another one (the
preprocessing image carries its own copy for the chart's retraining hook).

Parameters are checked against the package's declared inputs before anything is sent. No
credential travels as a pipeline parameter: pods read S3 and MLflow credentials from Kubernetes
Secrets (signpose/deploy/cluster.py), and a value carrying ``user:password@`` is refused. A KFP API token,
where one is needed, comes from ``--token_file`` or ``KF_PIPELINES_TOKEN``, never from the command
line; inside a cluster the projected ServiceAccount token (``KF_PIPELINES_SA_TOKEN_PATH``) is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from signpose.errors import UserError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PACKAGE = REPO_ROOT / "pipelines" / "compiled" / "signpose_training.yaml"
PACKAGE_VAR = "SIGNPOSE_PIPELINE_PACKAGE"
TOKEN_VAR = "KF_PIPELINES_TOKEN"
DEFAULT_EXPERIMENT = "signpose"
DEFAULT_SCHEDULE_NAME = "signpose-scheduled-retraining"
# KFP's cron (robfig/cron with seconds): six fields, seconds first.
_CRON_FIELD = r"[0-9A-Za-z*?/,\-LW#]+"
_CRON_RE = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{5}}$")
_USERINFO_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@", re.I)


class SubmitError(UserError, RuntimeError):
    """A problem found before or while talking to KFP, phrased for the person running the command."""


@dataclass(frozen=True)
class Submitted:
    kind: str  # "run" | "recurring run"
    id: str
    link: str


# ---- package and parameters -----------------------------------------------------------------------

def resolve_package(package: str | Path | None = None) -> Path:
    """The compiled pipeline YAML: explicit path, $SIGNPOSE_PIPELINE_PACKAGE, the repository's
    compiled file, or (in a source checkout) a fresh compile into a temporary file."""
    explicit = package or os.environ.get(PACKAGE_VAR)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SubmitError(f"pipeline package {path} does not exist (run `make compile`?)")
        return path
    if DEFAULT_PACKAGE.is_file():
        return DEFAULT_PACKAGE
    try:
        sys.path.insert(0, str(REPO_ROOT))
        from pipelines.training_pipeline import compile_pipeline
    except ImportError as exc:
        raise SubmitError(f"no compiled pipeline at {DEFAULT_PACKAGE} and the pipeline source is not "
                          f"importable ({exc}); pass --package") from exc
    finally:
        sys.path.remove(str(REPO_ROOT))
    out = Path(tempfile.mkdtemp(prefix="signpose-pipeline-")) / "signpose_training.yaml"
    log.info("compiling the pipeline into %s", out)
    return Path(compile_pipeline(out))


def pipeline_inputs(package: Path) -> dict[str, dict]:
    """Root input parameters declared by the compiled pipeline: name -> {parameterType, defaultValue, ...}."""
    docs = [d for d in yaml.safe_load_all(package.read_text()) if d]
    if not docs or "root" not in docs[0]:
        raise SubmitError(f"{package}: not a compiled KFP pipeline (no 'root')")
    return docs[0]["root"].get("inputDefinitions", {}).get("parameters", {})


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (numbers, booleans, objects), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SubmitError(f"--param {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


_TYPE_CHECKS = {
    "STRING": lambda v: isinstance(v, str),
    "NUMBER_INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "NUMBER_DOUBLE": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "STRUCT": lambda v: isinstance(v, dict),
    "LIST": lambda v: isinstance(v, list),
}


def check_params(params: dict[str, Any], inputs: dict[str, dict], package: Path) -> dict[str, Any]:
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise SubmitError(f"unknown pipeline parameter(s) {unknown} for {package.name}; "
                          f"it takes: {', '.join(sorted(inputs))}")
    for name, value in params.items():
        kind = inputs[name].get("parameterType", "STRING")
        if kind == "STRING" and not isinstance(value, str):
            value = params[name] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if kind == "NUMBER_DOUBLE" and isinstance(value, int) and not isinstance(value, bool):
            value = params[name] = float(value)
        check = _TYPE_CHECKS.get(kind)
        if check and not check(value):
            raise SubmitError(f"pipeline parameter {name!r} expects {kind}, got {value!r}")
        if isinstance(value, str) and _USERINFO_RE.search(value):
            raise SubmitError(f"pipeline parameter {name!r} carries credentials in its URI; pipeline "
                              "pods get credentials from Kubernetes Secrets (see docs/deploy.md)")
    missing = sorted(n for n, spec in inputs.items() if n not in params and not spec.get("isOptional"))
    if missing:
        raise SubmitError(f"pipeline parameter(s) {missing} have no default and must be given with --param")
    return params


def collect_params(params_json: str | None, param_texts: Sequence[str], package: Path) -> dict[str, Any]:
    """The pipeline arguments: ``params_json`` (one JSON object, ``--params_json``) overlaid with each
    ``key=value`` of ``param_texts`` (``--param``), checked against ``package``'s inputs."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise SubmitError(f"--params_json is not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise SubmitError("--params_json must be a JSON object")
        params.update(loaded)
    for text in param_texts:
        key, value = parse_param(text)
        params[key] = value
    return check_params(params, pipeline_inputs(package), package)


def validate_cron(cron: str) -> str:
    cron = " ".join(cron.split())
    if not _CRON_RE.match(cron):
        fields = len(cron.split())
        hint = " (KFP's cron has a seconds field first: '0 0 3 * * 1' is Mondays 03:00)" if fields == 5 else ""
        raise SubmitError(f"--cron {cron!r}: expected 6 space-separated fields, got {fields}{hint}")
    return cron


# ---- client -------------------------------------------------------------------------------------

def make_client(host: str, namespace: str | None = None, token_file: str | None = None,
                ui_host: str | None = None):
    import kfp

    token = None
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise SubmitError(f"--token_file {token_file}: cannot read it ({exc.strerror or exc})") from exc
    elif os.environ.get(TOKEN_VAR):
        token = os.environ[TOKEN_VAR].strip()
    credentials = None
    sa_token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if token is None and sa_token_path and Path(sa_token_path).is_file():
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    kwargs: dict[str, Any] = dict(host=host, existing_token=token, credentials=credentials, ui_host=ui_host)
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": said on every call.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\.client")
        return kfp.Client(**kwargs)


def ui_prefix(host: str, ui_host: str | None) -> str:
    return (ui_host or host).rstrip("/")


def submit_run(client, package: Path, params: dict[str, Any], *, experiment: str, run_name: str | None,
               namespace: str | None, ui_host: str, service_account: str | None = None) -> Submitted:
    result = client.create_run_from_pipeline_package(
        str(package), arguments=params, run_name=run_name, experiment_name=experiment,
        namespace=namespace or None, service_account=service_account)
    return Submitted("run", result.run_id, f"{ui_host}/#/runs/details/{result.run_id}")


def schedule_run(client, package: Path, params: dict[str, Any], *, experiment: str, name: str, cron: str,
                 namespace: str | None, ui_host: str, max_concurrency: int = 1, replace: bool = False,
                 catchup: bool = False, service_account: str | None = None) -> Submitted:
    exp = client.create_experiment(name=experiment, namespace=namespace or None)
    name_filter = json.dumps({"predicates": [
        {"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    existing = client.list_recurring_runs(experiment_id=exp.experiment_id, filter=name_filter,
                                          page_size=100).recurring_runs or []
    existing = [r for r in existing if r.display_name == name]
    if existing and not replace:
        ids = ", ".join(r.recurring_run_id for r in existing)
        raise SubmitError(f"a recurring run named {name!r} already exists in experiment {experiment!r} "
                          f"({ids}); pass --replace to replace it")
    for old in existing:
        log.info("deleting recurring run %s (%s)", old.recurring_run_id, name)
        client.delete_recurring_run(old.recurring_run_id)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=name,
        description="signpose scheduled retraining on the newest data under the input prefix",
        cron_expression=cron, max_concurrency=max_concurrency, no_catchup=not catchup,
        params=params, pipeline_package_path=str(package), enabled=True,
        service_account=service_account)
    return Submitted("recurring run", job.recurring_run_id,
                     f"{ui_host}/#/recurringrun/details/{job.recurring_run_id}")
