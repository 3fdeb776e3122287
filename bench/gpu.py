"""GPU: the skeleton and face training steps at the seed's sizes in bf16, for the `device` tool.

    # on a machine with a CUDA GPU, from the repository root, in the project's venv:
    .venv/bin/python bench/gpu.py --results "$OUT/RESULTS-gpu.md" --json "$OUT/gpu.json"
    # on the device tool's GPU machines: their image's python3 (torch, numpy, OpenCV, torchmetrics,
    # tqdm; no MLflow, boto3 or KFP, which this script does not need: tests/test_bench_smoke.py checks
    # that) and no .venv; one command has 10 minutes, so one task per command:
    python3 bench/gpu.py --tasks skeleton --results "$OUT/RESULTS-gpu.md" --json "$OUT/gpu-skeleton.json"
    python3 bench/gpu.py --tasks face --results "$OUT/RESULTS-gpu.md" --json "$OUT/gpu-face.json"
    # anywhere (CPU, tiny models, no torch.compile): proves the script runs
    .venv/bin/python bench/gpu.py --dry-run --no-record
    # engine mode: what a user's training sees (streamed loader, host-to-device copy, the engine's
    # step with its syncs, schedule, DDP) on 1 GPU and on every GPU of the node, from a preprocessed store
    python3 bench/gpu.py --engine s3-or-folder-of-a-preprocessed-store --tasks skeleton --results ...
    .venv/bin/python bench/gpu.py --dry-run --engine generate --no-record   # the same on CPU, tiny

For each task, batch size and torch.compile off/on: the engine's training step (forward with bf16
autocast, the task's loss, backward, grad clipping, AdamW) on a fixed batch of generated frames
already on the device, so the figures are the model's, not the loader's. Reported: frames/s (median
of repeats, CUDA-synchronised), peak allocated memory, NVML's "GPU util" sampled during the timed steps
(torch.cuda.utilization: the share of time *any* kernel ran, 100 % even when one small kernel at a
time leaves most SMs idle) and, apart from it, SM activity over the same steps (NVML GPU performance
monitoring, Hopper and newer: SM_UTIL, the share of SMs busy, and SM_OCCUPANCY, active warps over
the maximum; "not available" with the reason elsewhere), FLOPs per step counted by
torch.utils.flop_counter on one uncompiled step, the achieved TFLOP/s and its share of the card's
dense bf16 peak (table below; unknown cards: pass --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import common  # noqa: F401
from common import Report, add_recording_arguments, fmt

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # conservative when the variant is not in the name
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in BF16_PEAK_TFLOPS.items():  # most specific first (dict order)
        if key in device_name:
            return value
    return None


class UtilisationSampler:
    """Polls torch.cuda.utilization() (NVML) in a thread while the timed steps run."""

    def __init__(self, device, interval: float = 0.05):
        self.device, self.interval, self.samples = device, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import torch

        while not self._stop.is_set():
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # NVML missing: no utilisation figure
                return
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


class SmActivity:
    """SM activity between entering and leaving, from two NVML GPM samples (``nvmlGpmMetricsGet``:
    NVML_GPM_METRIC_SM_UTIL and NVML_GPM_METRIC_SM_OCCUPANCY). ``nvml`` is the ``pynvml`` module
    (nvidia-ml-py); without it, or on a GPU without GPM, :attr:`unavailable` says why."""

    def __init__(self, nvml_index: int, nvml=None):
        self.nvml_index, self.nvml = nvml_index, nvml
        self.sm_active = self.sm_occupancy = None
        self.unavailable = ""
        self._handle = self._first = None

    def __enter__(self):
        try:
            if self.nvml is None:
                import pynvml as nvml  # nvidia-ml-py

                self.nvml = nvml
            self.nvml.nvmlInit()
            self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.nvml_index)
            if not self.nvml.nvmlGpmQueryDeviceSupport(self._handle).isSupportedDevice:
                self.unavailable = "this GPU has no GPM (NVML GPU performance monitoring: Hopper and newer)"
                return self
            self._first = self.nvml.nvmlGpmSampleGet(self._handle, self.nvml.nvmlGpmSampleAlloc())
        except Exception as error:  # no pynvml, no NVML library, no permission
            self.unavailable = f"NVML GPM: {type(error).__name__}: {error}"
        return self

    def __exit__(self, *exc):
        if self._first is None:
            return False
        nvml, second = self.nvml, None
        try:
            second = nvml.nvmlGpmSampleGet(self._handle, nvml.nvmlGpmSampleAlloc())
            query = nvml.c_nvmlGpmMetricsGet_t()
            query.version, query.numMetrics = nvml.NVML_GPM_METRICS_GET_VERSION, 2
            query.sample1, query.sample2 = self._first, second
            query.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
            query.metrics[1].metricId = nvml.NVML_GPM_METRIC_SM_OCCUPANCY
            nvml.nvmlGpmMetricsGet(query)
            values = [m.value if m.nvmlReturn == nvml.NVML_SUCCESS else None for m in query.metrics[:2]]
            self.sm_active, self.sm_occupancy = values
            if self.sm_active is None:
                self.unavailable = f"NVML GPM: SM_UTIL returned {query.metrics[0].nvmlReturn}"
        except Exception as error:
            self.unavailable = f"NVML GPM: {type(error).__name__}: {error}"
        finally:
            for sample in (self._first, second):
                if sample is not None:
                    nvml.nvmlGpmSampleFree(sample)
        return False

    def as_dict(self) -> dict:
        return {"sm_active": self.sm_active, "sm_occupancy": self.sm_occupancy, "sm_unavailable": self.unavailable}


def step_row(r: dict, peak: float | None) -> list:
    """One row of the step table: NVML's "GPU util" and GPM's SM activity in columns of their own."""
    sm_missing = "not available" if r.get("sm_active") is None else None
    return [r["task"], r["batch_size"], "on" if r["compile"] else "off", fmt(r["frames_per_s"]),
            fmt(r["step_s"] * 1e3, 1), fmt(r["flops_per_step"] / 1e9, 1), fmt(r["tflops"], 2),
            f"{r['tflops'] / peak:.1%}" if peak else "n/a",
            fmt(r["peak_mem_gib"], 2) if r["peak_mem_gib"] is not None else "n/a",
            fmt(r["utilisation"]) if r["utilisation"] is not None else "n/a",
            sm_missing or fmt(r["sm_active"], 1),
            sm_missing or (fmt(r["sm_occupancy"], 1) if r.get("sm_occupancy") is not None else "n/a"),
            fmt(r["warmup_s"], 1)]


STEP_COLUMNS = ["task", "batch", "torch.compile", "frames/s", "step ms", "GFLOP/step", "TFLOP/s", "% of bf16 peak",
                "peak mem GiB", "GPU util % (NVML: time any kernel ran)", "SM activity % (GPM SM_UTIL)",
                "SM occupancy % (GPM)", "warm-up s"]


def make_batch(task: str, cfg, batch_size: int, device):
    import numpy as np
    import torch

    from signpose import layout
    from signpose.data import normalize_face
    from signpose.render import RenderSettings, render_frames
    from signpose.synth import generate_signer_frames

    per_video = 64
    kp = generate_signer_frames(n_videos=-(-batch_size // per_video), frames_per_video=per_video,
                                seed=0).keypoints[:batch_size]
    if task == "skeleton":
        images = render_frames(kp, RenderSettings(image_size=cfg.image_size)).astype(np.float32) / 255.0
        return torch.from_numpy(kp).to(device), torch.from_numpy(images[:, None]).to(device)
    face = torch.from_numpy(normalize_face(kp[:, layout.FACE])).to(device)
    return face, face


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def run_case(task_name: str, cfg, batch_size: int, compiled: bool, device, args) -> dict:
    import torch

    from signpose.models import build_model
    from signpose.train.engine import make_optimizer, make_task

    if compiled:
        torch._dynamo.reset()  # no graphs or recompilation budget carried over from the previous case
    model = build_model(cfg).to(device)
    model.train()
    task = make_task(task_name, cfg)
    optimizer = make_optimizer(model, cfg)
    batch = make_batch(task_name, cfg, batch_size, device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    train_model = torch.compile(model) if compiled else model

    def step(m=train_model):
        with autocast:
            loss, _ = task.loss(m, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    flops = count_flops(lambda: step(model))  # eager step: FlopCounterMode does not see inside compiled graphs
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    sm = SmActivity(_nvml_index(device)) if device.type == "cuda" else SmActivity(-1, nvml=_NoNvml())
    with UtilisationSampler(device) if device.type == "cuda" else _Null() as sampler, sm:
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step()
            sync()
            times.append((time.perf_counter() - t0) / args.iters)
    step_s = statistics.median(times)
    result = {"task": task_name, "batch_size": batch_size, "compile": compiled, "step_s": step_s,
              "frames_per_s": batch_size / step_s, "flops_per_step": flops,
              "tflops": flops / step_s / 1e12, "warmup_s": warmup_s,
              "params": sum(p.numel() for p in model.parameters()),
              "peak_mem_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
              "utilisation": getattr(sampler, "mean", None), **sm.as_dict()}
    return result  # the case's model, optimiser and batch go with this frame; the caller empties the cache


def run_engine_case(task_name: str, cfg, batch_size: int, nproc: int, data_path: str, device) -> dict:
    """One epoch of the engine itself (``signpose.train.entry.run``; several ranks through the elastic
    launch) on a preprocessed store: samples/s as the training logs them (``train/samples_per_s``)."""
    import dataclasses

    from signpose.train.entry import run
    from signpose.train.launch import train_on_local_ranks

    cfg = dataclasses.replace(cfg, data_path=data_path, batch_size=batch_size, epochs=1, progress=False,
                              track=False, checkpoint_dir="", output_dir="", real_eval_path="",
                              device="auto" if device.type == "cuda" else "cpu")
    t0 = time.perf_counter()
    result = run(cfg) if nproc == 1 else train_on_local_ranks(cfg, nproc)
    last = result.history[-1]
    return {"task": task_name, "batch_size": batch_size, "ranks": nproc, "mode": "engine",
            "samples_per_s": last["train/samples_per_s"], "wall_s": time.perf_counter() - t0,
            "global_step": result.global_step}


def generated_store(task_name: str, image_size: int) -> str:
    """A small generated store (dry runs of the engine mode)."""
    import tempfile

    from signpose.render import RenderSettings
    from signpose.shards import write_dataset
    from signpose.synth import generate_signer_frames

    folder = tempfile.mkdtemp(prefix="bench-engine-")
    write_dataset(generate_signer_frames(n_videos=4, frames_per_video=8, seed=0), folder,
                  RenderSettings(image_size=image_size), shard_size=8, workers=1, progress=False)
    return folder


def engine_mode(args, configs: dict, sizes: dict, device, report) -> list[dict]:
    import torch

    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    table = report.table("the engine's epoch (loader, copy, step with its syncs, schedule, DDP): samples/s",
                         ["task", "batch", "ranks", "samples/s", "steps", "wall s"])
    results = []
    for task_name, cfg in configs.items():
        if task_name not in args.tasks.split(","):
            continue
        data = generated_store(task_name, getattr(configs["skeleton"], "image_size", 64)) \
            if args.engine == "generate" else args.engine
        for batch_size in sizes[task_name]:
            for nproc in sorted({1, gpus}):
                r = run_engine_case(task_name, cfg, batch_size, nproc, data, device)
                results.append(r)
                table.add(task_name, batch_size, nproc, fmt(r["samples_per_s"]), r["global_step"], fmt(r["wall_s"], 1))
                print(json.dumps(r), flush=True)
    return results


def _nvml_index(device) -> int:
    """NVML's index of a torch CUDA device (they differ under CUDA_VISIBLE_DEVICES)."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    to_nvml = getattr(torch.cuda, "_get_nvml_device_index", None)
    return to_nvml(index) if to_nvml else index


