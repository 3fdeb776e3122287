"""One training loop for every task.

``fit(task, model, train_ds, val_ds, cfg, callbacks)`` does, in order: deterministic seeding,
optional DistributedDataParallel (``torchrun`` sets the environment), AdamW with linear warm-up and a
cosine schedule, gradient clipping, bf16 autocast on CUDA, optional ``torch.compile``, validation
every epoch with the task's metrics, checkpoints to a local folder or object store (every N steps and
at every epoch end, atomic), exact resume (:mod:`signpose.train.state`), early stopping, and callbacks
for the MLflow layer. What differs between tasks (loss, metrics) is the task's
:class:`~signpose.tasks.Objective`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from signpose.errors import UserError
from signpose.metrics import MetricSums
from signpose.models import cpu_state_dict
from signpose.tasks import Objective, get_task
from signpose.train.config import TrainConfig
from signpose.train.data_order import (
    ResumableSampler,
    epoch_samples,
    fixed_length,
    iterable_samples_per_rank,
    make_loader,
    shard_stream_across_ranks,
    whole_stream,
)
from signpose.train.distributed import (
    DistContext,
    autocast,
    resolve_device,
    seed_everything,
    setup_distributed,
    wrap_ddp,
)
from signpose.train.optim import SampleSchedule, make_optimizer, make_scheduler, warmup_cosine
from signpose.train.state import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    TrainState,
    check_checkpoint_task,
    load_checkpoint,
    load_checkpoint_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

log = logging.getLogger(__name__)

MONITOR = "val/loss"  # early stopping and best-epoch selection (lower is better)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_KEY", "MONITOR", "Callback", "ResumableSampler", "TrainResult",
           "TrainState", "evaluate", "fit", "load_checkpoint", "make_optimizer", "make_task", "seed_everything",
           "warmup_cosine"]


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


def make_task(task: str | Objective, cfg: TrainConfig) -> Objective:
    """The task's objective (loss + metrics) for ``cfg``; a ready objective is returned as is."""
    return task if isinstance(task, Objective) else get_task(task).objective(cfg)


# --- the steps of a training run ---------------------------------------------------------------------

@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader | None
    sampler: ResumableSampler | None  # None for a stream (which can only skip by reading)
    steps_per_epoch: int
    epoch_samples: int                # samples an epoch holds over all ranks (the schedule counts these)
    extra_val: dict[str, DataLoader] = field(default_factory=dict)  # name -> loader (metrics "<name>/...")


def make_loaders(train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig, ctx: DistContext,
                 device: torch.device, eval_sets: Mapping[str, Dataset] | None = None) -> Loaders:
    pin = device.type == "cuda"
    if isinstance(train_ds, IterableDataset):
        sampler = None
        train_ds = shard_stream_across_ranks(train_ds, ctx)
        steps = max(1, iterable_samples_per_rank(train_ds, ctx.world_size) // cfg.batch_size)
    else:
        sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=ctx.rank,
                                   world_size=ctx.world_size)
        steps = math.ceil(sampler.samples_per_epoch() / cfg.batch_size)
    train = make_loader(train_ds, cfg.batch_size, sampler, cfg.num_workers, cfg.seed, pin)
    val = None
    if val_ds is not None:
        if isinstance(val_ds, IterableDataset):
            val_ds = shard_stream_across_ranks(val_ds, ctx)
            val_sampler = None
        else:
            val_sampler = ResumableSampler(len(val_ds), shuffle=False, seed=cfg.seed, rank=ctx.rank,
                                           world_size=ctx.world_size, pad=False)
        val = make_loader(val_ds, cfg.batch_size, val_sampler, cfg.num_workers, cfg.seed, pin)
    extra = {name: make_loader(ds, cfg.batch_size, ResumableSampler(len(ds), shuffle=False, seed=cfg.seed,
                                                                    rank=ctx.rank, world_size=ctx.world_size,
                                                                    pad=False), 0, cfg.seed, pin)
             for name, ds in (eval_sets or {}).items()}
    return Loaders(train, val, sampler, steps, epoch_samples(train_ds, ctx.world_size), extra)


