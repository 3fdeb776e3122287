"""One training loop for both tasks.

``fit(task, model, train_ds, val_ds, cfg, callbacks)`` does, in order: deterministic seeding,
optional DistributedDataParallel (``torchrun`` sets the environment), AdamW with linear warm-up and a
cosine schedule, gradient clipping, bf16 autocast on CUDA, optional ``torch.compile``, validation
every epoch with the task's metrics, checkpoints to a local folder or object store (every N steps and
at every epoch end, atomic), exact resume, early stopping, and callbacks for the MLflow layer.

Exact resume: the data order of an epoch is a pure function of (seed, epoch, rank), the DataLoader
draws from its own generator (never the global RNG), and a checkpoint holds model, optimiser,
scheduler, every RNG state, the epoch and the number of batches already consumed. A run killed after
any step and resumed from its last checkpoint ends with bit-identical weights (tested on CPU).
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm.auto import tqdm

from signpose.losses import compute_weighted_loss, masked_mse
from signpose.metrics import FaceMetrics, MetricSums, SkeletonMetrics
from signpose.train.config import FaceTrainConfig, SkeletonTrainConfig, TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "latest.pt"
CHECKPOINT_FORMAT = 1
MONITOR = "val/loss"  # early stopping and best-epoch selection (lower is better)


# --- callbacks and result --------------------------------------------------------------------------

class Callback(Protocol):
    """What the engine calls (on rank 0 only). Both methods are optional; ``on_step_end`` too."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None: ...

    def on_train_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    model: nn.Module                  # the trained model (unwrapped; best epoch's weights if restore_best)
    history: list[dict[str, float]]   # one metrics dict per epoch, in order
    best_metrics: dict[str, float]    # the metrics of the best epoch (lowest val/loss)
    best_epoch: int
    global_step: int
    stopped_early: bool
    checkpoint_uri: str | None        # where the latest checkpoint lives ('' / None = not saved)
    config: TrainConfig
    extra: dict[str, Any] = field(default_factory=dict)


# --- tasks: what differs between skeleton and face training ------------------------------------------

class Task:
    name = "base"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def new_metrics(self):
        raise NotImplementedError

    def update_metrics(self, metrics, output: torch.Tensor, batch: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError


class SkeletonTask(Task):
    """Batches are (keypoints (B,143,3), image (B,1,S,S)); loss: weighted MSE (seed flag) or MSE."""

    name = "skeleton"
    cfg: SkeletonTrainConfig

    def loss(self, model, batch):
        keypoints, image = batch
        generated = model(keypoints)
        if self.cfg.use_weighted_loss:
            loss = compute_weighted_loss(generated, image, self.cfg.image_size, self.cfg.hand_weight,
                                         self.cfg.face_weight, keypoints=keypoints, margin=self.cfg.weight_margin)
        else:
            loss = (generated.float() - image.float()).pow(2).mean()
        return loss, generated

    def new_metrics(self):
        return SkeletonMetrics(self.cfg.image_size, self.cfg.hand_weight, self.cfg.face_weight,
                               self.cfg.weight_margin)

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch[1], batch[0])


class FaceTask(Task):
    """Batches are (src (B,68,3), tgt (B,68,3)); loss: MSE over present points."""

    name = "face"

    def loss(self, model, batch):
        src, tgt = batch
        output = model(src, tgt)
        return masked_mse(output, tgt), output

    def new_metrics(self):
        return FaceMetrics()

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch[1])


TASKS: dict[str, type[Task]] = {"skeleton": SkeletonTask, "face": FaceTask}
CONFIGS: dict[str, type[TrainConfig]] = {"skeleton": SkeletonTrainConfig, "face": FaceTrainConfig}


def make_task(task: str | Task, cfg: TrainConfig) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task](cfg)


# --- seeding, devices, distributed -----------------------------------------------------------------

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


def setup_distributed(device_pref: str) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), or use an existing one."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, initialised_here=True)


def resolve_device(pref: str, ctx: DistContext) -> torch.device:
    if pref == "auto":
        return torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    return device


def _autocast(device: torch.device, amp: str):
    if amp not in ("auto", "bf16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {amp!r}")
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# --- data order ------------------------------------------------------------------------------------

