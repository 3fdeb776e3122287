"""The skeleton task: keypoints (143, 3) -> a skeleton image, HierarchicalSkeletonTransformer.

Seed: ``training/skeleton/train.py``; the same flags (``--use_weighted_loss``: hands 2.0, face 1.5,
rest 1.0). Validation: MSE, the weighted loss, PSNR, SSIM and per-region MSE (``signpose.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signpose.augment import SkeletonAugmentConfig
from signpose.data import SkeletonSamples
from signpose.losses import compute_weighted_loss
from signpose.metrics import SkeletonMetrics
from signpose.models import SkeletonModelConfig, SkeletonModelName
from signpose.models.baselines import ConstantOutput, black_image
from signpose.panels import skeleton_panel
from signpose.tasks.base import Objective, TaskSpec
from signpose.train.config import TrainConfig


@dataclass
class SkeletonTrainConfig(TrainConfig, SkeletonModelConfig, SkeletonAugmentConfig):
    """``signpose train skeleton`` (seed: training/skeleton/train.py); the seed's sizes are the defaults."""

    batch_size: int = 16
    epochs: int = 100
    use_weighted_loss: bool = False  # weighted MSE (hands 2.0, face 1.5, rest 1.0) instead of plain MSE
    hand_weight: float = 2.0         # loss weight of the hand regions (with --use_weighted_loss)
    face_weight: float = 1.5         # loss weight of the face region (with --use_weighted_loss)
    weight_margin: float = 0.03      # growth of the keypoint boxes of the loss weight map (frame units)
    model: SkeletonModelName = "hierarchical_skeleton_transformer"  # the seed's model, or its variant
                                     # with bone heat in the CNN decoder (docs/training.md, "Sharper hands")

    task = "skeleton"


class SkeletonObjective(Objective):
    """Batches are (keypoints (B,143,3), image (B,1,S,S)); loss: weighted MSE (seed flag) or MSE."""

    cfg: SkeletonTrainConfig

    def loss(self, model, batch):
        keypoints, image = batch
        generated = model(keypoints)
        if self.cfg.use_weighted_loss:
            loss = compute_weighted_loss(generated, image, self.cfg.image_size, self.cfg.hand_weight,
                                         self.cfg.face_weight, keypoints=keypoints, margin=self.cfg.weight_margin)
        else:
            loss = (generated.float() - image.float()).pow(2).mean()
        return loss, generated

    def new_metrics(self):
        return SkeletonMetrics(self.cfg.image_size, self.cfg.hand_weight, self.cfg.face_weight,
                               self.cfg.weight_margin)

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch[1], batch[0])

    def baseline_model(self, reference):
        """An all-black image: skeleton images are mostly background, so it scores a high SSIM."""
        return ConstantOutput(black_image(self.cfg.image_size))


def generated_image(keypoints: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """The generated skeleton image (1, S, S) in [0, 1] as a grey uint8 picture."""
    return np.clip(generated[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


SKELETON = TaskSpec(
    name="skeleton",
    description="Train HierarchicalSkeletonTransformer: keypoints (143, 3) -> skeleton image.",
    config_cls=SkeletonTrainConfig,
    objective_cls=SkeletonObjective,
    samples=SkeletonSamples(),
    panel=skeleton_panel,
    prediction_image=generated_image,
    experiment="signpose-skeleton",
    model_name="skeleton-generator",
    promotion_metric="val/weighted_loss",
    seed_script="training/skeleton/train.py",
)
