"""Memory: peak RSS of one training epoch's data path, streaming shards vs the seed's in-memory way;
and (``--stage``) of the skeleton training stage itself, as the pipeline's component calls it.

    .venv/bin/python bench/memory.py [--sizes 10000,50000,200000] [--quick]
    .venv/bin/python bench/memory.py --stage [--sizes 25000,75000,250000] [--image-size 64] [--quick]

Each (approach, size) runs in a fresh subprocess that imports torch, builds the data path, iterates
one epoch through a DataLoader (batch 16, the seed's skeleton batch, num_workers 0 so everything is
in the measured process) and reports its peak RSS (``ru_maxrss``) and its RSS after imports.

- streaming: ``signpose.data.ShardStream(manifest, "train", task="skeleton")`` over shards of 4,096
  frames at 256x256 (the shard writer's defaults), shuffle buffer 2,048 (its default);
- seed in-memory: ``generate_skeleton_dataset(keypoints, 256)`` (every image rendered up front into
  float32 RAM, as the seed did) + ``SkeletonDataset(keypoints, images)``, shuffled.

To keep set-up time small on a 2-core machine, the N-frame data set is one real 4,096-frame shard
(generated signer frames, rendered and encoded by ``signpose.shards.write_dataset``) listed N/4,096
times in the manifest under distinct keys (hard links): the reader still fetches, checksums and
decodes every shard, so its work and memory are those of an N-frame data set. The in-memory approach
tiles the same 4,096 keypoint frames to N. Sizes whose in-memory images would not fit in the
available RAM are not run; their expected peak (N x 256 KiB x 2: the float32 images and the
temporary of the uint8 -> float conversion) is given instead.

``--stage``: for each size, ``signpose.stages.preprocess`` writes a generated data set of that many
frames (64-frame videos, its train/dev/test split, shards of 4,096; cached under $SIGNPOSE_BENCH_DIR),
then a fresh process runs ``signpose.stages.train_task("skeleton", store, tracking to a SQLite store
in a temporary folder, config)`` -- what ``components/train.py`` runs on one node, through
``stages.training_stage`` (less its KFP artifacts) -- with the configuration's
defaults (streaming, automatic DataLoader workers) except a tiny model (``STAGE_MODEL``), one epoch
and batch 32: the whole training split passes through the data path once, then validation on the dev
split, MLflow logging, registration and the promotion gate (torch on one thread). Recorded: the stage process's own peak
RSS (``ru_maxrss``, exact), its DataLoader workers' largest peak RSS (``RUSAGE_CHILDREN``), and the
whole process tree's peak PSS (shared pages divided among the processes that map them; sampled every
0.2 s from ``/proc/<pid>/smaps_rollup``), against the bytes of the training split's images
(frames x S x S uint8: what loading the split into memory holds). The smallest size also runs with
``stream=False`` (``--no_stream``: the splits loaded into RAM) for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import Report, add_recording_arguments, available_memory_bytes, fmt, peak_rss_bytes

SIZE = 256
SHARD = 4096
BATCH = 16
STAGE_BATCH = 32
# A tiny skeleton model: the stage's memory is its data path's, not the model's activations.
STAGE_MODEL = dict(d_model=8, n_layers=1, n_heads=1, n_decoder_layers=1, grid_size=4, decoder_channels=4,
                   min_channels=4, n_freqs=2)
WORK = Path(os.environ.get("SIGNPOSE_BENCH_DIR", "/tmp/signpose-bench"))


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def base_frames(n: int):
    from signpose.synth import generate_signer_frames

    per_video = 64
    frames = generate_signer_frames(n_videos=-(-n // per_video), frames_per_video=per_video, seed=0)
    frames = frames.subset(slice(0, n)) if len(frames.keypoints) > n else frames
    return dataclasses.replace(frames, split=__import__("numpy").full(len(frames.keypoints), "train"))


def build_base_store(shard_size: int, image_size: int) -> Path:
    """One shard of generated frames (cached under $SIGNPOSE_BENCH_DIR)."""
    from signpose.render import RenderSettings
    from signpose.shards import write_dataset

    path = WORK / f"memory-base-{shard_size}-{image_size}"
    write_dataset(base_frames(shard_size), str(path), RenderSettings(image_size=image_size),
                  shard_size=shard_size, workers=1, replace=True)  # a cache: replace an older generator's
    return path


def replicated_store(base: Path, n_frames: int) -> Path:
    """A store whose manifest lists the base shard ceil(n / shard) times under distinct keys."""
    from signpose.shards import MANIFEST_NAME, ShardInfo, read_manifest

    manifest = read_manifest(str(base))
    (shard,) = manifest.shards
    copies = -(-n_frames // shard.count)
    path = WORK / f"memory-{base.name}-x{copies}"
    if (path / MANIFEST_NAME).exists():
        return path
    (path / "shards").mkdir(parents=True, exist_ok=True)
    infos = []
    for i in range(copies):
        key = f"shards/replica-{i:05d}.npz"
        target = path / key
        if not target.exists():
            os.link(base / shard.key, target)
        infos.append(dataclasses.replace(shard, key=key, index=i, start=i * shard.count))
    replica = dataclasses.replace(manifest, shards=infos, splits={"train": copies * shard.count},
                                  n_frames=copies * shard.count,
                                  dataset_hash=f"{manifest.dataset_hash[:48]}x{copies:015d}")
    tmp = path / (MANIFEST_NAME + ".tmp")
    tmp.write_text(replica.to_json())
    tmp.replace(path / MANIFEST_NAME)
    assert all(isinstance(s, ShardInfo) for s in replica.shards)
    return path


# --- child: one measurement in a fresh process --------------------------------------------------------

def child(mode: str, n_frames: int, store: str, shard_size: int, image_size: int) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    import signpose.data  # noqa: F401  (import cost belongs to the baseline)
    import signpose.render  # noqa: F401

    baseline = current_rss_bytes()
    started = time.perf_counter()
    cpu0 = time.process_time()
    if mode == "stream":
        from signpose.data import ShardStream

        dataset = ShardStream(store, "train", task="skeleton", shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=BATCH, num_workers=0)
    elif mode == "memory":
        from signpose.data import SkeletonDataset
        from signpose.render import generate_skeleton_dataset

        kp = base_frames(shard_size).keypoints
        kp = np.resize(kp, (n_frames, *kp.shape[1:]))  # tile to n_frames
        images = generate_skeleton_dataset(kp, image_size=image_size)
        dataset = SkeletonDataset(kp, images, image_size=image_size)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True,
                            generator=torch.Generator().manual_seed(0), num_workers=0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    setup_s = time.perf_counter() - started
    seen = 0
    checksum = 0.0
    for keypoints, images in loader:
        seen += len(keypoints)
        checksum += float(images[:, :, ::64, ::64].sum())  # touch the batch so nothing is optimised away
    print(json.dumps({"mode": mode, "frames": seen, "peak_rss": peak_rss_bytes(), "baseline_rss": baseline,
                      "seconds": time.perf_counter() - started, "setup_seconds": setup_s,
                      "cpu_seconds": time.process_time() - cpu0, "checksum": checksum}))


def child_stage(store: str, image_size: int, stream: bool) -> None:
    """One training stage, as ``components/train.py`` calls it, in this (fresh) process."""
    import mlflow  # noqa: F401  (import cost belongs to the baseline)
    import torch

    from signpose import stages

    # One thread, as in the data-path mode: on a shared machine a parallel region waits for its slowest
    # thread, which the load (and nice) deschedule; the memory measured does not depend on it.
    torch.set_num_threads(1)
    from signpose.train.data_order import resolve_num_workers

    baseline = current_rss_bytes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="signpose-memory-mlflow-") as workdir:
        os.chdir(workdir)  # MLflow's artifacts go next to its store, in the temporary folder
        outcome = stages.train_task("skeleton", store, mlflow_tracking_uri=f"sqlite:///{workdir}/mlruns.db",
                                    config=dict(STAGE_MODEL, image_size=image_size, epochs=1,
                                                batch_size=STAGE_BATCH, stream=stream, progress=False))
    result = outcome.result
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"mode": "stage", "stream": stream, "peak_rss": peak_rss_bytes(), "baseline_rss": baseline,
                      "workers_peak_rss": children, "workers": resolve_num_workers(-1),
                      "steps": result.global_step, "train_samples": result.extra["data"]["train_samples"],
                      "seconds": time.perf_counter() - started}))


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                pass
    return found


def tree_pss_bytes(pid: int) -> int:
    """Summed PSS of a process and its descendants (0 for processes that are gone)."""
    total = 0
    for process in _descendants(pid):
        try:
            for line in Path(f"/proc/{process}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def run_child_sampled(cmd: list[str], timeout: float) -> dict:
    """Run a child; its JSON result plus ``tree_peak_pss``, sampled every 0.2 s while it runs."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=common.REPO_ROOT)
        deadline, peak = time.monotonic() + timeout, 0
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                return {"error": f"not finished within {timeout:.0f} s"}
            peak = max(peak, tree_pss_bytes(process.pid))
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            return {"error": f"exit {process.returncode}: {err.read().strip().splitlines()[-1:]}"}
        return dict(json.loads(out.read().strip().splitlines()[-1]), tree_peak_pss=peak)


