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

from signpose import layout, ranges
from signpose.cli.common import add_flag, int_at_least
from signpose.errors import UserError
from signpose.io.frames import SPLITS, KeypointFrames
from signpose.io.limits import DEFAULT_MAX_FRAMES, DEFAULT_MAX_REJECTED, MAX_FRAMES_ENV, MAX_REJECTED_ENV
from signpose.io.readers import read_keypoints

log = logging.getLogger(__name__)
_CHUNK = 16384

ANIMATIONS = ("gif", "mp4", "none")
SUFFIXES = ".pkl .npz .npy .pose .json .pts"


def add_parser(subparsers) -> None:
    add_inspect_parser(subparsers)
    add_render_parser(subparsers)


def _frame_size_arg(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--frame_size", type=int_at_least(1), nargs=2, metavar=("WIDTH", "HEIGHT"), default=None,
             help="pixel frame size for sources without one (OpenPose JSON, .pts without image); "
                  "overrides a .pose header")
    add_read_limit_args(parser)


def share(text: str) -> float:
    """argparse ``type`` for a share of frames: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def add_read_limit_args(parser: argparse.ArgumentParser) -> None:
    """``--max_frames`` and ``--max_rejected``: the keypoint reader's ceilings (signpose.io.limits)."""
    add_flag(parser, "--max_frames", type=int_at_least(1), default=None, metavar="N",
             help=f"refuse inputs declaring more frames than this, before reading them (default: "
                  f"{DEFAULT_MAX_FRAMES:,}, or {MAX_FRAMES_ENV})")
    add_flag(parser, "--max_rejected", type=share, default=None, metavar="SHARE",
             help=f"fail when validation rejects more than this share of the frames for outlier coordinates "
                  f"(default: {DEFAULT_MAX_REJECTED:g}, or {MAX_REJECTED_ENV})")


def read_input(args) -> KeypointFrames:
    """``args.file`` read with the command's --frame_size / --max_frames / --max_rejected."""
    return read_keypoints(args.file, frame_size=args.frame_size, max_frames=args.max_frames,
                          max_rejected=args.max_rejected)


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
    add_flag(parser, "--image_size", type=ranges.RENDER_IMAGE_SIZE, default=256,
             help=f"image side in pixels, {ranges.RENDER_IMAGE_SIZE.describe()} (default: 256, the training size)")
    parser.add_argument("--thickness", type=ranges.THICKNESS, default=0,
                        help="line thickness in pixels (default: 0 = scaled to --image_size)")
    parser.add_argument("--joints", action="store_true", help="draw a dot on every present point")
    add_flag(parser, "--no_antialias", action="store_true", help="hard-edged lines (default: anti-aliased)")
    add_flag(parser, "--confidence_scaled", action="store_true", help="dim bones by their confidence")
    parser.add_argument("--split", choices=SPLITS, default=None, help="only this split (default: all)")
    parser.add_argument("--video", default=None, help="only this video id (default: all)")
    parser.add_argument("--limit", type=int_at_least(0), default=0, help="at most this many frames (default: 0 = all)")
    parser.add_argument("--animation", choices=ANIMATIONS, default="gif",
                        help="one animation per video with more than one frame (default: gif)")
    parser.add_argument("--fps", type=ranges.FPS, default=25.0,
                        help=f"animation frame rate, {ranges.FPS.describe()} (default: 25)")
    parser.add_argument("--workers", type=ranges.WORKERS, default=1, help="render processes (default: 1)")
    _frame_size_arg(parser)
    parser.set_defaults(func=run_render)
    return parser


# --- inspect -------------------------------------------------------------------------------------

