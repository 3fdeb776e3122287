"""Data path vs model: frames/s the loader delivers vs frames/s a training step consumes, on CPU.

    .venv/bin/python bench/data_vs_model.py [--steps 4] [--repeats 3] [--quick]

For each task (skeleton, face) and each configuration:

- "default": the training commands' defaults (the seed's sizes: skeleton 256 px, batch 16, d_model 256,
  4 layers; face batch 32, d_global 256, d_region 128) on the preprocess stage's default synthetic data
  (24 videos x 64 frames, shard size 4,096);
- "make run": ``pipelines.local_run.SMALL_RUN`` (64 px, skeleton batch 32 / d_model 64 / 2 layers,
  face batch 64 / d_global 64 / d_region 32) on its synthetic data (24 x 48 frames, shard size 512).

The data set is written once by ``signpose.stages.preprocess`` (cached under $SIGNPOSE_BENCH_DIR).
Loader rate = one full pass over the train split through a ``DataLoader`` at the task's batch size,
num_workers 0 (one process, so the rate is per core), for the two data paths the code has: the engine's
(``load_split`` -> in-memory uint8 shards, map-style, shuffled; what ``--data_path <manifest>`` uses)
and the streaming ``ShardStream`` (fetch + checksum + decode every shard each epoch).
Step rate = the engine's training step on one batch (forward, the task's loss -- weighted for the
skeleton, as the pipeline sets it -- backward, grad clipping, AdamW, LR schedule).

torch runs with one thread, so CPU time = one core's work for both sides; the ratio loader/step is
computed from CPU time (robust on a shared, loaded machine); wall-clock rates are listed too.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import common  # noqa: F401
from common import Report, add_recording_arguments, fmt, measure

WORK = Path(os.environ.get("SIGNPOSE_BENCH_DIR", "/tmp/signpose-bench"))


def configurations(quick: bool) -> dict[str, dict]:
    from pipelines.local_run import SMALL_RUN

    default = dict(data=dict(image_size=256, shard_size=4096, synthetic_videos=24, synthetic_frames_per_video=64),
                   skeleton={}, face={})
    small = dict(data=dict(image_size=SMALL_RUN["image_size"], shard_size=SMALL_RUN["shard_size"],
                           synthetic_videos=SMALL_RUN["synthetic_videos"],
                           synthetic_frames_per_video=SMALL_RUN["synthetic_frames_per_video"]),
                 skeleton=dict(SMALL_RUN["skeleton_overrides"], batch_size=SMALL_RUN["skeleton_batch_size"],
                               image_size=SMALL_RUN["image_size"]),
                 face=dict(SMALL_RUN["face_overrides"], batch_size=SMALL_RUN["face_batch_size"],
                           d_global=SMALL_RUN["d_global"], d_region=SMALL_RUN["d_region"]))
    if quick:  # tiny data and models: only proves the script runs
        tiny_data = dict(image_size=64, shard_size=64, synthetic_videos=4, synthetic_frames_per_video=32)
        return {"quick": dict(data=tiny_data,
                              skeleton=dict(image_size=64, batch_size=8, d_model=32, n_layers=1, n_heads=2,
                                            decoder_channels=32, grid_size=4),
                              face=dict(batch_size=8, d_global=32, d_region=16, n_heads=2))}
    return {"default (seed sizes)": default, "make run (SMALL_RUN)": small}


def prepare(data: dict):
    from signpose import stages

    name = "dvm-" + "-".join(f"{k}{v}" for k, v in sorted(data.items()))
    # A cache keyed by the parameters: an older generator's data set there is replaced.
    return stages.preprocess(input_uri="", store_uri=str(WORK / name), workers=1, replace=True, **data)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    add_recording_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 1, 1

    import torch
    from torch.utils.data import DataLoader

    from signpose.data import ShardStream, load_split
    from signpose.models import build_model
    from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig
    from signpose.train.engine import make_optimizer, make_task, warmup_cosine

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    report = Report("Data path vs model: loader frames/s vs training-step frames/s (CPU, 1 thread)", args)
    table = report.table(
        "Frames/s per core (CPU time; wall in brackets); ratio = loader / step, target >= 3x",
        ["config", "task", "batch", "model params", "step frames/s", "engine loader (load_split) frames/s",
         "ratio", "ShardStream frames/s", "ratio (stream)"])
    for config_name, config in configurations(args.quick).items():
        manifest = prepare(config["data"])
        for task_name, cfg_cls in (("skeleton", SkeletonTrainConfig), ("face", FaceTrainConfig)):
            overrides = dict(config[task_name])
            if task_name == "skeleton":
                overrides.setdefault("use_weighted_loss", True)
            cfg = cfg_cls.from_dict({**overrides, "data_path": manifest.uri, "progress": False})
            train = load_split(manifest, "train", task_name)

            def loader_for(ds, shuffle):
                return DataLoader(ds, batch_size=cfg.batch_size, shuffle=shuffle, num_workers=0,
                                  generator=torch.Generator().manual_seed(0) if shuffle else None)

            def one_pass(loader):
                for batch in loader:
                    batch[0].sum()  # touch it
                return None

            engine_loader = loader_for(train, True)
            t_loader = measure(lambda: one_pass(engine_loader), repeats=args.repeats, warmup=1, items=len(train))
            stream = ShardStream(manifest, "train", task=task_name, shuffle=True)
            stream_loader = loader_for(stream, False)
            t_stream = measure(lambda: one_pass(stream_loader), repeats=args.repeats, warmup=1,
                               items=sum(1 for _ in itertools.chain.from_iterable(
                                   b[0] for b in stream_loader)))

            model = build_model(cfg)
            model.train()
            task = make_task(task_name, cfg)
            optimizer = make_optimizer(model, cfg)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1000, 10, cfg.min_lr_ratio))
            batch = next(iter(engine_loader))

            def steps():
                for _ in range(args.steps):
                    loss, _ = task.loss(model, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()

            t_step = measure(steps, repeats=args.repeats, warmup=1, items=args.steps * len(batch[0]))
            params = sum(p.numel() for p in model.parameters())
            table.add(config_name, task_name, cfg.batch_size, f"{params / 1e6:.2f} M",
                      f"{fmt(t_step.per_s_cpu)} ({fmt(t_step.per_s_wall)})",
                      f"{fmt(t_loader.per_s_cpu)} ({fmt(t_loader.per_s_wall)})",
                      f"{t_loader.per_s_cpu / t_step.per_s_cpu:.0f}x",
                      f"{fmt(t_stream.per_s_cpu)} ({fmt(t_stream.per_s_wall)})",
                      f"{t_stream.per_s_cpu / t_step.per_s_cpu:.0f}x")
            print(f"{config_name} {task_name}: step {t_step.per_s_cpu:,.0f}/s, loader {t_loader.per_s_cpu:,.0f}/s, "
                  f"stream {t_stream.per_s_cpu:,.0f}/s", flush=True)
    report.note("skeleton steps use the weighted loss (the pipeline's use_weighted_loss=True); "
                "the ShardStream pass includes fetching, checksumming and decoding every shard of the split")
    report.finish()


if __name__ == "__main__":
    main()