@dataclass
class Run:
    """What one training run works with, built once by :func:`prepare`; :class:`TrainState` is what changes."""

    objective: Objective
    model: nn.Module                  # the plain module (weights, checkpoints, validation)
    train_model: nn.Module            # what the step calls: DDP- and/or torch.compile-wrapped ``model``
    loaders: Loaders
    optimizer: torch.optim.Optimizer
    scheduler: SampleSchedule
    device: torch.device
    cfg: TrainConfig
    ctx: DistContext
    callbacks: list
    checkpoint_uri: str | None = None  # the latest checkpoint written or resumed from
    baselines: dict[str, float] = field(default_factory=dict)  # "<set>_baseline/<metric>": trivial predictors
    running: RunningLoss | None = None  # this rank's training loss of the epoch, on the device

    @property
    def wants_steps(self) -> bool:
        """Whether a callback takes per-step metrics (reading the loss for them is a host sync)."""
        return self.ctx.is_main and any(hasattr(c, "on_step_end") for c in self.callbacks)

    def call(self, method: str, *args) -> None:
        """Callbacks run on rank 0 only."""
        if not self.ctx.is_main:
            return
        for callback in self.callbacks:
            fn = getattr(callback, method, None)
            if fn is not None:
                fn(*args)


def prepare(objective: Objective, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig,
            callbacks: list, ctx: DistContext, eval_sets: Mapping[str, Dataset] | None = None) -> Run:
    if cfg.batch_size < 1 or cfg.epochs < 1 or cfg.grad_accumulation < 1:
        raise ValueError(f"batch_size, epochs and grad_accumulation must be >= 1, got {cfg.batch_size}, "
                         f"{cfg.epochs} and {cfg.grad_accumulation}")
    seed_everything(cfg.seed + ctx.rank)
    device = resolve_device(cfg.device, ctx)
    model.to(device)
    train_model = model
    if ctx.enabled:  # DDP broadcasts rank 0's parameters here, so all ranks start from the same weights.
        train_model = wrap_ddp(model, device, cfg.ddp_bf16_gradients)
    if cfg.compile:
        train_model = torch.compile(train_model)
    loaders = make_loaders(train_ds, val_ds, cfg, ctx, device, eval_sets)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, loaders.epoch_samples)
    baselines = score_baselines(objective, loaders.extra_val, val_ds if val_ds is not None else train_ds, device)
    return Run(objective, model, train_model, loaders, optimizer, scheduler, device, cfg, ctx, callbacks,
               baselines=baselines, running=RunningLoss(device))


class RunningLoss:
    """This rank's training-loss sum kept on the device: adding a step's loss costs no host sync.
    Reading it (:meth:`fold`, one sync) happens every ``cfg.sync_every`` steps, before a checkpoint and
    at the epoch's end, and is where a non-finite loss is found (within ``sync_every`` steps of it)."""

    def __init__(self, device: torch.device):
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.sum = torch.zeros((), dtype=dtype, device=device)
        self.checked_step = 0  # the last step whose loss was read

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.sum += loss.detach().to(self.sum.dtype) * n

    def fold(self, state: TrainState) -> None:
        """Move the device sum into ``state.loss_sum``; a non-finite one stops the run."""
        value = self.sum.item()
        self.sum.zero_()
        state.loss_sum += value
        if not math.isfinite(state.loss_sum):
            raise FloatingPointError(f"non-finite training loss at epoch {state.epoch}, between steps "
                                     f"{self.checked_step + 1} and {state.global_step}")
        self.checked_step = state.global_step


def score_baselines(objective: Objective, loaders: Mapping[str, DataLoader], reference: Dataset,
                    device: torch.device) -> dict[str, float]:
    """The task's trivial predictor (built from ``reference``, generated data) scored once on each extra
    evaluation set: ``<set>_baseline/<metric>``, logged every epoch beside ``<set>/<metric>`` so a chart
    shows whether the model beats it."""
    # The whole reference on every rank: a rank's share would give each rank another baseline.
    trivial = objective.baseline_model(whole_stream(reference)) if loaders else None
    if trivial is None:
        return {}
    scores = {}
    for name, loader in loaders.items():
        scored = evaluate(objective, trivial.to(device), loader, device)
        scores.update({f"{name}_baseline/{key.split('/', 1)[1]}": value for key, value in scored.items()})
    return scores


