"""The face task: face keypoints (68, 3) auto-encoder, HierarchicalKeypointTransformer.

Seed: ``training/hierarchical_keypoint/train.py``; the same flags. Inputs are normalised to [0, 1]
(:func:`signpose.data.normalize_face`); loss: MSE over present points; validation: NME and per-region
error (``signpose.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

from signpose.augment import FaceAugmentConfig
from signpose.data import FaceSamples, first_samples
from signpose.losses import masked_mse
from signpose.metrics import FaceMetrics
from signpose.models import FaceModelConfig
from signpose.models.baselines import ConstantOutput, mean_face
from signpose.panels import face_panel
from signpose.tasks.base import Objective, TaskSpec
from signpose.train.config import TrainConfig


@dataclass
class FaceTrainConfig(TrainConfig, FaceModelConfig, FaceAugmentConfig):
    """``signpose train face`` (seed: training/hierarchical_keypoint/train.py); the seed's sizes are the defaults."""

    batch_size: int = 32
    epochs: int = 100

    task = "face"


class FaceObjective(Objective):
    """Batches are (src (B,68,3), tgt (B,68,3)); loss: MSE over present points."""

    def loss(self, model, batch):
        src, tgt = batch
        output = model(src, tgt)
        return masked_mse(output, tgt), output

    def new_metrics(self):
        return FaceMetrics()

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch[1])

    def baseline_model(self, reference):
        """The mean face of (up to 4,096 of) the training data's faces."""
        return ConstantOutput(mean_face(first_samples(reference, 4096)[1]))


def _face_panel(inputs, targets, outputs):
    return face_panel(targets, outputs)


def overlay_image(face, reconstruction):
    """The original landmarks (green) with the reconstruction (red) overlaid, 256 px."""
    return face_panel(face[None], reconstruction[None], size=256)


FACE = TaskSpec(
    name="face",
    description="Train HierarchicalKeypointTransformer: face keypoints (68, 3) -> (68, 3) auto-encoder.",
    config_cls=FaceTrainConfig,
    objective_cls=FaceObjective,
    samples=FaceSamples(),
    panel=_face_panel,
    prediction_image=overlay_image,
    experiment="signpose-face",
    model_name="face-keypoint-autoencoder",
    promotion_metric="val/nme",
    seed_script="training/hierarchical_keypoint/train.py",
)
