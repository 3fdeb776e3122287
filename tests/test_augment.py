"""Training-time augmentation: face similarity transforms, jitter and point dropout with the clean
target; skeleton affine jitter with the target rendered from the same jittered keypoints; training
batches only, deterministic per (seed, epoch, sample), through streams and DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from signpose import layout
from signpose.augment import (
    AugmentedDataset,
    AugmentedStream,
    FaceAugmentConfig,
    SampleAugmenter,
    SkeletonAugmentConfig,
    augment_face,
    for_training,
)
from signpose.data import KeypointDataset, ShardStream, SkeletonDataset, normalize_face
from signpose.losses import masked_mse
from signpose.render import RenderSettings, render_frame
from signpose.shards import write_dataset
from signpose.synth import generate_signer_frames, write_seed_pickle
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig
from signpose.train.inputs import load_task_data

SETTINGS = RenderSettings(image_size=64)


@pytest.fixture(scope="module")
def frames():
    return generate_signer_frames(n_videos=6, frames_per_video=8, seed=2)


def _faces(frames) -> np.ndarray:
    return normalize_face(frames.keypoints[:, layout.FACE])


# --- face ----------------------------------------------------------------------------------------

def test_face_target_is_a_similarity_transform_of_the_clean_face(frames):
    face = _faces(frames)[0]
    cfg = FaceAugmentConfig(aug_rotation=20, aug_scale=0.2, aug_shift=0.05, aug_jitter=0.0, aug_dropout=0.0,
                            aug_region_scale=0.0, aug_region_shift=0.0, aug_shape=0.0)
    source, target = augment_face(face, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(source, target)  # no jitter, no dropout: the input is the target
    before = np.linalg.norm(face[:, None, :2] - face[None, :, :2], axis=-1)
    after = np.linalg.norm(target[:, None, :2] - target[None, :, :2], axis=-1)
    ratio = after[before > 0.05] / before[before > 0.05]
    assert ratio.std() < 1e-4 and 0.8 - 1e-6 <= ratio.mean() <= 1.2 + 1e-6  # one scale: a similarity
    assert not np.allclose(target, face)
    assert (target[:, 2] == face[:, 2]).all()


def test_face_dropout_masks_input_points_and_the_loss_still_asks_for_them(frames):
    face = _faces(frames)[3]
    cfg = FaceAugmentConfig(aug_dropout=0.3, aug_jitter=0.002, aug_shape=0.0)
    source, target = augment_face(face, np.random.default_rng(5), cfg)
    dropped = (source[:, 2] == 0) & (target[:, 2] > 0)
    assert 5 <= dropped.sum() <= 40
    assert (source[dropped] == 0).all()  # missing as the layout defines it: all zeros, confidence 0
    kept = ~dropped
    assert 0 < np.abs(source[kept, :2] - target[kept, :2]).max() < 0.02  # jitter on the input only
    # The loss covers the target's present points: a model that copies its input pays for the gaps.
    copy_loss = masked_mse(torch.from_numpy(source)[None], torch.from_numpy(target)[None])
    kept_only = masked_mse(torch.from_numpy(source)[None], torch.from_numpy(target)[None],
                           torch.from_numpy(kept)[None])
    assert copy_loss > 10 * kept_only


def test_face_shape_augmentation_reshapes_input_and_target_alike_region_by_region(frames):
    face = _faces(frames)[1].copy()
    face[40] = 0.0  # a missing eye point stays missing
    cfg = FaceAugmentConfig(aug_rotation=0, aug_scale=0, aug_shift=0, aug_jitter=0, aug_dropout=0,
                            aug_region_scale=0.2, aug_region_shift=0.02, aug_shape=0.0)
    source, target = augment_face(face, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(source, target)  # a new face to reproduce, not noise to remove
    assert (target[40] == 0).all() and (target[:, 2] == face[:, 2]).all()
    for region in layout.FACE_REGIONS.values():
        idx = [i for i in region if face[i, 2] > 0]
        before, after = face[idx, :2] - face[idx, :2].mean(0), target[idx, :2] - target[idx, :2].mean(0)
        ratio = after / np.where(np.abs(before) > 1e-3, before, np.nan)
        spread = np.nanstd(ratio, axis=0)  # one scale per axis within a region
        assert (spread < 1e-3).all() and (np.abs(np.nanmean(ratio, axis=0) - 1) <= 0.2 + 1e-4).all()
    assert not np.allclose(target, face)
    jittered = augment_face(face, np.random.default_rng(3), FaceAugmentConfig(
        aug_rotation=0, aug_scale=0, aug_shift=0, aug_jitter=0, aug_dropout=0, aug_region_scale=0,
        aug_region_shift=0, aug_shape=0.01))
    np.testing.assert_array_equal(jittered[0], jittered[1])
    assert 0.003 < np.abs(jittered[1][:, :2] - face[:, :2])[face[:, 2] > 0].std() < 0.03


def test_face_dropout_never_drops_every_point():
    face = np.zeros((layout.N_FACE, 3), np.float32)
    face[:2] = [[0.4, 0.4, 1.0], [0.6, 0.6, 1.0]]
    for seed in range(20):
        source, _ = augment_face(face, np.random.default_rng(seed), FaceAugmentConfig(aug_dropout=0.99))
        assert (source[:, 2] > 0).any()


def test_augmented_samples_are_a_function_of_seed_epoch_and_index(frames):
    inner = KeypointDataset(frames.keypoints[:, layout.FACE])
    make = lambda seed: AugmentedDataset(inner, SampleAugmenter("face", FaceAugmentConfig()), seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    for ds in (a, b, c):
        ds.set_epoch(2)
    for i in (0, 7):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
        assert not torch.equal(a[i][1], c[i][1])
    first = a[4][1].clone()
    a.set_epoch(3)
    assert not torch.equal(a[4][1], first)  # a new epoch draws new transforms
    a.set_epoch(2)
    assert torch.equal(a[4][1], first)  # ... and a resumed epoch the same ones
    # DataLoader workers see the same samples as the main process.
    loaded = next(iter(DataLoader(a, batch_size=len(a), num_workers=2)))
    assert torch.equal(loaded[1][4], first)


# --- skeleton ------------------------------------------------------------------------------------

def test_skeleton_augmentation_renders_the_target_from_the_jittered_keypoints(frames):
    inner = SkeletonDataset(frames.keypoints, image_size=SETTINGS.image_size)
    cfg = SkeletonAugmentConfig(augment_prob=1.0, aug_rotation=15, aug_shift=0.08)
    ds = AugmentedDataset(inner, SampleAugmenter("skeleton", cfg, SETTINGS), seed=0)
    changed = 0
    for i in range(0, len(ds), 5):
        keypoints, image = ds[i]
        original_kp, original_image = inner[i]
        expected = render_frame(keypoints.numpy(), SETTINGS).astype(np.float32) / 255.0
        np.testing.assert_array_equal(image[0].numpy(), expected)  # image and keypoints agree exactly
        missing = keypoints[:, 2] == 0
        assert (keypoints[missing] == 0).all() and (keypoints[~missing, :2] >= 0).all()
        assert (keypoints[~missing, :2] <= 1).all()
        changed += not torch.equal(image, original_image) and not torch.equal(keypoints, original_kp)
    assert changed >= 9


def test_skeleton_augment_prob_leaves_the_other_samples_as_stored(frames):
    inner = SkeletonDataset(frames.keypoints, image_size=SETTINGS.image_size)
    ds = AugmentedDataset(inner, SampleAugmenter("skeleton", SkeletonAugmentConfig(augment_prob=0.5), SETTINGS), 0)
    same = [torch.equal(ds[i][0], inner[i][0]) for i in range(len(ds))]
    assert 0.2 < np.mean(same) < 0.8


# --- only training data, through the real data path ------------------------------------------------

def _face_cfg(path, **kw):
    return FaceTrainConfig(data_path=str(path), seed=3, **kw)


def test_only_the_training_set_is_augmented_and_validation_is_untouched(frames, tmp_path):
    path = tmp_path / "signer.pkl"
    write_seed_pickle(path, frames.to_seed_dict())
    plain = load_task_data("face", _face_cfg(path, augment=False))
    augmented = load_task_data("face", _face_cfg(path))
    assert FaceTrainConfig().augment is True and augmented.info["augment"] is True
    assert isinstance(augmented.train, AugmentedDataset) and isinstance(plain.train, KeypointDataset)
    assert type(augmented.val) is type(plain.val) is KeypointDataset
    for i in range(len(plain.val)):
        assert torch.equal(augmented.val[i][0], plain.val[i][0])
    assert not torch.equal(augmented.train[0][1], plain.train[0][1])
    assert augmented.dataset_hash == plain.dataset_hash  # same data; augmentation is a training setting
    # The skeleton task is off by default.
    skeleton = load_task_data("skeleton", SkeletonTrainConfig(data_path=str(path), image_size=64))
    assert SkeletonTrainConfig().augment_prob == 0.0 and isinstance(skeleton.train, SkeletonDataset)


def test_a_streamed_training_set_is_augmented_reproducibly_per_epoch_and_worker(frames, tmp_path):
    store = tmp_path / "store"
    write_dataset(frames, str(store), SETTINGS, shard_size=8, workers=1, progress=False)
    cfg = SkeletonTrainConfig(data_path=str(store), image_size=SETTINGS.image_size, augment_prob=1.0,
                              aug_rotation=10, seed=1)
    data = load_task_data("skeleton", cfg)
    assert isinstance(data.train, AugmentedStream) and isinstance(data.val, ShardStream)
    assert data.train.n_samples == data.train.inner.n_samples
    data.train.rank, data.train.world_size = 0, 1  # what the engine sets under torchrun reaches the stream
    assert (data.train.inner.rank, data.train.inner.world_size) == (0, 1)

    def epoch(e, workers):
        data.train.set_epoch(e)
        batches = list(DataLoader(data.train, batch_size=4, num_workers=workers))
        keypoints = torch.cat([b[0] for b in batches])
        images = torch.cat([b[1] for b in batches])
        for kp, image in zip(keypoints, images):  # every target matches its jittered keypoints
            np.testing.assert_array_equal(image[0].numpy(),
                                          render_frame(kp.numpy(), SETTINGS).astype(np.float32) / 255.0)
        return keypoints

    first = epoch(0, 2)
    assert torch.equal(epoch(0, 2), first)
    assert not torch.equal(epoch(1, 2), first)
    raw = frames.keypoints[frames.split == "train"]
    stored = {kp.tobytes() for kp in raw}
    assert not any(kp.numpy().tobytes() in stored for kp in first)  # every training sample was moved


# --- exact resume through the training engine ------------------------------------------------------

class _CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, metrics):
        if step == self.step:
            raise KeyboardInterrupt(f"simulated preemption at step {step}")


def test_an_interrupted_augmented_run_resumes_to_identical_weights(frames, tmp_path):
    from signpose.models import build_model
    from signpose.train.engine import fit
    from signpose.train.state import load_checkpoint

    tiny = dict(batch_size=8, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
                decoder_layers=1, dropout=0.0, lr=3e-3, progress=False, num_workers=0, device="cpu", amp="off",
                seed=4)
    faces = frames.keypoints[:32, layout.FACE]
    train = lambda cfg: for_training(KeypointDataset(faces), "face", cfg)  # noqa: E731

    def model(cfg, seed):
        torch.manual_seed(seed)
        return build_model(cfg)

    cfg = FaceTrainConfig(**tiny)
    assert isinstance(train(cfg), AugmentedDataset)
    reference = fit("face", model(cfg, 0), train(cfg), None, cfg)
    run_cfg = FaceTrainConfig(**tiny, checkpoint_dir=str(tmp_path / "run"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        fit("face", model(run_cfg, 0), train(run_cfg), None, run_cfg, callbacks=[_CrashAt(7)])  # epoch 2, mid-way
    assert load_checkpoint(run_cfg.checkpoint_dir)["global_step"] == 6
    resumed = fit("face", model(run_cfg, 123), train(run_cfg), None, run_cfg)
    ref, got = reference.model.state_dict(), resumed.model.state_dict()
    assert resumed.global_step == reference.global_step == 8
    assert all(torch.equal(ref[k], got[k]) for k in ref)
