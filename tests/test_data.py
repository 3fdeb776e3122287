"""Datasets: the seed's in-memory ones, face normalisation, and streaming from shards."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from signpose import layout
from signpose.data import KeypointDataset, ShardStream, SkeletonDataset, load_split, normalize_face
from signpose.io import KeypointFrames
from signpose.render import RenderSettings, render_frame
from signpose.shards import ShardCorruptError, read_manifest, write_dataset
from signpose.store import open_store

SETTINGS = RenderSettings(image_size=32)


def make_frames(n_train=40, n_dev=12, seed=0, faceless=()) -> KeypointFrames:
    rng = np.random.default_rng(seed)
    n = n_train + n_dev
    keypoints = np.zeros((n, layout.N_POINTS, 3), np.float32)
    keypoints[:, :, :2] = rng.uniform(0.2, 0.8, (n, layout.N_POINTS, 2))
    keypoints[:, :, 2] = 1.0
    for i in faceless:
        keypoints[i, layout.FACE] = 0.0
    split = np.array(["train"] * n_train + ["dev"] * n_dev)
    return KeypointFrames(keypoints, split, np.array([f"v{i // 5}" for i in range(n)]), np.arange(n) % 5,
                          source="test-frames")


def key(kp: torch.Tensor) -> bytes:
    return kp.numpy().tobytes()


def ids(samples) -> Counter:
    return Counter(key(kp) for kp, _ in samples)


@pytest.fixture
def dataset_uri(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(make_frames(), uri, SETTINGS, shard_size=6, workers=1, progress=False)
    return uri


# --- normalize_face -----------------------------------------------------------------------------

def test_normalize_face_fits_the_box_and_keeps_aspect_ratio():
    face = np.zeros((layout.N_FACE, 3), np.float32)
    face[:, 0] = np.linspace(0.3, 0.5, layout.N_FACE)  # width 0.2
    face[:, 1] = np.linspace(0.4, 0.5, layout.N_FACE)  # height 0.1
    face[:, 2] = 0.7
    out = normalize_face(face)
    assert out[:, 0].min() == pytest.approx(0.0) and out[:, 0].max() == pytest.approx(1.0)
    # The shorter side keeps its proportion and is centred.
    assert out[:, 1].min() == pytest.approx(0.25) and out[:, 1].max() == pytest.approx(0.75)
    np.testing.assert_allclose(out[:, 2], 0.7)


def test_normalize_face_ignores_missing_points_and_keeps_them_zero():
    face = np.zeros((layout.N_FACE, 3), np.float32)
    face[:10] = [[0.1 + 0.01 * i, 0.2 + 0.02 * i, 1.0] for i in range(10)]
    face[10:] = 0.0
    out = normalize_face(face)
    assert (out[10:] == 0).all()
    assert out[:10, :2].min() >= 0 and out[:10, :2].max() == pytest.approx(1.0)


def test_normalize_face_is_per_sample_and_accepts_batches_and_tensors():
    rng = np.random.default_rng(1)
    batch = np.concatenate([rng.uniform(0, 1, (3, layout.N_FACE, 2)), np.ones((3, layout.N_FACE, 1))],
                           axis=-1).astype(np.float32)
    batch[1, :, :2] = batch[1, :, :2] * 0.1 + 0.5  # a small face elsewhere normalises like a big one
    out = normalize_face(batch)
    for i in range(3):
        np.testing.assert_allclose(out[i], normalize_face(batch[i]), atol=1e-6)
    assert (out[..., :2].max(axis=(1, 2)) == pytest.approx(1.0, abs=1e-6))
    empty = normalize_face(np.zeros((layout.N_FACE, 3), np.float32))
    assert (empty == 0).all()
    tensor = normalize_face(torch.from_numpy(batch))
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), out)
    with pytest.raises(ValueError, match="68"):
        normalize_face(np.zeros((5, 3)))


# --- seed datasets ------------------------------------------------------------------------------

def test_skeleton_dataset_from_dicts_renders_images_on_access():
    frames = make_frames(n_train=3, n_dev=0)
    dicts = [layout.split_frame(kp) for kp in frames.keypoints]
    ds = SkeletonDataset(dicts, image_size=32)
    kp, image = ds[1]
    assert len(ds) == 3 and kp.shape == (143, 3) and image.shape == (1, 32, 32)
    assert kp.dtype == torch.float32 and image.dtype == torch.float32
    expected = render_frame(frames.keypoints[1], RenderSettings(image_size=32)).astype(np.float32) / 255
    np.testing.assert_allclose(image[0].numpy(), expected)


def test_skeleton_dataset_uses_given_images():
    frames = make_frames(n_train=2, n_dev=0)
    images = np.full((2, 16, 16), 0.25, np.float32)
    _, image = SkeletonDataset(frames.keypoints, images, image_size=16)[0]
    assert torch.all(image == 0.25)
    with pytest.raises(ValueError, match="images"):
        SkeletonDataset(frames.keypoints, images[:1], image_size=16)


def test_keypoint_dataset_returns_normalised_pairs():
    face = make_frames(n_train=4, n_dev=0).keypoints[:, layout.FACE]
    ds = KeypointDataset(face)
    src, tgt = ds[2]
    assert src.shape == (68, 3) and torch.equal(src, tgt)
    np.testing.assert_allclose(src.numpy(), normalize_face(face[2]))
    raw, _ = KeypointDataset(face, normalize=False)[2]
    np.testing.assert_array_equal(raw.numpy(), face[2])


# --- ShardStream --------------------------------------------------------------------------------

def test_stream_yields_each_frame_of_the_split_once(dataset_uri):
    frames = make_frames()
    stream = ShardStream(dataset_uri, "train", shuffle=True, shuffle_buffer=8, seed=3)
    samples = list(stream)
    assert ids(samples) == Counter(key(torch.from_numpy(k)) for k in frames.keypoints[:40])
    kp, image = samples[0]
    assert kp.shape == (143, 3) and image.shape == (1, 32, 32) and 0 <= image.min() <= image.max() <= 1
    # The image belongs to the keypoints.
    expected = render_frame(kp.numpy(), SETTINGS).astype(np.float32) / 255
    np.testing.assert_allclose(image[0].numpy(), expected)


def test_stream_order_depends_on_seed_and_epoch_only(dataset_uri):
    stream = ShardStream(dataset_uri, "train", shuffle_buffer=8, seed=3)
    first = [key(kp) for kp, _ in stream]
    assert [key(kp) for kp, _ in stream] == first
    stream.set_epoch(1)
    second = [key(kp) for kp, _ in stream]
    assert second != first and sorted(second) == sorted(first)
    unshuffled = [key(kp) for kp, _ in ShardStream(dataset_uri, "train", shuffle=False)]
    expected = [key(torch.from_numpy(k)) for k in make_frames().keypoints[:40]]
    assert unshuffled == expected


@pytest.mark.parametrize("num_workers", [2])
def test_stream_with_dataloader_workers_yields_each_frame_exactly_once(dataset_uri, num_workers):
    stream = ShardStream(dataset_uri, "train", shuffle_buffer=4)
    loader = DataLoader(stream, batch_size=5, num_workers=num_workers)
    seen = Counter()
    for kp, image in loader:
        assert image.shape[1:] == (1, 32, 32)
        seen.update(key(row) for row in kp)
    assert seen == Counter(key(torch.from_numpy(k)) for k in make_frames().keypoints[:40])


@pytest.mark.parametrize("world_size,num_workers", [(2, 0), (2, 2), (3, 2)])
def test_ranks_and_workers_partition_the_split(dataset_uri, world_size, num_workers):
    # (3 ranks x 2 workers = 6 consumers) > dev's 2 shards exercises the frame-striding fallback.
    for split, n in (("train", 40), ("dev", 12)):
        per_rank = []
        for rank in range(world_size):
            stream = ShardStream(dataset_uri, split, rank=rank, world_size=world_size, shuffle_buffer=4)
            seen = Counter()
            for kp, _ in DataLoader(stream, batch_size=4, num_workers=num_workers):
                seen.update(key(row) for row in kp)
            per_rank.append(seen)
        total = sum(per_rank, Counter())
        assert sum(total.values()) == n and max(total.values()) == 1
        assert all(per_rank), "every rank gets frames"


def test_ranks_get_frame_counts_within_one_of_each_other_and_no_frame_twice(tmp_path):
    # 40 training frames in 7 shards (6 + 6 + ... + 4) over 3 ranks x 2 workers: dealing whole shards
    # gave one consumer 2 shards (10-12 frames) and the others 1 (4-6)
    uri = str(tmp_path / "ds")
    write_dataset(make_frames(), uri, SETTINGS, shard_size=6, workers=1, progress=False)
    for epoch in (0, 1):
        per_rank = []
        for rank in range(3):
            stream = ShardStream(uri, "train", rank=rank, world_size=3, shuffle_buffer=4)
            stream.set_epoch(epoch)
            seen = Counter()
            for kp, _ in DataLoader(stream, batch_size=4, num_workers=2):
                seen.update(key(row) for row in kp)
            per_rank.append(seen)
        counts = [sum(seen.values()) for seen in per_rank]
        assert max(counts) - min(counts) <= 1, counts
        assert max(sum(per_rank, Counter()).values()) == 1 and sum(counts) == 40


def test_face_stream_skips_frames_without_a_face(tmp_path):
    uri = str(tmp_path / "ds")
    frames = make_frames(n_train=10, n_dev=0, faceless=(2, 5))
    write_dataset(frames, uri, SETTINGS, shard_size=4, workers=1, progress=False)
    samples = list(ShardStream(uri, "train", task="face", shuffle=False))
    assert len(samples) == 8
    expected = normalize_face(np.delete(frames.keypoints[:, layout.FACE], [2, 5], axis=0))
    np.testing.assert_allclose(np.stack([s.numpy() for s, _ in samples]), expected)
    assert all(torch.equal(a, b) for a, b in samples)


def test_stream_over_s3_with_two_workers(s3_bucket):
    uri = s3_bucket + "/ds"
    write_dataset(make_frames(), uri, SETTINGS, shard_size=6, workers=1, progress=False)
    seen = Counter()
    for kp, _ in DataLoader(ShardStream(uri, "dev"), batch_size=3, num_workers=2):
        seen.update(key(row) for row in kp)
    assert seen == Counter(key(torch.from_numpy(k)) for k in make_frames().keypoints[40:])


def test_stream_reports_a_corrupt_shard_by_name(dataset_uri):
    manifest = read_manifest(dataset_uri)
    store = open_store(dataset_uri)
    victim = manifest.shards[1]
    store.put_bytes(victim.key, store.get_bytes(victim.key)[:-1] + b"!")
    with pytest.raises(ShardCorruptError, match=victim.key):
        list(ShardStream(dataset_uri, "train", shuffle=False))


def test_stream_rejects_an_unknown_split_or_task(dataset_uri):
    with pytest.raises(ValueError, match="'val'"):
        ShardStream(dataset_uri, "val")
    with pytest.raises(ValueError, match="task"):
        ShardStream(dataset_uri, "train", task="pose")


def test_load_split_holds_the_split_in_memory(dataset_uri):
    frames = make_frames()
    skeleton = load_split(dataset_uri, "dev", "skeleton")
    assert len(skeleton) == 12
    kp, image = skeleton[0]
    np.testing.assert_array_equal(kp.numpy(), frames.keypoints[40])
    assert image.shape == (1, 32, 32)
    face = load_split(dataset_uri, "dev", "face")
    src, tgt = face[3]
    np.testing.assert_allclose(src.numpy(), normalize_face(frames.keypoints[43, layout.FACE]))
    assert torch.equal(src, tgt)


def _peak_traced_bytes_while_streaming(uri: str) -> tuple[int, int]:
    import tracemalloc

    stream = ShardStream(uri, "train", shuffle_buffer=16, seed=0)
    tracemalloc.start()
    try:
        count = 0
        for _sample in stream:
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, count


def test_reader_memory_does_not_grow_with_the_number_of_shards(tmp_path):
    # numpy reports its buffers to tracemalloc, so the peak covers downloaded bytes, decoded shards
    # and the shuffle buffer. A reader that kept the shards it read grows ~5x from 5 to 40 shards.
    peaks = {}
    for n_shards in (5, 40):
        uri = str(tmp_path / f"ds{n_shards}")
        frames = make_frames(n_train=48 * n_shards, n_dev=0, seed=n_shards)
        write_dataset(frames, uri, RenderSettings(image_size=64), shard_size=48, workers=1, progress=False)
        peaks[n_shards], count = _peak_traced_bytes_while_streaming(uri)
        assert count == 48 * n_shards
    assert peaks[40] < 1.5 * peaks[5], peaks
