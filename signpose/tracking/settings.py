"""Typed MLflow settings: ``mlflow.yaml`` at the top level, overridden by MLflow's environment variables.

Precedence (highest first): ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` / ``MLFLOW_EXPERIMENT_NAME``
(and ``SIGNPOSE_PROMOTION_LOCK`` / ``_TTL`` / ``_WAIT`` for the promotion lease), then the YAML file, then the
defaults below (which mirror the shipped ``mlflow.yaml``).
Relative locations are resolved against ``workdir`` (default: the current working directory) once, here,
so that every process (KFP component subprocesses included) agrees on the same absolute store.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml

CONFIG_FILE_NAME = "mlflow.yaml"
# Lets a deployment point at another settings file without changing the working folder.
CONFIG_ENV_VAR = "SIGNPOSE_MLFLOW_CONFIG"
DIRECTIONS = ("lower", "higher")
# The promotion lease (signpose.tracking.lease; docs/mlflow.md, "Concurrent promotions").
PROMOTION_LOCK_ENV = "SIGNPOSE_PROMOTION_LOCK"
PROMOTION_LOCK_TTL_ENV = "SIGNPOSE_PROMOTION_LOCK_TTL"
PROMOTION_LOCK_WAIT_ENV = "SIGNPOSE_PROMOTION_LOCK_WAIT"


@dataclass(frozen=True)
class TaskTracking:
    """Where one training task logs and registers, and how its versions are promoted."""

    experiment: str
    model_name: str
    promotion_metric: str
    promotion_direction: Literal["lower", "higher"] = "lower"
    # Metrics a new champion must not regress on, "metric:direction" comma-separated, e.g.
    # "val_real/nme:lower" (real signers, --real_eval_path); '' = none.
    no_regression_on: str = ""

    def __post_init__(self) -> None:
        if self.promotion_direction not in DIRECTIONS:
            raise ValueError(
                f"promotion_direction for model {self.model_name!r} must be one of {DIRECTIONS}, "
                f"got {self.promotion_direction!r}"
            )
        _ = self.no_regression_guards  # refuse a malformed list when the settings are read

    @property
    def no_regression_guards(self) -> dict[str, str]:
        """``no_regression_on`` as {metric: "lower"|"higher"}."""
        guards = {}
        for item in filter(None, (part.strip() for part in self.no_regression_on.split(","))):
            metric, _, direction = item.rpartition(":")
            if not metric or direction not in DIRECTIONS:
                raise ValueError(f"no_regression_on for model {self.model_name!r}: {item!r} is not "
                                 f"'metric:lower' or 'metric:higher'")
            guards[metric] = direction
        return guards

    def is_better(self, candidate: float, incumbent: float) -> bool:
        """Strictly better: a tie keeps the incumbent (a retraining must earn the alias)."""
        if self.promotion_direction == "lower":
            return candidate < incumbent
        return candidate > incumbent


@dataclass(frozen=True)
class DriftSettings:
    """When a new data set version counts as drifted from the champion's (signpose.datasets.drift)."""

    # A region's share of missing points moved by more than this (absolute: 0.10 = 10 points of %).
    missing_share_change: float = 0.10
    # A region's normalised x or y coordinates moved by more than this Wasserstein-1 distance (a share
    # of the image side: 0.05 = 5 % of the image on average).
    coordinate_distance: float = 0.05
    # Stop a training whose data drifted before it trains (the pipeline's fail_on_drift and
    # `signpose train --fail_on_drift` turn it on for one run).
    fail_on_drift: bool = False


