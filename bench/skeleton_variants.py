"""Sharper hands: the seed's skeleton model vs its bone-heat variant at equal parameters and CPU time.

    nice -n 10 .venv/bin/python bench/skeleton_variants.py [--cpu_budget 420] [--jobs 2] [--quick]

Each registered skeleton model (``--models``; default the seed's ``hierarchical_skeleton_transformer``
and ``skeleton_bone_heatmap``) is trained with the engine (:func:`signpose.train.engine.fit`,
unchanged) on the same generated data (``--videos`` x ``--frames_per_video`` frames of
:func:`signpose.synth.generate_signer_data`, the task's raw-file path: videos held out for validation)
at the README's training configuration (64 px, d_model 96, 3 encoder layers, 4 heads, decoder
channels 96, lr 2e-3, dropout 0, weighted loss, batch 16). Both models get the same widths, so their
parameter counts differ only by the variant's heat inputs (listed; the brief is within 10%).

**Equal training time.** torch runs on one thread in each model's own process, and time is that
process's CPU time (``time.process_time``: immune to the other load on a shared machine). A few
training steps of each model are timed first; its epochs are then ``cpu_budget / (step CPU x steps
per epoch)`` (rounded, at least one), so each model trains for about ``--cpu_budget`` CPU seconds; the
measured CPU seconds of the whole training (validation passes included) are in the table.

**Scores** are those of the epoch the engine keeps (best ``val/loss``, restored at the end): SSIM,
PSNR, MSE inside hands / face / body and the normalised MSE of hands and body (squared error over the
target's energy there: black = 1; ``signpose.metrics.SkeletonMetrics``) on the generated
validation frames and on the real signers' frames (``--real_eval_path``, every usable frame of every
file, targets rendered from the real keypoints, as ``signpose train --real_eval_path`` scores them;
scored once, after training, so that they do not take training time).
An all-black image is listed as the trivial baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import common
from common import Report, add_recording_arguments, fmt

WORK = Path(os.environ.get("SIGNPOSE_BENCH_DIR", "/tmp/signpose-bench"))
DEFAULT_REAL = common.REPO_ROOT.parent / "shared" / "data" / "real"
MODELS = ("hierarchical_skeleton_transformer", "skeleton_bone_heatmap")
README_CONFIG = dict(image_size=64, batch_size=16, d_model=96, n_layers=3, n_heads=4, decoder_channels=96,
                     lr=2e-3, dropout=0.0, use_weighted_loss=True)
QUICK_CONFIG = dict(image_size=64, batch_size=8, d_model=32, n_layers=1, n_heads=2, decoder_channels=32,
                    grid_size=8, lr=2e-3, dropout=0.0, use_weighted_loss=True)


def data_file(videos: int, frames_per_video: int, seed: int) -> Path:
    """The generated signer data as the seed's pickle, written once (cached under $SIGNPOSE_BENCH_DIR)."""
    from signpose.synth import generate_signer_data, write_seed_pickle

    path = WORK / f"skeleton-variants-signer-{videos}x{frames_per_video}-seed{seed}.pkl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write_seed_pickle(tmp, generate_signer_data(n_videos=videos, frames_per_video=frames_per_video, seed=seed))
        os.replace(tmp, path)
    return path


def step_cpu_seconds(cfg, train_ds, steps: int) -> float:
    """CPU seconds of one training step (forward, the task's loss, backward, AdamW) of ``cfg``'s model."""
    import torch
    from torch.utils.data import DataLoader

    from signpose.models import build_model
    from signpose.tasks import get_task

    model = build_model(cfg).train()
    objective = get_task("skeleton").objective(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    batches = iter(DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True))
    warmup = 2
    for i in range(warmup + steps):
        if i == warmup:
            started = time.process_time()
        loss, _ = objective.loss(model, next(batches))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.process_time() - started) / steps


