"""Tiny real data and tiny configurations of the real models, shared by the MLflow tests."""

from __future__ import annotations

import numpy as np

from signpose import layout
from signpose.data import KeypointDataset, SkeletonDataset
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig

IMAGE_SIZE = 64


def _face_template() -> np.ndarray:
    """68 iBUG points on a plausible face layout in [0, 1] (jaw arc, brows, nose, eyes, lips)."""
    points = np.zeros((68, 2), np.float32)
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    points[0:17] = np.stack([0.5 + 0.38 * np.cos(t), 0.45 + 0.45 * np.sin(t)], 1)
    points[17:22] = np.stack([np.linspace(0.2, 0.42, 5), np.full(5, 0.3)], 1)
    points[22:27] = np.stack([np.linspace(0.58, 0.8, 5), np.full(5, 0.3)], 1)
    points[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.38, 0.58, 4)], 1)
    points[31:36] = np.stack([np.linspace(0.42, 0.58, 5), np.full(5, 0.62)], 1)
    angle = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    points[36:42] = np.stack([0.3 + 0.07 * np.cos(angle), 0.4 + 0.03 * np.sin(angle)], 1)
    points[42:48] = np.stack([0.7 + 0.07 * np.cos(angle), 0.4 + 0.03 * np.sin(angle)], 1)
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points[48:60] = np.stack([0.5 + 0.15 * np.cos(outer), 0.78 + 0.05 * np.sin(outer)], 1)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    points[60:68] = np.stack([0.5 + 0.1 * np.cos(inner), 0.78 + 0.02 * np.sin(inner)], 1)
    return points


def make_frames(n: int, seed: int = 0) -> np.ndarray:
    """(n, 143, 3) frames: a face, two hands and a body, jittered per frame, all points present."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, layout.N_POINTS, 3), np.float32)
    face = _face_template() * 0.25 + np.array([0.375, 0.1], np.float32)
    body = rng.uniform(0.2, 0.8, size=(layout.N_POSE, 2)).astype(np.float32)
    hand = rng.uniform(-0.06, 0.06, size=(layout.N_HAND, 2)).astype(np.float32)
    for i in range(n):
        shift = rng.normal(0, 0.01, size=2).astype(np.float32)
        frames[i, layout.FACE, :2] = face + shift + rng.normal(0, 0.003, face.shape)
        frames[i, layout.LEFT_HAND, :2] = hand + rng.uniform(0.25, 0.45, 2) + rng.normal(0, 0.003, hand.shape)
        frames[i, layout.RIGHT_HAND, :2] = hand + rng.uniform(0.55, 0.75, 2) + rng.normal(0, 0.003, hand.shape)
        frames[i, layout.POSE, :2] = body + shift
    frames[..., :2] = np.clip(frames[..., :2], 0.0, 1.0)
    frames[..., 2] = 1.0
    return frames


def skeleton_data(n_train: int = 24, n_val: int = 8, seed: int = 0):
    frames = make_frames(n_train + n_val, seed)
    return (SkeletonDataset(frames[:n_train], image_size=IMAGE_SIZE),
            SkeletonDataset(frames[n_train:], image_size=IMAGE_SIZE))


def face_data(n_train: int = 48, n_val: int = 16, seed: int = 0):
    frames = make_frames(n_train + n_val, seed)
    return KeypointDataset(frames[:n_train]), KeypointDataset(frames[n_train:])


def skeleton_config(**overrides) -> SkeletonTrainConfig:
    values = dict(batch_size=8, epochs=2, image_size=IMAGE_SIZE, use_weighted_loss=True, d_model=32, n_layers=1,
                  n_heads=2, n_decoder_layers=1, grid_size=8, decoder_channels=32, dropout=0.0, lr=3e-3,
                  warmup_fraction=0.0, device="cpu", amp="off", progress=False)
    values.update(overrides)
    return SkeletonTrainConfig(**values)


def face_config(**overrides) -> FaceTrainConfig:
    values = dict(batch_size=16, epochs=2, d_region=16, d_global=32, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, dropout=0.0, lr=3e-3, warmup_fraction=0.0,
                  device="cpu", amp="off", progress=False)
    values.update(overrides)
    return FaceTrainConfig(**values)


def build_model(cfg):
    from signpose.models import FaceModelConfig, HierarchicalKeypointTransformer, HierarchicalSkeletonTransformer

    model_config = cfg.model_config()
    if isinstance(model_config, FaceModelConfig):
        return HierarchicalKeypointTransformer(model_config)
    return HierarchicalSkeletonTransformer(model_config)


def set_mlflow_uris(tracking_uri: str | None, registry_uri: str | None) -> None:
    """Point MLflow's process-global URIs at these (None: unset) and keep ``os.environ`` in step:
    ``mlflow.set_*_uri`` also exports MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which later tests would
    inherit."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    set_environ({"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": registry_uri})


def set_environ(values: dict[str, str | None]) -> None:
    """Set these environment variables; a None value removes the variable."""
    import os

    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def reset_mlflow_globals() -> None:
    """Undo signpose.tracking.configure_mlflow in this process."""
    set_mlflow_uris(None, None)
