"""``signpose inspect FILE`` and ``signpose render FILE --out DIR``.

``add_parser(subparsers)`` registers both (``add_inspect_parser`` / ``add_render_parser`` one each);
every subcommand sets ``func``: ``args.func(args)`` runs it and returns the exit code. Bad input
raises the reader's :class:`~signpose.io.errors.KeypointFormatError` (a user error: ``signpose``
prints it as one line and exits 2).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os

import numpy as np

from signpose import layout
from signpose.cli.common import add_flag, int_at_least
from signpose.errors import UserError
from signpose.io.frames import SPLITS, KeypointFrames
from signpose.io.readers import read_keypoints

log = logging.getLogger(__name__)

ANIMATIONS = ("gif", "mp4", "none")
SUFFIXES = ".pkl .npz .npy .pose .json .pts"


def add_parser(subparsers) -> None:
    add_inspect_parser(subparsers)
    add_render_parser(subparsers)


def _frame_size_arg(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--frame_size", type=int_at_least(1), nargs=2, metavar=("WIDTH", "HEIGHT"), default=None,
             help="pixel frame size for sources without one (OpenPose JSON, .pts without image); "
                  "overrides a .pose header")


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("inspect", help="print what a keypoint file holds",
                                   description="Read and validate a keypoint file/folder and print its format, "
                                               "frames, videos, splits and per-part missing rates.")
    parser.add_argument("file", help=f"keypoint file or folder ({SUFFIXES})")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    _frame_size_arg(parser)
    parser.set_defaults(func=run_inspect)
    return parser


def add_render_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("render", help="render a keypoint file's frames to PNGs (+ GIF/mp4 per video)",
                                   description="Render every frame as the skeleton image the model is trained on: "
                                               "OUT/<video>/<frame>.png and OUT/<video>.gif (or .mp4).")
    parser.add_argument("file", help=f"keypoint file or folder ({SUFFIXES})")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    add_flag(parser, "--image_size", type=int_at_least(1), default=256,
             help="image side in pixels (default: 256, the training size)")
    parser.add_argument("--thickness", type=int_at_least(0), default=0,
                        help="line thickness in pixels (default: 0 = scaled to --image_size)")
    parser.add_argument("--joints", action="store_true", help="draw a dot on every present point")
    add_flag(parser, "--no_antialias", action="store_true", help="hard-edged lines (default: anti-aliased)")
    add_flag(parser, "--confidence_scaled", action="store_true", help="dim bones by their confidence")
    parser.add_argument("--split", choices=SPLITS, default=None, help="only this split (default: all)")
    parser.add_argument("--video", default=None, help="only this video id (default: all)")
    parser.add_argument("--limit", type=int_at_least(0), default=0, help="at most this many frames (default: 0 = all)")
    parser.add_argument("--animation", choices=ANIMATIONS, default="gif",
                        help="one animation per video with more than one frame (default: gif)")
    parser.add_argument("--fps", type=float, default=25.0, help="animation frame rate (default: 25)")
    parser.add_argument("--workers", type=int_at_least(1), default=1, help="render processes (default: 1)")
    _frame_size_arg(parser)
    parser.set_defaults(func=run_render)
    return parser


# --- inspect -------------------------------------------------------------------------------------

def summarize(frames: KeypointFrames) -> dict:
    """Numbers `inspect` prints: counts, per-part presence and coordinate extent."""
    kp = frames.keypoints
    present = kp[..., 2] > 0
    parts = {}
    for name in layout.PARTS:
        sl = layout.PART_SLICES[name]
        p = present[:, sl]
        parts[name] = {
            "points": sl.stop - sl.start,
            "frames_missing": float((~p.any(1)).mean()),        # the whole part absent
            "frames_partial": float((p.any(1) & ~p.all(1)).mean()),
            "points_missing": float((~p).mean()),
            "mean_confidence": float(kp[:, sl, 2][p].mean()) if p.any() else 0.0,
        }
    xy = kp[..., :2][present]
    videos = frames.videos()
    return {
        "source": frames.source, "format": frames.format, "frames": len(frames), "videos": len(videos),
        "splits": frames.split_counts(),
        "frames_per_video": {"min": int(min(np.sum(frames.video_id == v) for v in videos)),
                             "max": int(max(np.sum(frames.video_id == v) for v in videos))},
        "parts": parts,
        "x_range": [float(xy[:, 0].min()), float(xy[:, 0].max())],
        "y_range": [float(xy[:, 1].min()), float(xy[:, 1].max())],
    }


def format_summary(s: dict) -> str:
    lines = [f"file:    {s['source']}", f"format:  {s['format']}",
             f"frames:  {s['frames']} in {s['videos']} video(s) "
             f"({s['frames_per_video']['min']}-{s['frames_per_video']['max']} frames each)",
             "splits:  " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()),
             f"extent:  x {s['x_range'][0]:.3f}..{s['x_range'][1]:.3f}, "
             f"y {s['y_range'][0]:.3f}..{s['y_range'][1]:.3f} (normalised [0, 1])",
             f"{'part':<11} {'points':>6} {'part missing':>13} {'partial':>8} {'points missing':>15} {'mean conf':>10}"]
    for name, p in s["parts"].items():
        lines.append(f"{name:<11} {p['points']:>6} {p['frames_missing']:>12.1%} {p['frames_partial']:>8.1%} "
                     f"{p['points_missing']:>15.1%} {p['mean_confidence']:>10.3f}")
    extent = max(s["x_range"][1] - s["x_range"][0], s["y_range"][1] - s["y_range"][0])
    if extent < 0.35:
        lines.append(f"note:    the keypoints span only {extent:.0%} of the frame; if the frame size in the "
                     "file is wrong, pass --frame_size W H")
    return "\n".join(lines)


def run_inspect(args) -> int:
    frames = read_keypoints(args.file, frame_size=args.frame_size)
    summary = summarize(frames)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# --- render --------------------------------------------------------------------------------------

def _png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write_animation(path: str, images: np.ndarray, fps: float, kind: str) -> None:
    from signpose.io.atomic import atomic_write_bytes

    if kind == "gif":
        from PIL import Image

        buffer = io.BytesIO()
        first, *rest = [Image.fromarray(im) for im in images]
        first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=int(round(1000 / fps)),
                   loop=0)
        atomic_write_bytes(path, buffer.getvalue())
        return
    import cv2

    tmp = path + ".partial.mp4"
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, images.shape[2:0:-1], False)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4 here; use --animation gif")
    try:
        for im in images:
            writer.write(im)
    finally:
        writer.release()
    os.replace(tmp, path)


def run_render(args) -> int:
    from tqdm import tqdm

    from signpose.io.atomic import atomic_write_bytes
    from signpose.render import RenderSettings, render_frames

    frames = read_keypoints(args.file, frame_size=args.frame_size)
    if args.split:
        frames = frames.by_split(args.split)
    if args.video:
        frames = frames.subset(frames.video_id == args.video)
    if args.limit:
        frames = frames.subset(np.arange(min(args.limit, len(frames))))
    if len(frames) == 0:
        raise UserError(f"{args.file}: no frames left after --split/--video/--limit; "
                        f"`signpose inspect {args.file}` shows its splits")
    plan = render_plan(frames, args.out, args.animation, source=args.file)  # every name checked before rendering
    settings = RenderSettings(image_size=args.image_size, thickness=args.thickness, antialias=not args.no_antialias,
                              joints=args.joints, confidence_scaled=args.confidence_scaled)
    with tqdm(total=len(frames), desc="render", unit="frame", disable=None) as bar:
        images = render_frames(frames.keypoints, settings, workers=args.workers, progress=bar.update)
    os.makedirs(args.out, exist_ok=True)
    n_png, animations = 0, []
    for idx, pngs, animation in plan:
        for i, path in zip(idx, pngs):
            atomic_write_bytes(path, _png_bytes(images[i]))
            n_png += 1
        if animation:
            _write_animation(animation, images[idx], args.fps, args.animation)
            animations.append(animation)
    print(f"wrote {n_png} PNGs for {len(plan)} video(s) under {args.out}"
          + (f" and {len(animations)} {args.animation} animation(s)" if animations else ""))
    return 0


# --- output names: every file inside --out, one file per frame --------------------------------------

MAX_NAME_CHARS = 100


def _safe_name(name: str) -> str:
    """A video id as one file name: letters, digits, ``-_.`` only, never ``.``/``..``/hidden/empty,
    at most :data:`MAX_NAME_CHARS` characters (a long id keeps a hash of the whole id)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned  # '..' and '.' are folders already; '.x' would be hidden
    if len(cleaned) > MAX_NAME_CHARS:
        cleaned = f"{cleaned[:MAX_NAME_CHARS - 9]}~{_digest(name)}"
    return cleaned or "video"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def video_names(videos: list[str], animation: str = "none") -> dict[str, str]:
    """Video id -> its folder name under --out: :func:`_safe_name`, made unique. Ids that clean to
    the same name (``a b`` and ``a_b``), also ignoring case, or a folder that would be another
    video's animation file (``a.gif`` and ``a``'s animation) get ``~`` and a hash of the id; the
    first video (in file order) keeps the plain name."""
    taken: set[str] = set()
    out = {}
    for video in videos:
        name = _safe_name(video)
        candidates = [name, f"{name[:MAX_NAME_CHARS - 9]}~{_digest(video)}",
                      *(f"{name[:MAX_NAME_CHARS - 12]}~{_digest(video)}~{k}" for k in range(2, 100))]
        for candidate in candidates:
            keys = {candidate.casefold()} | ({f"{candidate}.{animation}".casefold()} if animation != "none" else set())
            if not keys & taken:
                break
        taken |= keys
        out[video] = candidate
    return out


