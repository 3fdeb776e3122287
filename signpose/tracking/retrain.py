"""The retraining policy (docs/mlflow.md, "Retraining policy"): before a training builds a model or
starts an MLflow run, decide whether there is anything to train, and whether the data drifted too far.

* **Nothing new, nothing trained.** When the task's current champion was trained on the same data set
  version (its ``dataset_hash`` tag), with the same training configuration (``config_hash``: the task's
  config fields that decide what is trained, :data:`OPERATIONAL_FIELDS` left out) and the same code
  (``code_hash``: the content of the installed ``signpose`` package), the run ends with
  :data:`NOTHING_NEW` and registers nothing. ``force_training`` trains anyway. A champion registered
  before these tags existed never matches (it is retrained once).
* **Drift.** With ``fail_on_drift`` (the config field, or ``drift.fail_on_drift`` in mlflow.yaml), a data
  set whose report drifted from the champion's version beyond the thresholds stops the training here,
  with a one-line reason (:class:`DataDriftError`, exit 2 on the command line). Without it the run
  trains and is tagged (:mod:`signpose.tracking.datasets`). Drift that cannot be computed (no report,
  the champion's data set collected or in another store) never stops a training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from signpose.datasets.drift import DriftReport, compare_reports, not_computed
from signpose.datasets.report import read_report
from signpose.errors import UserError
from signpose.store import StoreError
from signpose.tracking.registry import current_champion
from signpose.tracking.runs import PARAM_DATASET_HASH, PARAM_MANIFEST_URI
from signpose.tracking.settings import DriftSettings, MlflowSettings

log = logging.getLogger(__name__)

TAG_CONFIG_HASH = "config_hash"
TAG_CODE_HASH = "code_hash"
NOTHING_NEW = "no new data since the champion: nothing trained"
# Config fields that say where and how a run is carried out, not what it trains: two runs differing
# only in these train the same model.
OPERATIONAL_FIELDS = frozenset({
    "data_path", "checkpoint_dir", "checkpoint_every", "resume", "progress", "output_dir", "track",
    "num_workers", "stream", "max_frames", "max_rejected", "force_training", "fail_on_drift",
})
MANIFEST_FILE = "manifest.json"


class DataDriftError(UserError, RuntimeError):
    """fail_on_drift is set and the data drifted from the champion's beyond the thresholds."""


def config_fingerprint(task: str, cfg: Any) -> str:
    """A hash of the task's training configuration, operational fields left out."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) \
        else dict(cfg)
    values = {name: value for name, value in values.items() if name not in OPERATIONAL_FIELDS}
    text = json.dumps({"task": task, **values}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """A hash of the ``signpose`` package's files (sources and resources): the same in a container
    without git and in a work tree with uncommitted changes, which a commit id is not."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def lineage_tags(task: str, cfg: Any) -> dict[str, str]:
    """The tags a registered version (and its run) carries so the next run can tell whether it has
    anything new to train."""
    return {TAG_CONFIG_HASH: config_fingerprint(task, cfg), TAG_CODE_HASH: code_fingerprint()}


def store_of(manifest_uri: str) -> str:
    """The store a manifest URI names (its folder/prefix)."""
    root = (manifest_uri or "").rstrip("/")
    return root[: -len(MANIFEST_FILE) - 1] if root.endswith("/" + MANIFEST_FILE) else root


def data_report(manifest_uri: str, dataset_hash: str) -> dict | None:
    """The report of a preprocessed data set (None for a raw file, a version without one, or a store
    that cannot be read now: the report informs a training, it never stops one)."""
    if not manifest_uri:
        return None
    try:
        return read_report(store_of(manifest_uri), dataset_hash)
    except (StoreError, OSError, ValueError) as err:
        log.warning("could not read the data report of %s in %s: %s", dataset_hash[:12], manifest_uri, err)
        return None


@dataclasses.dataclass(frozen=True)
class RetrainDecision:
    task: str
    train: bool
    reason: str
    model_name: str
    champion_version: str | None = None
    champion_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.model_name}/{self.champion_version}" if self.champion_version else ""


def _unchanged(champion, task: str, cfg: Any, dataset_hash: str) -> bool:
    tags = champion.tags or {}
    return (tags.get(PARAM_DATASET_HASH) == dataset_hash
            and tags.get(TAG_CONFIG_HASH) == config_fingerprint(task, cfg)
            and tags.get(TAG_CODE_HASH) == code_fingerprint())


