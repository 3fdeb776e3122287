"""``make run``: execute the real KFP DAG locally (``kfp.local``, SubprocessRunner) on embedded defaults.

The object store (shards + manifest) and KFP's pipeline root (task artifacts) land under ``--workdir``;
MLflow follows ``mlflow.yaml`` (default: ``mlruns.db`` + ``mlartifacts/`` in the current folder), so
``make ui`` and ``signpose models`` see the runs afterwards.
"""

from __future__ import annotations

import argparse
import builtins
import logging
import time
from pathlib import Path

from signpose.resources import REAL_SIGNERS

# Small enough that the whole DAG finishes in about 3 minutes on 2 CPU cores, and trained enough that
# both models beat the trivial baselines on the real signers that ship with the package (docs/training.md,
# "make run"): a higher learning rate and no dropout for the few hundred steps there are, and the
# skeleton model's bone-heat variant, which learns thin hands in that budget where the seed's model
# does not beat an all-black image yet. The training commands themselves default to the seed's sizes.
SMALL_RUN = dict(
    image_size=64,
    shard_size=256,
    render_tasks=2,
    synthetic_videos=24,
    synthetic_frames_per_video=48,
    skeleton_epochs=5,
    skeleton_batch_size=32,
    skeleton_overrides={"model": "skeleton_bone_heatmap", "d_model": 64, "n_layers": 2, "n_heads": 4,
                        "decoder_channels": 64, "lr": 2e-3, "dropout": 0.0, "num_workers": 0},
    face_epochs=15,
    face_batch_size=32,
    d_global=64,
    d_region=32,
    face_overrides={"n_heads": 4, "lr": 3e-3, "dropout": 0.0, "num_workers": 0},
    real_eval_uri=REAL_SIGNERS,
    gpu_count="0",  # the CPU; the cluster default "1" refuses to start without a GPU in the pod
)


def run_local(workdir: str | Path = "work", input_uri: str = "", **overrides) -> dict:
    import kfp.local

    from pipelines.training_pipeline import signpose_training
    from signpose.tracking import load_mlflow_settings

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = load_mlflow_settings()
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(workdir / "kfp"))
    params = dict(SMALL_RUN, **overrides)
    started = time.monotonic()
    # kfp.local patches builtins.print and the root logger per task; with two tasks running in
    # parallel threads the restores interleave and the patches outlive the run. Undo them here.
    print_before, root_handlers = builtins.print, logging.getLogger().handlers[:]
    try:
        signpose_training(
            input_uri=input_uri,
            store_uri=str(workdir / "store"),
            mlflow_tracking_uri=settings.tracking_uri,
            **params,
        )
    finally:
        builtins.print = print_before
        logging.getLogger().handlers[:] = root_handlers
    return {"seconds": time.monotonic() - started, "tracking_uri": settings.tracking_uri, "settings": settings}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="work")
    parser.add_argument("--data_path", default="", help="keypoint file; default: generated signer data")
    parser.add_argument("--force_training", action="store_true",
                        help="train even when the champions were trained on the same data, config and code")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    outcome = run_local(args.workdir, input_uri=args.data_path, force_training=args.force_training)

    from signpose.cli.registry import format_versions, list_versions, real_signer_report

    print(f"\nPipeline finished in {outcome['seconds']:.0f} s. Registered model versions "
          f"({outcome['tracking_uri']}):")
    print(format_versions(list_versions(outcome["settings"])))
    print("\nThe new versions on generated validation data and on the real signers that ship with signpose "
          "(baseline: the mean face / an all-black image):")
    print(real_signer_report(outcome["settings"]))
    print("\nSee the runs, images and registered models in the MLflow UI:\n  make ui   "
          "(= .venv/bin/signpose ui, then open http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
