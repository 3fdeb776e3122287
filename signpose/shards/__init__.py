"""Shards and manifest: the preprocessed data set in an object store.

Layout under the store root (a local folder or ``s3://bucket/prefix``)::

    manifest.json                      written LAST: the commit point of a data set
    plans/<dataset_hash>.json          the shard plan (for fan-out writers and the merge step)
    shards/<hash12>-00000.npz          one shard: a deterministic, compressed .npz
    shards/<hash12>-00000.json         its ShardInfo (count, bytes, sha256, splits), written after it

Where each thing lives (the public names are all re-exported here):

- :mod:`signpose.shards.format`: the layout's and the shard format's constants, and the errors
  (``ShardError``, ``ShardCorruptError``, ``ManifestNotFoundError``);
- :mod:`signpose.shards.manifest`: ``Manifest``, ``ShardInfo``, ``read_manifest``;
- :mod:`signpose.shards.codec`: one shard's bytes: ``encode_shard`` / ``decode_shard`` and their image
  and keypoint streams, ``build_shard`` (render + encode), ``read_shard`` (fetch, verify, decode);
- :mod:`signpose.shards.plan`: the dataset hash, the shard plan (``plan_dataset``) and the fan-out of
  shards over writer tasks (``prepare_fan_out``);
- :mod:`signpose.shards.write`: writing shards in parallel and committing the manifest
  (``write_dataset``, ``write_shard_range``, ``merge_manifest``), ``verify_dataset``;
- :mod:`signpose.shards.commit`: one data set per store prefix: the refusal of another input
  (``DatasetExistsError``), the manifest's compare-and-set commit, garbage collection.

The command line over it, ``signpose dataset info|verify URI``, is :mod:`signpose.cli.dataset`.
"""

from signpose.shards.codec import (
                                   PackedImages,
                                   build_shard,
                                   decode_images,
                                   decode_points,
                                   decode_shard,
                                   encode_images,
                                   encode_points,
                                   encode_shard,
                                   read_shard,
)
from signpose.shards.format import (
                                   DEFAULT_SHARD_SIZE,
                                   MANIFEST_NAME,
                                   PLAN_DIR,
                                   READABLE_SHARD_FORMATS,
                                   SCHEMA_VERSION,
                                   SHARD_DIR,
                                   SHARD_FIELDS,
                                   SHARD_FORMAT,
                                   SHARD_FORMAT_V1,
                                   SPLIT_ORDER,
                                   STORED_FIELDS,
                                   STORED_FIELDS_V1,
                                   ManifestNotFoundError,
                                   ShardCorruptError,
                                   ShardError,
)
from signpose.shards.manifest import Manifest, ShardInfo, read_manifest
from signpose.shards.plan import (
                                   DatasetPlan,
                                   _split_order,  # noqa: F401  (not public: the tests reach it here)
                                   compute_dataset_hash,
                                   plan_dataset,
                                   plan_shards,
                                   prepare_fan_out,
                                   shard_index_ranges,
)
from signpose.shards.write import merge_manifest, verify_dataset, write_dataset, write_shard_range

__all__ = [
    "DEFAULT_SHARD_SIZE", "MANIFEST_NAME", "PLAN_DIR", "READABLE_SHARD_FORMATS", "SCHEMA_VERSION", "SHARD_DIR",
    "SHARD_FIELDS", "SHARD_FORMAT", "SHARD_FORMAT_V1", "SPLIT_ORDER", "STORED_FIELDS", "STORED_FIELDS_V1",
    "DatasetPlan", "Manifest", "ManifestNotFoundError", "PackedImages", "ShardCorruptError", "ShardError",
    "ShardInfo", "build_shard", "compute_dataset_hash", "decode_images", "decode_points", "decode_shard",
    "encode_images", "encode_points", "encode_shard", "merge_manifest", "plan_dataset", "plan_shards",
    "prepare_fan_out", "read_manifest", "read_shard", "shard_index_ranges", "verify_dataset", "write_dataset",
    "write_shard_range",
]
