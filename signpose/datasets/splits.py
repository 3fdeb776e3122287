"""A video keeps its split for ever.

A video's split depends only on its own id: ``u = sha256(seed:id)`` read as a number in [0, 1) goes
to dev below ``dev_fraction``, to test below ``dev_fraction + test_fraction``, to train otherwise. No
other video's existence changes it, so a corpus that grows moves no video between splits. On top of
that, a version inherits the placement its parent version recorded for each video (so a changed
fraction applies to new videos only), and splits a source states itself (the seed pickles'
train/dev/test) are kept as given.

A corpus of fewer than :data:`MIN_VIDEOS_TO_SPLIT` videos cannot hold out whole videos; a video placed
while the corpus was that small is cut in time (:data:`CUT`: first frames train, then dev, then test)
and keeps that placement in every later version.
"""

from __future__ import annotations

import hashlib

import numpy as np

CUT = "cut"  # placement: the video's frames are cut in time into train, dev and test
PLACEMENTS = ("train", "dev", "test", CUT)
MIN_VIDEOS_TO_SPLIT = 3
_SCALE = float(2 ** 64)


def hash_split(video_id: str, dev_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> str:
    """The split of a video that no earlier version placed: a function of its id alone."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{video_id}".encode()).digest()[:8], "big") / _SCALE
    if u < dev_fraction:
        return "dev"
    if u < dev_fraction + test_fraction:
        return "test"
    return "train"


def time_cut(frame_index: np.ndarray, dev_fraction: float = 0.1, test_fraction: float = 0.1) -> np.ndarray:
    """The split of each frame of one video cut in time: contiguous train, dev, test blocks (neighbouring
    frames are near duplicates: interleaving them would leak). Fewer than 3 frames stay train."""
    order = np.argsort(np.asarray(frame_index), kind="stable")
    split = np.full(len(order), "train", dtype="<U5")
    n = len(order)
    if n >= 3:
        n_test = max(1, int(round(test_fraction * n)))
        n_dev = max(1, int(round(dev_fraction * n)))
        split[order[n - n_test:]] = "test"
        split[order[n - n_test - n_dev:n - n_test]] = "dev"
    return split


def place_videos(video_ids: list[str], inherited: dict[str, str] | None = None, dev_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0, cut_new: bool = False) -> dict[str, str]:
    """The placement of each video: the ``inherited`` one when an earlier version placed it, else
    :data:`CUT` when ``cut_new`` (a tiny corpus), else :func:`hash_split`."""
    inherited = inherited or {}
    return {v: inherited.get(v) or (CUT if cut_new else hash_split(v, dev_fraction, test_fraction, seed))
            for v in video_ids}


def apply_placement(video_id: np.ndarray, frame_index: np.ndarray, placement: dict[str, str],
                    dev_fraction: float = 0.1, test_fraction: float = 0.1) -> np.ndarray:
    """Per-frame split from per-video placements (a :data:`CUT` video is cut in time)."""
    names, inverse = np.unique(np.asarray(video_id), return_inverse=True)
    where = np.array([placement[str(v)] for v in names], dtype="<U5")
    split = where[inverse] if len(names) else np.zeros(0, dtype="<U5")
    for i in np.flatnonzero(where == CUT):
        rows = np.flatnonzero(inverse == i)
        split[rows] = time_cut(np.asarray(frame_index)[rows], dev_fraction, test_fraction)
    return split
