"""Render throughput: this project's renderer vs pose-format's PoseVisualizer, same frames, 256x256.

    .venv/bin/python bench/render_throughput.py [--frames 512] [--batch-frames 8192] [--repeats 15] [--quick]
        [--baseline-rev GIT_REV]   # also time signpose/render.py as it was at GIT_REV (before/after)

Inputs (each drawn by both renderers from the same source frames):

- the real samples in ../shared/data/real/*.pose (skipped when absent): the Holistic files are drawn
  by pose-format after ``reduce_holistic`` (pose, face contours, hands: 178 points), the OpenPose file
  as it is (137 points); ours reads each file into the 143-point layout (signpose.io.read_keypoints);
- generated signer frames (signpose.synth), written as an OpenPose-137 .pose for pose-format (the same
  points as our layout).

pose-format draws on a 256x256 canvas (the source coordinates are letterboxed into it exactly as our
reader normalises them), black background, its default thickness (round(sqrt(H*W)/150) = 2, same as
ours). ``PoseVisualizer`` always anti-aliases (colour, LINE_AA, a dot per joint); it has no
non-anti-aliased mode (``FastAndUglyPoseVisualizer`` passes float coordinates to ``cv2.line``, which
OpenCV 5 refuses, so it is not measured). Ours draws one grey channel with per-part intensities, with
and without anti-aliasing.

Per core = frames per second of this process's CPU time (time.process_time), which other load on
a shared machine does not inflate; wall-clock frames/s are shown next to it. The batch renderer
(render_frames(..., workers=N)) is timed by wall clock, and its CPU time includes the worker
processes (RUSAGE_CHILDREN). The renderers compared on one input take turns repeat by repeat, in a
rotating order (A B C, B C A, ...), so a slow spell of the machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import collections

import common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
from common import Report, add_recording_arguments, fmt, measure_side_by_side, usable_cores

REAL_DIR = common.REPO_ROOT.parent / "shared" / "data" / "real"
SIZE = 256


def letterbox_pose(pose, size: int = SIZE):
    """A copy of a pose-format Pose moved onto a size x size canvas (aspect kept, centred)."""
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderDimensions

    width, height = pose.header.dimensions.width, pose.header.dimensions.height
    scale = size / max(width, height)
    data = np.asarray(pose.body.data.filled(0), dtype=np.float32).copy()
    data[..., 0] = data[..., 0] * scale + (size - width * scale) / 2
    data[..., 1] = data[..., 1] * scale + (size - height * scale) / 2
    if data.shape[-1] > 2:
        data[..., 2] *= scale
    confidence = np.asarray(pose.body.confidence, dtype=np.float32)
    data[confidence <= 0] = 0
    header = PoseHeader(pose.header.version, PoseHeaderDimensions(size, size, 0), pose.header.components,
                        is_bbox=pose.header.is_bbox)
    return Pose(header, NumPyPoseBody(pose.body.fps, data, confidence))


def real_inputs():
    """[(name, our (N,143,3) keypoints, pose-format Pose on the 256 canvas)] for the real samples."""
    from pose_format import Pose
    from pose_format.utils.generic import reduce_holistic

    from signpose.io import read_keypoints

    inputs = []
    for path in sorted(REAL_DIR.glob("*.pose")):
        ours = read_keypoints(str(path)).keypoints
        pose = Pose.read(path.read_bytes())
        names = {c.name for c in pose.header.components}
        label = path.stem[:24]
        if "FACE_LANDMARKS" in names:
            pose = reduce_holistic(pose)
            label += " (Holistic, reduced)"
        else:
            label += " (OpenPose 137)"
        inputs.append((label, ours, letterbox_pose(pose)))
    return inputs


def generated_input(n_frames: int):
    from pose_format import Pose

    from signpose.io.pose_files import openpose_pose_bytes
    from signpose.synth import generate_signer_frames

    per_video = 64
    frames = generate_signer_frames(n_videos=-(-n_frames // per_video), frames_per_video=per_video, seed=0)
    kp = frames.keypoints[:n_frames]
    pose = Pose.read(openpose_pose_bytes(kp, SIZE, SIZE))
    return (f"generated, {len(kp)} frames (OpenPose 137 for pose-format)", kp, pose)


def _render_share(job) -> None:
    keypoints, settings = job
    from signpose.render import render_frames

    render_frames(keypoints, settings)


def _render_independently(keypoints, settings, workers: int) -> None:
    """The frames split over ``workers`` forked processes that render into their own memory."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    shares = np.array_split(keypoints, workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        list(pool.map(_render_share, [(share, settings) for share in shares]))


