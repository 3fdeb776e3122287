"""Thin, typed KFP components: each body is a few lines that call ``signpose.stages``.

Lightweight components run their function's source in the stage image (or, under ``kfp.local``,
in this interpreter), so every import lives inside the function body.
"""

from components.preprocess import commit_dataset, plan_dataset, write_shards
from components.train import POD_SIZE_FIELDS, size_training_pod, train_face, train_skeleton

__all__ = ["plan_dataset", "write_shards", "commit_dataset", "train_skeleton", "train_face", "size_training_pod",
           "POD_SIZE_FIELDS"]
