"""Figures for docs/data.md: generated signers (``signpose.synth``) against the real samples.

    python -m tools.synth_figures [--real FOLDER] [--out docs/images] [--videos 200]

Writes ``synth_vs_real_stats.png`` (histograms of the per-region shape statistics of
:mod:`signpose.synth.stats` and of the missing-hand run lengths: generated filled, each real file an
outline; the real files default to the ones in ``signpose/resources/real_signers``) and
``synth_vs_real_faces.png`` (mean faces aligned on the eyes: the generated iBUG-68 and
MediaPipe-68 conventions beside the real files). Drawn with OpenCV; deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import glob
import os

import cv2
import numpy as np

from signpose import layout
from signpose.io import read_keypoints
from signpose.resources import REAL_SIGNERS
from signpose.synth import faces, generate_signer_frames
from signpose.synth.stats import FACE_STATS, face_stats, hand_span, missing_hand_runs

PANEL_W, PANEL_H, MARGIN = 360, 220, 30
GENERATED = (200, 170, 120)  # BGR
REAL_COLOURS = [(40, 110, 230), (60, 170, 60), (170, 60, 170), (30, 30, 200)]
RANGES = {"face_aspect": (0.5, 1.5), "eye_span": (0.4, 0.9), "mouth_width": (0.3, 0.9), "nose_length": (0.3, 0.8),
          "brow_height": (0.0, 0.5), "jaw_squareness": (0.5, 1.0), "head_turn": (-0.4, 0.4), "hand_span": (0.0, 3.0),
          "missing_hand_run": (0.5, 40.5)}


def _text(img, text, org, scale=0.45, colour=(0, 0, 0)):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _panel(name: str, generated: np.ndarray, real: dict[str, np.ndarray], bins: int = 30) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    lo, hi = RANGES[name]
    edges = np.linspace(lo, hi, bins + 1)
    x0, x1, y0, y1 = MARGIN, PANEL_W - 10, 25, PANEL_H - MARGIN
    gen_hist = np.histogram(np.clip(generated, lo, hi), edges)[0] / max(len(generated), 1)
    real_hists = {k: np.histogram(np.clip(v, lo, hi), edges)[0] / max(len(v), 1) for k, v in real.items()}
    xs = np.linspace(x0, x1, bins + 1).astype(int)
    scale = (y1 - y0) / max(gen_hist.max(), 1e-9)  # each histogram is scaled to its own peak
    for i, value in enumerate(gen_hist):
        cv2.rectangle(img, (xs[i], int(y1 - value * scale)), (xs[i + 1] - 1, y1), GENERATED, -1)
    for hist, colour in zip(real_hists.values(), REAL_COLOURS):
        scale = (y1 - y0) / max(hist.max(), 1e-9)
        pts = [(xs[0], y1)]
        for i, value in enumerate(hist):
            y = int(y1 - value * scale)
            pts += [(xs[i], y), (xs[i + 1], y)]
        pts.append((xs[-1], y1))
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
    cv2.line(img, (x0, y1), (x1, y1), (0, 0, 0), 1)
    _text(img, name, (x0, 16), 0.5)
    _text(img, f"{lo:g}", (x0 - 10, y1 + 18), 0.4)
    _text(img, f"{hi:g}", (x1 - 30, y1 + 18), 0.4)
    return img


def _legend(real_names: list[str]) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    cv2.rectangle(img, (20, 30), (50, 45), GENERATED, -1)
    _text(img, "generated (signpose.synth)", (60, 43))
    for i, (name, colour) in enumerate(zip(real_names, REAL_COLOURS)):
        y = 75 + 28 * i
        cv2.line(img, (20, y - 5), (50, y - 5), colour, 2, cv2.LINE_AA)
        _text(img, f"real: {name}", (60, y))
    _text(img, "frames (runs) per bin, each histogram", (20, 75 + 28 * len(real_names) + 10), 0.4, (80, 80, 80))
    _text(img, "scaled to its own peak; values clipped", (20, 75 + 28 * len(real_names) + 28), 0.4, (80, 80, 80))
    _text(img, "to the axis range", (20, 75 + 28 * len(real_names) + 46), 0.4, (80, 80, 80))
    return img


def _grid(panels: list[np.ndarray], columns: int = 3) -> np.ndarray:
    blank = np.full_like(panels[0], 255)
    panels = panels + [blank] * (-len(panels) % columns)
    rows = [np.concatenate(panels[i:i + columns], axis=1) for i in range(0, len(panels), columns)]
    return np.concatenate(rows, axis=0)


def _canonical_mean(face_xy: np.ndarray) -> np.ndarray:
    """Mean (68, 2) face after moving the eye midpoint to 0, the eyes level and 1 = outer eye span."""
    left, right = face_xy[:, 36:42].mean(1), face_xy[:, 42:48].mean(1)
    mid, d = (left + right) / 2, right - left
    angle = -np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    span = np.linalg.norm(face_xy[:, 45] - face_xy[:, 36], axis=-1)
    return (np.einsum("nij,npj->npi", rot, face_xy - mid[:, None]) / span[:, None, None]).mean(0)


def _faces_figure(shapes: dict[str, np.ndarray]) -> np.ndarray:
    size = 300
    tiles = []
    for (label, shape), colour in zip(shapes.items(), [GENERATED, (120, 120, 220)] + REAL_COLOURS):
        img = np.full((int(size * 0.8) + 30, size, 3), 255, np.uint8)
        pts = shape * size / 3.2 + [size / 2, size * 0.2]
        for a, b in layout.FACE_BONES:
            cv2.line(img, tuple(np.int32(pts[a])), tuple(np.int32(pts[b])), colour, 2, cv2.LINE_AA)
        for p in pts[0:17]:
            cv2.circle(img, tuple(np.int32(p)), 3, (0, 0, 0), -1, cv2.LINE_AA)
        _text(img, label, (8, int(size * 0.8) + 20), 0.45)
        tiles.append(img)
    return _grid(tiles, columns=len(tiles))


def real_frames(folder: str) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.pose"))):
        name = os.path.basename(path).removesuffix(".pose")
        out[name[:22]] = read_keypoints(path)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=REAL_SIGNERS)  # the real recordings that ship with the package
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    real = real_frames(args.real)
    if not real:
        parser.error(f"no .pose files in {args.real}")
    gen = generate_signer_frames(args.videos, 48, seed=args.seed)
    gen_stats = face_stats(gen.keypoints)
    gen_stats["hand_span"] = hand_span(gen.keypoints)
    gen_stats["missing_hand_run"] = missing_hand_runs(gen.keypoints, gen.video_id)
    real_stats = {}
    for name, frames in real.items():
        stats = face_stats(frames.keypoints)
        stats["hand_span"] = hand_span(frames.keypoints)
        stats["missing_hand_run"] = missing_hand_runs(frames.keypoints, frames.video_id)
        real_stats[name] = stats
    names = [*FACE_STATS, "hand_span", "missing_hand_run"]
    panels = [_panel(n, gen_stats[n], {k: v[n] for k, v in real_stats.items()}) for n in names]
    os.makedirs(args.out, exist_ok=True)
    cv2.imwrite(os.path.join(args.out, "synth_vs_real_stats.png"), _grid(panels + [_legend(list(real))]))
    conventions = np.array([faces.face_identity(args.seed, v)["convention"] for v in range(args.videos)])
    per_frame = np.repeat(conventions, 48)
    shapes = {f"generated {c} (mean)": _canonical_mean(gen.keypoints[per_frame == c][:, layout.FACE, :2])
              for c in faces.CONVENTIONS}
    shapes.update({name: _canonical_mean(f.keypoints[(f.keypoints[:, layout.FACE, 2] > 0).all(1)][:, layout.FACE, :2])
                   for name, f in real.items()})
    cv2.imwrite(os.path.join(args.out, "synth_vs_real_faces.png"), _faces_figure(shapes))
    for n in names:
        real_means = ", ".join(f"{k} {v[n].mean():.3f}" for k, v in real_stats.items() if len(v[n]))
        print(f"{n:18s} generated {gen_stats[n].mean():.3f} +- {gen_stats[n].std():.3f}   real: {real_means}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
