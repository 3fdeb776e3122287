"""What the two task CLIs share: build the model, load ``--data_path``, fit, write the outputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence

import torch

from signpose.io.atomic import atomic_write_bytes
from signpose.models import create_model
from signpose.train.config import TrainConfig, add_config_arguments, config_from_args
from signpose.train.engine import TrainResult, fit, seed_everything
from signpose.train.inputs import load_task_data

log = logging.getLogger(__name__)


def build_model(cfg) -> torch.nn.Module:
    """The task's registered model from the config, initialised from ``cfg.seed``."""
    seed_everything(cfg.seed)
    return create_model(cfg.task, **cfg.model_config().to_dict())


def write_outputs(result: TrainResult, output_dir: str) -> None:
    """``model.pt`` (state dict + model config; load with ``torch.load(weights_only=True)``) and
    ``metrics.json`` (best epoch's metrics and the whole history)."""
    import io

    buffer = io.BytesIO()
    torch.save({"task": result.config.task, "model_config": result.config.model_config().to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()}}, buffer)
    atomic_write_bytes(os.path.join(output_dir, "model.pt"), buffer.getvalue())
    summary = {"task": result.config.task, "best_epoch": result.best_epoch, "best_metrics": result.best_metrics,
               "global_step": result.global_step, "stopped_early": result.stopped_early,
               "history": result.history, "config": result.config.to_dict()}
    atomic_write_bytes(os.path.join(output_dir, "metrics.json"), (json.dumps(summary, indent=2) + "\n").encode())


def run(cfg: TrainConfig, callbacks: Sequence = ()) -> TrainResult:
    """Train one task end to end from its config (the CLI and ``signpose train <task>`` call this)."""
    data = load_task_data(cfg.task, cfg)
    model = build_model(cfg)
    result = fit(cfg.task, model, data.train, data.val, cfg, callbacks)
    result.extra["data"] = {"source": data.source, "dataset_hash": data.dataset_hash, **data.info}
    # Under torchrun every rank gets here with the same weights; one writes.
    if cfg.output_dir and int(os.environ.get("RANK", "0")) == 0:
        write_outputs(result, cfg.output_dir)
        log.info("wrote %s/model.pt and metrics.json", cfg.output_dir)
    return result


def make_parser(config_cls: type[TrainConfig], description: str,
                parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=description)
    add_config_arguments(parser, config_cls)
    parser.set_defaults(_config_cls=config_cls)
    return parser


def main_for(config_cls: type[TrainConfig], description: str, argv: Sequence[str] | None = None) -> int:
    args = make_parser(config_cls, description).parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args, args._config_cls)
    if cfg.track:
        from signpose.stages import train_task

        outcome = train_task(cfg.task, cfg.data_path, config={k: v for k, v in cfg.to_dict().items()
                                                              if k != "data_path"})
        result = outcome.result
        if cfg.output_dir:
            write_outputs(result, cfg.output_dir)
        print(f"registered {outcome.model_name} version {outcome.model_version} ({outcome.alias}: "
              f"{outcome.reason}); MLflow run {outcome.run_id}")
    else:
        result = run(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = {k: round(v, 6) for k, v in result.best_metrics.items()}
    print(json.dumps({"task": cfg.task, "best_epoch": result.best_epoch, "best_metrics": best}, indent=2))
    return 0
