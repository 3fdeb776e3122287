"""Writing a data set: render and write its shards in parallel, then commit the manifest (last);
merge the shards of fan-out writer tasks; verify a committed data set.

Writes are idempotent and resumable: a committed data set with the same hash is not written again, and
after a crash a re-run writes only the shards that are missing or damaged, byte-identical to an
undisturbed run (the plan and the shard bytes are deterministic: :mod:`signpose.shards.plan`,
:mod:`signpose.shards.codec`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from typing import Any

from signpose import layout
from signpose.render import RenderSettings
from signpose.shards.codec import build_shard, read_shard
from signpose.shards.commit import check_base, claim, commit_manifest, committed_hash, damaged_shards
from signpose.shards.format import DEFAULT_SHARD_SIZE, PLAN_DIR, SCHEMA_VERSION, ShardError
from signpose.shards.manifest import (
    Manifest,
    ShardInfo,
    _try_read_manifest,
    check_manifest,
    count_face_frames,
    read_manifest,
)
from signpose.shards.plan import (
    DatasetPlan,
    _frame_arrays,
    _split_order,
    plan_dataset,
    plan_dropped_on_failure,
    store_plan,
)
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)


def _existing_shard(store: ObjectStore, plan: DatasetPlan, index: int) -> ShardInfo | None:
    """The ShardInfo of a shard already written with the right bytes, else None (rewrite it)."""
    try:
        info = ShardInfo.from_dict(json.loads(store.get_bytes(plan.sidecar_key(index))))
        data = store.get_bytes(plan.shard_key(index))
    except (ObjectNotFoundError, ValueError, KeyError, TypeError):
        return None
    start, stop = plan.ranges[index]
    if (info.key != plan.shard_key(index) or info.count != stop - start or len(data) != info.bytes
            or hashlib.sha256(data).hexdigest() != info.sha256):
        log.warning("shard %s does not match its record; rewriting it", store.url(plan.shard_key(index)))
        return None
    return info


def _default_workers(n_tasks: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_tasks))


@contextlib.contextmanager
def render_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """The render processes of :func:`write_shard_range` and of a corpus version's sources; their log
    records go through this process's logging (a reader's warnings show as if it ran here). On exit
    the queued tasks are dropped (after an error nothing more is rendered for nothing)."""
    import multiprocessing
    from logging.handlers import QueueListener

    # forkserver: forking a process that already runs torch/BLAS threads can deadlock its children.
    context = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    records = context.Queue()
    listener = QueueListener(records, _Relay())
    listener.start()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(dict(os.environ), records, _lowest_level()))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        listener.stop()
        records.close()


def _lowest_level() -> int:
    """The lowest level any logger here lets through: what a worker must send (the relay filters)."""
    loggers = [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger) and v.level)]
    return min(logger.getEffectiveLevel() for logger in loggers)


class _Relay:
    """Hands a worker's log record to the logger of its name here (the caller's handlers, pytest's too),
    when that logger is enabled for its level."""

    def handle(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _start_worker(environ: dict[str, str], records, level: int) -> None:
    from logging.handlers import QueueHandler

    # A forkserver's children inherit the server's environment, fixed when it first started: a worker
    # that opens a store must see the credentials and endpoint the caller has now.
    os.environ.clear()
    os.environ.update(environ)
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(records)]
    root.setLevel(level)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled, mininterval=2.0,
                file=sys.stderr)


def write_shard_range(frames, store_uri: str | ObjectStore, settings: RenderSettings,
                      shard_indices: Iterable[int] | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                      workers: int | None = None, progress: bool = True,
                      plan: DatasetPlan | None = None) -> list[ShardInfo]:
    """Write the shards ``shard_indices`` of the plan (all when None); skip those already complete.

    Safe to run concurrently for disjoint index sets (one KFP task per range); every writer of the
    same input computes the same plan, so keys and bytes agree. Returns the ShardInfos in index order.
    """
    store = open_store(store_uri)
    plan = plan or plan_dataset(frames, settings, shard_size)
    indices = list(range(plan.n_shards)) if shard_indices is None else sorted(set(int(i) for i in shard_indices))
    bad = [i for i in indices if not 0 <= i < plan.n_shards]
    if bad:
        raise ValueError(f"shard indices {bad} out of range: the plan has {plan.n_shards} shards")
    store_plan(store, plan)

    keypoints, split, video_id, frame_index = _frame_arrays(frames)
    order = _split_order(split)
    infos: dict[int, ShardInfo] = {}
    todo = []
    for index in indices:
        existing = _existing_shard(store, plan, index)
        if existing is not None:
            infos[index] = existing
        else:
            todo.append(index)
    if infos:
        log.info("%s: %d of %d shards already complete, writing %d", store.uri, len(infos), len(indices),
                 len(todo))

    def task_args(index: int):
        start, stop = plan.ranges[index]
        rows = order[start:stop]
        return keypoints[rows], split[rows], video_id[rows], frame_index[rows], settings

    def commit(index: int, data: bytes, splits: dict[str, int]) -> None:
        start, stop = plan.ranges[index]
        rows = order[start:stop]
        info = ShardInfo(key=plan.shard_key(index), count=stop - start, bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), splits=splits, index=index, start=start,
                         face_frames=count_face_frames(keypoints[rows][:, layout.FACE], split[rows]))
        store.put_bytes(info.key, data)
        # The sidecar follows its shard: a sidecar present means the shard was fully written.
        store.put_bytes(plan.sidecar_key(index), (json.dumps(info.to_dict(), sort_keys=True) + "\n").encode())
        infos[index] = info

    n_workers = _default_workers(len(todo)) if workers is None else max(1, min(int(workers), len(todo) or 1))
    with _progress(len(todo), f"render+write {store.uri}", progress) as bar:
        if n_workers <= 1:
            for index in todo:
                commit(index, *build_shard(*task_args(index)))
                bar.update(1)
        else:
            # Keep a bounded number of shards in flight: each holds its rendered images in memory.
            with render_pool(n_workers) as pool:
                pending: list[tuple[int, Any]] = []
                queue = list(todo)
                while queue or pending:
                    while queue and len(pending) < 2 * n_workers:
                        index = queue.pop(0)
                        pending.append((index, pool.submit(build_shard, *task_args(index))))
                    index, future = pending.pop(0)
                    commit(index, *future.result())
                    bar.update(1)
    return [infos[i] for i in indices]


_OBSERVE = object()  # merge_manifest's default base: the data set committed when the merge starts


def merge_manifest(store_uri: str | ObjectStore, dataset_hash: str | None = None, replace: bool = False,
                   base: str | None | object = _OBSERVE) -> Manifest:
    """Commit a data set whose shards were written (possibly by several tasks): write manifest.json.

    ``dataset_hash`` selects the plan; when None there must be exactly one plan in the store.
    Fails, naming the missing shards, unless every shard of the plan has been written. ``base``: the
    hash committed when the writers started (None: none), as :func:`~signpose.shards.commit.claim`
    returned it to the plan step; by default the data set committed now. Another data set committed
    is refused unless ``replace``; one committed after ``base`` is refused always
    (:mod:`signpose.shards.commit`).
    """
    store = open_store(store_uri)
    existing = _try_read_manifest(store)
    if dataset_hash is not None:  # before the plan: another run's commit may have collected it
        if existing is not None and existing.dataset_hash == dataset_hash:
            return existing
        base = claim(store, dataset_hash, replace) if base is _OBSERVE else base
        check_base(store, existing.dataset_hash if existing else None, dataset_hash, base, replace)
    if dataset_hash is None:
        plans = store.list(PLAN_DIR + "/")
        if len(plans) != 1:
            raise ShardError(f"{store.uri}: expected exactly one plan under {PLAN_DIR}/ to merge, found "
                             f"{len(plans)}; pass dataset_hash")
        plan_key = plans[0]
    else:
        plan_key = f"{PLAN_DIR}/{dataset_hash}.json"
    try:
        plan = DatasetPlan.from_json(store.get_bytes(plan_key))
    except ObjectNotFoundError:
        raise ShardError(f"{store.url(plan_key)}: no such plan; write the shards first") from None
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ShardError(f"{store.url(plan_key)}: unreadable plan ({type(e).__name__}: {str(e)[:200]}); re-run the "
                         "plan step, which rewrites it") from None
    if existing is not None and existing.dataset_hash == plan.dataset_hash:
        return existing
    base = claim(store, plan.dataset_hash, replace) if base is _OBSERVE else base
    infos, missing = [], []
    for index in range(plan.n_shards):
        try:
            infos.append(ShardInfo.from_dict(json.loads(store.get_bytes(plan.sidecar_key(index)))))
        except ObjectNotFoundError:
            missing.append(plan.shard_key(index))
    if missing:
        raise ShardError(f"{store.uri}: cannot merge, {len(missing)} of {plan.n_shards} shards not written: "
                         + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return _commit_manifest(store, plan, infos, base, replace)


def _commit_manifest(store: ObjectStore, plan: DatasetPlan, infos: Sequence[ShardInfo], base: str | None,
                     replace: bool) -> Manifest:
    splits: dict[str, int] = {}
    for info in infos:
        for name, count in info.splits.items():
            splits[name] = splits.get(name, 0) + count
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, dataset_hash=plan.dataset_hash, image_size=plan.image_size,
        render=plan.render, splits=splits, shards=list(infos),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        n_frames=plan.n_frames, shard_size=plan.shard_size, uri=store.uri,
    )
    return commit_manifest(store, manifest, base, replace)


def verify_dataset(store_uri: str | ObjectStore, progress: bool = True) -> Manifest:
    """Download every shard of the manifest and check size, sha256 and decoding; raise on the first
    bad one (naming it), return the manifest when all are good."""
    store = open_store(store_uri)
    manifest = read_manifest(store)
    check_manifest(manifest, store)
    with _progress(len(manifest.shards), f"verify {store.uri}", progress) as bar:
        for shard in manifest.shards:
            read_shard(store, shard)
            bar.update(1)
    return manifest


def write_dataset(frames, store_uri: str | ObjectStore, settings: RenderSettings = RenderSettings(),
                  shard_size: int = DEFAULT_SHARD_SIZE, workers: int | None = None,
                  progress: bool = True, replace: bool = False) -> Manifest:
    """Render and write all shards, then the manifest (last: the commit point).

    Idempotent: when a manifest with the same dataset hash is committed, the checksums of its shards
    are checked and only damaged or missing ones are rewritten (byte-identical). After a crash the
    re-run writes only the shards that are missing or damaged. A store holding another data set is
    refused before anything is written, unless ``replace`` (then the new data set replaces it
    atomically and the old one's objects are deleted after the commit: :mod:`signpose.shards.commit`).
    """
    store = open_store(store_uri)
    plan = plan_dataset(frames, settings, shard_size)
    existing = _try_read_manifest(store)
    if existing is not None and existing.dataset_hash == plan.dataset_hash:
        return _repair(frames, store, settings, plan, existing, workers, progress)
    base = claim(store, plan.dataset_hash, replace)
    log.info("%s: writing data set %s: %d frames in %d shards of <= %d", store.uri, plan.dataset_hash[:12],
             plan.n_frames, plan.n_shards, shard_size)
    with plan_dropped_on_failure(store, plan.plan_key):
        infos = write_shard_range(frames, store, settings, None, shard_size, workers, progress, plan=plan)
        return _commit_manifest(store, plan, infos, base, replace)


def _repair(frames, store: ObjectStore, settings: RenderSettings, plan: DatasetPlan, existing: Manifest,
            workers: int | None, progress: bool) -> Manifest:
    """A committed data set of the same input: verify its shards' checksums, rewrite damaged ones."""
    damaged = damaged_shards(store, existing)
    store_plan(store, plan)  # a damaged plan fails `dataset verify`: mended here, with the shards
    if not damaged:
        log.info("%s: data set %s already written (%d shards, checksums verified), nothing to do", store.uri,
                 plan.dataset_hash[:12], len(existing.shards))
        return existing
    # Someone deleted, truncated or altered committed shards: rewrite them (deterministic bytes).
    log.warning("%s: data set %s is committed but %d shards are missing or damaged (%s); rewriting them",
                store.uri, plan.dataset_hash[:12], len(damaged), ", ".join(damaged[:5]))
    index_of = {plan.shard_key(i): i for i in range(plan.n_shards)}
    for key in damaged:  # the record of a damaged shard is re-made with it
        store.delete(plan.sidecar_key(index_of[key]))
    infos = write_shard_range(frames, store, settings, [index_of[k] for k in damaged], plan.shard_size, workers,
                              progress, plan=plan)
    expected = {s.key: s for s in existing.shards}
    for info in infos:
        if info != expected[info.key]:
            raise ShardError(f"{store.url(info.key)}: rewritten, but it differs from the manifest's record "
                             f"(sha256 {info.sha256}, manifest {expected[info.key].sha256})")
    # Replaced by another run meanwhile? Then this run did not end with its data set committed.
    check_base(store, committed_hash(store), existing.dataset_hash, existing.dataset_hash, replace=False)
    return existing
