"""A data set version's report (schema 1, docs/storage.md), read from the version's store.

The preprocessing stage writes ``reports/<dataset_hash>.json`` next to the manifest before it commits
the version; readers here never need the version's frames.
"""

from __future__ import annotations

import json
import os

from signpose.store import ObjectNotFoundError, join_key, open_store

REPORTS_PREFIX = "reports"
REPORT_SCHEMA = 1
# The report's regions, in the order figures and tags list them (layout.py's "pose" is the "body").
REGIONS = ("face", "left_hand", "right_hand", "body")


def report_key(dataset_hash: str) -> str:
    return join_key(REPORTS_PREFIX, f"{dataset_hash}.json")


def read_report(store_uri: str, dataset_hash: str) -> dict | None:
    """The report of version ``dataset_hash`` in the store at ``store_uri``, or None when the store has
    none (a version written before reports existed, a garbage-collected one, a store that is gone)."""
    if not store_uri or not dataset_hash:
        return None
    local = store_uri.removeprefix("file://") if "://" not in store_uri.removeprefix("file://") else None
    if local is not None and not os.path.isdir(local):
        return None  # opening a local store would create the folder of a store that is gone
    try:
        return json.loads(open_store(store_uri).get_bytes(report_key(dataset_hash)))
    except ObjectNotFoundError:
        return None
