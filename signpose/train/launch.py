"""Every GPU of a node: the training entry on N local ranks through torch's own elastic launcher.

The pipeline's training task calls :func:`train_on_local_ranks` when it holds N > 1 GPUs: the
launcher (``torch.distributed.run``'s API) starts N processes with the torchrun environment (RANK,
WORLD_SIZE, LOCAL_RANK, a c10d rendezvous on this host), each runs :func:`signpose.train.entry.run`,
rank 0 alone talks to MLflow, and rank 0's outcome comes back to the task: the tracked outcome plus
the trained weights, rebuilt here into the same :class:`~signpose.tracking.training.TrackedTraining`
a one-process training returns.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import uuid
from dataclasses import fields

import torch

from signpose.models import build_model, cpu_state_dict
from signpose.train.config import TrainConfig

log = logging.getLogger(__name__)


def rank_threads(environ: dict | None = None) -> int:
    """Intra-op threads of each local rank: ``OMP_NUM_THREADS`` when set, else 1 (as torchrun does
    for several ranks): the pod's other CPUs go to every rank's DataLoader workers
    (:func:`signpose.train.data_order.auto_num_workers`), not to N ranks' thread pools fighting over them."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else 1


def _rank_main(config_cls: type[TrainConfig], values: dict, run_kwargs: dict, threads: int = 1) -> dict | None:
    """One rank's training; rank 0 returns what the task needs (picklable), the others None."""
    from signpose.train.entry import run

    os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes this rank starts
    torch.set_num_threads(threads)

    result = run(config_cls(**values), **run_kwargs)
    outcome = result.extra.get("tracking")
    state = cpu_state_dict(result.model)
    if int(os.environ.get("RANK", "0")) != 0:
        return {"weights_sha256": weights_digest(state)}
    return {"weights_sha256": weights_digest(state), "tracking": None if outcome is None else outcome.as_dict(),
            "state_dict": state,
            "result": {"history": result.history, "best_metrics": result.best_metrics,
                       "best_epoch": result.best_epoch, "global_step": result.global_step,
                       "stopped_early": result.stopped_early, "checkpoint_uri": result.checkpoint_uri,
                       "extra": {k: v for k, v in result.extra.items() if k != "tracking"}}}


def weights_digest(state_dict: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: equal digests = equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def launch_config(nproc: int):
    """A one-node launch of ``nproc`` ranks, as ``torchrun --standalone --nproc_per_node N`` makes it."""
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"signpose-{uuid.uuid4().hex[:12]}",
                        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")


def train_on_local_ranks(cfg: TrainConfig, nproc: int, **run_kwargs):
    """Train ``cfg`` on ``nproc`` local ranks; returns rank 0's TrackedTraining (``track=True``) or
    TrainResult."""
    from torch.distributed.launcher.api import elastic_launch

    from signpose.train.engine import TrainResult

    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    log.info("training %s on %d local ranks", cfg.task, nproc)
    # torch's elastic agent installs its own SIGTERM/SIGINT/SIGHUP/SIGQUIT handlers in this process and
    # never puts the previous ones back: restore them, or Ctrl-C and SIGTERM change meaning afterwards.
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        returned = elastic_launch(launch_config(nproc), _rank_main)(type(cfg), values, run_kwargs, rank_threads())
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    digests = [returned[rank]["weights_sha256"] for rank in sorted(returned)]
    if len(set(digests)) != 1:  # DDP keeps replicas equal; anything else is a bug worth stopping for
        raise RuntimeError(f"the {nproc} ranks ended with different weights: {digests}")
    rank0 = returned[0]
    model = build_model(cfg)
    model.load_state_dict(rank0["state_dict"])
    result = TrainResult(model=model, config=cfg, **rank0["result"])
    result.extra["rank_weights_sha256"] = digests
    if rank0["tracking"] is None:
        return result
    from signpose.tracking.training import TrackedTraining

    outcome = TrackedTraining(**rank0["tracking"], result=result)
    result.extra["tracking"] = outcome
    return outcome
