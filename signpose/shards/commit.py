"""Who owns a store prefix: one committed data set per prefix, replaced only on request, and a manifest
commit that exactly one of several concurrent writers wins.

- **One data set per prefix.** A writer whose input hashes to another data set than the one committed
  is refused before it writes anything (:class:`DatasetExistsError`: one line naming the store, both
  hashes and ``--replace``), unless it was asked to replace it. The same input again is a no-op.
- **The commit is a compare-and-set on ``manifest.json``.** A writer notes which data set was
  committed when it started (its *base*: a hash, or none). At the commit it reads the manifest with its
  ETag: if another data set than the base is committed by then, another writer won and this one is
  refused; otherwise it writes the manifest with ``If-None-Match: *`` (no manifest yet) or
  ``If-Match: <ETag read>`` (:meth:`~signpose.store.ObjectStore.put_if_absent` /
  :meth:`~signpose.store.ObjectStore.replace_if_match`), so of two writers that read the same state
  one write is refused; the refused one reads again and reports the refusal (or, when the winner
  committed the same data set, returns it).
- **Fallback** for a store without conditional writes (an S3 endpoint answering ``501 NotImplemented``
  to the conditional headers): a plain write followed by a read-back; if the manifest read back is
  not the one written, the run is refused. Best effort: two writers whose write and read-back
  interleave exactly can both read back their own; a warning says so.
- **Garbage collection** after a successful commit: under ``shards/``, ``plans/``, ``sources/`` and
  ``reports/``, the objects of the replaced data set (the keys its manifest names, its records,
  plan and data report) and every other object that neither the committed data set nor a version recorded under
  ``versions/`` uses and that is older than the manifest (what refused or crashed writers left) are
  deleted, and so are the temporary files that killed writers left (``.tmp-signpose``) a minute
  older than it. Younger ones may belong to a writer still running, which a later commit collects. A new
  version of a corpus replaces nothing: its parent is recorded under ``versions/`` and keeps its
  shards until ``signpose dataset gc`` drops it (:mod:`signpose.datasets.history`). Readers that
  opened a replaced (non-version) manifest lose its shards.
"""

from __future__ import annotations

import hashlib
import json
import logging

from signpose.shards.format import (
    MANIFEST_NAME,
    PLAN_DIR,
    REPORT_DIR,
    SHARD_DIR,
    SOURCE_DIR,
    VERSION_DIR,
    ShardError,
)
from signpose.shards.manifest import Manifest, read_manifest
from signpose.store import ObjectNotFoundError, ObjectStore, StoreError

log = logging.getLogger(__name__)

REPLACE_HINT = "a store prefix holds one data set: give another --store, or --replace to replace it"


class DatasetExistsError(ShardError):
    """The store prefix holds another committed data set (a user error: exit status 2)."""


class DamagedManifestError(DatasetExistsError):
    """``manifest.json`` is there but cannot be read: the store holds a data set nobody can name, which
    is neither empty nor the writer's (refused unless ``--replace``; exit status 2)."""


def damaged(store: ObjectStore, reason: str) -> DamagedManifestError:
    """The one-line refusal of a store whose manifest cannot be read: how to inspect or repair it."""
    reason = reason.removeprefix(f"{store.url(MANIFEST_NAME)}: ").removeprefix(f"{store.uri}/{MANIFEST_NAME}: ")
    return DamagedManifestError(
        f"{store.url(MANIFEST_NAME)}: the committed manifest cannot be read ({reason[:200]}), so the data set this "
        f"store holds is unknown; inspect it with `signpose dataset info {store.uri}`, restore manifest.json (a "
        "version's copy is under versions/), or give --replace to replace that data set")


def refusal(store: ObjectStore, committed: str, new: str, raced: bool = False) -> DatasetExistsError:
    """The one-line refusal: the store, the committed data set's hash and this input's."""
    how = "another run committed data set" if raced else "holds data set"
    during = " while this run wrote" if raced else ", this input is"
    return DatasetExistsError(f"{store.uri}: {how} {committed[:12]}{during} data set {new[:12]}; {REPLACE_HINT}")


def _hash_of(data: bytes | None) -> str | None:
    """The dataset hash a manifest's bytes name, for messages (None: absent or unreadable)."""
    if data is None:
        return None
    try:
        value = json.loads(data).get("dataset_hash")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _readable_hash(store: ObjectStore, data: bytes | None, replace: bool) -> str | None:
    """The hash of the committed manifest ``data`` (None: absent). A manifest that is there but cannot be
    read is refused (:func:`damaged`), or taken as nothing with ``replace`` (it is overwritten)."""
    if data is None:
        return None
    try:
        return Manifest.from_dict(json.loads(data), uri=store.uri).dataset_hash
    except (ValueError, RecursionError, ShardError) as e:
        if replace:
            return None
        raise damaged(store, str(e) if isinstance(e, ShardError) else f"{type(e).__name__}: {e}") from None


