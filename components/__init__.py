"""Thin, typed KFP components: each body is a few lines that call ``signpose.stages``.

Lightweight components run their function's source in the stage image (or, under ``kfp.local``,
in this interpreter), so every import lives inside the function body.
"""

from components.preprocess import commit_dataset, plan_dataset, write_shards
from components.train import train_face, train_skeleton

__all__ = ["plan_dataset", "write_shards", "commit_dataset", "train_skeleton", "train_face"]
