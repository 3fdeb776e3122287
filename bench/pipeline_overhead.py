"""Pipeline overhead: `make run`'s DAG through kfp.local vs calling the stage functions directly.

    .venv/bin/python bench/pipeline_overhead.py [--repeats 1] [--quick]

Both runs do the same work on the same tiny configuration (SMALL_RUN with fewer frames and epochs,
see TINY below): preprocess (generate, render, write shards) -> train_skeleton -> train_face, each
training task logging to MLflow and registering its model.

- kfp.local: ``pipelines.local_run.run_local`` -- the compiled DAG executed by kfp.local's
  SubprocessRunner (one Python subprocess per task, artifacts passed through the pipeline root);
- direct: ``signpose.stages.preprocess`` / ``train_task("skeleton")`` / ``train_task("face")`` called in one process
  with the parameters the components pass.

Each run is a fresh subprocess in its own empty folder (MLflow on SQLite there: nothing touches the
repository's mlruns.db); wall time is measured around the whole subprocess, interpreter start and
imports included, and so is the CPU time of every process of the run (RUSAGE_CHILDREN: robust to
other load on a shared machine). The difference is what KFP's local orchestration costs.
The default configuration is already tiny (the point is the fixed cost); --quick makes it tinier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import Report, add_recording_arguments, children_cpu_seconds, fmt

WORK = Path(os.environ.get("SIGNPOSE_BENCH_DIR", "/tmp/signpose-bench"))


def tiny_params(quick: bool) -> dict:
    from pipelines.local_run import SMALL_RUN

    params = dict(SMALL_RUN)
    params.update(synthetic_videos=8, synthetic_frames_per_video=24, skeleton_epochs=1, face_epochs=1)
    if quick:
        params.update(synthetic_videos=4, synthetic_frames_per_video=16)
    return params


def run_direct(workdir: Path, params: dict) -> dict:
    """The DAG's three tasks as plain function calls, with the arguments the components pass."""
    from signpose import stages
    from signpose.tracking import load_mlflow_settings

    tracking_uri = load_mlflow_settings().tracking_uri
    timings = {}
    t0 = time.perf_counter()
    manifest = stages.preprocess(
        input_uri="", store_uri=str(workdir / "store"), image_size=params["image_size"],
        shard_size=params["shard_size"], synthetic_videos=params["synthetic_videos"],
        synthetic_frames_per_video=params["synthetic_frames_per_video"])
    timings["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stages.train_task("skeleton", manifest.uri, tracking_uri, config=dict(
        params["skeleton_overrides"], epochs=params["skeleton_epochs"], batch_size=params["skeleton_batch_size"],
        image_size=params["image_size"], use_weighted_loss=True, hand_weight=2.0, face_weight=1.5))
    timings["train_skeleton"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stages.train_task("face", manifest.uri, tracking_uri, config=dict(
        params["face_overrides"], epochs=params["face_epochs"], batch_size=params["face_batch_size"],
        d_global=params["d_global"], d_region=params["d_region"]))
    timings["train_face"] = time.perf_counter() - t0
    return timings


def child(mode: str, workdir: Path, quick: bool) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    params = tiny_params(quick)
    t0 = time.perf_counter()
    if mode == "direct":
        stages = run_direct(workdir, params)
    else:
        from pipelines.local_run import run_local

        run_local(workdir, **params)
        stages = {}
    print(json.dumps({"mode": mode, "inside_s": time.perf_counter() - t0, "stages": stages}))


def run_child(mode: str, quick: bool, timeout: float) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"pipeline-{mode}-", dir=WORK))
    env = dict(os.environ, PYTHONPATH=str(common.REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SIGNPOSE_MLFLOW_CONFIG"):
        env.pop(name, None)  # MLflow on SQLite in the run's own folder
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-workdir", str(workdir)]
    if quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    cpu0 = children_cpu_seconds()
    try:
        out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:.0f} s", "workdir": str(workdir)}
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' / '.join(tail)}", "workdir": str(workdir)}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(wall_s=wall, cpu_s=children_cpu_seconds() - cpu0, workdir=str(workdir))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--child", choices=["direct", "kfp"], help=argparse.SUPPRESS)
    parser.add_argument("--child-workdir", help=argparse.SUPPRESS)
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, Path(args.child_workdir), args.quick)
        return

    params = tiny_params(args.quick)
    report = Report("Pipeline overhead: kfp.local DAG vs direct stage calls", args)
    table = report.table(
        f"Tiny run: {params['synthetic_videos']} videos x {params['synthetic_frames_per_video']} frames at "
        f"{params['image_size']} px, skeleton {params['skeleton_epochs']} epoch(s), face {params['face_epochs']} "
        "epoch(s); wall s of the whole subprocess (median of repeats)",
        ["mode", "runs", "wall s (median)", "all runs s", "CPU s, all processes (median)", "inside the process s",
         "stages (direct) s"])
    results: dict[str, list[dict]] = {"direct": [], "kfp": []}
    for _ in range(args.repeats):
        for mode in ("direct", "kfp"):
            r = run_child(mode, args.quick, args.timeout)
            print(f"{mode}: {r}", flush=True)
            results[mode].append(r)
    medians, cpu = {}, {}
    for mode, label in (("direct", "direct: signpose.stages calls, one process"),
                        ("kfp", "kfp.local SubprocessRunner (make run's path)")):
        ok = [r for r in results[mode] if "error" not in r]
        errors = [r["error"] for r in results[mode] if "error" in r]
        if not ok:
            table.add(label, 0, "failed", "; ".join(errors)[:200], "", "", "")
            continue
        walls = sorted(r["wall_s"] for r in ok)
        medians[mode] = walls[len(walls) // 2]
        cpu[mode] = sorted(r["cpu_s"] for r in ok)[len(ok) // 2]
        stages = ok[0].get("stages") or {}
        table.add(label, len(ok), fmt(medians[mode], 1), ", ".join(fmt(w, 1) for w in walls), fmt(cpu[mode], 1),
                  fmt(sorted(r["inside_s"] for r in ok)[len(ok) // 2], 1),
                  ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) or "-")
    if len(medians) == 2:
        extra = medians["kfp"] - medians["direct"]
        report.note(f"kfp.local costs {extra:+.1f} s wall over direct calls "
                    f"({medians['kfp'] / medians['direct']:.2f}x), about {extra / 3:+.1f} s per task (3 tasks)")
        report.note(f"in CPU time: {cpu['kfp'] - cpu['direct']:+.1f} s ({cpu['kfp'] / cpu['direct']:.2f}x): "
                    "every KFP task is a fresh interpreter that imports torch, MLflow and signpose again")
    report.finish()


if __name__ == "__main__":
    main()
