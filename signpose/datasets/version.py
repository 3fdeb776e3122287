"""Data set versions of a corpus: plan (list the prefix, diff against the parent version, decide what to
render), render the new or changed sources (:mod:`signpose.datasets.render`), commit the version.

A version's manifest (schema ``VERSION_SCHEMA``) lists its sources (key, content hash, fingerprint,
render key, video placements, frames per split, shard keys), its parent's hash and what was added,
changed and removed. Its dataset hash covers the render settings, the shard format and size and each
source's key and render key (content + settings + placements), not where the corpus lives nor its
history, so an unchanged corpus hashes to the committed version (a no-op) and a local folder and an
``s3://`` copy of it hash the same.

The plan (``plans/<hash>.json``) carries everything the writers and the commit need: the fan-out
work items index its ``todo`` list (the sources to render), so the pipeline's ParallelFor splits the
new sources only. The commit is the manifest's compare-and-set on the parent (:mod:`signpose.shards.commit`):
a writer whose parent is no longer the committed version is refused and re-runs (cheaply: what it
rendered is found again by render key).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from datetime import datetime, timezone

from signpose.datasets.listing import Corpus, list_corpus
from signpose.datasets.render import (
    DEFAULT_POLICY,
    SplitPolicy,
    policy_note,
    record_key,
    render_job,
    render_key,
)
from signpose.datasets.report import build_report, read_report, write_report
from signpose.datasets.sources import hash_source
from signpose.datasets.splits import MIN_VIDEOS_TO_SPLIT
from signpose.errors import UserError
from signpose.render import RENDERER_VERSION, RenderSettings
from signpose.shards.commit import claim, commit_manifest
from signpose.shards.format import (
    DEFAULT_SHARD_SIZE,
    PLAN_DIR,
    SHARD_FORMAT,
    VERSION_DIR,
    VERSION_SCHEMA,
    ShardError,
)
from signpose.shards.manifest import Manifest, ShardInfo, _try_read_manifest
from signpose.shards.plan import plan_dropped_on_failure
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)


class EmptyCorpusError(UserError, FileNotFoundError):
    """A prefix with no input object under it."""


def _same_rendering(parent: Manifest, settings: RenderSettings, shard_size: int) -> bool:
    return (parent.render == json.loads(json.dumps(settings.to_dict())) and parent.shard_size == shard_size
            and parent.renderer_version == RENDERER_VERSION and parent.shard_format == SHARD_FORMAT)


def _version_hash(settings: RenderSettings, shard_size: int, sources: list[dict]) -> str:
    text = json.dumps({"schema_version": VERSION_SCHEMA, "shard_format": SHARD_FORMAT, "render": settings.to_dict(),
                       "renderer_version": RENDERER_VERSION, "shard_size": int(shard_size),
                       "sources": [[s["key"], s["render_key"]] for s in sources]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _plan_sources(corpus: Corpus, parent: Manifest | None, settings: RenderSettings, shard_size: int,
                  policy: SplitPolicy) -> tuple[list[dict], list[int], dict[str, list[str]]]:
    """Each source's plan entry, the indices of those to render, and the changes since ``parent``."""
    old_sources = {s["key"]: s for s in (parent.sources or [])} if parent is not None else {}
    reuse = parent is not None and _same_rendering(parent, settings, shard_size)
    cut_new = len(corpus.sources) < MIN_VIDEOS_TO_SPLIT
    entries, todo, changes = [], [], {"added": [], "changed": [], "removed": []}
    for source in corpus.sources:
        old = old_sources.get(source.key)
        same_bytes = old is not None and old.get("fingerprint") == source.fingerprint
        digest = old["content_hash"] if same_bytes else hash_source(corpus, source)
        if old is not None and old["content_hash"] == digest and reuse:
            entries.append({**old, "fingerprint": source.fingerprint})
            continue
        if old is None or old["content_hash"] != digest:
            changes["added" if old is None else "changed"].append(source.key)
        inherited = dict(old["videos"]) if old is not None else {}
        todo.append(len(entries))
        entries.append({"key": source.key, "content_hash": digest, "fingerprint": source.fingerprint,
                        "render_key": render_key(digest, settings, shard_size, policy, inherited, cut_new),
                        "members": [[m.key, m.size, m.fingerprint] for m in source.members],
                        "grouped": source.grouped, "inherited": inherited, "cut_new": cut_new})
    changes["removed"] = sorted(set(old_sources) - {s.key for s in corpus.sources})
    return entries, todo, changes


