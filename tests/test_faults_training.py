"""Training killed with SIGKILL mid-epoch resumes from its last checkpoint and ends with the weights
of an uninterrupted run (deterministic CPU training), and checkpoints are loaded safely.

The training runs in a subprocess through the same entry point as ``signpose train face``
(``signpose.cli.train.run``) with one extra callback that SIGKILLs the process at a counted optimiser
step, or a hook that kills it while a checkpoint is being written. The re-run is the plain command.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
import torch

from signpose.tasks import FaceTrainConfig
from signpose.train import entry as train_cli
from signpose.train.engine import CHECKPOINT_KEY, load_checkpoint

# 16 training frames, batch 4: 4 steps an epoch, 2 epochs = 8 steps; checkpoints every 3 (or 5) steps
# and at every epoch end.
TINY = dict(batch_size=4, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
            decoder_layers=1, dropout=0.1, lr=3e-3, progress=False, device="cpu", amp="off", num_workers=0)

KILLED_TRAINING = r"""
import json, os, signal, sys
from signpose.train import engine, entry as cli
from signpose.tasks import FaceTrainConfig
from signpose.store import LocalStore
import signpose.store as store_module

values, point, k = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])

class KillAtStep:
    def on_step_end(self, step, metrics):
        if point == "step" and step == k:
            os.kill(os.getpid(), signal.SIGKILL)

if point == "checkpoint-write":
    real_replace = os.replace
    saved = []
    def replace(src, dst):
        if str(dst).endswith(engine.CHECKPOINT_KEY):
            if len(saved) == k:
                os.kill(os.getpid(), signal.SIGKILL)  # the new checkpoint is a temporary file only
            saved.append(dst)
        return real_replace(src, dst)
    store_module.os.replace = replace

cli.run(FaceTrainConfig(**values), callbacks=[KillAtStep()])
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset_uri):
    return train_cli.run(FaceTrainConfig(data_path=tiny_dataset_uri, **TINY))


def run_killed(values: dict, point: str, k: int) -> subprocess.CompletedProcess:
    import json

    return subprocess.run([sys.executable, "-c", KILLED_TRAINING, json.dumps(values), point, str(k)],
                          capture_output=True, text=True, timeout=300)


def assert_same_weights(expected: torch.nn.Module, got: torch.nn.Module) -> None:
    a, b = expected.state_dict(), got.state_dict()
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"weights differ from the uninterrupted run: {different}"


@pytest.mark.parametrize("point, k, resumes_at", [
    ("step", 7, (1, 2, 6)),              # killed at step 7 (epoch 2, batch 3): last checkpoint at step 6
    pytest.param("checkpoint-write", 2, (1, 1, 5), marks=pytest.mark.slow),  # killed while writing the
    # 3rd checkpoint (step 8): the 2nd (step 5, mid-epoch) is intact and the run resumes from it
])
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path, tiny_dataset_uri, uninterrupted,
                                                                       point, k, resumes_at):
    values = dict(data_path=tiny_dataset_uri, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=3, **TINY)
    if point == "checkpoint-write":
        values["checkpoint_every"] = 5  # checkpoints at steps 4 (epoch end), 5 and 8 (epoch end)
    killed = run_killed(values, point, k)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    saved = load_checkpoint(values["checkpoint_dir"])
    assert saved is not None
    assert (saved["epoch"], saved["batches_done"], saved["global_step"]) == resumes_at
    assert 0 < saved["batches_done"] < 4, "the kill was meant to land mid-epoch"

    resumed = train_cli.run(FaceTrainConfig(**values))
    assert resumed.global_step == uninterrupted.global_step == 8
    assert_same_weights(uninterrupted.model, resumed.model)
    assert [h["val/loss"] for h in resumed.history] == [h["val/loss"] for h in uninterrupted.history]


class Gadget:
    """What an attacker would put into a checkpoint: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_code_execution_gadget_is_refused_and_nothing_runs(tmp_path, tiny_dataset_uri):
    values = dict(data_path=tiny_dataset_uri, checkpoint_dir=str(tmp_path / "ckpt"), **TINY)
    values["epochs"] = 1
    train_cli.run(FaceTrainConfig(**values))
    state = load_checkpoint(values["checkpoint_dir"])
    marker = tmp_path / "owned"
    state["history"] = Gadget(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (tmp_path / "ckpt" / CHECKPOINT_KEY).write_bytes(buffer.getvalue())

    with pytest.raises(Exception, match="(?i)weights.only|unsupported global|posix.system|os.system"):
        load_checkpoint(values["checkpoint_dir"])
    # Resuming refuses too: it does not quietly start over nor execute the gadget.
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        train_cli.run(FaceTrainConfig(**values))
    assert not marker.exists(), "the checkpoint's payload was executed"


def test_truncated_checkpoint_is_an_error_not_a_silent_fresh_start(tmp_path, tiny_dataset_uri):
    values = dict(data_path=tiny_dataset_uri, checkpoint_dir=str(tmp_path / "ckpt"), **TINY)
    values["epochs"] = 1
    train_cli.run(FaceTrainConfig(**values))
    path = tmp_path / "ckpt" / CHECKPOINT_KEY
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError, match="checkpoint is unreadable") as failure:
        load_checkpoint(values["checkpoint_dir"])
    assert str(path) in str(failure.value)
    with pytest.raises(RuntimeError, match="checkpoint is unreadable"):
        train_cli.run(FaceTrainConfig(**values))  # resuming refuses too; it does not start over
