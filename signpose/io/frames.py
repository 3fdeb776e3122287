"""``KeypointFrames``: what every reader returns -- frames in the one 143-point layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signpose import layout

SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass
class KeypointFrames:
    """N frames in the 143-point layout (see :mod:`signpose.layout`), one row per frame.

    ``keypoints`` (N, 143, 3) float32: x, y in [0, 1] of the source frame, confidence in [0, 1];
    a missing point is all zeros. ``split`` (N,) 'train'|'dev'|'test'; ``video_id`` (N,) str;
    ``frame_index`` (N,) int64 (position of the frame in its video); ``source`` the path read;
    ``format`` a short name of the source format (e.g. 'seed-pickle', 'pose-holistic');
    ``report`` the read's validation summary (a :class:`signpose.io.report.ReadReport`; None for
    frames not read from a file).
    """

    keypoints: np.ndarray
    split: np.ndarray
    video_id: np.ndarray
    frame_index: np.ndarray
    source: str = ""
    format: str = ""
    report: object = None

    def __post_init__(self):
        self.keypoints = np.ascontiguousarray(self.keypoints, dtype=np.float32)
        n = len(self.keypoints)
        if self.keypoints.shape != (n, layout.N_POINTS, layout.N_CHANNELS):
            raise ValueError(f"keypoints must be (N, {layout.N_POINTS}, 3), got {self.keypoints.shape}")
        self.split = np.asarray(self.split, dtype=str)
        self.video_id = np.asarray(self.video_id, dtype=str)
        self.frame_index = np.asarray(self.frame_index, dtype=np.int64)
        for name in ("split", "video_id", "frame_index"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        unknown = set(np.unique(self.split).tolist()) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, mask_or_idx) -> "KeypointFrames":
        """Frames selected by a boolean mask or an index array (order kept as given)."""
        sel = np.asarray(mask_or_idx)
        return KeypointFrames(self.keypoints[sel], self.split[sel], self.video_id[sel],
                              self.frame_index[sel], self.source, self.format, self.report)

    def by_split(self, split: str) -> "KeypointFrames":
        return self.subset(self.split == split)

    @property
    def face(self) -> np.ndarray:
        """(N, 68, 3) view of the face points."""
        return self.keypoints[:, layout.FACE]

    def split_counts(self) -> dict[str, int]:
        return {name: int((self.split == name).sum()) for name in SPLITS}

    def videos(self) -> list[str]:
        """Video ids in order of first appearance."""
        _, first = np.unique(self.video_id, return_index=True)
        return [str(self.video_id[i]) for i in sorted(first)]

    def to_seed_dict(self) -> dict:
        """The seed's skeleton pickle structure (plus per-split video_id/frame_index lists)."""
        data: dict = {}
        for name in SPLITS:
            part = self.by_split(name)
            if len(part) == 0:
                continue
            data[name] = {
                "keypoints": [{p: np.array(kp[layout.PART_SLICES[p]]) for p in layout.PARTS}
                              for kp in part.keypoints],
                "video_id": part.video_id.tolist(),
                "frame_index": part.frame_index.tolist(),
            }
        return data

    @staticmethod
    def concatenate(items: list["KeypointFrames"], source: str = "", format: str = "") -> "KeypointFrames":
        if not items:
            raise ValueError("nothing to concatenate")
        return KeypointFrames(
            np.concatenate([f.keypoints for f in items]), np.concatenate([f.split for f in items]),
            np.concatenate([f.video_id for f in items]), np.concatenate([f.frame_index for f in items]),
            source or items[0].source, format or items[0].format, items[0].report)


def split_by_video(frames: KeypointFrames, dev_fraction: float = 0.1, test_fraction: float = 0.1,
                   seed: int = 0, inherited: dict[str, str] | None = None) -> KeypointFrames:
    """Assign train/dev/test to sources that have no split (.pose, JSON, .pts, face-only pickles).

    Whole videos go to one split, chosen by a seeded hash of the video id alone
    (:func:`signpose.datasets.splits.hash_split`), so no video moves when others are added; a video in
    ``inherited`` (its placement in an earlier version) keeps that placement. With fewer than 3 videos
    none can be held out whole: each new video is cut in time (train, then dev, then test, as contiguous
    blocks; interleaving neighbouring frames would leak).
    """
    from signpose.datasets.splits import MIN_VIDEOS_TO_SPLIT, apply_placement, place_videos

    videos = frames.videos()
    placement = place_videos(videos, inherited, dev_fraction, test_fraction, seed,
                             cut_new=len(videos) < MIN_VIDEOS_TO_SPLIT)
    split = apply_placement(frames.video_id, frames.frame_index, placement, dev_fraction, test_fraction)
    return KeypointFrames(frames.keypoints, split, frames.video_id, frames.frame_index, frames.source,
                          frames.format, frames.report)
