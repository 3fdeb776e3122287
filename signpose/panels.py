"""Validation panels logged to MLflow each epoch: pictures a person compares across runs.

skeleton: one row per sample, columns = input keypoints drawn | target skeleton | generated skeleton.
face:     one tile per sample, the original landmarks (green) and the reconstruction (red) overlaid.
All panels are RGB uint8 arrays (H, W, 3), ready for ``mlflow.log_image``.
"""

from __future__ import annotations

import cv2
import numpy as np

from signpose import layout

HEADER_PX = 20
SEPARATOR_PX = 2
# Part colours (RGB) for the drawn keypoints: face, left hand, right hand, pose.
PART_COLOURS = ((255, 210, 80), (80, 200, 255), (255, 90, 200), (150, 255, 120))
ORIGINAL_COLOUR = (60, 220, 60)
RECONSTRUCTION_COLOUR = (240, 60, 60)


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().to("cpu").float().numpy()
    return np.asarray(array)


def _gray_tiles(images, name: str) -> np.ndarray:
    """(N,1,S,S) or (N,S,S) in [0,1] -> (N,S,S,3) uint8."""
    images = _to_numpy(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"{name}: expected one channel (N, 1, S, S), got {images.shape}")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"{name}: expected (N, S, S) or (N, 1, S, S) images, got {images.shape}")
    gray = np.clip(np.nan_to_num(images) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _header(labels: list[str], tile_width: int) -> np.ndarray:
    header = np.zeros((HEADER_PX, tile_width * len(labels) + SEPARATOR_PX * (len(labels) - 1), 3), np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(header, label, (i * (tile_width + SEPARATOR_PX) + 4, HEADER_PX - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return header


def _join(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate colour images along ``axis`` (1: side by side, 0: stacked) with grey separators."""
    shape = list(images[0].shape)
    shape[axis] = SEPARATOR_PX
    sep = np.full(shape, 96, np.uint8)
    parts = []
    for i, image in enumerate(images):
        if i:
            parts.append(sep)
        parts.append(image)
    return np.concatenate(parts, axis=axis)


def _hstack(tiles: list[np.ndarray]) -> np.ndarray:
    return _join(tiles, axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    return _join(rows, axis=0)


def draw_keypoints(keypoints: np.ndarray, size: int) -> np.ndarray:
    """(143, 3) normalised keypoints -> (S, S, 3) dots coloured by part; missing points (conf 0) skipped."""
    tile = np.zeros((size, size, 3), np.uint8)
    radius = max(1, size // 128)
    for index, (x, y, conf) in enumerate(keypoints):
        if conf <= 0:
            continue
        colour = PART_COLOURS[int(layout.PART_IDS[index])]
        cv2.circle(tile, (int(round(x * (size - 1))), int(round(y * (size - 1)))), radius, colour, -1, cv2.LINE_AA)
    return tile


def skeleton_panel(keypoints, targets, generated) -> np.ndarray:
    """Rows of [input keypoints drawn | target skeleton | generated skeleton]."""
    keypoints = _to_numpy(keypoints)
    target_tiles = _gray_tiles(targets, "targets")
    generated_tiles = _gray_tiles(generated, "generated")
    if not (len(keypoints) == len(target_tiles) == len(generated_tiles)):
        raise ValueError(
            f"panel inputs disagree on the sample count: keypoints {len(keypoints)}, "
            f"targets {len(target_tiles)}, generated {len(generated_tiles)}"
        )
    if keypoints.shape[1:] != (layout.N_POINTS, layout.N_CHANNELS):
        raise ValueError(f"keypoints: expected (N, {layout.N_POINTS}, 3), got {keypoints.shape}")
    size = target_tiles.shape[1]
    rows = [
        _hstack([draw_keypoints(kp, size), target, generated])
        for kp, target, generated in zip(keypoints, target_tiles, generated_tiles)
    ]
    return np.concatenate([_header(["keypoints", "target", "generated"], size), _vstack(rows)], axis=0)


def _draw_face(tile: np.ndarray, face: np.ndarray, present: np.ndarray, colour) -> None:
    size = tile.shape[0]
    points = np.round(np.clip(face[:, :2], -1.0, 2.0) * (size - 1)).astype(np.int32)
    for a, b in layout.FACE_BONES:
        if present[a] and present[b]:
            cv2.line(tile, tuple(points[a]), tuple(points[b]), colour, 1, cv2.LINE_AA)
    for point, ok in zip(points, present):
        if ok:
            cv2.circle(tile, tuple(point), max(1, size // 100), colour, -1, cv2.LINE_AA)


def face_panel(original, reconstruction, size: int = 192, columns: int = 4) -> np.ndarray:
    """Tiles of the original face landmarks (green) with the reconstruction (red) drawn over them.

    Coordinates are the model's [0, 1]-normalised ones. Points missing in the original (confidence 0)
    are drawn in neither, so a tile shows exactly what the loss and NME compare.
    """
    original = _to_numpy(original)
    reconstruction = _to_numpy(reconstruction)
    expected = (layout.N_FACE, layout.N_CHANNELS)
    for name, array in (("original", original), ("reconstruction", reconstruction)):
        if array.ndim != 3 or array.shape[1:] != expected:
            raise ValueError(f"{name}: expected (N, {expected[0]}, {expected[1]}), got {array.shape}")
    if len(original) != len(reconstruction):
        raise ValueError(f"original has {len(original)} samples, reconstruction {len(reconstruction)}")
    tiles = []
    for orig, recon in zip(original, reconstruction):
        tile = np.zeros((size, size, 3), np.uint8)
        present = orig[:, 2] > 0
        _draw_face(tile, orig, present, ORIGINAL_COLOUR)
        _draw_face(tile, recon, present, RECONSTRUCTION_COLOUR)
        tiles.append(tile)
    columns = max(1, min(columns, len(tiles)))
    while len(tiles) % columns:
        tiles.append(np.zeros((size, size, 3), np.uint8))
    rows = [_hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    header = np.zeros((HEADER_PX, rows[0].shape[1], 3), np.uint8)
    cv2.putText(header, "original", (4, HEADER_PX - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ORIGINAL_COLOUR, 1,
                cv2.LINE_AA)
    cv2.putText(header, "reconstruction", (90, HEADER_PX - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                RECONSTRUCTION_COLOUR, 1, cv2.LINE_AA)
    return np.concatenate([header, _vstack(rows)], axis=0)