def render_plan(frames: KeypointFrames, out: str, animation: str, source: str = "") -> list:
    """Per video: (frame positions in frame order, their PNG paths, the animation path or None).

    Refuses, before anything is rendered or written, a video holding the same frame index twice
    (its PNGs would overwrite each other); every path is checked to lie inside ``out``."""
    root = os.path.abspath(out)
    names = video_names(frames.videos(), animation)
    plan = []
    for video, name in names.items():
        idx = np.flatnonzero(frames.video_id == video)
        idx = idx[np.argsort(frames.frame_index[idx], kind="stable")]
        index = frames.frame_index[idx]
        repeated = index[1:][index[1:] == index[:-1]]
        if len(repeated):
            raise UserError(f"{source or frames.source}: video {video!r:.80} holds frame index {int(repeated[0])} "
                            f"more than once ({len(repeated)} repeats); render names each PNG by its frame index, "
                            "so pass --split or --video to render one of them, or fix the file's frame_index")
        folder = os.path.join(root, name)
        pngs = [os.path.join(folder, f"{int(i):06d}.png") for i in index]
        movie = os.path.join(root, f"{name}.{animation}") if animation != "none" and len(idx) > 1 else None
        for path in (folder, movie):
            if path and os.path.dirname(path) != root:
                raise AssertionError(f"render would write {path} outside {root}")  # a bug: names are checked
        plan.append((idx, pngs, movie))
    return plan