def committed_hash(store: ObjectStore, replace: bool = False) -> str | None:
    """The hash of the data set committed at the store root, None when none; an unreadable manifest is
    refused unless ``replace`` (then None)."""
    try:
        data = store.get_bytes(MANIFEST_NAME)
    except ObjectNotFoundError:
        return None
    return _readable_hash(store, data, replace)


def claim(store: ObjectStore, dataset_hash: str, replace: bool = False) -> str | None:
    """Check, before writing anything, that data set ``dataset_hash`` may be written here; returns the
    base (the hash committed now, None when none). Raises :class:`DatasetExistsError` when another data
    set is committed, and :class:`DamagedManifestError` when the manifest cannot be read, unless
    ``replace``."""
    base = committed_hash(store, replace)
    if base is not None and base != dataset_hash and not replace:
        raise refusal(store, base, dataset_hash)
    return base


def check_base(store: ObjectStore, found: str | None, new: str, base: str | None, replace: bool) -> None:
    """Refuse to commit data set ``new`` over ``found`` (the hash committed now) unless ``found`` is
    still the ``base`` the writer started from and it may replace it (or nothing readable is there)."""
    if found is not None and found != new and (found != base or not replace):
        raise refusal(store, found, new, raced=found != base)


def commit_manifest(store: ObjectStore, manifest: Manifest, base: str | None, replace: bool = False) -> Manifest:
    """Write ``manifest`` as the commit point if the store still holds ``base`` (see the module
    docstring); returns the committed manifest (another writer's, when it committed the same data)."""
    new = manifest.dataset_hash
    data = manifest.to_json().encode()
    try:
        current = store.get_with_etag(MANIFEST_NAME)
    except NotImplementedError:
        return _commit_unconditionally(store, manifest, base, replace)
    for _ in range(2):
        found = _readable_hash(store, current[0] if current is not None else None, replace)
        if found == new:
            return read_manifest(store)  # a concurrent writer of the same input committed it
        check_base(store, found, new, base, replace)
        try:
            etag = (store.put_if_absent(MANIFEST_NAME, data) if current is None
                    else store.replace_if_match(MANIFEST_NAME, data, current[1]))
        except NotImplementedError:
            return _commit_unconditionally(store, manifest, base, replace)
        if etag is not None:
            _committed(store, manifest, current[0] if current is not None else None, data)
            return manifest
        current = store.get_with_etag(MANIFEST_NAME)  # refused: someone wrote in between; look again
    raise refusal(store, (_hash_of(current[0]) if current else None) or "(unreadable)", new, raced=True)


def _commit_unconditionally(store: ObjectStore, manifest: Manifest, base: str | None, replace: bool) -> Manifest:
    log.warning("%s: the store has no conditional writes; the manifest commit is checked by reading it back, "
                "which cannot exclude every concurrent writer (docs/storage.md, 'One data set per prefix')",
                store.uri)
    new, data = manifest.dataset_hash, manifest.to_json().encode()
    try:
        old = store.get_bytes(MANIFEST_NAME)
    except ObjectNotFoundError:
        old = None
    found = _readable_hash(store, old, replace)
    if found == new:
        return read_manifest(store)
    check_base(store, found, new, base, replace)
    store.put_bytes(MANIFEST_NAME, data)
    back = store.get_bytes(MANIFEST_NAME)
    if back != data:
        winner = _hash_of(back)
        if winner == new:
            return read_manifest(store)
        raise refusal(store, winner or "(unreadable)", new, raced=True)
    _committed(store, manifest, old, data)
    return manifest


def _committed(store: ObjectStore, manifest: Manifest, replaced_bytes: bytes | None, data: bytes) -> None:
    """Log the commit and collect the garbage; ``replaced_bytes``: the manifest it replaced."""
    replaced = None
    if replaced_bytes is not None:
        try:
            replaced = Manifest.from_dict(json.loads(replaced_bytes), uri=store.uri)
        except (ValueError, RecursionError, ShardError):
            pass  # unreadable: its objects, if any, go by age
    log.info("%s: committed data set %s (%d frames, %d shards, %s)%s", store.uri, manifest.dataset_hash[:12],
             manifest.n_frames, len(manifest.shards), manifest.splits,
             f", replacing {replaced.dataset_hash[:12]}" if replaced else "")
    if manifest.is_version:
        # The version records are the roots garbage collection keeps: the new one, and its parent's (a
        # writer may have stopped between its commit and its record).
        store.put_bytes(f"{VERSION_DIR}/{manifest.dataset_hash}.json", data)
        if replaced is not None and replaced.is_version and replaced_bytes is not None:
            if not store.exists(f"{VERSION_DIR}/{replaced.dataset_hash}.json"):
                store.put_bytes(f"{VERSION_DIR}/{replaced.dataset_hash}.json", replaced_bytes)
    collect_garbage(store, manifest, replaced)


