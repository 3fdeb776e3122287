"""A prefix is the corpus: every supported object under a local folder, ``file://`` or ``s3://`` prefix,
recursively, listed with pagination, as a sorted list of sources.

A source is one object (``.pose``, ``.npz``, ``.npy``, a pickle) or, for the formats that hold one
frame per file (OpenPose ``*.json``, iBUG ``.pts`` with the images that give their frame size), the
folder of such files. Its key is its path relative to the prefix (a frame folder at the prefix itself
takes the prefix's own name), so it stays the same across deliveries and between a local copy and an
object-store copy of the same files. Objects that are not inputs, or not yet complete, are skipped and
counted by reason: names with a part starting with ``.`` or ``_`` (temporary uploads, ``_SUCCESS``
markers), zero-byte objects, unknown extensions.

Each object carries a fingerprint that changes when its bytes may have changed (local: size + mtime
in ns; S3: size + ETag), so a source whose fingerprint equals the parent version's keeps its content
hash without being read again.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

from signpose.io.readers import SUFFIX_FORMATS
from signpose.store import LocalStore, ObjectStore, S3Store, StoreError, open_store

# Frame-per-file formats: their files are grouped by folder into one source (one video).
GROUPED_SUFFIXES = (".json", ".pts")
# Images beside .pts files give their frame size: members of the folder's source.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SKIP_HIDDEN, SKIP_EMPTY, SKIP_UNKNOWN = "hidden_or_underscore_name", "zero_bytes", "unknown_extension"


@dataclass(frozen=True)
class ObjectInfo:
    key: str          # relative to the corpus prefix
    size: int
    fingerprint: str  # changes when the bytes may have changed


@dataclass(frozen=True)
class SourceEntry:
    key: str                        # relative to the corpus prefix
    members: tuple[ObjectInfo, ...]  # one object, or a folder's frame files
    grouped: bool = False

    @property
    def fingerprint(self) -> str:
        return "|".join(f"{m.key}={m.fingerprint}" for m in self.members)

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


@dataclass
class Corpus:
    uri: str
    store: ObjectStore
    sources: list[SourceEntry]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return posixpath.basename(self.uri.rstrip("/")) or "corpus"


def is_corpus(uri: str) -> bool:
    """Whether ``uri`` names a prefix (a local folder, an ``s3://`` prefix) rather than one object."""
    if not uri:
        return False
    if "://" not in uri or uri.startswith("file://"):
        return os.path.isdir(uri.removeprefix("file://"))
    if not uri.startswith("s3://"):
        return False
    if uri.endswith("/"):
        return True
    parent, _, name = uri.rpartition("/")
    if parent == "s3:/" or not name:
        return True  # a bare bucket
    return not open_store(parent).exists(name)


def list_objects(store: ObjectStore, page_size: int = 1000) -> list[ObjectInfo]:
    """Every object under the store's root with its size and fingerprint, sorted by key (S3: pages of
    ``page_size`` keys, followed to the end)."""
    if isinstance(store, S3Store):
        return _list_s3(store, page_size)
    if isinstance(store, LocalStore):
        return _list_local(store)
    raise TypeError(f"cannot list a corpus in {store!r}")


def _list_local(store: LocalStore) -> list[ObjectInfo]:
    found = []
    for dirpath, dirnames, filenames in os.walk(store.root):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue  # FIFOs, devices and links are never inputs
            stat = os.stat(path)
            key = os.path.relpath(path, store.root).replace(os.sep, "/")
            found.append(ObjectInfo(key, stat.st_size, f"{stat.st_size}:{stat.st_mtime_ns}"))
    return sorted(found, key=lambda o: o.key)


def _list_s3(store: S3Store, page_size: int) -> list[ObjectInfo]:
    from botocore.exceptions import BotoCoreError, ClientError

    base = f"{store.prefix}/" if store.prefix else ""
    found = []
    try:
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=base,
                                                                          PaginationConfig={"PageSize": page_size}):
            for item in page.get("Contents", []):
                key = item["Key"][len(base):]
                if key and not key.endswith("/"):
                    found.append(ObjectInfo(key, int(item["Size"]), f"{item['Size']}:{item['ETag'].strip(chr(34))}"))
    except (ClientError, BotoCoreError) as e:
        raise StoreError(f"{store.uri}: listing failed: {e}") from e
    return sorted(found, key=lambda o: o.key)


def skip_reason(obj: ObjectInfo) -> str | None:
    """Why an object is not an input (None: it is one)."""
    if any(part.startswith((".", "_")) for part in obj.key.split("/")):
        return SKIP_HIDDEN
    if obj.size == 0:
        return SKIP_EMPTY
    suffix = posixpath.splitext(obj.key)[1].lower()
    if suffix not in SUFFIX_FORMATS and suffix not in IMAGE_SUFFIXES:
        return SKIP_UNKNOWN
    return None


def list_corpus(uri: str, page_size: int = 1000) -> Corpus:
    """The sources under prefix ``uri`` (sorted by key) and the skipped objects counted by reason."""
    store = open_store(uri)
    skipped: Counter[str] = Counter()
    singles: list[SourceEntry] = []
    folders: dict[str, list[ObjectInfo]] = {}
    for obj in list_objects(store, page_size):
        reason = skip_reason(obj)
        if reason is not None:
            skipped[reason] += 1
            continue
        suffix = posixpath.splitext(obj.key)[1].lower()
        if suffix in GROUPED_SUFFIXES or suffix in IMAGE_SUFFIXES:
            folders.setdefault(posixpath.dirname(obj.key), []).append(obj)
        else:
            singles.append(SourceEntry(obj.key, (obj,)))
    corpus = Corpus(store.uri, store, singles, {})
    for folder, members in folders.items():
        if not any(posixpath.splitext(m.key)[1].lower() in GROUPED_SUFFIXES for m in members):
            skipped[SKIP_UNKNOWN] += len(members)  # images with no .pts beside them
            continue
        corpus.sources.append(SourceEntry(folder or corpus.name, tuple(members), grouped=True))
    corpus.sources.sort(key=lambda s: s.key)
    corpus.skipped = dict(sorted(skipped.items()))
    return corpus
