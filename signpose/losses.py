"""Losses of the two tasks.

Skeleton task: :func:`compute_weighted_loss`, the seed's weighted MSE (hands 2.0, face 1.5, everything
else 1.0). The seed weighted a fixed image region; a fixed region cannot follow a moving hand, so when
the frame's keypoints are given the weight map is built per sample from that sample's own hand and
face keypoints: the bounding box of the part's present points grown by ``margin`` (a fraction of the
frame side). All tensor ops on the input's device, no Python loop over the batch.

Face task: :func:`masked_mse`, MSE over present points only (a missing point is not a real point at
(0, 0) and must not be learned as one).
"""

from __future__ import annotations

import torch

from signpose import layout

# Parts that carry a weight, in the order used by the box tensors below.
WEIGHTED_PARTS: tuple[str, ...] = ("face", "left_hand", "right_hand")

# Default growth of each part's keypoint bounding box, in frame units (0.03 = 7.7 px at 256):
# covers the rendered line thickness and anti-aliasing plus a little context around the part.
DEFAULT_MARGIN = 0.03

# Fallback when no keypoints are given: fixed boxes (x0, y0, x1, y1) in frame units for a signer
# framed from the waist up, facing the camera: face in the upper centre, each hand in its half of
# the lower two thirds ("left_hand" is the signer's left = image right, MediaPipe convention).
# This is the seed's behaviour (a layout that does not move); prefer passing keypoints.
FIXED_PART_BOXES: dict[str, tuple[float, float, float, float]] = {
    "face": (0.35, 0.05, 0.65, 0.40),
    "left_hand": (0.50, 0.35, 1.00, 1.00),
    "right_hand": (0.00, 0.35, 0.50, 1.00),
}


def part_boxes(keypoints: torch.Tensor, margin: float = DEFAULT_MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 143, 3) -> boxes (B, 3, 4) as (x0, y0, x1, y1) for face, left hand, right hand, and
    ``has_part`` (B, 3) bool (False when the part has no present point; its box is then meaningless)."""
    boxes, has_part = [], []
    for name in WEIGHTED_PARTS:
        part = keypoints[:, layout.PART_SLICES[name]]
        present = part[..., 2] > 0
        xy = part[..., :2]
        lo = torch.where(present.unsqueeze(-1), xy, torch.full_like(xy, float("inf"))).amin(dim=1)
        hi = torch.where(present.unsqueeze(-1), xy, torch.full_like(xy, float("-inf"))).amax(dim=1)
        boxes.append(torch.cat([lo - margin, hi + margin], dim=-1))
        has_part.append(present.any(dim=1))
    return torch.stack(boxes, dim=1), torch.stack(has_part, dim=1)


def fixed_part_boxes(batch: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The :data:`FIXED_PART_BOXES` layout, shaped like :func:`part_boxes`' result."""
    boxes = torch.tensor([FIXED_PART_BOXES[name] for name in WEIGHTED_PARTS], device=device, dtype=dtype)
    return boxes.expand(batch, -1, -1), torch.ones(batch, len(WEIGHTED_PARTS), dtype=torch.bool, device=device)


def boxes_to_masks(boxes: torch.Tensor, has_part: torch.Tensor, image_size: int) -> torch.Tensor:
    """Boxes (B, K, 4) in frame units -> (B, K, S, S) bool, True for pixels inside box k.

    Pixel i's centre is at i / S in frame units: the renderer draws a point at x to pixel x * S.
    """
    coords = torch.arange(image_size, device=boxes.device, dtype=boxes.dtype) / image_size
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # each (B, K, 1)
    inside_x = (coords >= x0) & (coords <= x1)  # (B, K, S)
    inside_y = (coords >= y0) & (coords <= y1)
    inside = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # (B, K, S, S)
    return inside & has_part[..., None, None]


def region_masks(keypoints: torch.Tensor | None, batch: int, image_size: int, margin: float = DEFAULT_MARGIN,
                 device=None) -> dict[str, torch.Tensor]:
    """Disjoint (B, 1, S, S) bool masks ``hands``, ``face`` and ``body`` (everything else).

    Hands take precedence over the face where they overlap (a hand in front of the face is
    hand pixels), matching the weight map of :func:`weight_mask`.
    """
    if keypoints is None:
        boxes, has_part = fixed_part_boxes(batch, device=device)
    else:
        boxes, has_part = part_boxes(keypoints.float(), margin)
    inside = boxes_to_masks(boxes, has_part, image_size)
    hands = (inside[:, 1] | inside[:, 2]).unsqueeze(1)
    face = inside[:, :1] & ~hands
    return {"hands": hands, "face": face, "body": ~(hands | face)}


def weight_mask(keypoints: torch.Tensor | None, batch: int, image_size: int, hand_weight: float = 2.0,
                face_weight: float = 1.5, margin: float = DEFAULT_MARGIN, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """(B, 1, S, S) weights: ``hand_weight`` in hand boxes, ``face_weight`` in the face box, else 1."""
    masks = region_masks(keypoints, batch, image_size, margin, device=device)
    weights = torch.ones(masks["body"].shape, device=masks["body"].device, dtype=dtype)
    weights = torch.where(masks["face"], torch.as_tensor(face_weight, dtype=dtype, device=weights.device), weights)
    return torch.where(masks["hands"], torch.as_tensor(hand_weight, dtype=dtype, device=weights.device), weights)


def _check_images(generated: torch.Tensor, target: torch.Tensor, image_size: int) -> None:
    if generated.shape != target.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ in shape")
    if generated.dim() != 4 or generated.shape[1] != 1:
        raise ValueError(f"expected images of shape (B, 1, S, S), got {tuple(generated.shape)}")
    if generated.shape[-1] != image_size or generated.shape[-2] != image_size:
        raise ValueError(f"images are {generated.shape[-2]}x{generated.shape[-1]} but image_size={image_size}")


def compute_weighted_loss(generated: torch.Tensor, target: torch.Tensor, image_size: int = 256,
                          hand_weight: float = 2.0, face_weight: float = 1.5,
                          keypoints: torch.Tensor | None = None, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """Weighted MSE: mean over pixels of ``weight * (generated - target)^2`` (not re-normalised by the
    mean weight, as in the seed, so with all weights 1 it equals plain MSE).

    ``keypoints`` (B, 143, 3): the frames the images were rendered from; the weight map follows their
    hands and face. Without them the fixed :data:`FIXED_PART_BOXES` layout is used.
    """
    _check_images(generated, target, image_size)
    if keypoints is not None and (keypoints.dim() != 3 or keypoints.shape[0] != generated.shape[0]
                                  or keypoints.shape[1:] != (layout.N_POINTS, layout.N_CHANNELS)):
        raise ValueError(f"keypoints must be (B={generated.shape[0]}, {layout.N_POINTS}, 3), "
                         f"got {tuple(keypoints.shape)}")
    weights = weight_mask(keypoints, generated.shape[0], image_size, hand_weight, face_weight, margin,
                          device=generated.device, dtype=torch.float32)
    return (weights * (generated.float() - target.float()).pow(2)).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over (x, y, conf) of the points present in ``target`` (confidence > 0).

    ``present`` (B, N) overrides the mask. A batch with no present point gives 0 with a gradient
    (rather than NaN) so one empty batch cannot poison the weights.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if present is None:
        present = target[..., 2] > 0
    weights = present.unsqueeze(-1).to(torch.float32)
    squared = (pred.float() - target.float()).pow(2) * weights
    return squared.sum() / (weights.sum() * pred.shape[-1]).clamp(min=1.0)
