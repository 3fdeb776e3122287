"""Training: one loop for every task (:mod:`signpose.train.engine`), its state and checkpoints
(:mod:`~signpose.train.state`), and one entry point, :func:`signpose.train.entry.run`, that the CLI and the
pipeline stages both call (with MLflow tracking or without).

Seed-compatible commands: ``python -m signpose.train.skeleton`` and ``python -m signpose.train.face``
(also ``signpose train skeleton|face``).

The names below are imported on first use, so importing a submodule (``signpose.train.config``) does
not import the engine.
"""

import importlib

_EXPORTS = {
    "TrainConfig": "signpose.train.config",
    "TrainResult": "signpose.train.engine", "evaluate": "signpose.train.engine", "fit": "signpose.train.engine",
    "load_checkpoint": "signpose.train.state", "TrainState": "signpose.train.state",
    "run": "signpose.train.entry",
    "FaceTrainConfig": "signpose.tasks", "SkeletonTrainConfig": "signpose.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'signpose.train' has no attribute {name!r}")
