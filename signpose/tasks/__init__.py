"""The task registry: one :class:`TaskSpec` per task; every other module looks tasks up here.

>>> [spec.name for spec in list_tasks()]
['skeleton', 'face']
>>> get_task("face").promotion_metric
'val/nme'

A new task is one module (a config, an objective, a ``TaskSpec``) plus one ``register_task`` line below.
"""

from signpose.tasks.base import (
    Objective,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
    task_for_input_shape,
    task_names,
)
from signpose.tasks.face import FACE, FaceTrainConfig
from signpose.tasks.skeleton import SKELETON, SkeletonTrainConfig

register_task(SKELETON)
register_task(FACE)

__all__ = ["FACE", "SKELETON", "FaceTrainConfig", "Objective", "SkeletonTrainConfig", "TaskSpec", "get_task",
           "list_tasks", "register_task", "task_for_input_shape", "task_names"]