def used_keys(manifest: Manifest) -> set[str]:
    """The objects a committed data set uses: its shards, their records, its plan and, for a version,
    its version record, its data report and its sources' records (:func:`kept_keys` adds the data
    report of a data set of one input, which the library's writers do not write)."""
    digest = manifest.dataset_hash
    keys = {f"{PLAN_DIR}/{digest}.json"}
    if manifest.is_version:
        keys |= {f"{VERSION_DIR}/{digest}.json", f"{REPORT_DIR}/{digest}.json"}
    for shard in manifest.shards:
        keys |= {shard.key, shard.key.removesuffix(".npz") + ".json"}
    for source in manifest.sources or ():
        keys.add(f"{SOURCE_DIR}/{source['render_key']}.json")
    return keys


def kept_keys(manifest: Manifest) -> set[str]:
    """What garbage collection keeps for a committed data set: :func:`used_keys` and its data report."""
    return used_keys(manifest) | {f"{REPORT_DIR}/{manifest.dataset_hash}.json"}


SWEPT_DIRS = (SHARD_DIR, PLAN_DIR, SOURCE_DIR, REPORT_DIR)
# A temporary file is a write in flight until it is this much older than the commit: a concurrent
# writer between creating its temporary file and its first bytes is never cut off.
TEMPORARY_GRACE_S = 60.0


def kept_versions(store: ObjectStore) -> list[Manifest]:
    """Every version recorded under ``versions/`` (unreadable records are skipped with a warning)."""
    found = []
    for key in store.list(VERSION_DIR + "/"):
        try:
            found.append(Manifest.from_dict(json.loads(store.get_bytes(key)), uri=store.uri))
        except ObjectNotFoundError:
            continue  # collected meanwhile
        except (ValueError, RecursionError, ShardError) as e:
            log.warning("%s: ignoring unreadable version record: %s", store.url(key), e)
    return found


def collect_garbage(store: ObjectStore, manifest: Manifest, replaced: Manifest | None = None) -> list[str]:
    """Delete the objects under ``shards/``, ``plans/``, ``sources/`` and ``reports/`` that neither
    ``manifest`` (just committed) nor any version recorded under ``versions/`` uses: those of the
    ``replaced`` data set, and any others older than the manifest (an S3 time has whole seconds, so an
    orphan of the same second waits for the next commit); returns their keys."""
    try:
        cutoff = store.modified(MANIFEST_NAME)
        keep = kept_keys(manifest)
        for version in kept_versions(store):
            keep |= used_keys(version)
        old = kept_keys(replaced) - keep if replaced is not None else set()  # its report too, whatever its time
        swept = [key for key in store.list() if key.startswith(tuple(d + "/" for d in SWEPT_DIRS))]  # one listing
        doomed = [key for key in swept if key not in keep and (key in old or _older(store, key, cutoff))]
        doomed += stale_temporaries(store, cutoff - TEMPORARY_GRACE_S)
        for key in doomed:
            store.delete(key)
    except (StoreError, OSError) as e:  # the commit stands; the next commit collects them
        log.warning("%s: garbage collection stopped: %s", store.uri, e)
        return []
    if doomed:
        log.info("%s: deleted %d objects no committed data set uses (%s ...)", store.uri, len(doomed), doomed[0])
    return doomed


def stale_temporaries(store: ObjectStore, cutoff: float) -> list[str]:
    """The temporary files of writes killed before they finished (a local store's ``.tmp-signpose``
    files: of the manifest at the root, of objects under ``versions/`` and the swept folders) that are
    older than ``cutoff``; a write still running keeps its file's time fresh."""
    folders = tuple(d + "/" for d in (*SWEPT_DIRS, VERSION_DIR))
    return [key for key in store.temporaries()
            if ("/" not in key or key.startswith(folders)) and _older(store, key, cutoff)]


def _older(store: ObjectStore, key: str, cutoff: float) -> bool:
    try:
        return store.modified(key) < cutoff
    except ObjectNotFoundError:
        return False


def damaged_shards(store: ObjectStore, manifest: Manifest) -> list[str]:
    """Keys of committed shards that are absent or whose bytes no longer have the manifest's size and
    sha256 (every shard is downloaded; decoding is left to :func:`verify_dataset`)."""
    bad = []
    for shard in manifest.shards:
        try:
            data = store.get_bytes(shard.key)
        except ObjectNotFoundError:
            bad.append(shard.key)
            continue
        if len(data) != shard.bytes or hashlib.sha256(data).hexdigest() != shard.sha256:
            bad.append(shard.key)
    return bad
