"""One source of a corpus: its bytes (downloaded into a temporary folder when the corpus is not local),
its content hash, and its frames with corpus-wide video ids.

The content hash is the sha256 of the object's bytes; for a folder of frame files it is the sha256
of the sorted lines ``<name relative to the folder> <sha256 of its bytes>``. It does not depend on
where the corpus lives, so a local folder and an ``s3://`` prefix of the same files hash the same.

A source that holds one video gives that video the source's key as its id; one holding several
(a pickle, an ``.npz``) gives each ``<key>#<the id inside the source>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

from signpose.datasets.listing import Corpus, SourceEntry
from signpose.io import KeypointFrames, read_keypoints
from signpose.store import LocalStore


def _member_path(root: str, source: SourceEntry, member_key: str) -> str:
    if not source.grouped:
        return os.path.join(root, posixpath.basename(member_key))
    folder = posixpath.dirname(member_key)
    return os.path.join(root, posixpath.relpath(member_key, folder) if folder else member_key)


@contextlib.contextmanager
def local_source(corpus: Corpus, source: SourceEntry) -> Iterator[str]:
    """A local path holding the source (a file, or a folder of frame files): the file itself in a
    local corpus, else a temporary copy removed afterwards."""
    if isinstance(corpus.store, LocalStore):
        first = os.path.join(corpus.store.root, source.members[0].key)
        folder = os.path.dirname(first)
        # A folder holding anything besides the source's frame files is copied: the reader reads folders whole.
        if not source.grouped or sorted(os.listdir(folder)) == sorted(posixpath.basename(m.key) for m in source.members):
            yield folder if source.grouped else first
            return
    workdir = tempfile.mkdtemp(prefix="signpose-source-")
    try:
        root = os.path.join(workdir, posixpath.basename(source.key) or "source")
        if source.grouped:
            os.makedirs(root)
        for member in source.members:
            path = _member_path(root, source, member.key) if source.grouped else root
            with open(path, "wb") as fh:
                fh.write(corpus.store.get_bytes(member.key))
        yield root
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(local: str, source: SourceEntry) -> str:
    """The content hash of a source at local path ``local`` (see the module docstring)."""
    if not source.grouped:
        return _file_sha256(local)
    lines = sorted(f"{name} {_file_sha256(os.path.join(local, name))}\n"
                   for name in (posixpath.basename(m.key) for m in source.members))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def hash_source(corpus: Corpus, source: SourceEntry) -> str:
    with local_source(corpus, source) as local:
        return content_hash(local, source)


def corpus_video_ids(frames: KeypointFrames, key: str) -> KeypointFrames:
    """``frames`` with video ids that are unique in the corpus and stable across deliveries."""
    videos = frames.videos()
    if len(videos) == 1:
        ids = np.full(len(frames), key, dtype=object)
    else:
        ids = np.array([f"{key}#{v}" for v in frames.video_id.tolist()], dtype=object)
    return KeypointFrames(frames.keypoints, frames.split, ids.astype(str), frames.frame_index, key,
                          frames.format, frames.report)


def read_source(corpus: Corpus, source: SourceEntry, max_frames: int | None = None,
                max_rejected: float | None = None) -> tuple[str, KeypointFrames]:
    """``(content hash, frames)`` of one source, from one download of its bytes."""
    with local_source(corpus, source) as local:
        digest = content_hash(local, source)
        frames = read_keypoints(local, max_frames=max_frames, max_rejected=max_rejected)
    return digest, corpus_video_ids(frames, source.key)