def _default_tasks() -> dict[str, TaskTracking]:
    """Each registered task's own defaults (``signpose.tasks``); ``mlflow.yaml`` may override them."""
    from signpose.tasks import list_tasks

    return {spec.name: TaskTracking(spec.experiment, spec.model_name, spec.promotion_metric,
                                    spec.promotion_direction) for spec in list_tasks()}


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str = "sqlite:///mlruns.db"
    # None = the tracking URI (MLflow's own default).
    registry_uri: str | None = None
    artifact_location: str | None = "mlartifacts"
    system_metrics: bool = True
    tasks: dict[str, TaskTracking] = field(default_factory=_default_tasks)
    # Where promotions of one registered model take turns: a folder or s3://bucket/prefix. None: a
    # folder beside a local registry (<database>.locks), else a per-user folder on this machine.
    promotion_lock: str | None = None
    # Seconds a lease lives without renewal (the holder renews every third of it), and how long a
    # promotion waits for a live holder before failing.
    promotion_lock_ttl: float = 300.0
    promotion_lock_wait: float = 1800.0
    drift: DriftSettings = field(default_factory=DriftSettings)

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri

    @property
    def is_remote_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def task(self, name: str) -> TaskTracking:
        try:
            return self.tasks[name]
        except KeyError:
            raise KeyError(f"no MLflow settings for task {name!r}; known tasks: {sorted(self.tasks)}") from None

    def task_for_model(self, model_name: str) -> tuple[str, TaskTracking] | None:
        for name, task in self.tasks.items():
            if task.model_name == model_name:
                return name, task
        return None

    def experiment_artifact_location(self) -> str | None:
        """Artifact location to give a new experiment, or None to let the tracking server decide.

        A tracking server stores artifacts behind its own ``--artifacts-destination`` (clients upload
        through ``mlflow-artifacts:/``); sending it a path on this machine would make clients write
        local files the server cannot see. Explicit remote URIs (s3://...) are passed through.
        """
        location = self.artifact_location
        if not location:
            return None
        if self.is_remote_server and (location.startswith("file:") or "://" not in location):
            return None
        return location


def _has_scheme(uri: str) -> bool:
    return "://" in uri or uri.startswith("file:")


def resolve_store_uri(uri: str, workdir: Path) -> str:
    """Make a relative SQLite/file/plain-path store absolute against ``workdir``; leave others alone."""
    if uri.startswith("sqlite:///"):
        db_path = uri[len("sqlite:///"):]
        if db_path.startswith("/") or db_path == ":memory:" or db_path == "":
            return uri
        return "sqlite:///" + str((workdir / db_path).resolve())
    if uri.startswith("file:"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
        if path.startswith("/"):
            return uri
        return (workdir / path).resolve().as_uri()
    if not _has_scheme(uri):
        return str((workdir / uri).resolve())
    return uri


def resolve_artifact_location(location: str, workdir: Path) -> str:
    if _has_scheme(location) or ":/" in location:  # s3://, gs://, mlflow-artifacts:/, file:...
        return resolve_store_uri(location, workdir) if location.startswith("file:") else location
    return (workdir / location).resolve().as_uri()


def resolve_lock_location(location: str, workdir: Path, source: object) -> str:
    """A local folder (made absolute; ``file:`` accepted) or ``s3://bucket/prefix``; anything else is refused."""
    if location.startswith("s3://"):
        return location
    if location.startswith("file:"):
        location = urlparse(location).path
    elif _has_scheme(location):
        raise ValueError(f"{source}: promotion_lock must be a folder or s3://bucket/prefix, got {location!r}")
    return str((workdir / location).resolve())


def _seconds(value: object, name: str, source: object, *, positive: bool) -> float:
    try:
        seconds = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{source}: {name} must be a number of seconds{' above 0' if positive else ''}, "
                         f"got {value!r}")
    return seconds


def _find_config(path: str | os.PathLike | None, workdir: Path) -> Path | None:
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            raise FileNotFoundError(f"MLflow settings file not found: {candidate}")
        return candidate
    env_path = os.environ.get(CONFIG_ENV_VAR)
    if env_path:
        candidate = Path(env_path)
        if not candidate.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV_VAR}={env_path} does not name a file")
        return candidate
    candidate = workdir / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def _parse_task(source: Path, name: str, raw: object, default: TaskTracking | None) -> TaskTracking:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: tasks.{name} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(TaskTracking)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{source}: tasks.{name}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = dict(vars(default)) if default else {}
    values.update({k: v for k, v in raw.items() if v is not None})
    missing = known - set(values) - {"promotion_direction", "no_regression_on"}
    if missing:
        raise ValueError(f"{source}: tasks.{name}: missing keys {sorted(missing)}")
    try:
        return TaskTracking(**{k: str(v) for k, v in values.items()})
    except ValueError as err:
        raise ValueError(f"{source}: tasks.{name}: {err}") from None


def _threshold(value: object, name: str, source: object) -> float:
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{source}: {name} must be a number of 0 or more, got {value!r}")
    return number


