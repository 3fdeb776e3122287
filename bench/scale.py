"""Scale: a PHOENIX-sized data set preprocessed into the local store, then one epoch of the training
data path streamed from it (no model step).

    .venv/bin/python bench/scale.py [--frames 827354] [--image-size 256] [--workers N] [--keep] [--quick]

1. **generate**: ``--frames`` synthetic signer frames (``signpose.synth.generate_signer_frames``, videos of
   116 frames, about the mean length of a PHOENIX-2014T training video), made in chunks of 256 videos
   written into one preallocated array, so generation holds one chunk besides the frames themselves;
2. **preprocess**: ``signpose.shards.write_dataset`` of those frames into a fresh local store
   ($SIGNPOSE_BENCH_DIR, default /tmp/signpose-bench) at ``--image-size`` px with the default
   RenderSettings (anti-aliased) and shards of 4,096 frames, ``workers`` = the usable cores
   (render + encode + write every shard, then the manifest): what the preprocess stage runs;
3. **stream**: one epoch of ``ShardStream(manifest, "train", task="skeleton")`` through the training
   stage's own DataLoader (``signpose.train.data_order.make_loader``: batch 16, the automatic number
   of workers), every batch taken and dropped.

Phases 1-2 run in one child process and phase 3 in another, so each one's peak RSS is its own. Each
row gives wall time, CPU time (the process plus its reaped descendants: the shard writers, the
DataLoader workers), frames/s wall and per core (frames / CPU seconds), the peak RSS of the phase's
main process and of its largest worker, and for preprocessing the bytes stored. Below the full size,
a note extrapolates linearly to 827,354 frames (an extrapolation, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import common  # noqa: F401
from common import Report, add_recording_arguments, fmt, usable_cores

PHOENIX_FRAMES = 827_354
FRAMES_PER_VIDEO = 116
CHUNK_VIDEOS = 256
WORK = Path(os.environ.get("SIGNPOSE_BENCH_DIR", "/tmp/signpose-bench"))
MIB = 2**20


# --- measured in the phase's own process ------------------------------------------------------------

def _usage() -> dict:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": time.perf_counter(), "cpu": own.ru_utime + own.ru_stime,
            "cpu_children": kids.ru_utime + kids.ru_stime}


def _spent(before: dict) -> dict:
    after = _usage()
    return {"wall_s": after["wall"] - before["wall"], "cpu_s": after["cpu"] - before["cpu"],
            "cpu_children_s": after["cpu_children"] - before["cpu_children"]}


class WorkerPeak(threading.Thread):
    """The largest VmHWM (peak RSS) of this process's descendants, polled from /proc while they run.

    Not RUSAGE_CHILDREN's ru_maxrss: a child forked from a large process and then exec'd (the fork
    server) keeps the parent's peak in ru_maxrss, which would report the main process's frames as a
    worker's. VmHWM belongs to the process's own memory map; a forked DataLoader worker's counts the
    pages it still shares with its parent."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            for pid in _descendants(os.getpid()):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue  # exited meanwhile
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _peaks(workers: WorkerPeak) -> dict:
    # ru_maxrss is in KiB on Linux.
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss_children": workers.stop()}