def plan_version(corpus_uri: str, store_uri: str | ObjectStore, settings: RenderSettings = RenderSettings(),
                 shard_size: int = DEFAULT_SHARD_SIZE, policy: SplitPolicy = DEFAULT_POLICY,
                 replace: bool = False, corpus: Corpus | None = None) -> dict:
    """List the corpus, diff it against the committed version and store the plan; returns it.

    A store holding a version of a corpus gets the next version (its parent); a store holding a data
    set of a single input is refused unless ``replace`` (:func:`~signpose.shards.commit.claim`)."""
    corpus = corpus or list_corpus(corpus_uri)
    if not corpus.sources:  # before the store is opened: a refused input leaves no folder behind
        raise EmptyCorpusError(f"{corpus_uri}: no input objects under this prefix (skipped: {corpus.skipped or 'none'})")
    store = open_store(store_uri)
    committed = _try_read_manifest(store)
    parent = committed if committed is not None and committed.is_version else None
    entries, todo, changes = _plan_sources(corpus, parent, settings, shard_size, policy)
    dataset_hash = _version_hash(settings, shard_size, entries)
    base = committed.dataset_hash if committed is not None else None
    notes = []
    if parent is None:
        claim(store, dataset_hash, replace)
    elif parent.split_policy and parent.split_policy != asdict(policy):
        notes.append(policy_note(parent.dataset_hash, parent.split_policy, policy))
        log.warning("%s: %s", store.uri, notes[-1])
    plan = {"kind": "version", "dataset_hash": dataset_hash, "parent": parent.dataset_hash if parent else None,
            "base": base, "replace": bool(replace), "corpus": corpus.uri, "render": settings.to_dict(),
            "image_size": settings.image_size, "shard_size": int(shard_size), "policy": asdict(policy),
            "skipped": corpus.skipped, "notes": notes, "sources": entries,
            "todo": [] if base == dataset_hash else todo, **changes}
    if base != dataset_hash and read_plan(store, dataset_hash) is None:  # absent, or damaged: (re)written
        store.put_bytes(f"{PLAN_DIR}/{dataset_hash}.json", json.dumps(plan, sort_keys=True).encode())
    log.info("%s: version %s of %s: %d sources, %d to render (%d added, %d changed, %d removed)%s", store.uri,
             dataset_hash[:12], corpus.uri, len(entries), len(plan["todo"]), len(changes["added"]),
             len(changes["changed"]), len(changes["removed"]), " (already committed)" if base == dataset_hash else "")
    return plan


def read_plan(store: ObjectStore, dataset_hash: str) -> dict | None:
    """The stored plan of version ``dataset_hash``, None when absent, unreadable or not a version's plan."""
    try:
        plan = json.loads(store.get_bytes(f"{PLAN_DIR}/{dataset_hash}.json"))
    except ObjectNotFoundError:
        return None
    except (ValueError, RecursionError) as e:  # damaged: the plan step writes it again
        log.warning("%s: ignoring unreadable plan: %s", store.url(f"{PLAN_DIR}/{dataset_hash}.json"), e)
        return None
    return plan if isinstance(plan, dict) and plan.get("kind") == "version" else None