def restore(run: Run) -> TrainState:
    """The state to start from: the latest checkpoint's when ``cfg.resume`` finds one, else a fresh one."""
    cfg, ctx = run.cfg, run.ctx
    ckpt = load_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir and cfg.resume else None
    if ckpt is None:
        return TrainState()
    check_checkpoint_task(ckpt, run.objective.name, cfg.checkpoint_dir)
    load_checkpoint_weights(run.model, ckpt, cfg, cfg.checkpoint_dir)
    run.optimizer.load_state_dict(ckpt["optimizer"])  # the learning rate is set again before each step
    if ctx.rank < len(ckpt["rng"]):  # a rank the checkpoint did not know keeps its fresh seed + rank
        set_rng_state(ckpt["rng"][ctx.rank], run.device)
    state = TrainState.from_dict(ckpt)
    saved_world = int(ckpt.get("world_size", len(ckpt["rng"])))
    saved_batch = int(ckpt.get("config", {}).get("batch_size", cfg.batch_size))
    if "samples_done" not in ckpt:  # written before checkpoints counted samples
        state.samples_done = state.batches_done * saved_batch * saved_world
    if state.samples_done and (saved_world, saved_batch) != (ctx.world_size, cfg.batch_size):
        if run.loaders.sampler is None:  # a stream can only skip its own rank's batches
            raise UserError(f"{cfg.checkpoint_dir}: the checkpoint was written mid-epoch by {saved_world} ranks "
                            f"x batch {saved_batch}, this run has {ctx.world_size} x {cfg.batch_size}; a streamed "
                            "data set resumes mid-epoch only on as many ranks with the same batch_size "
                            "(or use --no_resume)")
        state.batches_done = state.samples_done // (cfg.batch_size * ctx.world_size)  # the progress bar's
    if not ctx.is_main:  # the checkpoint's loss sums are all ranks'; rank 0 carries them
        state.loss_sum, state.loss_count = 0.0, 0
    run.checkpoint_uri = f"{cfg.checkpoint_dir.rstrip('/')}/{CHECKPOINT_KEY}"
    if ctx.is_main:
        log.info("resumed from %s at epoch %d, sample %d (step %d; written by %d ranks, now %d)", run.checkpoint_uri,
                 state.epoch, state.samples_done, state.global_step, saved_world, ctx.world_size)
    return state


def save(run: Run, state: TrainState) -> None:
    """Checkpoint the whole run: weights, optimiser, every rank's RNG, the world size and ``state``
    (its loss sums over all ranks)."""
    if not run.cfg.checkpoint_dir:
        return
    run.running.fold(state)  # never checkpoint weights a non-finite loss has reached
    saved = state.to_dict()
    # Every rank's RNG state is gathered so each resumes its own dropout stream.
    rng = [rng_state(run.device)]
    if run.ctx.enabled:
        gathered: list = [None] * run.ctx.world_size
        dist.all_gather_object(gathered, rng[0])
        rng = gathered
        sums = MetricSums(["train/loss"])
        sums.add("train/loss", state.loss_sum, state.loss_count)
        sums.all_reduce()
        saved["loss_sum"], saved["loss_count"] = sums.sums[0, 0].item(), int(sums.sums[0, 1].item())
    if run.ctx.is_main:
        run.checkpoint_uri = save_checkpoint(run.cfg.checkpoint_dir, {
            "format": CHECKPOINT_FORMAT, "task": run.objective.name, "config": run.cfg.to_dict(),
            "model": cpu_state_dict(run.model), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "rng": rng, "world_size": run.ctx.world_size, **saved,
        })
    if run.ctx.enabled:
        dist.barrier()


def _epoch_batches(run: Run, state: TrainState) -> Iterable:
    """The batches of this epoch still to train on (all of them, or the rest of an interrupted one)."""
    loaders, cfg = run.loaders, run.cfg
    if loaders.sampler is not None:
        loaders.sampler.set_position(state.epoch, state.samples_done)
    if hasattr(loaders.train.dataset, "set_epoch"):  # streams; augmented datasets draw per epoch
        loaders.train.dataset.set_epoch(state.epoch)
    # Worker seeds come from the loader's generator: make them a function of the epoch too.
    loaders.train.generator.manual_seed(cfg.seed * 100_003 + state.epoch)
    if loaders.sampler is None:  # a stream can only skip by reading
        return fixed_length(lambda: iter(loaders.train), loaders.steps_per_epoch, state.batches_done)
    return iter(loaders.train)


