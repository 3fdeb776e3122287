"""What a task is (:class:`TaskSpec`) and the one registry every other module asks.

A task ties together: its name (the ``signpose train <name>`` subcommand, the MLflow task tag, the
checkpoint's task field), its training config (a :class:`~signpose.train.config.TrainConfig` that is
also its model's config, so the model's hyper-parameters are declared once), the model (the registered
model of that config), the samples it trains on (a :class:`~signpose.data.SampleKind`), its loss and
validation metrics (an :class:`Objective`), the validation panel, and how MLflow names, registers and
promotes its models. Adding a task = one module defining a ``TaskSpec`` + one ``register_task`` line
in ``signpose/tasks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from signpose.data import SampleKind
from signpose.models import ModelEntry, entry_for_config


class Objective:
    """What the training loop asks a task: the loss of a batch and the validation metrics."""

    def __init__(self, name: str, cfg: Any):
        self.name = name
        self.cfg = cfg

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar loss, model output) for one batch."""
        raise NotImplementedError

    def new_metrics(self):
        """A fresh accumulator (``signpose.metrics``) for one validation pass."""
        raise NotImplementedError

    def update_metrics(self, metrics, output: torch.Tensor, batch: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError

    def baseline_model(self, reference) -> nn.Module | None:
        """The trivial predictor a trained model must beat (e.g. the mean face of ``reference``, the
        training data: validation split, else training split), scored next to the model on every extra
        evaluation set (``val_real_baseline/...``); None: the task has none."""
        return None


@dataclass(frozen=True)
class TaskSpec:
    name: str                       # CLI subcommand, MLflow tag, checkpoint field
    description: str                # one line: the CLI's help
    config_cls: type                # TrainConfig subclass that also derives from the model's config
    objective_cls: type[Objective]  # loss + validation metrics
    samples: SampleKind             # what a training sample is (shards and raw files)
    panel: Callable[..., np.ndarray]  # (inputs, targets, outputs) -> RGB validation panel
    prediction_image: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (input, output) of one frame -> PNG
    experiment: str                 # default MLflow experiment (mlflow.yaml may override)
    model_name: str                 # default registered model name
    promotion_metric: str           # the promotion gate compares this validation metric ...
    promotion_direction: str = "lower"  # ... lower or higher is better
    seed_script: str = ""           # the seed's training script this task replaces

    @property
    def model(self) -> ModelEntry:
        """The registered model (``signpose.models``) this task trains."""
        return entry_for_config(self.config_cls)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.samples.input_shape

    def objective(self, cfg: Any) -> Objective:
        return self.objective_cls(self.name, cfg)

    def config(self, **values: Any):
        """The task's training config from (JSON-ish) values; unknown fields are refused."""
        return self.config_cls.from_dict(values)


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    if spec.config_cls.task != spec.name:
        raise ValueError(f"task {spec.name!r}: {spec.config_cls.__name__}.task is {spec.config_cls.task!r}")
    _TASKS[spec.name] = spec
    return spec


def list_tasks() -> list[TaskSpec]:
    return list(_TASKS.values())


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get_task(name: "str | TaskSpec") -> TaskSpec:
    if isinstance(name, TaskSpec):
        return name
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(_TASKS)}") from None


def task_for_input_shape(shape: Sequence[int]) -> TaskSpec | None:
    """The task whose model takes one sample of ``shape`` (the trailing dimensions), if exactly one."""
    shape = tuple(int(n) for n in shape)
    matches = [spec for spec in _TASKS.values()
               if len(shape) >= len(spec.input_shape) and shape[-len(spec.input_shape):] == spec.input_shape]
    return matches[0] if len(matches) == 1 else None
