"""A store's versions: ``history`` (every recorded version, newest first), ``diff`` (sources added,
changed and removed between two versions) and ``gc`` (garbage collection by mark and sweep).

**The gc rule**, safe against a writer committing at the same time:

1. *Keep*: the committed version (``manifest.json``) and its ancestors, the newest ``keep`` of them
   (all recorded versions when ``keep`` is None). Records of the other versions (``versions/<h>.json``)
   and their reports are deleted first, so no kept record ever names a deleted shard.
2. *Mark*: every object a kept version uses (shards, shard records, source records, plan, report),
   read after step 1, plus, when it changed meanwhile, the version committed now.
3. *Sweep*: under ``shards/``, ``sources/``, ``plans/`` and ``reports/``, an unmarked object is
   deleted only when it is older than the grace period (default 6 hours), and so is a temporary file
   that a killed writer left (``.tmp-signpose``).

A writer reuses only shards of its parent, which is the committed version when it plans; if that
is still the committed version at its commit, it was kept and marked by any gc in between (the
committed version is always kept); if not, the writer's compare-and-set commit is refused. The
shards a writer renders belong to no version until it commits: they are younger than the grace
period as long as the writer finishes within it, and the commit checks that every one of them still
exists. So a writer that takes longer than the grace period between rendering and committing may
be refused, never committed with a shard missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from signpose.shards.commit import SWEPT_DIRS, committed_hash, kept_keys, kept_versions, stale_temporaries
from signpose.shards.format import REPORT_DIR, VERSION_DIR, ShardError
from signpose.shards.manifest import Manifest, _try_read_manifest
from signpose.store import ObjectNotFoundError, ObjectStore, open_store

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 6 * 3600


def history(store_uri: str | ObjectStore) -> list[Manifest]:
    """Every recorded version (and the committed data set), newest first: the committed one and its
    ancestors along their parent links, then any others (a replaced lineage) by creation time."""
    store = open_store(store_uri)
    versions = {m.dataset_hash: m for m in kept_versions(store)}
    current = _try_read_manifest(store)
    if current is not None:
        versions[current.dataset_hash] = current
    chain, cursor = [], current
    while cursor is not None and cursor not in chain:
        chain.append(cursor)
        cursor = versions.get(cursor.parent) if cursor.parent else None
    rest = [m for m in versions.values() if m not in chain]
    return chain + sorted(rest, key=lambda m: (m.created_at, m.dataset_hash), reverse=True)


def find_version(store_uri: str | ObjectStore, ref: str) -> Manifest:
    """The version whose hash starts with ``ref`` (at least 6 characters)."""
    matches = [m for m in history(store_uri) if len(ref) >= 6 and m.dataset_hash.startswith(ref)]
    if len(matches) != 1:
        raise ShardError(f"{open_store(store_uri).uri}: {len(matches)} versions match {ref!r}; give at least 6 "
                         "characters of a hash that `signpose dataset history` lists")
    return matches[0]


@dataclass
class VersionDiff:
    old: str
    new: str
    added: list[str]
    changed: list[str]
    removed: list[str]
    frames: dict[str, int]  # new minus old, per split


def diff(old: Manifest, new: Manifest) -> VersionDiff:
    """Sources added, changed (other content) and removed from ``old`` to ``new``."""
    before = {s["key"]: s["content_hash"] for s in old.sources or []}
    after = {s["key"]: s["content_hash"] for s in new.sources or []}
    splits = sorted(set(old.splits) | set(new.splits))
    return VersionDiff(old.dataset_hash, new.dataset_hash, sorted(set(after) - set(before)),
                       sorted(k for k in set(after) & set(before) if after[k] != before[k]),
                       sorted(set(before) - set(after)),
                       {s: new.splits.get(s, 0) - old.splits.get(s, 0) for s in splits})


def _kept(store: ObjectStore, keep: int | None) -> tuple[Manifest | None, list[Manifest], list[Manifest]]:
    """(committed version, versions kept, versions dropped)."""
    current = _try_read_manifest(store)
    recorded = {m.dataset_hash: m for m in kept_versions(store)}
    if current is not None:
        recorded[current.dataset_hash] = current
    if keep is None:
        return current, list(recorded.values()), []
    chain, cursor = [], current
    while cursor is not None and len(chain) < max(1, keep):
        chain.append(cursor)
        cursor = recorded.get(cursor.parent) if cursor.parent else None
    names = {m.dataset_hash for m in chain}
    return current, chain, [m for h, m in recorded.items() if h not in names]


def collect(store_uri: str | ObjectStore, keep: int | None = None, grace_s: float = DEFAULT_GRACE_S,
            dry_run: bool = False, now: float | None = None) -> dict[str, list[str]]:
    """Apply the gc rule of the module docstring; returns {"versions": dropped hashes, "objects": keys}
    (what would be deleted, with ``dry_run``). A store whose manifest cannot be read is refused: what
    its data set uses is unknown (:func:`~signpose.shards.commit.committed_hash`)."""
    store = open_store(store_uri)
    committed_hash(store)
    current, kept, dropped = _kept(store, keep)
    for version in dropped:
        log.info("%s: dropping version %s (%s)", store.uri, version.dataset_hash[:12], version.created_at)
        if not dry_run:
            store.delete(f"{VERSION_DIR}/{version.dataset_hash}.json")
            store.delete(f"{REPORT_DIR}/{version.dataset_hash}.json")
    marked: set[str] = set()
    for version in kept:
        marked |= kept_keys(version)
    latest = _try_read_manifest(store)
    if latest is not None and (current is None or latest.dataset_hash != current.dataset_hash):
        marked |= kept_keys(latest)  # committed while this gc ran
    dropped_keys = set()
    for version in dropped:
        dropped_keys |= {f"{VERSION_DIR}/{version.dataset_hash}.json", f"{REPORT_DIR}/{version.dataset_hash}.json"}
    cutoff = (time.time() if now is None else now) - grace_s
    doomed = []
    for prefix in SWEPT_DIRS:
        for key in store.list(prefix + "/"):
            if key in marked:
                continue
            try:
                old_enough = store.modified(key) < cutoff
            except ObjectNotFoundError:
                continue
            if old_enough or (dry_run and key in dropped_keys):
                doomed.append(key)
    doomed += stale_temporaries(store, cutoff)
    if not dry_run:
        for key in doomed:
            store.delete(key)
    return {"versions": [m.dataset_hash for m in dropped], "objects": sorted(set(doomed))}


def describe(manifest: Manifest) -> str:
    """One line of ``history``."""
    changes = manifest.changes or {}
    what = (f"+{len(changes.get('added', []))} ~{len(changes.get('changed', []))} -{len(changes.get('removed', []))}"
            if manifest.is_version else "single input")
    return (f"{manifest.dataset_hash[:12]}  {manifest.created_at}  parent {(manifest.parent or '-')[:12]:12}  "
            f"{len(manifest.sources or [])} sources  {manifest.n_frames} frames {manifest.splits}  {what}")
