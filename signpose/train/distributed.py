"""Where training runs: seeding, the device, DistributedDataParallel's process group, autocast."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "off")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_pref: str, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), or use an existing one.
    ``timeout_s``: how long a collective (and the start-up rendezvous) may wait for a late rank before
    the run fails; explicit, because NCCL's own default (10 minutes) is shorter than a rank 0 that
    retries MLflow (7 retries of up to 120 s each by default) can take."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, initialised_here=True)


def check_device_available(pref: str) -> None:
    """Refuse (one line, before any work) a ``--device`` this machine does not have: ``cuda`` without
    CUDA, ``cuda:N`` beyond the visible devices, ``mps`` without MPS."""
    from signpose.errors import UserError

    device = torch.device("cpu" if pref == "auto" else pref)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise UserError(f"--device {pref}: this machine has {count} CUDA device(s) visible"
                            f"{f' (cuda:0..cuda:{count - 1})' if count else ''}; use --device auto or cpu")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device {pref}: MPS is not available on this machine; use --device auto or cpu")


def resolve_device(pref: str, ctx: DistContext) -> torch.device:
    if pref == "auto":
        return torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    return device


def autocast(device: torch.device, amp: str):
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {amp!r}")
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def wrap_ddp(model: torch.nn.Module, device: torch.device, bf16_gradients: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (which broadcasts rank 0's weights to every rank here).

    Buffers are broadcast from rank 0 before every forward only when some can change in training
    (batch-norm running statistics); this project's models hold constant buffers (Fourier
    frequencies, part ids), which every rank builds identically, so the broadcast is skipped.
    ``bf16_gradients``: all-reduce gradients in bfloat16 (DDP's ``bf16_compress_hook``): half the
    traffic, for multi-node runs whose step is bound by the network; the optimiser still sees fp32."""
    from torch.nn.modules.batchnorm import _NormBase

    changing = any(isinstance(m, _NormBase) and m.track_running_stats for m in model.modules())
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=changing)
    if bf16_gradients and dist.get_backend() != "nccl":  # DDP allows the hook with NCCL only
        log.warning("ddp_bf16_gradients: needs NCCL (CUDA GPUs); this %s run all-reduces in fp32",
                    dist.get_backend())
    elif bf16_gradients:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

        ddp.register_comm_hook(None, bf16_compress_hook)
    return ddp