def render_planned(store_uri: str | ObjectStore, plan: dict, todo_range: range | None = None,
                   max_frames: int | None = None, max_rejected: float | None = None, workers: int | None = 1) -> int:
    """Render the sources ``plan["todo"][todo_range]`` (all when None) with ``workers`` processes (None:
    one per core), each holding one source at a time; returns the frames rendered. A source's shards
    and record depend on it alone, so any number of workers writes the same objects."""
    from signpose.shards.write import _default_workers, render_pool

    store = open_store(store_uri)
    settings = RenderSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan["render"].items()})
    policy = SplitPolicy(**plan["policy"])
    todo = plan["todo"] if todo_range is None else plan["todo"][todo_range.start:todo_range.stop]
    corpus = Corpus(plan["corpus"], open_store(plan["corpus"]), [])
    entries = [plan["sources"][i] for i in todo]
    rest = (settings, plan["shard_size"], policy, max_frames, max_rejected)
    n_workers = _default_workers(len(entries)) if workers is None else max(1, min(int(workers), len(entries) or 1))
    if n_workers <= 1:
        return render_job(store, corpus, entries, *rest)
    # A few sources a task (4 tasks a worker balance uneven sources) spare most of the per-task traffic;
    # the queue holds plan entries only: a source is read in its worker.
    chunk = -(-len(entries) // (4 * n_workers))
    with render_pool(n_workers) as pool:
        futures = [pool.submit(render_job, store, corpus, entries[i:i + chunk], *rest)
                   for i in range(0, len(entries), chunk)]
        return sum(future.result() for future in futures)


def _parent_parts(store: ObjectStore, plan: dict) -> tuple[dict[str, ShardInfo], dict[str, dict]]:
    """The parent version's shard records by key and its report's rows by source key (empty if gone)."""
    if not plan["parent"]:
        return {}, {}
    parent = _try_read_manifest(store)
    if parent is None or parent.dataset_hash != plan["parent"]:
        try:
            parent = Manifest.from_dict(json.loads(store.get_bytes(f"{VERSION_DIR}/{plan['parent']}.json")))
        except (ObjectNotFoundError, ValueError, ShardError):
            parent = None
    report = read_report(store, plan["parent"]) or {}
    return ({s.key: s for s in parent.shards} if parent else {},
            {row["key"]: row for row in report.get("sources", [])})


def _source_record(store: ObjectStore, entry: dict) -> dict | None:
    try:
        return json.loads(store.get_bytes(record_key(entry["render_key"])))
    except ObjectNotFoundError:
        return None


def _assemble(store: ObjectStore, plan: dict) -> tuple[list[ShardInfo], list[dict], list[dict]]:
    """The version's shards (numbered in order), manifest sources and report rows."""
    parent_shards, parent_rows = _parent_parts(store, plan)
    infos: list[ShardInfo] = []
    sources, rows, missing, position = [], [], [], 0
    for entry in plan["sources"]:
        shards = [parent_shards.get(key) for key in entry.get("shards", [None])]
        row = parent_rows.get(entry["key"])
        record = None
        if None in shards or row is None or row.get("content_hash") != entry["content_hash"]:
            record = _source_record(store, entry)
            if record is None:
                missing.append(entry["key"])
                continue
            shards, row = [ShardInfo.from_dict(s) for s in record["shards"]], record["row"]
            if not all(store.exists(info.key) for info in shards):  # collected after a writer's grace period
                missing.append(entry["key"])
                continue
        for info in shards:
            infos.append(replace(info, index=len(infos), start=position))
            position += info.count
        done = record or entry
        sources.append({"key": entry["key"], "content_hash": entry["content_hash"], "fingerprint": entry["fingerprint"],
                        "render_key": entry["render_key"], "videos": done["videos"], "frames": done["frames"],
                        "video_splits": done["video_splits"], "shards": [s.key for s in shards]})
        rows.append(row)
    if missing:
        raise ShardError(f"{store.uri}: cannot commit version {plan['dataset_hash'][:12]}: {len(missing)} sources not "
                         f"rendered yet: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return infos, sources, rows


def commit_version(store_uri: str | ObjectStore, dataset_hash: str, plan: dict | None = None) -> Manifest:
    """Write the report, then commit the version (the manifest's compare-and-set on the parent)."""
    store = open_store(store_uri)
    existing = _try_read_manifest(store)
    if existing is not None and existing.dataset_hash == dataset_hash:
        return existing
    plan = plan or read_plan(store, dataset_hash)
    if plan is None:
        raise ShardError(f"{store.uri}: no plan of version {dataset_hash[:12]} under {PLAN_DIR}/ (re-run the plan step)")
    infos, sources, rows = _assemble(store, plan)
    splits: dict[str, int] = {}
    videos: dict[str, int] = {}
    for source in sources:
        for name, count in source["frames"].items():
            splits[name] = splits.get(name, 0) + int(count)
        for name, count in source["video_splits"].items():
            videos[name] = videos.get(name, 0) + int(count)
    changes = {name: plan[name] for name in ("added", "changed", "removed")}
    manifest = Manifest(
        schema_version=VERSION_SCHEMA, dataset_hash=dataset_hash, image_size=int(plan["image_size"]),
        render=plan["render"], splits=splits, shards=infos, n_frames=sum(i.count for i in infos),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), shard_size=int(plan["shard_size"]),
        parent=plan["parent"], sources=sources, changes=changes, split_policy=plan["policy"], uri=store.uri)
    split_counts = {n: {"frames": splits[n], "videos": videos.get(n, 0)} for n in splits}
    write_report(store, build_report(dataset_hash, plan["parent"], split_counts, rows, plan["skipped"],
                                     notes=plan.get("notes", ()), **changes))
    return commit_manifest(store, manifest, plan["base"], replace=plan["parent"] is not None or plan["replace"])


def write_version(corpus_uri: str, store_uri: str | ObjectStore, settings: RenderSettings = RenderSettings(),
                  shard_size: int = DEFAULT_SHARD_SIZE, policy: SplitPolicy = DEFAULT_POLICY, replace: bool = False,
                  max_frames: int | None = None, max_rejected: float | None = None,
                  workers: int | None = 1) -> tuple[Manifest, int]:
    """Plan, render the new and changed sources (``workers`` processes, one source in memory in each)
    and commit; returns the committed manifest and the number of frames rendered (0 for an unchanged
    corpus)."""
    corpus = list_corpus(corpus_uri)  # listed before the store is opened (an empty corpus creates nothing)
    store = open_store(store_uri)
    planned = set(store.list(PLAN_DIR + "/"))
    plan = plan_version(corpus_uri, store, settings, shard_size, policy, replace, corpus=corpus)
    plan_key = f"{PLAN_DIR}/{plan['dataset_hash']}.json"
    with plan_dropped_on_failure(store, plan_key, existed=plan_key in planned):
        rendered = render_planned(store, plan, None, max_frames, max_rejected, workers)
        return commit_version(store, plan["dataset_hash"], plan), rendered
