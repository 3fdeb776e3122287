"""Weighted skeleton loss (per-sample keypoint masks) and the face task's masked MSE."""

import pytest
import torch

from signpose import layout
from signpose.losses import FIXED_PART_BOXES, compute_weighted_loss, masked_mse, region_masks, weight_mask

S = 100  # pixel i <-> frame coordinate i / 100: boxes below land on known pixels


def known_frame() -> torch.Tensor:
    """Face points spanning x,y in [0.40, 0.60]; left hand in [0.70, 0.80]; right hand missing; pose
    present far away (pose never adds weight)."""
    kp = torch.zeros(layout.N_POINTS, 3)
    face = torch.linspace(0.40, 0.60, layout.N_FACE)
    kp[layout.FACE, 0], kp[layout.FACE, 1], kp[layout.FACE, 2] = face, face.flip(0), 1.0
    hand = torch.linspace(0.70, 0.80, layout.N_HAND)
    kp[layout.LEFT_HAND, 0], kp[layout.LEFT_HAND, 1], kp[layout.LEFT_HAND, 2] = hand, hand, 0.9
    kp[layout.RIGHT_HAND] = 0.0
    kp[layout.POSE, 0], kp[layout.POSE, 1], kp[layout.POSE, 2] = 0.1, 0.1, 1.0
    return kp


def test_weight_mask_of_a_known_frame_has_hand_face_and_background_weights_where_expected():
    mask = weight_mask(known_frame()[None], 1, S, hand_weight=2.0, face_weight=1.5, margin=0.05)[0, 0]
    assert mask.shape == (S, S)
    # face box: [0.35, 0.65] -> pixels 35..65 (inclusive); hand box: [0.65, 0.85] -> 65..85
    assert mask[50, 50] == 1.5
    assert mask[35, 35] == 1.5 and mask[34, 50] == 1.0 and mask[50, 34] == 1.0
    assert mask[75, 75] == 2.0 and mask[85, 85] == 2.0 and mask[86, 75] == 1.0
    assert mask[65, 65] == 2.0  # where both boxes meet the hand wins
    assert mask[10, 10] == 1.0  # pose area carries no weight
    assert mask[20, 80] == 1.0  # the missing right hand adds no box
    # exact pixel counts: face box 31x31 minus the one overlapping hand pixel, hand box 21x21
    assert int((mask == 1.5).sum()) == 31 * 31 - 1
    assert int((mask == 2.0).sum()) == 21 * 21


def test_weight_mask_follows_each_samples_own_hand():
    a = known_frame()
    b = known_frame()
    b[layout.LEFT_HAND, :2] -= 0.5  # hand moved up-left to [0.20, 0.30]
    masks = weight_mask(torch.stack([a, b]), 2, S, margin=0.0)
    assert masks[0, 0, 75, 75] == 2.0 and masks[0, 0, 25, 25] == 1.0
    assert masks[1, 0, 25, 25] == 2.0 and masks[1, 0, 75, 75] == 1.0


def test_region_masks_are_disjoint_and_cover_the_image():
    masks = region_masks(torch.stack([known_frame(), known_frame()]), 2, S)
    total = masks["hands"].int() + masks["face"].int() + masks["body"].int()
    assert torch.equal(total, torch.ones_like(total))


def test_weighted_loss_equals_hand_computed_value_on_known_frame():
    kp = known_frame()[None]
    target = torch.zeros(1, 1, S, S)
    generated = torch.zeros(1, 1, S, S)
    generated[0, 0, 75, 75] = 0.5   # in the hand box: 2.0 * 0.25
    generated[0, 0, 50, 50] = 1.0   # in the face box: 1.5 * 1
    generated[0, 0, 5, 5] = 1.0     # background: 1.0 * 1
    loss = compute_weighted_loss(generated, target, image_size=S, keypoints=kp, margin=0.05)
    assert loss.item() == pytest.approx((2.0 * 0.25 + 1.5 + 1.0) / (S * S))


def test_weighted_loss_with_unit_weights_is_plain_mse():
    g, t = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    kp = torch.stack([known_frame(), known_frame()])
    loss = compute_weighted_loss(g, t, 64, hand_weight=1.0, face_weight=1.0, keypoints=kp)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(g, t))


def test_weighted_loss_without_keypoints_uses_the_fixed_layout():
    g, t = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    x0, y0, x1, y1 = FIXED_PART_BOXES["face"]
    fy, fx = int((y0 + y1) / 2 * 64), int((x0 + x1) / 2 * 64)
    g[0, 0, fy, fx] = 1.0
    assert compute_weighted_loss(g, t, 64).item() == pytest.approx(1.5 / 64**2)


def test_weighted_loss_rejects_images_of_another_size_than_image_size():
    with pytest.raises(ValueError, match="image_size=256"):
        compute_weighted_loss(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))


def test_weighted_loss_has_gradient_and_runs_batched_without_per_sample_python():
    g = torch.rand(8, 1, 64, 64, requires_grad=True)
    kp = torch.rand(8, layout.N_POINTS, 3)
    compute_weighted_loss(g, torch.rand(8, 1, 64, 64), 64, keypoints=kp).backward()
    assert g.grad is not None and torch.isfinite(g.grad).all()


def test_masked_mse_ignores_missing_points():
    target = torch.rand(2, 68, 3)
    target[0, :10] = 0.0  # missing: conf 0 and coordinates 0
    pred = target.clone()
    pred[0, :10] = 0.7    # wildly wrong, but on missing points
    assert masked_mse(pred, target).item() == 0.0
    pred[1, 20, 0] += 0.3
    expected = 0.3**2 / ((2 * 68 - 10) * 3)
    assert masked_mse(pred, target).item() == pytest.approx(expected, rel=1e-4)


def test_masked_mse_of_a_batch_without_any_present_point_is_zero_not_nan():
    loss = masked_mse(torch.rand(2, 68, 3, requires_grad=True), torch.zeros(2, 68, 3))
    assert loss.item() == 0.0
