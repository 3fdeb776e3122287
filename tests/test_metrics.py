"""Validation metrics: NME against hand-computed values, PSNR/SSIM, per-region image error."""

import math

import pytest
import torch

from signpose import layout
from signpose.losses import region_masks
from signpose.metrics import FaceMetrics, MetricSums, SkeletonMetrics, nme, psnr_per_sample


def face_with_eyes_apart(distance=0.4) -> torch.Tensor:
    """All 68 points present on a line; outer eye corners 36 and 45 exactly ``distance`` apart."""
    face = torch.zeros(1, layout.N_FACE, 3)
    face[0, :, 0] = torch.linspace(0.2, 0.8, layout.N_FACE)
    face[0, :, 1] = 0.5
    face[0, :, 2] = 1.0
    face[0, 36, :2] = torch.tensor([0.3, 0.4])
    face[0, 45, :2] = torch.tensor([0.3 + distance, 0.4])
    return face


def test_nme_equals_hand_computed_value():
    target = face_with_eyes_apart(0.4)
    pred = target.clone()
    pred[0, 3, :2] += torch.tensor([0.03, 0.04])  # a jaw point 0.05 away
    overall, regions, valid = nme(pred, target)
    assert valid.tolist() == [True]
    assert overall.item() == pytest.approx(0.05 / 68 / 0.4)
    assert regions["jaw"].item() == pytest.approx(0.05 / 17 / 0.4)
    assert regions["nose"].item() == 0.0


def test_nme_ignores_missing_points_and_their_predictions():
    target = face_with_eyes_apart(0.4)
    target[0, 10] = 0.0                      # missing jaw point...
    pred = target.clone()
    pred[0, 10, :2] = torch.tensor([5.0, 5.0])  # ...predicted absurdly: must not count
    pred[0, 3, :2] += torch.tensor([0.03, 0.04])
    overall, regions, _ = nme(pred, target)
    assert overall.item() == pytest.approx(0.05 / 67 / 0.4)
    assert regions["jaw"].item() == pytest.approx(0.05 / 16 / 0.4)


def test_nme_is_undefined_without_both_outer_eye_corners_and_face_metrics_skip_such_samples():
    good = face_with_eyes_apart(0.5)
    bad = face_with_eyes_apart(0.5)
    bad[0, 45] = 0.0
    pred_good, pred_bad = good.clone(), bad.clone()
    pred_good[0, 0, 0] += 0.1
    pred_bad[0, 0, 0] += 0.7
    overall, _, valid = nme(torch.cat([pred_good, pred_bad]), torch.cat([good, bad]))
    assert valid.tolist() == [True, False] and math.isnan(overall[1].item())
    metrics = FaceMetrics()
    metrics.update(torch.cat([pred_good, pred_bad]), torch.cat([good, bad]))
    values = metrics.compute()
    assert values["val/nme"] == pytest.approx(0.1 / 68 / 0.5)
    assert set(values) == {"val/mse", "val/nme"} | {f"val/nme_{r}" for r in layout.FACE_REGION_NAMES}


def test_face_metric_is_the_same_however_the_validation_set_is_batched():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(10, 68, 3, generator=g)
    target[:, :, 2] = (target[:, :, 2] > 0.2).float()
    target[:, [36, 45], 2] = 1.0
    pred = target + 0.05 * torch.randn(10, 68, 3, generator=g)
    whole, parts = FaceMetrics(), FaceMetrics()
    whole.update(pred, target)
    for i in range(0, 10, 3):
        parts.update(pred[i:i + 3], target[i:i + 3])
    a, b = whole.compute(), parts.compute()
    assert all(a[k] == pytest.approx(b[k]) for k in a)


def test_psnr_of_a_known_error_is_20_db_and_ssim_of_identical_images_is_1():
    target = torch.zeros(2, 1, 64, 64)
    generated = torch.full_like(target, 0.1)  # MSE 0.01 -> PSNR 20 dB
    assert psnr_per_sample(generated, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    image = torch.rand(2, 1, 64, 64)
    metrics = SkeletonMetrics(64)
    metrics.update(image, image, None)
    values = metrics.compute()
    assert values["val/ssim"] == pytest.approx(1.0, abs=1e-5) and values["val/mse"] == 0.0


def test_region_errors_land_in_the_region_where_the_image_is_wrong():
    kp = torch.zeros(1, layout.N_POINTS, 3)
    kp[0, layout.LEFT_HAND, 0] = torch.linspace(0.70, 0.80, layout.N_HAND)
    kp[0, layout.LEFT_HAND, 1] = 0.75
    kp[0, layout.LEFT_HAND, 2] = 1.0
    kp[0, layout.FACE, 0] = torch.linspace(0.40, 0.60, layout.N_FACE)
    kp[0, layout.FACE, 1] = 0.3
    kp[0, layout.FACE, 2] = 1.0
    target = torch.zeros(1, 1, 64, 64)
    generated = target.clone()
    hands = region_masks(kp, 1, 64)["hands"]
    generated[hands] = 0.5  # wrong only inside the hand box
    metrics = SkeletonMetrics(64)
    metrics.update(generated, target, kp)
    values = metrics.compute()
    assert values["val/mse_hands"] == pytest.approx(0.25)
    assert values["val/mse_face"] == 0.0 and values["val/mse_body"] == 0.0
    assert values["val/mse"] == pytest.approx(0.25 * hands.sum().item() / 64**2)
    assert values["val/weighted_loss"] == pytest.approx(2.0 * values["val/mse"])


def test_normalised_region_error_is_one_for_a_black_image_zero_for_the_target_and_ignores_ink_amount():
    kp = torch.zeros(1, layout.N_POINTS, 3)
    kp[0, layout.LEFT_HAND, 0] = torch.linspace(0.70, 0.80, layout.N_HAND)
    kp[0, layout.LEFT_HAND, 1] = 0.75
    kp[0, layout.LEFT_HAND, 2] = 1.0
    masks = region_masks(kp, 1, 64)
    target = torch.zeros(1, 1, 64, 64)
    target[masks["hands"]] = 0.8  # much ink in the hand box
    target[0, 0, 5, :] = 0.8      # one line of body pixels
    names = ("val/nmse_hands", "val/nmse_body")
    for generated, expected in ((torch.zeros_like(target), 1.0), (target.clone(), 0.0), (target * 0.5, 0.25)):
        metrics = SkeletonMetrics(64)
        metrics.update(generated, target, kp)
        values = metrics.compute()
        assert [values[n] for n in names] == pytest.approx([expected, expected], rel=1e-3, abs=1e-9)
    # the plain region MSEs of the half-bright image differ by the ink each region holds; nmse does not
    assert values["val/mse_hands"] > 50 * values["val/mse_body"]
    # a region with no drawing in the target: finite, and zero when the image is black there too
    metrics = SkeletonMetrics(64)
    metrics.update(torch.zeros_like(target), torch.zeros_like(target), kp)
    assert metrics.compute()["val/nmse_hands"] == 0.0


def test_metric_sums_report_nan_for_a_metric_that_saw_no_sample():
    sums = MetricSums(["a", "b"])
    sums.add("a", 3.0, 2)
    values = sums.compute()
    assert values["a"] == 1.5 and math.isnan(values["b"])
