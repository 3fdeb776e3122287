"""What a checkpoint holds: the loop's :class:`TrainState`, every RNG, and the atomic save/load.

Exact resume: the data order of an epoch is a pure function of (seed, epoch, rank), the DataLoader
draws from its own generator (never the global RNG), and a checkpoint holds model, optimiser,
scheduler, every RNG state, the epoch and the number of batches already consumed. A run killed after
any step and resumed from its last checkpoint ends with bit-identical weights (tested on CPU).
"""

from __future__ import annotations

import io
import math
import pickle
import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from signpose.errors import UserError
from signpose.store import open_store

CHECKPOINT_KEY = "latest.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainState:
    """Everything the loop changes as it goes; a checkpoint stores it next to the weights."""

    epoch: int = 0                  # the epoch being trained (epochs before it are complete)
    batches_done: int = 0           # batches of this epoch this run's ranks already consumed
    samples_done: int = 0           # samples of this epoch consumed over all ranks (a resume skips them,
                                    # on any number of ranks; the learning-rate schedule counts them)
    global_step: int = 0            # optimiser steps so far
    loss_sum: float = 0.0           # this epoch's training loss, summed over samples ...
    loss_count: int = 0             # ... and the number of samples (this rank's; all ranks' in a checkpoint)
    history: list[dict[str, float]] = field(default_factory=list)  # one metrics dict per finished epoch
    best_value: float = math.inf    # the best monitored value (lowest val/loss) ...
    best_epoch: int = -1            # ... its epoch ...
    best_metrics: dict[str, float] = field(default_factory=dict)  # ... its metrics ...
    best_state: dict[str, torch.Tensor] | None = None  # ... and its weights (with restore_best)
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainState":
        """The fields ``values`` holds (a checkpoint written before a field existed: its default)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def start_epoch(self) -> None:
        """Called when an epoch is complete: the next one starts from its first batch."""
        self.epoch, self.batches_done, self.samples_done = self.epoch + 1, 0, 0
        self.loss_sum, self.loss_count = 0.0, 0


def device_rng_state(device: torch.device | None) -> torch.Tensor | None:
    """The generator of this rank's own accelerator, or None on the CPU. Only its own: a checkpoint
    holding every visible GPU's (``get_rng_state_all``) cannot be restored on a node with fewer."""
    if device is None or device.type != "cuda":
        return None
    return torch.cuda.get_rng_state(device)


def set_device_rng_state(state: torch.Tensor | None, device: torch.device | None) -> None:
    if state is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


def rng_state(device: torch.device | None = None) -> dict:
    """This process's RNG states: torch's CPU generator, Python's, numpy's, and ``device``'s."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state as tensors/ints so torch.load(weights_only=True) accepts it
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    own = device_rng_state(device)
    if own is not None:
        state["device"] = own
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    own = state.get("device")
    if own is None and state.get("cuda") and device is not None and device.index is not None:
        # Written before checkpoints held one generator per rank: every visible GPU's; this device's.
        own = state["cuda"][device.index] if device.index < len(state["cuda"]) else None
    set_device_rng_state(own, device)


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(checkpoint_dir: str, state: dict) -> str:
    """Serialise ``state`` with torch.save and write it atomically to ``checkpoint_dir``/latest.pt."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store = open_store(checkpoint_dir)
    store.put_bytes(CHECKPOINT_KEY, buffer.getvalue())
    return f"{store.uri.rstrip('/')}/{CHECKPOINT_KEY}"


class CheckpointError(UserError):
    """A ``latest.pt`` that is not a signpose training checkpoint; the message names the file."""


class RefusedCheckpointError(CheckpointError, pickle.UnpicklingError):
    """``weights_only`` refused a global: a tampered or foreign file."""


class UnreadableCheckpointError(CheckpointError, RuntimeError):
    """Truncated or corrupt."""


class ForeignCheckpointError(CheckpointError, ValueError):
    """Readable, but not what signpose writes (a list, a model.pt, another format)."""


_NOT_A_CHECKPOINT = "use another --checkpoint_dir, or --no_resume to start over"


def _reason(err: BaseException) -> str:
    """The line of torch's (multi-line) error that says why; error lines stay one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "Unsupported global" in line), lines[0] if lines else type(err).__name__)


def load_checkpoint(checkpoint_dir: str) -> dict | None:
    """The latest checkpoint in ``checkpoint_dir`` or None; loaded with ``weights_only=True``. Anything
    that is not a checkpoint signpose wrote is a :class:`CheckpointError` (one line, naming the file)."""
    store = open_store(checkpoint_dir)
    if not store.exists(CHECKPOINT_KEY):
        return None
    where = f"{store.uri.rstrip('/')}/{CHECKPOINT_KEY}"
    try:
        state = torch.load(io.BytesIO(store.get_bytes(CHECKPOINT_KEY)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: a tampered or foreign file
        raise RefusedCheckpointError(f"{where}: refused to load the checkpoint (weights_only): {_reason(e)}; "
                                     f"nothing of it ran; {_NOT_A_CHECKPOINT}") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:  # truncated or corrupt archive: say which file
        raise UnreadableCheckpointError(f"{where}: checkpoint is unreadable (truncated or corrupt): {_reason(e)}; "
                                        f"{_NOT_A_CHECKPOINT}") from e
    if not isinstance(state, dict):
        raise ForeignCheckpointError(f"{where}: holds a {type(state).__name__}, not a signpose training checkpoint; "
                                     f"{_NOT_A_CHECKPOINT}")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ForeignCheckpointError(f"{where}: checkpoint format {state.get('format')!r}, expected "
                                     f"{CHECKPOINT_FORMAT} (a model.pt or another program's file?); {_NOT_A_CHECKPOINT}")
    missing = [key for key in ("task", "model") if key not in state]
    if missing:
        raise ForeignCheckpointError(f"{where}: checkpoint lacks {', '.join(missing)}; {_NOT_A_CHECKPOINT}")
    return state


def check_checkpoint_task(checkpoint: dict, task: str, checkpoint_dir: str) -> None:
    if checkpoint["task"] != task:
        raise UserError(f"{checkpoint_dir}: holds a {checkpoint['task']!r} checkpoint, not {task!r}; "
                        "use another --checkpoint_dir or --no_resume")


def load_checkpoint_weights(model: torch.nn.Module, checkpoint: dict, cfg, checkpoint_dir: str) -> None:
    """The checkpoint's weights into ``model``; a checkpoint of another model shape (other widths, another
    ``--model``, or written before a model field existed) is a user error naming the fields that differ."""
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        saved = checkpoint.get("config") or {}
        current = {**cfg.model_config().to_dict(), "model": getattr(cfg, "model", None)}
        differ = [f"{name} {saved.get(name, '(not recorded)')} -> {value}" for name, value in current.items()
                  if value is not None and saved.get(name) != value]
        raise UserError(f"{checkpoint_dir}: its checkpoint is of another model shape "
                        f"({'; '.join(differ) or str(e).splitlines()[0]}); train with the flags it was written "
                        "with, or use another --checkpoint_dir or --no_resume") from e

