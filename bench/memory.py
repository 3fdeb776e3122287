"""Memory: peak RSS of one training epoch's data path, streaming shards vs the seed's in-memory way.

    .venv/bin/python bench/memory.py [--sizes 10000,50000,200000] [--quick]

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401
from common import Report, add_recording_arguments, available_memory_bytes, fmt, peak_rss_bytes

SIZE = 256
SHARD = 4096
BATCH = 16
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
                  shard_size=shard_size, workers=1)
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000,200000", help="frames per epoch, comma-separated")
    parser.add_argument("--shard-size", type=int, default=SHARD)
    parser.add_argument("--image-size", type=int, default=SIZE)
    parser.add_argument("--child-timeout", type=float, default=600.0, help="seconds per measurement")
    parser.add_argument("--child", choices=["stream", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--child-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-store", help=argparse.SUPPRESS)
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.child_frames, args.child_store, args.shard_size, args.image_size)
        return
    if args.quick:
        args.sizes, args.shard_size, args.image_size = "256,1024", 128, 64
    sizes = [int(s) for s in args.sizes.split(",") if s]

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


if __name__ == "__main__":
    main()