def _part_counts(kp: np.ndarray) -> tuple[dict, list]:
    """Per part: frames missing / partial, points missing, mean confidence of present points, and the
    x/y extent of present points -- in blocks, so a large file needs no full-size temporaries."""
    counts = {name: [0, 0, 0, []] for name in layout.PARTS}
    extent = [np.inf, -np.inf, np.inf, -np.inf]
    for start in range(0, len(kp), _CHUNK):
        block = kp[start:start + _CHUNK]
        present = block[..., 2] > 0
        for name in layout.PARTS:
            sl = layout.PART_SLICES[name]
            p = present[:, sl]
            seen, whole = p.any(1), p.all(1)
            entry = counts[name]
            entry[0] += int((~seen).sum())
            entry[1] += int((seen & ~whole).sum())
            entry[2] += int((~p).sum())
            if p.any():
                entry[3].append((block[:, sl, 2][p].mean(), int(p.sum())))
        if present.any():
            for axis in (0, 1):
                values = block[..., axis][present]
                extent[2 * axis] = min(extent[2 * axis], float(values.min()))
                extent[2 * axis + 1] = max(extent[2 * axis + 1], float(values.max()))
    return counts, extent


def _mean(parts: list) -> float:
    if len(parts) == 1:
        return float(parts[0][0])
    total = sum(n for _, n in parts)
    return float(sum(float(m) * n for m, n in parts) / total) if total else 0.0


def summarize(frames: KeypointFrames) -> dict:
    """Numbers `inspect` prints: counts, per-part presence, coordinate extent and the validation summary."""
    n = len(frames)
    counts, extent = _part_counts(frames.keypoints)
    parts = {name: {"points": layout.PART_SLICES[name].stop - layout.PART_SLICES[name].start,
                    "frames_missing": c[0] / n, "frames_partial": c[1] / n,
                    "points_missing": c[2] / (n * (layout.PART_SLICES[name].stop - layout.PART_SLICES[name].start)),
                    "mean_confidence": _mean(c[3]) if c[3] else 0.0}
             for name, c in counts.items()}
    _, per_video = np.unique(frames.video_id, return_counts=True)
    summary = {
        "source": frames.source, "format": frames.format, "frames": n, "videos": len(per_video),
        "splits": frames.split_counts(),
        "frames_per_video": {"min": int(per_video.min()), "max": int(per_video.max())},
        "parts": parts,
        "x_range": extent[0:2],
        "y_range": extent[2:4],
    }
    if frames.report is not None:
        summary["validation"] = frames.report.to_dict()
    return summary


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
    if "validation" in s:
        v = s["validation"]
        lines.append(f"checked: {v['frames']} frames read, {v['rejected']} rejected (outlier coordinates), "
                     f"{v['dropped_empty']} dropped (nothing detected), {v['off_frame_points']} points outside the "
                     "frame set missing")
        for f in v["files"][:20]:
            first = f.get("first_rejected") or {}
            if f["rejected"]:
                lines.append(f"rejected: {f['file']}: {f['rejected']} of {f['frames']} frames; first: sample "
                             f"{first.get('sample')}, field '{first.get('field')}' point {first.get('point')} "
                             f"{first.get('axis')} = {first.get('value', float('nan')):.6g}")
    extent = max(s["x_range"][1] - s["x_range"][0], s["y_range"][1] - s["y_range"][0])
    if extent < 0.35:
        lines.append(f"note:    the keypoints span only {extent:.0%} of the frame; if the frame size in the "
                     "file is wrong, pass --frame_size W H")
    return "\n".join(lines)


def run_inspect(args) -> int:
    frames = read_input(args)
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

    frames = read_input(args)
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


def frame_file_names(video_ids, frame_indices, suffix: str = ".png") -> list[str]:
    """One flat file name per frame, ``<video name>_<frame index>.png`` (``signpose predict``): the video
    names of :func:`video_names` (distinct for ids that clean alike, such as ``a b`` and ``a_b``), and a
    ``~2``, ``~3`` ... for a (video, frame index) pair seen again, so no file overwrites another."""
    videos = [str(v) for v in video_ids]
    names = video_names(list(dict.fromkeys(videos)))
    seen: dict[tuple[str, int], int] = {}
    out = []
    for video, index in zip(videos, frame_indices):
        key = (video, int(index))
        seen[key] = seen.get(key, 0) + 1
        repeat = f"~{seen[key]}" if seen[key] > 1 else ""
        out.append(f"{names[video]}_{int(index):06d}{repeat}{suffix}")
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
