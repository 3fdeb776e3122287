"""A whole corpus as one ``KeypointFrames`` (every source under a prefix, stable splits), for the callers
that want frames in memory rather than a data set version (small corpora, inspection)."""

from __future__ import annotations

from signpose.datasets.listing import list_corpus
from signpose.datasets.render import DEFAULT_POLICY, SplitPolicy, _placed
from signpose.datasets.sources import read_source
from signpose.datasets.splits import MIN_VIDEOS_TO_SPLIT
from signpose.datasets.version import EmptyCorpusError
from signpose.io import KeypointFrames


def read_corpus_frames(uri: str, policy: SplitPolicy = DEFAULT_POLICY, max_frames: int | None = None,
                       max_rejected: float | None = None) -> KeypointFrames:
    corpus = list_corpus(uri)
    if not corpus.sources:
        raise EmptyCorpusError(f"{uri}: no input objects under this prefix (skipped: {corpus.skipped or 'none'})")
    entry = {"cut_new": len(corpus.sources) < MIN_VIDEOS_TO_SPLIT}
    parts = []
    for source in corpus.sources:
        _, frames = read_source(corpus, source, max_frames, max_rejected)
        split, _ = _placed(frames, entry, policy)
        parts.append(KeypointFrames(frames.keypoints, split, frames.video_id, frames.frame_index, corpus.uri,
                                    frames.format, frames.report))
    return KeypointFrames.concatenate(parts, source=corpus.uri)