def _parse_drift(source: Path, raw: object) -> DriftSettings:
    if raw is None:
        return DriftSettings()
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: drift must be a mapping (missing_share_change, coordinate_distance, "
                         f"fail_on_drift), got {type(raw).__name__}")
    known = {f.name for f in fields(DriftSettings)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{source}: drift: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = {**vars(DriftSettings()), **{k: v for k, v in raw.items() if v is not None}}
    if not isinstance(values["fail_on_drift"], bool):
        raise ValueError(f"{source}: drift.fail_on_drift must be true or false, got {values['fail_on_drift']!r}")
    for name in ("missing_share_change", "coordinate_distance"):
        values[name] = _threshold(values[name], f"drift.{name}", source)
    return DriftSettings(**values)


def _parse_file(source: Path) -> MlflowSettings:
    raw = yaml.safe_load(source.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    known = {f.name for f in fields(MlflowSettings)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    defaults = MlflowSettings()
    tasks = dict(defaults.tasks)
    raw_tasks = raw.get("tasks") or {}
    if not isinstance(raw_tasks, dict):
        raise ValueError(f"{source}: 'tasks' must be a mapping of task name -> settings")
    for name, task_raw in raw_tasks.items():
        tasks[name] = _parse_task(source, name, task_raw, defaults.tasks.get(name))
    system_metrics = raw.get("system_metrics", defaults.system_metrics)
    if not isinstance(system_metrics, bool):
        raise ValueError(f"{source}: system_metrics must be true or false, got {system_metrics!r}")
    ttl, wait = (raw.get(key) if raw.get(key) is not None else getattr(defaults, key)
                 for key in ("promotion_lock_ttl", "promotion_lock_wait"))
    return MlflowSettings(
        tracking_uri=str(raw.get("tracking_uri") or defaults.tracking_uri),
        registry_uri=str(raw["registry_uri"]) if raw.get("registry_uri") else None,
        artifact_location=str(raw["artifact_location"]) if raw.get("artifact_location") else None,
        system_metrics=system_metrics,
        tasks=tasks,
        promotion_lock=str(raw["promotion_lock"]) if raw.get("promotion_lock") else None,
        promotion_lock_ttl=_seconds(ttl, "promotion_lock_ttl", source, positive=True),
        promotion_lock_wait=_seconds(wait, "promotion_lock_wait", source, positive=False),
        drift=_parse_drift(source, raw.get("drift")),
    )


def _promotion_lock_settings(settings: MlflowSettings, base: Path, source: Path | None) -> dict:
    """The promotion lease's settings, environment first, the location resolved against ``base``."""
    env = os.environ
    location, where = settings.promotion_lock, source or "mlflow settings"
    if env.get(PROMOTION_LOCK_ENV):
        location, where = env[PROMOTION_LOCK_ENV], PROMOTION_LOCK_ENV
    ttl = (_seconds(env[PROMOTION_LOCK_TTL_ENV], PROMOTION_LOCK_TTL_ENV, "environment", positive=True)
           if env.get(PROMOTION_LOCK_TTL_ENV) else settings.promotion_lock_ttl)
    wait = (_seconds(env[PROMOTION_LOCK_WAIT_ENV], PROMOTION_LOCK_WAIT_ENV, "environment", positive=False)
            if env.get(PROMOTION_LOCK_WAIT_ENV) else settings.promotion_lock_wait)
    return {"promotion_lock": resolve_lock_location(location, base, where) if location else None,
            "promotion_lock_ttl": ttl, "promotion_lock_wait": wait}


def load_mlflow_settings(
    path: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
    tracking_uri: str | None = None,
) -> MlflowSettings:
    """Read ``mlflow.yaml`` (``path``, else ``$SIGNPOSE_MLFLOW_CONFIG``, else ``<workdir>/mlflow.yaml``,
    else built-in defaults), apply the MLflow environment overrides and resolve relative locations
    against ``workdir`` (default: the current directory). An explicit ``tracking_uri`` (a pipeline
    parameter) wins over the environment and the file."""
    base = Path(workdir) if workdir is not None else Path.cwd()
    source = _find_config(path, base)
    settings = _parse_file(source) if source else MlflowSettings()

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or settings.registry_uri
    experiment_override = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    tasks = settings.tasks
    if experiment_override:
        tasks = {name: replace(task, experiment=experiment_override) for name, task in tasks.items()}
    return replace(
        settings,
        tracking_uri=resolve_store_uri(tracking_uri, base),
        registry_uri=resolve_store_uri(registry_uri, base) if registry_uri else None,
        artifact_location=(
            resolve_artifact_location(settings.artifact_location, base) if settings.artifact_location else None
        ),
        tasks=tasks,
        **_promotion_lock_settings(settings, base, source),
    )
