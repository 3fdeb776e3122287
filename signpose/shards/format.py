"""The shard format's constants and errors: what the other modules of :mod:`signpose.shards` agree on.

The layout under the store root is in the package docstring; how a shard's bytes are laid out (the
``STORED_FIELDS``) is described in :mod:`signpose.shards.codec`.
"""

from __future__ import annotations

from signpose.errors import UserError

SCHEMA_VERSION = 1
# A manifest that is a version of a corpus (parent, sources, changes: signpose.datasets.version).
VERSION_SCHEMA = 2
VERSION_DIR = "versions"    # versions/<dataset_hash>.json: every committed version's manifest
SOURCE_DIR = "sources"      # sources/<render_key>.json: one rendered source's shards and report row
REPORT_DIR = "reports"      # reports/<dataset_hash>.json: a version's data report
# Identifies how a shard's bytes are laid out; part of the dataset hash. New shards are written in
# SHARD_FORMAT; all the READABLE_SHARD_FORMATS are read.
# v3: the v2 layout with zstd (level 9) instead of xz: 2.5x-3.4x the encode rate, ~1 % larger on
# generated frames (docs/storage.md, "Why zstd").
SHARD_FORMAT = "npz-v3+points-shuffled-zstd+images-mask-values-zstd"
SHARD_FORMAT_V2 = "npz-v2+points-shuffled-xz+images-mask-values-xz"
SHARD_FORMAT_V1 = "npz-v1+images-mask-values-xz"
READABLE_SHARD_FORMATS = (SHARD_FORMAT, SHARD_FORMAT_V2, SHARD_FORMAT_V1)
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
PLAN_DIR = "plans"
SPLIT_ORDER = ("train", "dev", "test")
DEFAULT_SHARD_SIZE = 4096

# Fixed zip entry timestamp (the zip epoch): np.savez_compressed stamps the wall clock, which would
# make two runs over the same input differ byte-wise.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_COMPRESSLEVEL = 6
# What read_shard returns, in this order.
SHARD_FIELDS = ("keypoints", "images", "face", "split", "video_id", "frame_index")
# The per-frame sample ids, stored as plain .npy entries in every format.
_ID_FIELDS = ("split", "video_id", "frame_index")
_IMAGE_FIELDS = ("images_shape", "images_mask_xz", "images_values_xz")
# The .npz entries, in this order (fixed: part of the byte-identical guarantee). Keypoints and face
# are stored in the compact form of encode_points, images in that of encode_images; the suffix of a
# compressed entry names its codec (``_xz``: xz, ``_zst``: zstd).
STORED_FIELDS_V2 = ("points_xz", *_ID_FIELDS, *_IMAGE_FIELDS)
STORED_FIELDS_ZSTD = ("points_zst", *_ID_FIELDS, "images_shape", "images_mask_zst", "images_values_zst")
STORED_FIELDS = STORED_FIELDS_ZSTD  # SHARD_FORMAT's
STORED_FIELDS_V1 = ("keypoints", "face", *_ID_FIELDS, *_IMAGE_FIELDS)


class ShardError(UserError, RuntimeError):
    """A shard or manifest is missing, corrupt or inconsistent; the message names it."""


class ShardCorruptError(ShardError):
    """A shard's bytes do not match the checksum recorded in the manifest, or do not decode."""


class ManifestNotFoundError(ShardError, FileNotFoundError):
    """No manifest.json at the store root: the data set was never committed."""