def _champion_metrics(champion) -> dict[str, float]:
    from signpose.tracking.registry import METRIC_TAG_PREFIX

    return {key[len(METRIC_TAG_PREFIX):]: float(value) for key, value in (champion.tags or {}).items()
            if key.startswith(METRIC_TAG_PREFIX)}


def decide(task: str, cfg: Any, dataset_hash: str, manifest_uri: str, settings: MlflowSettings) -> RetrainDecision:
    """Whether to train ``task`` on ``dataset_hash`` now (see the module docstring). Raises
    :class:`DataDriftError` when ``fail_on_drift`` applies and the data drifted."""
    model_name = settings.task(task).model_name
    client = MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    champion = current_champion(client, model_name)
    if champion is None:
        return RetrainDecision(task, True, "no champion yet", model_name)
    version = str(champion.version)
    if _unchanged(champion, task, cfg, dataset_hash):
        if not cfg.force_training:
            return RetrainDecision(
                task, False, f"{task}: {NOTHING_NEW} ({model_name} v{version} was trained on data set "
                             f"{dataset_hash[:12]} with the same configuration and code; force_training trains anyway)",
                model_name, version, _champion_metrics(champion))
        log.info("%s: the champion v%s was trained on the same data, configuration and code; training anyway "
                 "(force_training)", task, version)
    if settings.drift.fail_on_drift or cfg.fail_on_drift:
        drift = drift_against_champion(client, champion, manifest_uri, dataset_hash, settings.drift)
        if drift.drifted:
            raise DataDriftError(f"{task}: not trained: {drift.summary()}; fail_on_drift is set (mlflow.yaml "
                                 "drift.fail_on_drift, --fail_on_drift or the pipeline's fail_on_drift): look at "
                                 "the data report, then run without fail_on_drift to train on it")
        log.info("%s: %s", task, drift.summary())
    return RetrainDecision(task, True, f"new since champion v{version}", model_name, version)


def _champion_store(client: MlflowClient, champion) -> str:
    """The store the champion's run read its data from ('' when the run is gone)."""
    try:
        return store_of(client.get_run(champion.run_id).data.params.get(PARAM_MANIFEST_URI, ""))
    except MlflowException:
        return ""


def drift_against_champion(client: MlflowClient, champion, manifest_uri: str, dataset_hash: str,
                           thresholds: DriftSettings) -> DriftReport:
    """Drift of data set ``dataset_hash`` (in ``manifest_uri``'s store) from the champion's data set,
    whose report is looked up in the same store, then in the store the champion's run read."""
    champion_hash = (champion.tags or {}).get(PARAM_DATASET_HASH, "")
    if not champion_hash:
        return not_computed("", f"champion v{champion.version} records no data set hash")
    store = store_of(manifest_uri)
    new = data_report(store, dataset_hash)
    if new is None:
        return not_computed(champion_hash, f"data set {dataset_hash[:12]} has no report in {store or 'its store'} "
                                           "(written before data reports, or not a preprocessed data set)")
    old = data_report(store, champion_hash)
    if old is None:
        other = _champion_store(client, champion)
        old = data_report(other, champion_hash) if other and other != store else None
    if old is None:
        return not_computed(champion_hash, f"champion v{champion.version}'s data set {champion_hash[:12]} has no "
                                           f"report in {store} (garbage-collected, or in another store)")
    return compare_reports(new, old, missing_share_change=thresholds.missing_share_change,
                           coordinate_distance=thresholds.coordinate_distance)


def tag_drift(task: str, manifest_uri: str, dataset_hash: str, settings: MlflowSettings) -> DriftReport | None:
    """Tag the active run with the drift of its data from the champion's (``data.drift`` = true, false
    or unknown, ``data.drift.<region>`` for each region beyond a threshold) and say so in one line."""
    client = MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    champion = current_champion(client, settings.task(task).model_name)
    if champion is None:
        log.info("%s: no champion yet: no data drift to compute", task)
        return None
    drift = drift_against_champion(client, champion, manifest_uri, dataset_hash, settings.drift)
    mlflow.set_tags(drift.tags())
    (log.warning if drift.drifted else log.info)("%s: %s", task, drift.summary())
    return drift
