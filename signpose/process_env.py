"""Settings every process signpose runs in gets, whatever the environment it was started with.

MLflow 3.17 unpickles a model folder's ``data/model.pth`` (and the pickled records of a ``.pt2``
archive) unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false; its default is true. A model folder
is data a user with registry write access controls, so signpose turns that off in every process it
starts: :mod:`signpose` applies :data:`SAFE_ENV` when it is imported (before any of its modules
imports MLflow, which reads the variable at each load), and the KFP tasks and TrainJob pods get it
in their container environment too (:mod:`signpose.deploy.cluster`, :mod:`signpose.deploy.trainjob_manifest`).
The value is forced, not defaulted: a pod spec or a shell that says ``true`` does not reopen the hole.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PICKLE_MODELS_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
SAFE_ENV: dict[str, str] = {PICKLE_MODELS_ENV: "false"}


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Set :data:`SAFE_ENV` in ``environ`` (default: this process's environment)."""
    (os.environ if environ is None else environ).update(SAFE_ENV)
