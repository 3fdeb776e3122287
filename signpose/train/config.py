"""Typed training configuration: one dataclass per task, the seed's flags as field names.

The seed's sizes are the defaults (skeleton: batch 16, 100 epochs, 256 px; face: batch 32, 100 epochs,
d_global 256, d_region 128). ``make run`` passes a small configuration instead.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, asdict, dataclass, fields

from signpose.models import FaceModelConfig, SkeletonModelConfig


@dataclass
class TrainConfig:
    """Fields shared by both tasks (the engine reads only these)."""

    data_path: str = ""              # raw keypoint file or preprocessed manifest (store uri)
    batch_size: int = 16
    epochs: int = 100
    lr: float = 5e-4                 # peak learning rate (AdamW)
    weight_decay: float = 0.05       # on weight matrices only (not biases, norms)
    warmup_fraction: float = 0.05    # linear warm-up over this fraction of all steps, then cosine
    min_lr_ratio: float = 0.01       # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0           # max global grad norm; 0 disables
    seed: int = 0
    num_workers: int = 0             # DataLoader workers
    val_fraction: float = 0.1        # held-out share of videos when the data has no 'dev' split
    device: str = "auto"             # "auto" = cuda (LOCAL_RANK) if available, else cpu
    amp: str = "auto"                # "auto" = bf16 autocast on CUDA; "bf16"; "off"
    compile: bool = False            # torch.compile the model
    checkpoint_dir: str = ""         # local path or store uri (s3://...); "" = no checkpoints
    checkpoint_every: int = 0        # also checkpoint every N optimiser steps (0 = at epoch ends only)
    resume: bool = True              # continue from checkpoint_dir's latest checkpoint when there is one
    early_stopping_patience: int = 0 # stop after N epochs without improvement of val/loss; 0 = off
    restore_best: bool = True        # end with the weights of the best val/loss epoch
    progress: bool = True            # tqdm bars
    output_dir: str = ""             # the CLI writes model.pt and metrics.json here ('' = nowhere)
    track: bool = True               # the CLI trains inside an MLflow run, registers and gates the model
                                     # (mlflow.yaml / MLFLOW_TRACKING_URI); --no_track trains only
    stream: bool = False             # manifests: stream shards (bounded memory) instead of loading splits

    task = "base"

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


@dataclass
class SkeletonTrainConfig(TrainConfig):
    """``python -m signpose.train.skeleton`` (seed: training/skeleton/train.py)."""

    batch_size: int = 16
    epochs: int = 100
    image_size: int = 256
    use_weighted_loss: bool = False  # seed flag (store_true): weighted MSE instead of plain MSE
    hand_weight: float = 2.0
    face_weight: float = 1.5
    weight_margin: float = 0.03      # growth of the keypoint boxes of the loss weight map (frame units)
    # model
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_decoder_layers: int = 2
    grid_size: int = 8
    decoder_channels: int = 256
    dropout: float = 0.1

    task = "skeleton"

    def model_config(self) -> SkeletonModelConfig:
        return SkeletonModelConfig(image_size=self.image_size, d_model=self.d_model, n_layers=self.n_layers,
                                   n_heads=self.n_heads, n_decoder_layers=self.n_decoder_layers,
                                   grid_size=self.grid_size, decoder_channels=self.decoder_channels,
                                   dropout=self.dropout)


@dataclass
class FaceTrainConfig(TrainConfig):
    """``python -m signpose.train.face`` (seed: training/hierarchical_keypoint/train.py)."""

    batch_size: int = 32
    epochs: int = 100
    d_global: int = 256
    d_region: int = 128
    n_heads: int = 4
    region_layers: int = 2
    interaction_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1

    task = "face"

    def model_config(self) -> FaceModelConfig:
        return FaceModelConfig(d_region=self.d_region, d_global=self.d_global, n_heads=self.n_heads,
                               region_layers=self.region_layers, interaction_layers=self.interaction_layers,
                               decoder_layers=self.decoder_layers, dropout=self.dropout)


def _coerce(name: str, value, kind):
    """Values that crossed JSON or a protobuf Struct (KFP dict parameters turn every number into a
    float) back to the field's type; anything that does not fit exactly is refused."""
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"config field {name!r} must be an integer, got {value!r}")
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# --- command line: every field is a flag of the same name (the seed's flags among them) -------------

def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[TrainConfig]) -> None:
    """``--<field>`` for every field of ``config_cls``; a bool that defaults to False is a switch
    (``--use_weighted_loss``, as in the seed), one that defaults to True gets ``--no_<field>``."""
    hints = typing.get_type_hints(config_cls)
    defaults = config_cls()
    for f in fields(config_cls):
        default = getattr(defaults, f.name)
        kind = hints[f.name]
        if kind is bool:
            if default:
                parser.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                                    help=f"disable {f.name}")
            else:
                parser.add_argument(f"--{f.name}", action="store_true", help=f"enable {f.name}")
            continue
        parser.add_argument(f"--{f.name}", type=kind, default=default,
                            required=f.name == "data_path" and f.default is MISSING,
                            help=f"(default: {default!r})")


def config_from_args(args: argparse.Namespace, config_cls: type[TrainConfig]):
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})


# Task name -> its config class (the stages and CLIs look tasks up here).
TASK_CONFIGS: dict[str, type[TrainConfig]] = {"skeleton": SkeletonTrainConfig, "face": FaceTrainConfig}
