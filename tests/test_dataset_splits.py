"""A video keeps its split for ever: its split is a function of its own id, an earlier version's
placement is inherited, a changed fraction applies to new videos only (signpose.datasets.splits)."""

import numpy as np

from signpose.datasets.splits import CUT, hash_split, place_videos
from signpose.io import KeypointFrames, split_by_video
from signpose.synth import generate_signer_frames


def _unsplit(n_videos: int, frames_per_video: int = 4) -> KeypointFrames:
    frames = generate_signer_frames(n_videos, frames_per_video, seed=0)
    return KeypointFrames(frames.keypoints, np.full(len(frames), "train"), frames.video_id, frames.frame_index)


def _placement(frames: KeypointFrames) -> dict[str, str]:
    return {str(v): str(s) for v, s in zip(frames.video_id, frames.split)}


def test_adding_any_number_of_videos_moves_no_existing_video():
    ids = [f"corpus/video-{i:04d}.pose" for i in range(140)]
    before = place_videos(ids[:100])
    for extra in range(1, 40):  # the issue measured 67 videos moved by adding 1 to 39 videos
        after = place_videos(ids[:100 + extra])
        assert {v: after[v] for v in before} == before


def test_split_by_video_moves_no_video_when_videos_join():
    small = split_by_video(_unsplit(30).subset(np.arange(30 * 4) < 20 * 4))
    large = split_by_video(_unsplit(30))
    placed = _placement(large)
    assert all(placed[v] == s for v, s in _placement(small).items())


def test_the_fractions_hold_over_many_videos():
    counts = {"train": 0, "dev": 0, "test": 0}
    for i in range(20000):
        counts[hash_split(f"v{i}", 0.1, 0.2)] += 1
    assert abs(counts["dev"] / 20000 - 0.1) < 0.01 and abs(counts["test"] / 20000 - 0.2) < 0.01


def test_a_changed_fraction_applies_to_new_videos_only():
    old_ids, new_ids = [f"old-{i}" for i in range(300)], [f"new-{i}" for i in range(300)]
    first = place_videos(old_ids, dev_fraction=0.1, test_fraction=0.1)
    second = place_videos(old_ids + new_ids, inherited=first, dev_fraction=0.3, test_fraction=0.3)
    assert {v: second[v] for v in old_ids} == first
    held_out_new = sum(second[v] != "train" for v in new_ids) / len(new_ids)
    held_out_old = sum(first[v] != "train" for v in old_ids) / len(old_ids)
    assert held_out_new > 0.45 and held_out_old < 0.3


def test_a_video_cut_in_time_in_a_tiny_corpus_stays_cut_when_the_corpus_grows():
    first = place_videos(["a"], cut_new=True)
    assert first == {"a": CUT}
    grown = place_videos(["a", "b", "c", "d"], inherited=first)
    assert grown["a"] == CUT and all(grown[v] != CUT for v in "bcd")
