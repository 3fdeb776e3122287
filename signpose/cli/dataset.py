"""``signpose dataset info|verify URI``: a preprocessed data set's manifest summary, or every shard
downloaded and checked (size, sha256, decoding); ``signpose dataset history|diff|gc``: a store's
versions (:mod:`signpose.datasets.history`)."""

from __future__ import annotations

import functools
import sys

from signpose.shards import ManifestNotFoundError, ShardError, read_manifest, verify_dataset
from signpose.shards.manifest import _strip_manifest_name


def add_parser(subparsers) -> None:
    """Register ``dataset info URI`` and ``dataset verify URI`` (each sets ``func``)."""
    dataset = subparsers.add_parser("dataset", help="inspect or verify a preprocessed data set (shards + manifest)")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)
    info = commands.add_parser("info", help="print the manifest summary of a data set")
    info.add_argument("uri", help="store root (local folder or s3://bucket/prefix) or its manifest.json")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=_run_info)
    verify = commands.add_parser("verify", help="download every shard and check size, sha256 and decoding")
    verify.add_argument("uri", help="store root or its manifest.json")
    verify.set_defaults(func=_run_verify)
    history = commands.add_parser("history", help="list the store's data set versions, newest first")
    history.add_argument("store", help="store root (local folder or s3://bucket/prefix)")
    history.set_defaults(func=_run_history)
    diff = commands.add_parser("diff", help="sources added, changed and removed between two versions")
    diff.add_argument("old", help="STORE@HASH (or a hash of the store given by --store)")
    diff.add_argument("new", help="STORE@HASH (or a hash of the store given by --store)")
    diff.add_argument("--store", default="", help="the store both hashes belong to")
    diff.set_defaults(func=_run_diff)
    gc = commands.add_parser("gc", help="delete shards no kept version uses (docs/storage.md, 'Garbage collection')")
    gc.add_argument("store", help="store root (local folder or s3://bucket/prefix)")
    gc.add_argument("--keep", type=int, default=None, help="keep the committed version and its newest KEEP-1 "
                    "ancestors (default: every recorded version)")
    gc.add_argument("--grace_hours", type=float, default=6.0, help="never delete an unreferenced object younger "
                    "than this: it may belong to a writer that has not committed yet")
    gc.add_argument("--dry_run", action="store_true", help="list what would be deleted, delete nothing")
    gc.set_defaults(func=_run_gc)


def _shard_errors_exit_2(run):
    """A store or data set the command cannot use is the user's to fix: one line, exit status 2."""
    @functools.wraps(run)
    def checked(args) -> int:
        try:
            return run(args)
        except ShardError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return checked


@_shard_errors_exit_2
def _run_info(args) -> int:
    manifest = read_manifest(args.uri)
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    total = sum(s.bytes for s in manifest.shards)
    print(f"{manifest.uri}: data set {manifest.dataset_hash}\n"
          f"  {manifest.n_frames} frames {manifest.splits}, {len(manifest.shards)} shards, "
          f"{total / 1e6:.1f} MB ({total / max(1, manifest.n_frames):,.0f} B/frame)\n"
          f"  images {manifest.image_size}x{manifest.image_size}, renderer {manifest.renderer_version}, "
          f"format {manifest.shard_format}, created {manifest.created_at}")
    if manifest.is_version:
        changes = manifest.changes or {}
        print(f"  version of {len(manifest.sources)} sources, parent {manifest.parent or 'none'}: "
              + ", ".join(f"{len(changes.get(k, []))} {k}" for k in ("added", "changed", "removed")))
    return 0


def _run_verify(args) -> int:
    try:
        manifest = verify_dataset(_strip_manifest_name(args.uri))
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ManifestNotFoundError) else 1  # 1: the data set is damaged
    print(f"{manifest.uri}: all {len(manifest.shards)} shards verified ({manifest.n_frames} frames)")
    return 0


@_shard_errors_exit_2
def _run_history(args) -> int:
    from signpose.datasets.history import describe, history

    versions = history(args.store)
    if not versions:
        print(f"error: {args.store}: no data set version committed here", file=sys.stderr)
        return 2
    for manifest in versions:
        print(describe(manifest))
    return 0


def _version_ref(ref: str, store: str):
    from signpose.datasets.history import find_version

    where, _, digest = ref.rpartition("@") if "@" in ref else (store, "", ref)
    if not where:
        raise ShardError(f"{ref!r}: name the store: STORE@HASH, or --store STORE")
    return find_version(where, digest)


@_shard_errors_exit_2
def _run_diff(args) -> int:
    from signpose.datasets.history import diff

    change = diff(_version_ref(args.old, args.store), _version_ref(args.new, args.store))
    print(f"{change.old[:12]} -> {change.new[:12]}: {len(change.added)} added, {len(change.changed)} changed, "
          f"{len(change.removed)} removed; frames {change.frames}")
    for mark, keys in (("+", change.added), ("~", change.changed), ("-", change.removed)):
        for key in keys:
            print(f"{mark} {key}")
    return 0


@_shard_errors_exit_2
def _run_gc(args) -> int:
    from signpose.datasets.history import collect

    done = collect(args.store, keep=args.keep, grace_s=args.grace_hours * 3600, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{args.store}: {verb} {len(done['versions'])} versions and {len(done['objects'])} objects")
    for key in done["objects"]:
        print(f"  {key}")
    return 0
