"""Logging the trained model, registering a version, and the champion/challenger promotion gate.

Promotion rule (also in docs/mlflow.md): a new version gets the ``champion`` alias only if its
promotion metric (``mlflow.yaml``: metric + direction per model) strictly beats the current
champion's value *on the same validation data*. "Same data" means the same dataset hash: when the
champion's recorded value was measured on another dataset, the champion is re-evaluated on this one
(through the ``evaluate`` callable) and that value is cached on the champion as a tag. Otherwise the
new version gets ``challenger`` and the reason is tagged. The first version of a model is champion.
A champion that loses its alias to a better version becomes ``challenger``, its reason naming that
version. Promotions of one model take turns under a lease (``promote``; docs/mlflow.md).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from signpose.store import ObjectStore
from signpose.tracking.lease import Lease, promotion_lock_key, promotion_lock_location
from signpose.tracking.model_files import UnsafeModelError
from signpose.tracking.runs import PARAM_DATASET_HASH, TAG_TASK
from signpose.tracking.settings import TaskTracking, load_mlflow_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT_NAME = "model"
CONFIG_ARTIFACT = "config.json"
TAG_RUN_ID = "run_id"
TAG_PROMOTION = "promotion"
TAG_PROMOTION_REASON = "promotion_reason"
METRIC_TAG_PREFIX = "metric."
# Cached evaluation of a version on another dataset: eval.<dataset_hash>.<metric> = value.
EVAL_TAG_PREFIX = "eval."

Evaluator = Callable[[str], "Mapping[str, float] | float"]


def metric_tag(metric: str) -> str:
    return f"{METRIC_TAG_PREFIX}{metric}"


def eval_tag(dataset_hash: str, metric: str) -> str:
    return f"{EVAL_TAG_PREFIX}{dataset_hash}.{metric}"


def config_to_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.loads(json.dumps(dataclasses.asdict(config), default=str))
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str))
    raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")


def _pip_requirements() -> list[str]:
    # Given explicitly: MLflow's requirement inference re-imports the model in a subprocess (~7 s)
    # and the exported pt2 graph needs torch and numpy only.
    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]


def _export_ready(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # unwrap DDP
    model = copy.deepcopy(model).to("cpu")
    model.eval()  # dropout off: the exported graph is the inference graph
    return model


def log_and_register(
    model: torch.nn.Module,
    config: Any,
    example_input,
    model_name: str,
    tags: Mapping[str, Any] | None = None,
    *,
    task: str | None = None,
    metrics: Mapping[str, float] | None = None,
    dataset_hash: str | None = None,
    step: int = 0,
) -> tuple[str, str]:
    """Log ``model`` to the active run with ``mlflow.pytorch`` (pt2, signature + input example, the
    config as ``config.json`` inside the model and on the run) and register a new version of
    ``model_name`` tagged with the run id, dataset hash, task and ``metric.<name>`` values.

    ``example_input`` is a batch of real model inputs; a batch of at least two keeps the exported
    batch dimension dynamic. ``step``: the epoch whose weights these are (MLflow links that step's
    metrics to the logged model). Returns ``(run_id, version)``. A run registers one version: called again
    in the same run (a retried task), it returns the version registered before.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_and_register needs an active run (signpose.tracking.start_training_run)")
    run_id = run.info.run_id
    registered = registered_version_of_run(MlflowClient(), model_name, run_id)
    if registered is not None:  # a retried task: the earlier attempt got this far
        log.info("%s version %s was already registered from run %s: not registering again", model_name,
                 registered, run_id)
        return run_id, registered
    config_dict = config_to_dict(config)
    example = torch.as_tensor(np.asarray(example_input) if not isinstance(example_input, torch.Tensor)
                              else example_input).detach().to("cpu").float()
    if example.ndim < 2:
        raise ValueError(f"example_input must be a batch (B, ...), got shape {tuple(example.shape)}")
    if len(example) == 1:
        # torch.export specialises a size-1 dimension to a constant: keep the batch dimension dynamic.
        example = torch.cat([example, example])
    example = example[:4]
    exportable = _export_ready(model)
    with torch.no_grad():
        output = exportable(example)
    example_np = example.numpy()
    signature = infer_signature(example_np, output.detach().numpy())
    task = task or run.data.tags.get(TAG_TASK) or mlflow.get_run(run_id).data.tags.get(TAG_TASK)
    dataset_hash = dataset_hash or mlflow.get_run(run_id).data.params.get(PARAM_DATASET_HASH)

    mlflow.log_dict(config_dict, CONFIG_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / CONFIG_ARTIFACT
        config_path.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
        model_info = mlflow.pytorch.log_model(
            exportable,
            name=MODEL_ARTIFACT_NAME,
            input_example=example_np,
            signature=signature,
            serialization_format="pt2",
            step=step,
            extra_files=[str(config_path)],
            pip_requirements=_pip_requirements(),
            metadata={"task": task or "", "dataset_hash": dataset_hash or "",
                      "input_shape": list(example.shape[1:]), "output_shape": list(output.shape[1:])},
        )
    version_tags: dict[str, str] = {TAG_RUN_ID: run_id}
    if task:
        version_tags[TAG_TASK] = task
    if dataset_hash:
        version_tags[PARAM_DATASET_HASH] = dataset_hash
    for name, value in (metrics or {}).items():
        version_tags[metric_tag(name)] = repr(float(value))
    version_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    registered = mlflow.register_model(model_info.model_uri, model_name, tags=version_tags)
    log.info("registered %s version %s (run %s)", model_name, registered.version, run_id)
    return run_id, str(registered.version)


def registered_version_of_run(client: MlflowClient, model_name: str, run_id: str) -> str | None:
    """The version of ``model_name`` registered from ``run_id``, if there is one (the lowest)."""
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    version: str
    alias: str                      # "champion" or "challenger"
    reason: str
    metric: str
    value: float
    previous_champion: str | None = None
    champion_value: float | None = None

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION


def _metric_value(metrics: Mapping[str, float] | float, metric: str, source: str) -> float:
    if isinstance(metrics, Mapping):
        if metric not in metrics:
            raise KeyError(f"{source}: promotion metric {metric!r} missing; got {sorted(metrics)}")
        return float(metrics[metric])
    return float(metrics)


def current_champion(client: MlflowClient, model_name: str):
    """The version holding the ``champion`` alias, or None when the model has none (or does not exist)."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _champion_value(client, model_name, champion, policy: TaskTracking, dataset_hash: str,
                    evaluate: Evaluator | None) -> tuple[float | None, str]:
    """The champion's metric on ``dataset_hash``'s validation data, and how it was obtained."""
    tags = champion.tags or {}
    if tags.get(PARAM_DATASET_HASH) == dataset_hash and metric_tag(policy.promotion_metric) in tags:
        return float(tags[metric_tag(policy.promotion_metric)]), "recorded at its training"
    cached = tags.get(eval_tag(dataset_hash, policy.promotion_metric))
    if cached is not None:
        return float(cached), "re-evaluated earlier on this dataset"
    if evaluate is None:
        return None, (f"champion v{champion.version} was evaluated on dataset "
                      f"{tags.get(PARAM_DATASET_HASH, 'unknown')}, not {dataset_hash}, and no evaluator was given")
    uri = f"models:/{model_name}/{champion.version}"
    try:
        scored = evaluate(uri)
    except UnsafeModelError as err:  # a champion replaced by something signpose does not load: never run it
        log.warning("champion v%s cannot be re-evaluated: %s", champion.version, err)
        return None, f"champion v{champion.version} was refused, not loaded: {err}"
    value = _metric_value(scored, policy.promotion_metric, uri)
    client.set_model_version_tag(model_name, champion.version, eval_tag(dataset_hash, policy.promotion_metric),
                                 repr(value))
    return value, "re-evaluated on this dataset"


@dataclasses.dataclass(frozen=True)
class _Verdict:
    decision: PromotionDecision
    record: bool = True            # False: nothing to write ("already champion")
    displaced_reason: str = ""     # for the previous champion when the decision takes its alias


def _regression(metrics: Mapping[str, float], champion, policy: TaskTracking) -> str:
    """Why the candidate may not take the alias under ``policy.no_regression_on`` ('' = it may)."""
    tags = champion.tags or {}
    for metric, direction in policy.no_regression_guards.items():
        if metric not in metrics:
            return f"{metric} was not measured, but no_regression_on requires it"
        if metric_tag(metric) not in tags:
            continue  # the champion never measured it: nothing to regress from
        candidate, incumbent = float(metrics[metric]), float(tags[metric_tag(metric)])
        worse = candidate > incumbent if direction == "lower" else candidate < incumbent
        if worse or not math.isfinite(candidate):
            return (f"{metric} {candidate:.6g} regresses from {incumbent:.6g} of champion v{champion.version} "
                    f"({direction} is better; no_regression_on)")
    return ""


def _decide(client: MlflowClient, model_name: str, version: str, value: float, policy: TaskTracking,
            dataset_hash: str, evaluate: Evaluator | None, metrics: Mapping[str, float] | None = None) -> _Verdict:
    """The gate's decision for ``version`` against the champion as it is now (reads only, plus the
    champion's cached re-evaluation tag)."""
    metric = policy.promotion_metric
    champion = current_champion(client, model_name)

    def verdict(alias, reason, champion_version=None, champion_value=None, displaced="") -> _Verdict:
        return _Verdict(PromotionDecision(model_name, version, alias, reason, metric, value, champion_version,
                                          champion_value), displaced_reason=displaced)

    if not math.isfinite(value):
        return verdict(CHALLENGER, f"{metric} is {value}, not a finite value; never promoted",
                       str(champion.version) if champion else None)
    if champion is None:
        return verdict(CHAMPION, f"first version with a champion: {metric}={value:.6g}")
    if str(champion.version) == version:
        return _Verdict(PromotionDecision(model_name, version, CHAMPION, "already champion", metric, value, version,
                                          value), record=False)

    champion_value, how = _champion_value(client, model_name, champion, policy, dataset_hash, evaluate)
    if champion_value is None:
        return verdict(CHALLENGER, f"not comparable: {how}", str(champion.version))
    comparison = "<" if policy.promotion_direction == "lower" else ">"
    regression = _regression(metrics or {}, champion, policy) if policy.is_better(value, champion_value) else ""
    if regression:
        return verdict(CHALLENGER, f"{metric} {value:.6g} {comparison} {champion_value:.6g} of champion "
                                   f"v{champion.version}, but {regression}", str(champion.version), champion_value)
    if policy.is_better(value, champion_value):
        return verdict(
            CHAMPION,
            f"{metric} {value:.6g} {comparison} {champion_value:.6g} of champion v{champion.version} "
            f"({how}) on dataset {dataset_hash}",
            str(champion.version), champion_value,
            displaced=f"displaced as champion by v{version}: {metric} {value:.6g} {comparison} {champion_value:.6g} "
                      f"of this version ({policy.promotion_direction} is better; {how}) on dataset {dataset_hash}",
        )
    return verdict(
        CHALLENGER,
        f"{metric} {value:.6g} does not beat {champion_value:.6g} of champion v{champion.version} "
        f"({policy.promotion_direction} is better; {how}) on dataset {dataset_hash}",
        str(champion.version), champion_value,
    )


def _record(client: MlflowClient, verdict: _Verdict) -> None:
    """Write the decision: the alias first (what serving reads), then the tags; a displaced champion
    becomes ``challenger`` with a reason naming the version that beat it."""
    d = verdict.decision
    client.set_registered_model_alias(d.model_name, d.alias, d.version)
    client.set_model_version_tag(d.model_name, d.version, TAG_PROMOTION, d.alias)
    client.set_model_version_tag(d.model_name, d.version, TAG_PROMOTION_REASON, d.reason)
    log.info("%s v%s -> %s: %s", d.model_name, d.version, d.alias, d.reason)
    if verdict.displaced_reason and d.previous_champion:
        client.set_model_version_tag(d.model_name, d.previous_champion, TAG_PROMOTION, CHALLENGER)
        client.set_model_version_tag(d.model_name, d.previous_champion, TAG_PROMOTION_REASON,
                                     verdict.displaced_reason)
        client.set_registered_model_alias(d.model_name, CHALLENGER, d.previous_champion)


def _promotion_lease(client: MlflowClient, model_name: str, version: str, lock, ttl_s, wait_s) -> Lease:
    if lock is None or ttl_s is None or wait_s is None:
        settings = load_mlflow_settings()
        registry_uri = getattr(client, "_registry_uri", None) or mlflow.get_registry_uri()
        lock = lock if lock is not None else promotion_lock_location(registry_uri, settings.promotion_lock)
        ttl_s = ttl_s if ttl_s is not None else settings.promotion_lock_ttl
        wait_s = wait_s if wait_s is not None else settings.promotion_lock_wait
    return Lease(lock, promotion_lock_key(model_name), ttl_s=ttl_s, wait_s=wait_s,
                 purpose=f"promote {model_name} v{version}")


def promote(
    model_name: str,
    version: str,
    metrics: Mapping[str, float],
    policy: TaskTracking,
    *,
    dataset_hash: str,
    evaluate: Evaluator | None = None,
    client: MlflowClient | None = None,
    lock: str | ObjectStore | None = None,
    lock_ttl_s: float | None = None,
    lock_wait_s: float | None = None,
) -> PromotionDecision:
    """Apply the promotion gate to ``version`` (see the module docstring) and record the outcome as
    the ``champion``/``challenger`` alias plus ``promotion``/``promotion_reason`` tags.

    ``metrics`` are the new version's validation metrics on ``dataset_hash``'s validation data;
    ``evaluate(model_uri)`` returns metrics (a mapping or the promotion metric's value) of a
    registered model on that same data, and is only called when the champion was measured elsewhere.

    Promotions of one model take turns: read, compare and write all happen under the model's lease
    (``signpose.tracking.lease``) in ``lock`` (a folder or ``s3://bucket/prefix``; default: the
    ``promotion_lock`` setting, else beside a local registry), so a concurrent promotion cannot act on
    a champion this one is replacing. ``lock_ttl_s`` / ``lock_wait_s`` default to the settings'
    ``promotion_lock_ttl`` / ``promotion_lock_wait``. If the lease was lost (taken over after it
    expired) before the writes, LeaseLostError is raised and nothing is written.
    """
    client = client or MlflowClient()
    version = str(version)
    value = _metric_value(metrics, policy.promotion_metric, f"{model_name} v{version}")
    with _promotion_lease(client, model_name, version, lock, lock_ttl_s, lock_wait_s) as lease:
        verdict = _decide(client, model_name, version, value, policy, dataset_hash, evaluate,
                          metrics if isinstance(metrics, Mapping) else None)
        if verdict.record:
            lease.ensure_held()
            _record(client, verdict)
    return verdict.decision