class ResumableSampler(Sampler[int]):
    """Epoch permutation = f(seed, epoch); rank r takes every world_size-th index (the training split
    is padded by wrapping so every rank runs the same number of steps, as DistributedSampler does);
    ``set_position(epoch, start)`` skips the ``start`` samples this rank already consumed."""

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True):
        if n == 0:
            raise ValueError("dataset is empty")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.n % self.world_size:
            pad = self.world_size - self.n % self.world_size
            order += (order * (pad // self.n + 1))[:pad]  # cycles when there are fewer samples than ranks
        return order[self.rank :: self.world_size]

    def samples_per_epoch(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(0, self.samples_per_epoch() - self.start)


def _loader(ds: Dataset, batch_size: int, sampler: Sampler | None, num_workers: int, seed: int,
            pin_memory: bool) -> DataLoader:
    # The loader's own generator keeps it off the global RNG (DataLoader otherwise draws its worker
    # base seed from it at every epoch), which exact resume depends on.
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      generator=generator, pin_memory=pin_memory, persistent_workers=False)


def _iterable_samples_per_rank(ds: IterableDataset, world_size: int) -> int:
    """Samples one rank sees per epoch: ``len(ds)`` if defined (per rank), else ``ds.n_frames`` (the
    whole split, as :class:`signpose.data.ShardStream` reports it) divided among the ranks."""
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        pass
    n_frames = getattr(ds, "n_frames", None)
    if n_frames is None:
        raise ValueError(f"{type(ds).__name__}: an IterableDataset given to fit() must define __len__ or "
                         "n_frames so the learning-rate schedule knows the epoch length")
    return int(n_frames) // world_size


def _shard_stream_across_ranks(ds: IterableDataset, ctx: DistContext) -> None:
    """A stream built before torchrun's process group existed believes it is alone (rank 0 of 1);
    tell it its place so each rank reads its own shards (``signpose.data.ShardStream`` has these
    attributes; other streams must shard themselves)."""
    if ctx.enabled and hasattr(ds, "rank") and hasattr(ds, "world_size") and \
            (ds.rank, ds.world_size) != (ctx.rank, ctx.world_size):
        if ds.world_size != 1:
            raise ValueError(f"{type(ds).__name__} was built for rank {ds.rank} of {ds.world_size} but this "
                             f"process is rank {ctx.rank} of {ctx.world_size}")
        ds.rank, ds.world_size = ctx.rank, ctx.world_size


def _fixed_length(make_iter, steps: int, skip: int) -> Iterator:
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


# --- schedule and optimiser ------------------------------------------------------------------------

def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear 1/warmup .. 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Weight decay on matrices (linear, conv, embedding tables) only; biases and norm gains are not
    # regularised towards 0 (nanoGPT's rule).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


# --- checkpoints ----------------------------------------------------------------------------------

def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state as tensors/ints so torch.load(weights_only=True) accepts it
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(checkpoint_dir: str, state: dict) -> str:
    """Serialise ``state`` with torch.save and write it atomically to ``checkpoint_dir``/latest.pt."""
    from signpose.store import open_store

    buffer = io.BytesIO()
    torch.save(state, buffer)
    store = open_store(checkpoint_dir)
    store.put_bytes(CHECKPOINT_KEY, buffer.getvalue())
    return f"{store.uri.rstrip('/')}/{CHECKPOINT_KEY}"


def load_checkpoint(checkpoint_dir: str) -> dict | None:
    """The latest checkpoint in ``checkpoint_dir`` or None; loaded with ``weights_only=True``."""
    from signpose.store import open_store

    store = open_store(checkpoint_dir)
    if not store.exists(CHECKPOINT_KEY):
        return None
    where = f"{store.uri.rstrip('/')}/{CHECKPOINT_KEY}"
    try:
        state = torch.load(io.BytesIO(store.get_bytes(CHECKPOINT_KEY)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: a tampered or foreign file
        raise pickle.UnpicklingError(f"{where}: refused to load the checkpoint: {e}") from e
    except (RuntimeError, EOFError) as e:  # truncated or corrupt archive: say which file
        raise RuntimeError(f"{where}: checkpoint is unreadable (truncated or corrupt): {e}") from e
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint_dir}/{CHECKPOINT_KEY}: checkpoint format {state.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT}")
    return state


# --- the loop --------------------------------------------------------------------------------------

def _to_device(batch, device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


def _call(callbacks: Iterable, method: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(*args)


def _state_to_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(task: str | Task, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig,
        callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train ``model`` on ``train_ds``, validating on ``val_ds`` after every epoch; see module docstring."""
    task = make_task(task, cfg)
    ctx = setup_distributed(cfg.device)
    try:
        return _fit(task, model, train_ds, val_ds, cfg, list(callbacks), ctx)
    finally:
        if ctx.initialised_here:
            dist.destroy_process_group()


def _fit(task: Task, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig,
         callbacks: list, ctx: DistContext) -> TrainResult:
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {cfg.batch_size} and {cfg.epochs}")
    seed_everything(cfg.seed + ctx.rank)
    device = resolve_device(cfg.device, ctx)
    model.to(device)
    train_model: nn.Module = model
    if ctx.enabled:
        # DDP broadcasts rank 0's parameters here, so all ranks start from the same weights.
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    # data
    pin = device.type == "cuda"
    iterable = isinstance(train_ds, IterableDataset)
    if iterable:
        train_sampler = None
        _shard_stream_across_ranks(train_ds, ctx)
        steps_per_epoch = max(1, _iterable_samples_per_rank(train_ds, ctx.world_size) // cfg.batch_size)
    else:
        train_sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=ctx.rank,
                                         world_size=ctx.world_size)
        steps_per_epoch = math.ceil(train_sampler.samples_per_epoch() / cfg.batch_size)
    train_loader = _loader(train_ds, cfg.batch_size, train_sampler, cfg.num_workers, cfg.seed, pin)
    val_loader = None
    if isinstance(val_ds, IterableDataset):
        _shard_stream_across_ranks(val_ds, ctx)
    if val_ds is not None:
        val_sampler = None if isinstance(val_ds, IterableDataset) else ResumableSampler(
            len(val_ds), shuffle=False, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, pad=False)
        val_loader = _loader(val_ds, cfg.batch_size, val_sampler, cfg.num_workers, cfg.seed, pin)

    # optimisation
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    warmup = int(round(cfg.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup, cfg.min_lr_ratio))

    # state (all of it goes into checkpoints)
    epoch, batches_done, global_step = 0, 0, 0
    loss_sum, loss_count = 0.0, 0
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_metrics, best_state, bad_epochs = math.inf, -1, {}, None, 0
    stopped_early = False
    checkpoint_uri = None

    if cfg.checkpoint_dir and cfg.resume:
        ckpt = load_checkpoint(cfg.checkpoint_dir)
        if ckpt is not None and ckpt["task"] != task.name:
            raise ValueError(f"{cfg.checkpoint_dir}: holds a {ckpt['task']!r} checkpoint, not {task.name!r}; "
                             "use another --checkpoint_dir or --no_resume")
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"][min(ctx.rank, len(ckpt["rng"]) - 1)])
            epoch, batches_done, global_step = ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"]
            loss_sum, loss_count = ckpt["loss_sum"], ckpt["loss_count"]
            history, best_metrics = ckpt["history"], ckpt["best_metrics"]
            best_value, best_epoch, bad_epochs = ckpt["best_value"], ckpt["best_epoch"], ckpt["bad_epochs"]
            best_state, stopped_early = ckpt["best_state"], ckpt["stopped_early"]
            checkpoint_uri = f"{cfg.checkpoint_dir.rstrip('/')}/{CHECKPOINT_KEY}"
            if ctx.is_main:
                log.info("resumed from %s at epoch %d, batch %d (step %d)", checkpoint_uri, epoch, batches_done,
                         global_step)

    def checkpoint() -> None:
        nonlocal checkpoint_uri
        if not cfg.checkpoint_dir:
            return
        # Every rank's RNG state is gathered so each resumes its own dropout stream.
        rng = [_rng_state()]
        if ctx.enabled:
            gathered: list = [None] * ctx.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if ctx.is_main:
            checkpoint_uri = save_checkpoint(cfg.checkpoint_dir, {
                "format": CHECKPOINT_FORMAT, "task": task.name, "config": cfg.to_dict(),
                "model": _state_to_cpu(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng,
                "epoch": epoch, "batches_done": batches_done, "global_step": global_step,
                "loss_sum": loss_sum, "loss_count": loss_count, "history": history,
                "best_metrics": best_metrics, "best_value": best_value, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "best_state": best_state, "stopped_early": stopped_early,
            })
        if ctx.enabled:
            dist.barrier()

    while epoch < cfg.epochs and not stopped_early:
        # ---- train one epoch (possibly the rest of an interrupted one)
        train_model.train()
        if train_sampler is not None:
            train_sampler.set_position(epoch, batches_done * cfg.batch_size)
        elif hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        # Worker seeds come from the loader's generator: make them a function of the epoch too.
        train_loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
        if train_sampler is None:  # a stream can only skip by reading
            batches = _fixed_length(lambda: iter(train_loader), steps_per_epoch, batches_done)
        else:
            batches = iter(train_loader)
        started, samples = time.perf_counter(), 0
        bar = tqdm(batches, total=steps_per_epoch, initial=batches_done, desc=f"{task.name} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and ctx.is_main), dynamic_ncols=True, leave=False,
                   # In a pod's log (no terminal) every refresh is a new line: refresh rarely there.
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        for batch in bar:
            batch = _to_device(batch, device)
            with _autocast(device, cfg.amp):
                loss, _ = task.loss(train_model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, step {global_step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            n = batch[0].shape[0]
            loss_sum += loss.item() * n
            loss_count += n
            samples += n
            global_step += 1
            batches_done += 1
            if ctx.is_main:
                rate = samples / max(1e-9, time.perf_counter() - started)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                samples_s=f"{rate * ctx.world_size:.1f}")
                _call(callbacks, "on_step_end", global_step, {"train/loss": loss.item(),
                                                              "train/lr": scheduler.get_last_lr()[0]})
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                checkpoint()
        bar.close()
        elapsed = time.perf_counter() - started

        # ---- validate
        train_sums = MetricSums(["train/loss"])
        train_sums.add("train/loss", loss_sum, loss_count)
        train_sums.all_reduce()
        metrics = {"epoch": float(epoch), **train_sums.compute(),
                   "train/lr": float(scheduler.get_last_lr()[0]),
                   "train/samples_per_s": samples * ctx.world_size / max(1e-9, elapsed)}
        if val_loader is not None:
            # The plain module: no DDP sync is needed without gradients (weights agree on every rank),
            # and a compiled model would recompile for eval mode.
            metrics.update(evaluate(task, model, val_loader, device, cfg.amp))
        history.append(metrics)

        value = metrics.get(MONITOR, metrics["train/loss"])
        if value < best_value:
            best_value, best_epoch, best_metrics, bad_epochs = value, epoch, dict(metrics), 0
            if cfg.restore_best:
                best_state = _state_to_cpu(model)
        else:
            bad_epochs += 1
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                stopped_early = True
                if ctx.is_main:
                    log.info("early stopping after epoch %d: %s has not improved for %d epochs",
                             epoch + 1, MONITOR, bad_epochs)
        if ctx.is_main:
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
        epoch, batches_done, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
        checkpoint()
        if ctx.is_main:
            _call(callbacks, "on_epoch_end", epoch - 1, metrics, model)

    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    result = TrainResult(model=model, history=history, best_metrics=best_metrics, best_epoch=best_epoch,
                         global_step=global_step, stopped_early=stopped_early, checkpoint_uri=checkpoint_uri,
                         config=cfg)
    if ctx.is_main:
        _call(callbacks, "on_train_end", result)
    return result


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "off") -> dict[str, float]:
    """Validation loss and the task's metrics over ``loader`` (summed over DDP ranks)."""
    was_training = model.training
    model.eval()
    metrics = task.new_metrics()
    loss_sums = MetricSums(["val/loss"])
    for batch in loader:
        batch = _to_device(batch, device)
        with _autocast(device, amp):
            loss, output = task.loss(model, batch)
        n = batch[0].shape[0]
        loss_sums.add("val/loss", loss.item() * n, n)
        task.update_metrics(metrics, output.float(), batch)
    loss_sums.all_reduce()
    metrics.sums.all_reduce()
    model.train(was_training)
    return {**loss_sums.compute(), **metrics.compute()}
