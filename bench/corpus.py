"""Scale: a corpus of generated ``.pose`` files preprocessed in full, then a 1 % delivery (issue 23, item 8).

    PYTHONPATH=$PWD .venv/bin/python bench/corpus.py [--files 8257] [--frames 100] [--image_size 32]
                                                    [--s3_files 400] [--workers 1]
                                                    [--workdir /tmp/signpose-corpus-bench]

Each phase (full preprocessing, then the delivery) runs in its own process, so its peak resident
memory (``ru_maxrss``) is its own; the wall time includes listing every object, hashing what changed,
reading, rendering and writing the new sources and committing the version. Files are OpenPose-137
``.pose`` files (``signpose.io.pose_files.openpose_pose_bytes``) of generated signers
(``signpose.synth.generate_video``). ``--s3_files`` repeats the measurement on moto's S3 server
(started here) with fewer files. ``--workers N`` renders the new sources in N processes (peak memory:
the largest of the parent and any one render process; CPU time counts them all). Appends a table to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _write_corpus(store_uri: str, first: int, count: int, frames: int) -> None:
    from signpose.io.pose_files import openpose_pose_bytes
    from signpose.store import open_store
    from signpose.synth import generate_video

    store = open_store(store_uri)
    for video in range(first, first + count):
        data = openpose_pose_bytes(generate_video(23, video, frames), 640, 480)
        store.put_bytes(f"signer{video % 9}/video-{video:05d}.pose", data)


def _phase(corpus: str, store: str, image_size: int, workers: int) -> None:
    """One preprocessing run in this process; prints its measurements as JSON."""
    from signpose.datasets.version import write_version
    from signpose.render import RenderSettings

    start = time.perf_counter()
    manifest, rendered = write_version(corpus, store, RenderSettings(image_size=image_size), shard_size=4096,
                                       workers=workers)
    wall = time.perf_counter() - start
    from multiprocessing import forkserver

    # Stopping the forkserver reaps it, which counts its reaped render processes in RUSAGE_CHILDREN.
    getattr(forkserver._forkserver, "_stop", lambda: None)()
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(json.dumps({"wall_s": wall, "frames_rendered": rendered, "frames": manifest.n_frames,
                      "sources": len(manifest.sources), "peak_rss_mb": max(u.ru_maxrss for u in usage) / 1024,
                      "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage)}))


def _run_phase(corpus: str, store: str, image_size: int, env: dict, workers: int = 1) -> dict:
    done = subprocess.run([sys.executable, __file__, "--phase", corpus, store, str(image_size), str(workers)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(corpus: str, store: str, files: int, frames: int, image_size: int, env: dict, workers: int = 1) -> dict:
    delivery = max(1, files // 100)
    _write_corpus(corpus, 0, files - delivery, frames)
    full = _run_phase(corpus, store, image_size, env, workers)
    _write_corpus(corpus, files - delivery, delivery, frames)
    step = _run_phase(corpus, store, image_size, env, workers)
    return {"files": files, "delivery": delivery, "full": full, "delivery_run": step,
            "time_ratio": step["wall_s"] / full["wall_s"], "memory_ratio": full["peak_rss_mb"] / step["peak_rss_mb"]}


def _start_moto(env: dict) -> subprocess.Popen:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1")
    os.environ.update(env)
    import boto3

    for _ in range(100):
        try:
            boto3.client("s3").create_bucket(Bucket="bench")
            return server
        except Exception:  # noqa: BLE001  (the server is still starting)
            time.sleep(0.2)
    raise RuntimeError("moto server did not start")


def _row(where: str, m: dict) -> str:
    f, d = m["full"], m["delivery_run"]
    return (f"| {where} | {m['files']} | {f['wall_s']:.1f} s / {f['cpu_s']:.1f} s / {f['frames_rendered']} / "
            f"{f['peak_rss_mb']:.0f} MB | {m['delivery']} | {d['wall_s']:.2f} s / {d['cpu_s']:.2f} s / "
            f"{d['frames_rendered']} / {d['peak_rss_mb']:.0f} MB "
            f"| {m['time_ratio']:.1%} | {m['memory_ratio']:.2f}x |")


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--phase":
        return _phase(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8257)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--s3_files", type=int, default=400)
    parser.add_argument("--workers", type=int, default=1, help="render processes (default: 1)")
    parser.add_argument("--workdir", default="/tmp/signpose-corpus-bench")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rows = [_row("local", measure(f"{args.workdir}/corpus", f"{args.workdir}/store", args.files, args.frames,
                                  args.image_size, env, args.workers))]
    if args.s3_files:
        server = _start_moto(env)
        try:
            rows.append(_row("moto S3", measure("s3://bench/corpus/", "s3://bench/store", args.s3_files, args.frames,
                                                args.image_size, env, args.workers)))
        finally:
            server.terminate()
    command = "PYTHONPATH=$PWD .venv/bin/python bench/corpus.py " + " ".join(sys.argv[1:])
    table = "\n".join([
        f"\n## Corpus versions: full preprocessing, then a 1 % delivery ({time.strftime('%Y-%m-%d')})\n",
        f"`{command}` ({args.frames} frames a file, {args.image_size}x{args.image_size} images, "
        f"{args.workers} render process{'es' if args.workers > 1 else ''}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n",
        "| store | files | full: wall / CPU / frames rendered / peak RSS | delivery files | delivery: wall / CPU / "
        "frames rendered / peak RSS | time ratio (target <= 3 %) | memory full/delivery (target <= 1.2x) |",
        "|---|---|---|---|---|---|---|", *rows, ""])
    print(table)
    with open(REPO_ROOT / "bench" / "RESULTS.md", "a") as fh:
        fh.write(table)


if __name__ == "__main__":
    main()