def _stop_forkserver() -> None:
    """The shard writers are children of multiprocessing's fork server, not of this process: stop and
    reap it so their CPU time and peak RSS reach this process's RUSAGE_CHILDREN."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # private, but the only way to reap it before interpreter exit


def generate_frames(n_frames: int):
    """``n_frames`` synthetic frames as one KeypointFrames, generated CHUNK_VIDEOS videos at a time."""
    import numpy as np

    from signpose import layout
    from signpose.io import KeypointFrames
    from signpose.synth import generate_signer_frames

    n_videos = -(-n_frames // FRAMES_PER_VIDEO)
    keypoints = np.empty((n_frames, layout.N_POINTS, layout.N_CHANNELS), np.float32)
    split = np.empty(n_frames, "<U5")
    video_id = np.empty(n_frames, "<U24")
    frame_index = np.empty(n_frames, np.int64)
    for chunk, first_video in enumerate(range(0, n_videos, CHUNK_VIDEOS)):
        # seed = chunk: every chunk has its own videos, ids ("synth-<chunk>-<video>") and 80/10/10 splits
        part = generate_signer_frames(min(CHUNK_VIDEOS, n_videos - first_video), FRAMES_PER_VIDEO, seed=chunk)
        lo = first_video * FRAMES_PER_VIDEO
        take = min(n_frames, lo + len(part.keypoints)) - lo
        keypoints[lo:lo + take] = part.keypoints[:take]
        split[lo:lo + take], video_id[lo:lo + take] = part.split[:take], part.video_id[:take]
        frame_index[lo:lo + take] = part.frame_index[:take]
    return KeypointFrames(keypoints=keypoints, split=split, video_id=video_id, frame_index=frame_index,
                          source="bench/scale.py", format="synthetic")


def phase_preprocess(args) -> dict:
    from signpose.render import RenderSettings
    from signpose.shards import write_dataset

    workers = WorkerPeak()
    workers.start()
    start = _usage()
    frames = generate_frames(args.frames)
    generated = _spent(start)
    start = _usage()
    manifest = write_dataset(frames, args.store, RenderSettings(image_size=args.image_size),
                             shard_size=args.shard_size, workers=args.workers, progress=False)
    _stop_forkserver()
    written = _spent(start)
    stored = sum(p.stat().st_size for p in Path(args.store).rglob("*") if p.is_file())
    return {"generate": generated, "preprocess": written, **_peaks(workers), "frames": len(frames.keypoints),
            "splits": manifest.splits, "shards": len(manifest.shards), "shard_format": manifest.shard_format,
            "shard_bytes": sum(s.bytes for s in manifest.shards), "stored_bytes": stored}


def phase_stream(args) -> dict:
    import torch

    from signpose.data import ShardStream
    from signpose.train.data_order import make_loader, resolve_num_workers

    torch.set_num_threads(1)
    workers = WorkerPeak()
    workers.start()
    start = _usage()
    stream = ShardStream(str(Path(args.store) / "manifest.json"), "train", task="skeleton")
    loader = make_loader(stream, batch_size=16, sampler=None, num_workers=-1, seed=0, pin_memory=False)
    frames = batches = 0
    for keypoints, images in loader:
        frames += len(keypoints)
        batches += 1
        del keypoints, images
    del loader
    return {"stream": _spent(start), **_peaks(workers), "frames": frames, "expected": stream.n_samples,
            "batches": batches, "workers": resolve_num_workers(-1)}


# --- the driver ---------------------------------------------------------------------------------------

def run_phase(phase: str, args) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--store", str(args.store), "--frames", str(args.frames),
               "--image-size", str(args.image_size), "--shard-size", str(args.shard_size), "--workers",
               str(args.workers)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_row(table, what: str, frames: int, spent: dict, peak: int, peak_workers: int | None, stored: str) -> None:
    cpu = spent["cpu_s"] + spent["cpu_children_s"]
    table.add(what, fmt(frames), f"{spent['wall_s']:,.1f}", f"{cpu:,.1f}", fmt(frames / spent["wall_s"]),
              fmt(frames / cpu) if cpu > 0 else "n/a", fmt(peak / MIB),
              "-" if peak_workers is None else fmt(peak_workers / MIB), stored)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=PHOENIX_FRAMES, help="frames to generate (default: PHOENIX)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=usable_cores(), help="shard writers (default: the cores)")
    parser.add_argument("--keep", action="store_true", help="keep the data set in the store afterwards")
    parser.add_argument("--phase", choices=["preprocess", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps((phase_preprocess if args.phase == "preprocess" else phase_stream)(args)), flush=True)
        return
    if args.quick:
        args.frames, args.shard_size = min(args.frames, 1200), 128
    args.store = WORK / f"scale-{args.frames}-{args.image_size}"
    shutil.rmtree(args.store, ignore_errors=True)  # a fresh store: preprocessing must not be a no-op
    report = Report(f"Scale: {args.frames:,} generated frames at {args.image_size} px, preprocess + one "
                    "streamed epoch", args)
    try:
        pre = run_phase("preprocess", args)
        print(f"preprocessed {pre['frames']:,} frames in {pre['preprocess']['wall_s']:.0f} s", flush=True)
        stream = run_phase("stream", args)
    finally:
        if not args.keep:
            shutil.rmtree(args.store, ignore_errors=True)
    record(report, args, pre, stream)
    report.finish()


def record(report: Report, args, pre: dict, stream: dict) -> None:
    n = pre["frames"]
    table = report.table(
        f"Wall and CPU time (process + reaped workers), rates, peak RSS; {usable_cores()} usable cores",
        ["phase", "frames", "wall s", "CPU s", "frames/s wall", "frames/s per core (CPU)",
         "peak RSS MiB (main)", "peak RSS MiB (largest worker)", "stored"])
    add_row(table, "generate (signpose.synth, chunks of 256 videos)", n, pre["generate"], pre["peak_rss"], None, "-")
    add_row(table, f"preprocess (write_dataset, {args.workers} workers: render + encode + store)", n,
            pre["preprocess"], pre["peak_rss"], pre["peak_rss_children"],
            f"{pre['stored_bytes'] / MIB:,.0f} MiB, {pre['shard_bytes'] / n:,.0f} B/frame in shards")
    add_row(table, f"stream 1 epoch of train (ShardStream skeleton, DataLoader batch 16, {stream['workers']} "
            "workers)", stream["frames"], stream["stream"], stream["peak_rss"], stream["peak_rss_children"], "-")
    if stream["frames"] != stream["expected"]:
        raise SystemExit(f"streamed {stream['frames']} frames, the split has {stream['expected']}")
    report.note(f"data set: {n:,} frames {pre['splits']}, {pre['shards']} shards of <= {args.shard_size}, "
                f"format {pre['shard_format']}; stored {pre['stored_bytes']:,} bytes (shards "
                f"{pre['shard_bytes']:,} + manifest, plan and shard records)")
    report.note("the preprocess row's peak RSS (main) includes the generated frames held in memory "
                f"({n * 143 * 3 * 4 / MIB:,.0f} MiB of float32 keypoints), which write_dataset takes whole")
    if n < PHOENIX_FRAMES:
        scale = PHOENIX_FRAMES / n
        total = sum(p["wall_s"] for p in (pre["generate"], pre["preprocess"], stream["stream"]))
        report.note(f"extrapolation (linear, not measured) to {PHOENIX_FRAMES:,} frames: {total * scale / 60:,.0f} "
                    f"min wall in all, {pre['shard_bytes'] * scale / 2**30:,.2f} GiB of shards")


if __name__ == "__main__":
    main()