def run_child(mode: str, n_frames: int, store: Path | None, shard_size: int, image_size: int,
              timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--child-frames", str(n_frames),
           "--child-store", str(store or ""), "--shard-size", str(shard_size), "--image-size", str(image_size)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=common.REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_stage_store(n_frames: int, image_size: int, shard_size: int):
    """A generated data set of ``n_frames`` (whole 64-frame videos) written by the preprocess stage."""
    from signpose import stages

    videos = -(-n_frames // 64)
    path = WORK / f"stage-{videos * 64}-{image_size}-{shard_size}"
    manifest = stages.preprocess("", str(path), image_size=image_size, shard_size=shard_size,
                                 synthetic_videos=videos, synthetic_frames_per_video=64, replace=True)
    return path, manifest


def stage_main(args, sizes: list[int]) -> None:
    report = Report("Memory: peak RSS of the skeleton training stage (stages.train_task, as the component "
                    "calls it)", args)
    table = report.table(
        f"{args.image_size}x{args.image_size} images, shards of {args.shard_size}, batch {STAGE_BATCH}, 1 epoch, "
        "tiny model; RSS/PSS in MiB; images = the train split's frames x S x S bytes",
        ["frames", "train frames", "data path", "train images MiB", "stage peak RSS", "worker peak RSS",
         "tree peak PSS", "tree PSS / images", "steps", "wall s"])
    for i, n in enumerate(sizes):
        t0 = time.perf_counter()
        store, manifest = build_stage_store(n, args.image_size, args.shard_size)
        print(f"{manifest.n_frames} frames preprocessed in {time.perf_counter() - t0:.1f} s at {store}", flush=True)
        images = manifest.splits.get("train", 0) * args.image_size ** 2
        for stream in (True, False) if i == 0 else (True,):
            cmd = [sys.executable, __file__, "--child", "stage", "--child-store", str(store),
                   "--image-size", str(args.image_size), "--child-stream", str(int(stream))]
            result = run_child_sampled(cmd, args.child_timeout)
            label = "streamed (default)" if stream else "--no_stream (in RAM)"
            if "error" in result:
                table.add(manifest.n_frames, manifest.splits.get("train", 0), label, "", result["error"],
                          "", "", "", "", "")
                print(f"{n} stage stream={stream}: {result['error']}", flush=True)
                continue
            mib = 2**20
            table.add(manifest.n_frames, result["train_samples"], label, fmt(images / mib),
                      fmt(result["peak_rss"] / mib), fmt(result["workers_peak_rss"] / mib),
                      fmt(result["tree_peak_pss"] / mib), f"{result['tree_peak_pss'] / images:.2f}",
                      result["steps"], fmt(result["seconds"], 1))
            print(f"{n} stage stream={stream}: peak {result['peak_rss'] / mib:,.0f} MiB, tree PSS "
                  f"{result['tree_peak_pss'] / mib:,.0f} MiB, {result['seconds']:.1f} s", flush=True)
    report.note("stage peak RSS: ru_maxrss of the process running stages.train_task (imports included: torch, "
                "MLflow); worker peak RSS: the largest of its DataLoader workers (auto: "
                f"{_auto_workers()} on this machine), which share the parent's pages until they write them")
    report.note("tree peak PSS: the stage process and its workers together, shared pages counted once; "
                "sampled every 0.2 s, so a peak shorter than that can be missed")
    report.finish()


def _auto_workers() -> int:
    from signpose.train.data_order import resolve_num_workers

    return resolve_num_workers(-1)


def data_path_main(args, sizes: list[int]) -> None:
    report = Report("Memory: peak RSS of one epoch's data path (skeleton task, DataLoader batch 16)", args)
    t0 = time.perf_counter()
    base = build_base_store(args.shard_size, args.image_size)
    print(f"base shard ready in {time.perf_counter() - t0:.1f} s at {base}", flush=True)
    frame_bytes = args.image_size * args.image_size * 4
    table = report.table(
        f"{args.image_size}x{args.image_size} images; peak RSS of a fresh process (ru_maxrss); "
        "data path = peak - RSS after imports",
        ["frames", "approach", "peak RSS MiB", "data path MiB", "epoch wall s", "frames/s wall",
         "vs smallest size (data path)"])
    first = {}
    for n in sizes:
        for mode in ("stream", "memory"):
            label = "streaming ShardStream" if mode == "stream" else \
                "seed: generate_skeleton_dataset + SkeletonDataset"
            if mode == "memory":
                # The float32 images plus the uint8 batch they are converted from (1 + 1/4 of them).
                need = int(1.25 * n * frame_bytes) + (1 << 30)
                if need > available_memory_bytes():
                    table.add(n, label, f"not run: needs ~{need / 2**30:.0f} GiB", "", "", "",
                              f"expected ~{1.25 * n * frame_bytes / 2**20:,.0f} MiB data path")
                    continue
            store = replicated_store(base, n) if mode == "stream" else None
            result = run_child(mode, n, store, args.shard_size, args.image_size, args.child_timeout)
            if "error" in result:
                table.add(n, label, result["error"], "", "", "", "")
                print(f"{n} {mode}: {result['error']}", flush=True)
                continue
            data_path = result["peak_rss"] - result["baseline_rss"]
            first.setdefault(mode, data_path)
            table.add(result["frames"], label, fmt(result["peak_rss"] / 2**20), fmt(data_path / 2**20),
                      fmt(result["seconds"], 1), fmt(result["frames"] / result["seconds"]),
                      f"{data_path / first[mode]:.2f}x")
            print(f"{n} {mode}: peak {result['peak_rss'] / 2**20:,.0f} MiB, {result['seconds']:.1f} s", flush=True)
    report.note(f"streaming sizes are rounded up to whole {args.shard_size}-frame shards")
    report.note(f"streaming data sets: one {args.shard_size}-frame shard listed N/{args.shard_size} times "
                "(hard links, distinct keys); every shard is still fetched, checksummed and decoded")
    report.note("target (issue 8): streaming flat within 10% from the smallest to the largest size")
    report.finish()
    if args.quick:  # quick runs do not keep their tiny base shard in the cache
        shutil.rmtree(base, ignore_errors=True)




def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="store_true", help="measure the skeleton training stage itself")
    parser.add_argument("--sizes", default=None, help="frames per epoch, comma-separated (default: "
                        "10000,50000,200000; with --stage frames per data set, 25000,75000,250000)")
    parser.add_argument("--shard-size", type=int, default=SHARD)
    parser.add_argument("--image-size", type=int, default=None, help=f"default {SIZE}; with --stage 64")
    parser.add_argument("--child-timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--child", choices=["stream", "memory", "stage"], help=argparse.SUPPRESS)
    parser.add_argument("--child-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-store", help=argparse.SUPPRESS)
    parser.add_argument("--child-stream", type=int, default=1, help=argparse.SUPPRESS)
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    args.image_size = args.image_size or (64 if args.stage else SIZE)
    if args.child == "stage":
        child_stage(args.child_store, args.image_size, bool(args.child_stream))
        return
    if args.child:
        child(args.child, args.child_frames, args.child_store, args.shard_size, args.image_size)
        return
    if args.quick:
        args.sizes, args.shard_size, args.image_size = ("300,900" if args.stage else "256,1024"), 128, 64
    sizes = [int(s) for s in (args.sizes or ("25000,75000,250000" if args.stage else "10000,50000,200000"))
             .split(",") if s]
    (stage_main if args.stage else data_path_main)(args, sizes)


if __name__ == "__main__":
    main()