def train_one(model_name: str, overrides: dict, data_path: str, real_path: str, cpu_budget: float,
              calibration_steps: int, seed: int) -> dict:
    """One model, in its own process: calibrate, train for about ``cpu_budget`` CPU seconds, score."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    from signpose.models import build_model
    from signpose.tasks import SkeletonTrainConfig, get_task
    from signpose.train.distributed import seed_everything
    from signpose.train.engine import evaluate, fit
    from signpose.train.inputs import load_task_data
    from signpose.train.real_eval import REAL_EVAL_NAME, load_real_eval

    cfg = SkeletonTrainConfig(**overrides, model=model_name, data_path=data_path, real_eval_path=real_path, seed=seed,
                              device="cpu", amp="off", num_workers=0, progress=False, track=False)
    data = load_task_data("skeleton", cfg)
    real = load_real_eval("skeleton", real_path, cfg.image_size) if real_path else None
    step_s = step_cpu_seconds(cfg, data.train, calibration_steps)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    cfg.epochs = max(1, round(cpu_budget / (step_s * steps_per_epoch)))
    seed_everything(cfg.seed)
    model = build_model(cfg)
    started = time.process_time()
    result = fit("skeleton", model, data.train, data.val, cfg)
    cpu_s = time.process_time() - started
    metrics = dict(result.best_metrics)
    if real is not None:  # the kept (restored) weights on the real frames
        scored = evaluate(get_task("skeleton").objective(cfg), model, DataLoader(real, batch_size=64),
                          torch.device("cpu"))
        metrics.update({f"{REAL_EVAL_NAME}/{key.split('/', 1)[1]}": value for key, value in scored.items()})
    shown = None
    if real is not None:  # the kept weights' images of a few real frames, for --panel
        inputs, targets = panel_frames(real)
        with torch.no_grad():
            shown = (targets.numpy(), model.eval()(inputs).numpy())
    return dict(model=model_name, params=sum(p.numel() for p in model.parameters()), step_s=step_s,
                epochs=cfg.epochs, steps=result.global_step, cpu_s=cpu_s, best_epoch=result.best_epoch, metrics=metrics,
                shown=shown,
                n_train=len(data.train), n_val=len(data.val), n_real=len(real) if real else 0)


def panel_frames(real, count: int = 6):
    """``count`` real frames with both hands present, evenly spread over the set: (keypoints, targets)."""
    import torch

    from signpose import layout

    keypoints = torch.stack([real[i][0] for i in range(len(real))])
    both = ((keypoints[:, layout.LEFT_HAND, 2] > 0).any(1) & (keypoints[:, layout.RIGHT_HAND, 2] > 0).any(1))
    candidates = torch.nonzero(both).flatten() if both.any() else torch.arange(len(real))
    picked = candidates[torch.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().long()]
    return keypoints[picked], torch.stack([real[int(i)][1] for i in picked]).float()


def write_panel(path: str, rows: list[dict], zoom: int = 3) -> None:
    """Columns: target, then each model's image of the same real frames (grey, nearest-neighbour zoom)."""
    import cv2
    import numpy as np

    targets = rows[0]["shown"][0]
    short = {"hierarchical_skeleton_transformer": "seed model"}
    columns = [("target", targets)] + [(short.get(row["model"], row["model"]), row["shown"][1]) for row in rows]
    size = targets.shape[-1] * zoom

    def tile(image):
        grey = np.clip(image[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.copyMakeBorder(cv2.resize(grey, (size, size), interpolation=cv2.INTER_NEAREST),
                                  2, 2, 2, 2, cv2.BORDER_CONSTANT, value=80)

    body = np.vstack([np.hstack([tile(images[i]) for _, images in columns]) for i in range(len(targets))])
    header = np.zeros((24, body.shape[1]), np.uint8)
    for j, (name, _) in enumerate(columns):
        cv2.putText(header, name[:30], (j * (size + 4) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, 255, 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", np.vstack([header, body]))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(png.tobytes())
    os.replace(tmp, path)


def black_baseline(overrides: dict, data_path: str, real_path: str) -> dict:
    """Scores of an all-black image on the same validation and real frames."""
    import torch
    from torch.utils.data import DataLoader

    from signpose.tasks import SkeletonTrainConfig, get_task
    from signpose.train.inputs import load_task_data
    from signpose.train.real_eval import load_real_eval

    cfg = SkeletonTrainConfig(**overrides, data_path=data_path, num_workers=0, track=False)
    data = load_task_data("skeleton", cfg)
    sets = {"val": data.val}
    if real_path:
        sets["val_real"] = load_real_eval("skeleton", real_path, cfg.image_size)
    objective = get_task("skeleton").objective(cfg)
    scores = {}
    for name, dataset in sets.items():
        metrics = objective.new_metrics()
        for batch in DataLoader(dataset, batch_size=64):
            objective.update_metrics(metrics, torch.zeros_like(batch[1], dtype=torch.float32), batch)
        scores.update({f"{name}/{key.split('/', 1)[1]}": value for key, value in metrics.compute().items()})
    return dict(model="all-black image (trivial baseline)", metrics=scores)


def score_row(table, row: dict, prefix: str, with_training: bool) -> None:
    m = row["metrics"]
    if f"{prefix}/ssim" not in m:
        return
    hands, body = m[f"{prefix}/mse_hands"], m[f"{prefix}/mse_body"]
    training = ([fmt(row["params"]), f"{row['epochs']} ({row['steps']:,})", fmt(row["cpu_s"]),
                 fmt(row["step_s"] * 1000)] if with_training else ["-", "-", "-", "-"])
    table.add(row["model"], *training, f"{m[f'{prefix}/ssim']:.4f}", f"{m[f'{prefix}/psnr']:.2f}",
              f"{hands:.5f}", f"{m[f'{prefix}/mse_face']:.5f}", f"{body:.5f}",
              f"{hands / body:.1f}x" if body > 0 else "n/a",
              *(f"{m[f'{prefix}/nmse_{region}']:.4f}" if f"{prefix}/nmse_{region}" in m else "n/a"
                for region in ("hands", "body")))


HEADERS = ["model", "parameters", "epochs (steps)", "train CPU s", "CPU ms/step", "SSIM", "PSNR dB",
           "MSE hands", "MSE face", "MSE body", "hands / body", "NMSE hands", "NMSE body"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registered skeleton models to compare")
    parser.add_argument("--cpu_budget", type=float, default=420.0, help="training CPU seconds per model")
    parser.add_argument("--videos", type=int, default=100, help="generated videos (10%% held out for validation)")
    parser.add_argument("--frames_per_video", type=int, default=48)
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, data order) of every model")
    parser.add_argument("--real_eval_path", default=str(DEFAULT_REAL) if DEFAULT_REAL.exists() else "",
                        help="real signers' keypoint files ('' = none; default ../shared/data/real when present)")
    parser.add_argument("--calibration_steps", type=int, default=8, help="timed steps per model before training")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (one process, one thread each)")
    parser.add_argument("--panel", default="", help="write a PNG of real frames: target and each model's image")
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.cpu_budget, args.videos, args.frames_per_video, args.calibration_steps = 2.0, 6, 8, 1
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = QUICK_CONFIG if args.quick else README_CONFIG
    data_path = str(data_file(args.videos, args.frames_per_video, args.data_seed))
    report = Report("Skeleton variants: seed model vs bone heat at equal parameters and CPU time", args)
    jobs = [(name, overrides, data_path, args.real_eval_path, args.cpu_budget, args.calibration_steps, args.seed)
            for name in args.models]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(train_one, *zip(*jobs)))
    baseline = black_baseline(overrides, data_path, args.real_eval_path)
    config = ", ".join(f"{k} {v}" for k, v in overrides.items())
    for prefix, what in (("val", f"generated validation ({rows[0]['n_val']} frames)"),
                         ("val_real", f"real signers ({rows[0]['n_real']} frames of {args.real_eval_path})")):
        if prefix == "val_real" and not args.real_eval_path:
            continue
        table = report.table(f"{what}: scores of the kept epoch; {config}; {rows[0]['n_train']} training "
                             f"frames; about {args.cpu_budget:.0f} CPU s per model", HEADERS)
        for row in rows:
            score_row(table, row, prefix, with_training=True)
        score_row(table, baseline, prefix, with_training=False)
    report.note("each model trained in its own process on one torch thread; CPU s = that process's "
                "time.process_time() over the whole fit (the generated validation pass of every epoch included); epochs from a "
                f"{args.calibration_steps}-step CPU calibration of each model")
    report.note("kept epoch = lowest val/loss (the engine's restore_best): " +
                ", ".join(f"{row['model']} epoch {row['best_epoch'] + 1} of {row['epochs']}" for row in rows))
    if args.panel and all(row["shown"] is not None for row in rows):
        write_panel(args.panel, rows)
        report.note(f"panel of {len(rows[0]['shown'][0])} real frames with both hands (target, then each "
                    f"model): {args.panel}")
    report.finish()


if __name__ == "__main__":
    main()