def _progress_bar(run: Run, state: TrainState, batches: Iterable):
    return tqdm(batches, total=run.loaders.steps_per_epoch, initial=state.batches_done,
                desc=f"{run.objective.name} epoch {state.epoch + 1}/{run.cfg.epochs}",
                disable=not (run.cfg.progress and run.ctx.is_main), dynamic_ncols=True, leave=False,
                # In a pod's log (no terminal) every refresh is a new line: refresh rarely there.
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


def _remaining_batches(run: Run, state: TrainState) -> int:
    loaders = run.loaders
    if loaders.sampler is None:
        return loaders.steps_per_epoch - state.batches_done
    return math.ceil(len(loaders.sampler) / run.cfg.batch_size)


def train_one_epoch(run: Run, state: TrainState) -> tuple[int, float]:
    """Train on the rest of this epoch's batches; returns (samples this rank saw, seconds).

    The step issues no host sync of its own: the loss is summed on the device and read every
    ``cfg.sync_every`` steps (and for callbacks that take per-step metrics). With ``grad_accumulation``
    k, an optimiser step follows every k batches (and the epoch's last), the gradients of the first
    k - 1 summed locally (DDP's ``no_sync``): one all-reduce per optimiser step."""
    cfg, optimizer, scheduler, ctx = run.cfg, run.optimizer, run.scheduler, run.ctx
    run.train_model.train()
    started, samples, group_samples = time.perf_counter(), 0, 0
    batches = _epoch_batches(run, state)  # sets the sampler's position: before counting what remains
    remaining = _remaining_batches(run, state)
    bar = _progress_bar(run, state, batches)
    for i, batch in enumerate(bar):
        batch = [t.to(run.device, non_blocking=True) for t in batch]
        group_start = i - i % cfg.grad_accumulation
        group = max(1, min(cfg.grad_accumulation, remaining - group_start))  # batches in this optimiser step
        step_now = i + 1 == group_start + group
        local = getattr(run.train_model, "no_sync", None) if ctx.enabled and not step_now else None
        with local() if local is not None else contextlib.nullcontext():
            with autocast(run.device, cfg.amp):
                loss, _ = run.objective.loss(run.train_model, batch)
            (loss / group).backward()
        n = batch[0].shape[0]
        run.running.add(loss, n)
        state.loss_count += n
        samples += n
        # Every rank counts the same samples for the step: a stream's ranks may end on a short batch.
        group_samples += (n if run.loaders.sampler is not None else cfg.batch_size) * ctx.world_size
        if not step_now:
            continue
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        scheduler.set_position(scheduler.position(state.epoch, state.samples_done + group_samples))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.batches_done += group
        state.samples_done += group_samples
        group_samples = 0
        _after_step(run, state, bar, loss, samples, started)
    bar.close()
    run.running.fold(state)
    return samples, time.perf_counter() - started


def _after_step(run: Run, state: TrainState, bar, loss: torch.Tensor, samples: int, started: float) -> None:
    """Per optimiser step: the loss check every ``sync_every`` steps, callbacks, checkpoints."""
    cfg, scheduler = run.cfg, run.scheduler
    if cfg.sync_every and state.global_step % cfg.sync_every == 0:
        run.running.fold(state)
        if not bar.disable:
            rate = samples * run.ctx.world_size / max(1e-9, time.perf_counter() - started)
            bar.set_postfix(loss=f"{state.loss_sum / max(1, state.loss_count):.4f}",
                            lr=f"{scheduler.get_last_lr()[0]:.2e}", samples_s=f"{rate:.1f}")
    if run.wants_steps:
        run.call("on_step_end", state.global_step, {
            "train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0],
            "train/samples": scheduler.position(state.epoch, state.samples_done)})
    if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
        save(run, state)


def end_epoch(run: Run, state: TrainState, samples: int, elapsed: float) -> dict[str, float]:
    """Validate, record the epoch's metrics, track the best epoch and early stopping; returns the metrics."""
    cfg, ctx = run.cfg, run.ctx
    train_sums = MetricSums(["train/loss"])
    train_sums.add("train/loss", state.loss_sum, state.loss_count)
    train_sums.all_reduce()
    metrics = {"epoch": float(state.epoch), **train_sums.compute(),
               "train/lr": float(run.scheduler.get_last_lr()[0]),
               "train/samples_per_s": samples * ctx.world_size / max(1e-9, elapsed)}
    if run.loaders.val is not None:
        # The plain module: no DDP sync is needed without gradients (weights agree on every rank),
        # and a compiled model would recompile for eval mode.
        metrics.update(evaluate(run.objective, run.model, run.loaders.val, run.device, cfg.amp))
    for name, loader in run.loaders.extra_val.items():  # e.g. real signers: "val_real/..."
        scored = evaluate(run.objective, run.model, loader, run.device, cfg.amp)
        metrics.update({f"{name}/{key.split('/', 1)[1]}": value for key, value in scored.items()})
    metrics.update(run.baselines)
    state.history.append(metrics)
    value = metrics.get(MONITOR, metrics["train/loss"])
    if value < state.best_value:
        state.best_value, state.best_epoch, state.best_metrics, state.bad_epochs = value, state.epoch, dict(metrics), 0
        if cfg.restore_best:
            state.best_state = cpu_state_dict(run.model)
    else:
        state.bad_epochs += 1
        if cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience:
            state.stopped_early = True
            if ctx.is_main:
                log.info("early stopping after epoch %d: %s has not improved for %d epochs",
                         state.epoch + 1, MONITOR, state.bad_epochs)
    if ctx.is_main:
        log.info("epoch %d/%d %s", state.epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
    return metrics


# --- the loop ------------------------------------------------------------------------------------------

def fit(task: str | Objective, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig,
        callbacks: Sequence[Any] = (), eval_sets: Mapping[str, Dataset] | None = None) -> TrainResult:
    """Train ``model`` on ``train_ds``, validating on ``val_ds`` after every epoch; see module docstring.
    ``eval_sets``: more data sets scored every epoch, each under its name (``{"val_real": ds}`` ->
    ``val_real/loss``, ``val_real/nme``, ...); they do not choose the best epoch."""
    objective = make_task(task, cfg)
    ctx = setup_distributed(cfg.device, cfg.dist_timeout_s)
    try:
        run = prepare(objective, model, train_ds, val_ds, cfg, list(callbacks), ctx, eval_sets)
        state = restore(run)
        run.running.checked_step = state.global_step
        while state.epoch < cfg.epochs and not state.stopped_early:
            samples, elapsed = train_one_epoch(run, state)
            metrics = end_epoch(run, state, samples, elapsed)
            state.start_epoch()
            save(run, state)
            run.call("on_epoch_end", state.epoch - 1, metrics, model)
        if cfg.restore_best and state.best_state is not None:
            model.load_state_dict(state.best_state)
        result = TrainResult(model=model, history=state.history, best_metrics=state.best_metrics,
                             best_epoch=state.best_epoch, global_step=state.global_step,
                             stopped_early=state.stopped_early, checkpoint_uri=run.checkpoint_uri, config=cfg)
        run.call("on_train_end", result)
        return result
    finally:
        if ctx.initialised_here:
            dist.destroy_process_group()


@torch.no_grad()
def evaluate(task: Objective, model: nn.Module, loader: DataLoader, device: torch.device,
             amp: str = "off") -> dict[str, float]:
    """Validation loss and the task's metrics over ``loader`` (summed over DDP ranks)."""
    was_training = model.training
    model.eval()
    metrics = task.new_metrics()
    loss_sums = MetricSums(["val/loss"])
    for batch in loader:
        batch = [t.to(device, non_blocking=True) for t in batch]
        with autocast(device, amp):
            loss, output = task.loss(model, batch)
        n = batch[0].shape[0]
        loss_sums.add("val/loss", loss.item() * n, n)
        task.update_metrics(metrics, output.float(), batch)
    loss_sums.all_reduce()
    metrics.sums.all_reduce()
    model.train(was_training)
    return {**loss_sums.compute(), **metrics.compute()}
