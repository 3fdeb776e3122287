"""The order batches come in: resumable per-epoch permutations, DDP sharding, fixed-length streams;
how many DataLoader workers the CPUs this process may use allow."""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from signpose.train.distributed import DistContext

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 8  # more rarely helps: one worker decodes thousands of frames a second


def _cgroup_v2_quota(cgroup_root: Path, proc_cgroup: str) -> float | None:
    """The tightest ``cpu.max`` (quota / period) from this process's cgroup up to the root."""
    path = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), "/")
    folder, limits = cgroup_root / path.lstrip("/"), []
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == cgroup_root or cgroup_root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _cgroup_v1_quota(cgroup_root: Path, proc_cgroup: str) -> float | None:
    """``cpu.cfs_quota_us / cpu.cfs_period_us`` of the cpu controller (-1: no limit)."""
    path = "/"
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            path = parts[2]
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        # In a container the controller is mounted at the container's own cgroup: try both places.
        for folder in (cgroup_root / mount / path.lstrip("/"), cgroup_root / mount):
            try:
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cpus(affinity: int | None = None, cgroup_root: str | Path = "/sys/fs/cgroup",
                proc_cgroup: str | None = None) -> int:
    """The CPUs this process may use: the CPUs it may run on (``os.sched_getaffinity``) capped by the
    cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``: what a pod's CPU
    limit becomes), rounded down; at least 1."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    root = Path(cgroup_root)
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    quota = _cgroup_v2_quota(root, proc_cgroup) if (root / "cgroup.controllers").exists() \
        else _cgroup_v1_quota(root, proc_cgroup)
    cpus = affinity if quota is None else min(affinity, math.floor(quota))
    return max(1, int(cpus))


def auto_num_workers(cpus: int, local_world_size: int = 1, cap: int = MAX_AUTO_WORKERS) -> int:
    """DataLoader workers for one training process: its share of ``cpus`` (the processes of one node
    under torchrun share them) minus one for the process itself, at most ``cap``; 0 with one CPU."""
    share = cpus // max(1, local_world_size)
    return max(0, min(cap, share - 1))


def resolve_num_workers(num_workers: int) -> int:
    """``num_workers`` as given, or for a negative value ("auto") :func:`auto_num_workers` of the
    CPUs this process may use and torchrun's ``LOCAL_WORLD_SIZE``."""
    if num_workers >= 0:
        return num_workers
    cpus = usable_cpus()
    workers = auto_num_workers(cpus, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    log.debug("DataLoader workers: %d (auto: %d usable CPUs)", workers, cpus)
    return workers


class ResumableSampler(Sampler[int]):
    """Epoch permutation = f(seed, epoch); rank r takes every world_size-th index (the training split
    is padded by wrapping so every rank runs the same number of steps, as DistributedSampler does).
    ``set_position(epoch, start)``: ``start`` samples of the epoch were consumed over all ranks. With
    strided ranks and equal batches they are the permutation's first ``start``, whatever the number of
    ranks that consumed them, so the rest is dealt to this run's ranks: exact resume on any world size."""

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True):
        if n == 0:
            raise ValueError("dataset is empty")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self, start: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        rest = order[start:]
        if self.pad and len(rest) % self.world_size:
            pad = self.world_size - len(rest) % self.world_size
            rest += (order * (pad // self.n + 1))[:pad]  # cycles when there are fewer samples than ranks
        return rest[self.rank :: self.world_size]

    def samples_per_epoch(self) -> int:
        """This rank's samples in a whole epoch."""
        return len(self._indices(0))

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices(self.start))

    def __len__(self) -> int:
        return len(self._indices(self.start))


def make_loader(ds: Dataset, batch_size: int, sampler: Sampler | None, num_workers: int, seed: int,
            pin_memory: bool) -> DataLoader:
    # The loader's own generator keeps it off the global RNG (DataLoader otherwise draws its worker
    # base seed from it at every epoch), which exact resume depends on.
    generator = torch.Generator()
    generator.manual_seed(seed)
    num_workers = resolve_num_workers(num_workers)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      generator=generator, pin_memory=pin_memory, persistent_workers=False)


def iterable_samples_per_rank(ds: IterableDataset, world_size: int) -> int:
    """Samples one rank sees per epoch: ``len(ds)`` if defined (per rank), else ``ds.n_samples`` (the
    samples an epoch yields over all ranks, as :class:`signpose.data.ShardStream` counts them: the
    face task's frames without a face are not samples) or ``ds.n_frames``, divided among the ranks."""
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        pass
    total = getattr(ds, "n_samples", None)
    if total is None:
        total = getattr(ds, "n_frames", None)
    if total is None:
        raise ValueError(f"{type(ds).__name__}: an IterableDataset given to fit() must define __len__, "
                         "n_samples or n_frames so the learning-rate schedule knows the epoch length")
    return int(total) // world_size


def epoch_samples(ds: Dataset, world_size: int) -> int:
    """Samples one epoch holds over all ranks (what the learning-rate schedule counts)."""
    if not isinstance(ds, IterableDataset):
        return len(ds)  # type: ignore[arg-type]
    try:
        return len(ds) * world_size  # type: ignore[arg-type]  # a stream's len is per rank
    except TypeError:
        return iterable_samples_per_rank(ds, 1)


def shard_stream_across_ranks(ds: Dataset, ctx: DistContext) -> Dataset:
    """A stream built before torchrun's process group existed believes it is alone (rank 0 of 1):
    a copy of it told its place, so each rank reads its own shards (``signpose.data.ShardStream`` has
    these attributes; other streams must shard themselves). The caller's stream is left whole: it is
    also what the promotion gate scores the champion on, and the face baseline's reference."""
    if not (ctx.enabled and hasattr(ds, "rank") and hasattr(ds, "world_size")) or \
            (ds.rank, ds.world_size) == (ctx.rank, ctx.world_size):
        return ds
    if ds.world_size != 1:
        raise ValueError(f"{type(ds).__name__} was built for rank {ds.rank} of {ds.world_size} but this "
                         f"process is rank {ctx.rank} of {ctx.world_size}")
    placed = copy.copy(ds)
    placed.rank, placed.world_size = ctx.rank, ctx.world_size
    return placed


def whole_stream(ds: Dataset) -> Dataset:
    """``ds`` read by one consumer from start to end: a stream built for one rank of several (rank and
    world_size set, e.g. made after the process group started) as a copy placed at rank 0 of 1."""
    if hasattr(ds, "rank") and hasattr(ds, "world_size") and (ds.rank, ds.world_size) != (0, 1):
        ds = copy.copy(ds)
        ds.rank, ds.world_size = 0, 1
    return ds


def fixed_length(make_iter, steps: int, skip: int) -> Iterator:
    """Exactly ``steps - skip`` batches from a stream: skip the first ``skip`` (the part of the epoch a
    resumed run already did), and restart the stream when it runs dry. Every DDP rank therefore takes
    the same number of steps even when the stream dealt them different numbers of frames (a rank that
    stopped early would leave the others waiting in all-reduce forever)."""
    produced, it = 0, make_iter()
    while produced < steps:
        try:
            batch = next(it)
        except StopIteration:
            if produced == 0:
                raise ValueError("the training stream yielded no batch") from None
            it = make_iter()
            continue
        if produced >= skip:
            yield batch
        produced += 1