class _NoNvml:
    """The CPU dry run's NVML: none."""

    def nvmlInit(self):
        raise RuntimeError("no GPU (dry run on CPU)")


class _Null:
    mean = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skeleton-batch-sizes", default="16,32,64,128")
    parser.add_argument("--face-batch-sizes", default="32,128,512,2048")
    parser.add_argument("--tasks", default="skeleton,face", help="which tasks (split long GPU runs)")
    parser.add_argument("--compile", default="off,on", help="'off', 'on' or 'off,on'")
    parser.add_argument("--iters", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak")
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument("--engine", default="",
                        help="engine mode on this preprocessed store ('generate': a small generated one)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny models, 2 small batches, compile off: proves the script runs")
    add_recording_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig

    dry = args.dry_run or args.quick
    if dry:
        device = torch.device("cpu")
        args.skeleton_batch_sizes, args.face_batch_sizes, args.compile = "2", "4", "off"
        args.iters, args.repeats, args.warmup = 1, 1, 1
        configs = {"skeleton": SkeletonTrainConfig(image_size=64, d_model=32, n_layers=1, n_heads=2,
                                                   decoder_channels=32, grid_size=4, use_weighted_loss=True),
                   "face": FaceTrainConfig(d_global=32, d_region=16, n_heads=2)}
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run for the CPU smoke run")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # The seed's sizes (the configs' defaults); the skeleton loss as the pipeline runs it.
        configs = {"skeleton": SkeletonTrainConfig(use_weighted_loss=True), "face": FaceTrainConfig()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    peak = peak_tflops(name, args.peak_tflops) if device.type == "cuda" else None
    report = Report(f"GPU training step, bf16: {name}" if not dry else "GPU script dry run on CPU "
                    "(tiny models; figures meaningless)", args)
    results = []
    sizes = {"skeleton": [int(s) for s in args.skeleton_batch_sizes.split(",")],
             "face": [int(s) for s in args.face_batch_sizes.split(",")]}
    if args.engine:
        results = engine_mode(args, configs, sizes, device, report)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"device": name, "results": results}, fh, indent=2)
        report.finish()
        return
    table = report.table(
        f"{name}; training step (fwd + loss + bwd + clip + AdamW) on a resident batch; peak bf16 "
        f"{fmt(peak) if peak else 'unknown'} TFLOP/s",
        STEP_COLUMNS)
    sm_notes: set[str] = set()
    for task_name, cfg in configs.items():
        if task_name not in args.tasks.split(","):
            continue
        for compiled in [c.strip() == "on" for c in args.compile.split(",")]:
            for batch_size in sizes[task_name]:
                try:
                    r = run_case(task_name, cfg, batch_size, compiled, device, args)
                except torch.cuda.OutOfMemoryError:
                    table.add(task_name, batch_size, "on" if compiled else "off", "out of memory",
                              *[""] * (len(STEP_COLUMNS) - 4))
                    torch.cuda.empty_cache()
                    continue
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                results.append(r)
                table.add(*step_row(r, peak))
                print(json.dumps(r), flush=True)
                if r["sm_active"] is None:
                    sm_notes.add(r["sm_unavailable"])
    for reason in sorted(sm_notes):
        report.note(f"SM activity: not available ({reason}); GPU util alone does not say how many SMs worked")
    report.note("FLOPs are counted on an eager step (torch.utils.flop_counter: matmuls, convolutions, "
                "attention); elementwise work is not counted, so TFLOP/s is a lower bound")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "peak_bf16_tflops": peak, "results": results}, fh, indent=2)
    report.finish()


if __name__ == "__main__":
    main()
