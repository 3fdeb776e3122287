"""The training configuration every task shares; the seed's flags are its field names.

Each task's config (:mod:`signpose.tasks`) is a subclass of :class:`TrainConfig` *and* of its model's
config dataclass, so model hyper-parameters are declared once, in the model's module, and are flags
of the same name (``--d_model``); :meth:`TrainConfig.model_config` projects the model's part out.
The field comments are the command line's help text.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import ClassVar, Literal


@dataclass
class TrainConfig:
    """Fields shared by both tasks (the engine reads only these)."""

    data_path: str = ""              # raw keypoint file or preprocessed manifest (store uri)
    batch_size: int = 16             # samples per optimiser step (per process under torchrun)
    epochs: int = 100                # passes over the training split
    lr: float = 5e-4                 # peak learning rate (AdamW)
    weight_decay: float = 0.05       # on weight matrices only (not biases, norms)
    warmup_fraction: float = 0.05    # linear warm-up over this fraction of all steps, then cosine
    min_lr_ratio: float = 0.01       # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0           # max global grad norm; 0 disables
    seed: int = 0                    # seeds the weights, the data order and dropout (exact resume relies on it)
    num_workers: int = -1            # DataLoader worker processes; -1 = auto: the CPUs this process may use
                                     # (affinity, cgroup CPU limit) shared by torchrun's local ranks, minus 1, <= 8
    val_fraction: float = 0.1        # held-out share of videos when the data has no 'dev' split
    device: str = "auto"             # "auto" = cuda (LOCAL_RANK) if available, else cpu; cpu, cuda, cuda:N, mps
    amp: Literal["auto", "bf16", "off"] = "auto"  # "auto" = bf16 autocast on CUDA; "bf16"; "off"
    compile: bool = False            # torch.compile the model
    checkpoint_dir: str = ""         # local path or store uri (s3://...); "" = no checkpoints
    checkpoint_every: int = 0        # also checkpoint every N optimiser steps (0 = at epoch ends only)
    resume: bool = True              # continue from checkpoint_dir's latest checkpoint when there is one
    sync_every: int = 50             # read the training loss (one host sync, which stalls the GPU queue)
                                     # every N steps: a non-finite loss stops the run within N steps
    dist_timeout_s: float = 1800.0   # multi-GPU: how long ranks wait for each other in a collective
    grad_accumulation: int = 1       # optimiser step every N batches (gradients all-reduced once per step)
    ddp_bf16_gradients: bool = False # multi-GPU: all-reduce gradients in bfloat16 (half the traffic)
    early_stopping_patience: int = 0 # stop after N epochs without improvement of val/loss; 0 = off
    restore_best: bool = True        # end with the weights of the best val/loss epoch
    progress: bool = True            # tqdm bars
    output_dir: str = ""             # the CLI writes model.pt and metrics.json here ('' = nowhere)
    real_eval_path: str = ""         # real signers' keypoint files (file, folder or s3:// prefix) scored
                                     # every epoch as val_real/* next to the generated validation
    track: bool = True               # the CLI trains inside an MLflow run, registers and gates the model
                                     # (mlflow.yaml / MLFLOW_TRACKING_URI); --no_track trains only
    force_training: bool = False     # train even when the champion was trained on this data set, with this
                                     # configuration and this code (else: "nothing trained")
    fail_on_drift: bool = False      # stop before training when the data drifted from the champion's beyond
                                     # mlflow.yaml's drift thresholds (also drift.fail_on_drift there)
    stream: bool = True              # manifests: stream the shards (memory flat in data set size);
                                     # --no_stream loads each split into RAM (small data sets only)
    max_frames: int | None = None    # raw keypoint files: refuse inputs declaring more frames than this,
                                     # before reading them; None = $SIGNPOSE_MAX_FRAMES, else 1,000,000
    max_rejected: float | None = None  # raw keypoint files: fail when validation rejects more than this
                                     # share of the frames; None = $SIGNPOSE_MAX_REJECTED, else 0.01

    task: ClassVar[str] = "base"     # the task this config trains (set by each task's subclass)

    def __post_init__(self) -> None:
        """Every number in its range (signpose.ranges), then the model config's own checks -- a
        mistake in either is a user error (one line), not a traceback."""
        from signpose.ranges import RangeError, check_config

        check_config(self)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            try:
                parent()
            except ValueError as err:
                raise RangeError(f"{type(self).__name__}: {err}") from None

    @classmethod
    def model_config_cls(cls) -> type:
        """The model's config dataclass: the base that is not a training config."""
        for base in cls.__mro__[1:]:
            if is_dataclass(base) and not issubclass(base, TrainConfig):
                return base
        raise TypeError(f"{cls.__name__} has no model config among its bases")

    def model_config(self):
        """The model's hyper-parameters as the model's own config dataclass."""
        model_cls = self.model_config_cls()
        return model_cls(**{f.name: getattr(self, f.name) for f in fields(model_cls)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerce(name, value, hints[name]) for name, value in values.items()})


def _coerce(name: str, value, kind):
    """Values that crossed JSON or a protobuf Struct (KFP dict parameters turn every number into a
    float) back to the field's type; anything that does not fit exactly is refused."""
    if value is not None and type(None) in typing.get_args(kind):  # int | None: coerce as int
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"config field {name!r} must be an integer, got {value!r}")
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