def renderer_at(rev: str):
    """signpose/render.py as it was at git revision ``rev``, imported as a separate module."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    source = subprocess.run(["git", "show", f"{rev}:signpose/render.py"], cwd=common.REPO_ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = tempfile.NamedTemporaryFile("w", suffix=".py", prefix="render_at_", delete=False)
    with path:
        path.write(source)
    name = f"signpose_render_at_{rev}"
    spec = importlib.util.spec_from_file_location(name, path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=512,
                        help="generated frames (per-core table; short calls keep the turn-taking fine-grained)")
    parser.add_argument("--batch-frames", type=int, default=8192, help="frames for the multi-core table")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-rev", default=None,
                        help="git revision whose signpose/render.py is timed too (anti-aliased), e.g. a commit "
                             "before an optimisation; its pixels are checked to equal today's")
    parser.add_argument("--min-seconds", type=float, default=0.05,
                        help="each repeat renders the input enough times to take about this long")
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.batch_frames, args.repeats, args.min_seconds = 64, 256, 1, 0.0

    import cv2
    from pose_format.pose_visualizer import PoseVisualizer

    from signpose.render import RenderSettings, render_frames

    cv2.setNumThreads(1)  # per-core figures: OpenCV's own thread pool off
    report = Report("Render throughput (256x256, frames/s)", args)
    inputs = real_inputs() if REAL_DIR.is_dir() else []
    if not inputs:
        report.note(f"real samples not found in {REAL_DIR}: real rows skipped")
    inputs.append(generated_input(args.frames))

    baseline_module = renderer_at(args.baseline_rev) if args.baseline_rev else None
    ours_aa = RenderSettings(image_size=SIZE, antialias=True)
    ours_noaa = RenderSettings(image_size=SIZE, antialias=False)

    def repeated(fn, n):
        """fn repeated enough times that one call lasts about --min-seconds."""
        import time
        t0 = time.process_time()
        fn()
        loops = max(1, int(np.ceil(args.min_seconds / max(time.process_time() - t0, 1e-4))))
        return (lambda: [fn() for _ in range(loops)]), n * loops

    per_core = report.table(
        "One process, frames/s per core (CPU time) and wall clock; ratio = ours / pose-format PoseVisualizer",
        ["input", "frames", "renderer", "frames/s per core (CPU)", "frames/s wall", "wall spread",
         "ratio vs PoseVisualizer (CPU)"])
    for label, kp, pose in inputs:
        n = len(kp)
        visualizer = PoseVisualizer(pose)
        candidates = [
            # Frames are consumed one by one (not kept): the drawing is measured, not holding N frames.
            ("pose-format PoseVisualizer (colour, AA)",
             lambda v=visualizer: collections.deque(v.draw(background_color=(0, 0, 0)), maxlen=0)),
            ("signpose render_frames, antialias=True", lambda k=kp: render_frames(k, ours_aa)),
            ("signpose render_frames, antialias=False", lambda k=kp: render_frames(k, ours_noaa)),
        ]
        if baseline_module is not None:
            old_settings = baseline_module.RenderSettings(image_size=SIZE, antialias=True)
            if not np.array_equal(baseline_module.render_frames(kp, old_settings), render_frames(kp, ours_aa)):
                report.note(f"{label}: the renderer at {args.baseline_rev} draws different pixels")
            candidates.append((f"signpose render_frames at {args.baseline_rev}, antialias=True",
                               lambda k=kp: baseline_module.render_frames(k, old_settings)))
        # Candidates take turns repeat by repeat, so the ratios compare like with like on a busy machine.
        runs = {name: repeated(fn, n) for name, fn in candidates}
        timings = measure_side_by_side({name: fn for name, (fn, _) in runs.items()}, repeats=args.repeats,
                                       items={name: frames for name, (_, frames) in runs.items()})
        baseline = None
        for name, timing in timings.items():
            if baseline is None:
                baseline = timing.per_s_cpu
            per_core.add(label, n, name, fmt(timing.per_s_cpu), fmt(timing.per_s_wall), timing.spread,
                         f"{timing.per_s_cpu / baseline:.1f}x")
            print(f"{label}: {name}: {timing.per_s_cpu:,.0f} frames/s per core", flush=True)

    # Multi-process batch renderer on generated frames.
    from signpose.synth import generate_signer_frames

    per_video = 64
    kp = generate_signer_frames(n_videos=-(-args.batch_frames // per_video), frames_per_video=per_video,
                                seed=1).keypoints[:args.batch_frames]
    cores = usable_cores()
    batch = report.table(
        f"Batch renderer render_frames(workers=N), {len(kp)} generated frames, antialias=True "
        f"({cores} usable cores)",
        ["run", "frames/s wall", "wall spread", "CPU s (incl. workers)", "frames/s per CPU-second",
         "speed-up vs 1 worker (wall)"])
    counts = sorted({1, 2, cores} | ({4} if cores >= 4 else set()))
    candidates = {f"render_frames(workers={w})": (lambda w=w: render_frames(kp, ours_aa, workers=w))
                  for w in counts}
    # This machine's ceiling: the same processes, each drawing its share into private memory and returning
    # nothing; what render_frames loses against it is its own overhead (shared output, pool start-up).
    for w in counts[1:]:
        candidates[f"ceiling: {w} forked processes drawing privately, nothing returned"] = \
            lambda w=w: _render_independently(kp, ours_aa, w)

    # The floor under any batch render: page-faulting the (N, S, S) output, which every worker count pays.
    def touch_output():
        out = np.zeros((len(kp), SIZE, SIZE), np.uint8)
        out[:, ::16, ::64] = 1  # one write per 4 KiB page
        return out

    candidates["output memory only (allocate and touch the N x 256 x 256 array, nothing drawn)"] = touch_output
    timings = measure_side_by_side(candidates, repeats=args.repeats, items=len(kp), children=True)
    base_wall = timings["render_frames(workers=1)"].per_s_wall
    for name, timing in timings.items():
        batch.add(name, fmt(timing.per_s_wall), timing.spread, fmt(timing.cpu_s, 2), fmt(timing.per_s_cpu),
                  f"{timing.per_s_wall / base_wall:.2f}x")
        print(f"{name}: {timing.per_s_wall:,.0f} frames/s wall", flush=True)
    report.note("pose-format has no non-anti-aliased PoseVisualizer mode; its FastAndUglyPoseVisualizer "
                "fails under OpenCV 5 (float coordinates to cv2.line) and is not measured")
    report.note("targets (issue 8): >= 10x pose-format per core and >= 5,000 frames/s per core")
    report.finish()


if __name__ == "__main__":
    main()
