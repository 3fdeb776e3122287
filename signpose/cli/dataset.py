"""``signpose dataset info|verify URI``: a preprocessed data set's manifest summary, or every shard
downloaded and checked (size, sha256, decoding)."""

from __future__ import annotations

import sys

from signpose.shards import ShardError, read_manifest, verify_dataset
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


def _run_info(args) -> int:
    try:
        manifest = read_manifest(args.uri)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    total = sum(s.bytes for s in manifest.shards)
    print(f"{manifest.uri}: data set {manifest.dataset_hash}\n"
          f"  {manifest.n_frames} frames {manifest.splits}, {len(manifest.shards)} shards, "
          f"{total / 1e6:.1f} MB ({total / max(1, manifest.n_frames):,.0f} B/frame)\n"
          f"  images {manifest.image_size}x{manifest.image_size}, renderer {manifest.renderer_version}, "
          f"format {manifest.shard_format}, created {manifest.created_at}")
    return 0


def _run_verify(args) -> int:
    try:
        manifest = verify_dataset(_strip_manifest_name(args.uri))
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{manifest.uri}: all {len(manifest.shards)} shards verified ({manifest.n_frames} frames)")
    return 0
