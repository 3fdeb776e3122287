"""Training: one engine (:func:`signpose.train.engine.fit`) for both tasks, typed configs, task CLIs.

CLIs: ``python -m signpose.train.skeleton`` and ``python -m signpose.train.face`` (the seed's flags);
the ``signpose`` CLI mounts them as ``signpose train skeleton|face`` via their ``add_parser``.
"""

from signpose.train.config import FaceTrainConfig, SkeletonTrainConfig, TrainConfig
from signpose.train.engine import TrainResult, evaluate, fit, load_checkpoint

__all__ = ["FaceTrainConfig", "SkeletonTrainConfig", "TrainConfig", "TrainResult", "evaluate", "fit",
           "load_checkpoint"]
