"""``signpose models``, ``signpose predict`` and ``signpose ui``: the registry from the command line.

    signpose models [--name skeleton-generator] [--json]
    signpose predict --model models:/skeleton-generator@champion INPUT --out DIR [--limit N]
    signpose ui [--port 5000]

Each subcommand is exposed as ``add_*_parser(subparsers)``; ``add_parser(subparsers)`` adds all three.
An unknown model URI or an MLflow server that does not answer is a user error (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signpose.cli.common import add_flag, connection_failure, int_at_least
from signpose.cli.io import frame_file_names
from signpose.errors import UserError
from signpose.io.frames import SPLITS

log = logging.getLogger(__name__)


# --- MLflow errors the user can fix -------------------------------------------------------------------

@contextmanager
def mlflow_errors(settings, model_uri: str | None = None) -> Iterator[None]:
    """MLflow's "no such model" and "server does not answer" as :class:`UserError` naming the
    model URI / the server and what to do (``settings``: the MlflowSettings in use)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except UserError:
        raise
    except Exception as err:
        failure = connection_failure(err)
        if failure is not None:
            raise UserError(f"cannot reach the MLflow server at {failure[0] or settings.tracking_uri} "
                            f"({failure[1]}): start it, or "
                            "point MLFLOW_TRACKING_URI (or tracking_uri in mlflow.yaml) at a running one") from err
        if model_uri and isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST":
            where = f" in {settings.effective_registry_uri}" if model_uri.startswith("models:/") else ""
            raise UserError(f"--model {model_uri}: {err.message}{where} "
                            "(`signpose models` lists the registered models, versions and aliases)") from err
        raise


# --- models -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionRow:
    model_name: str
    version: str
    aliases: tuple[str, ...]
    metric: str
    value: float | None
    dataset_hash: str
    run_id: str
    promotion_reason: str
    created: int

    def as_dict(self) -> dict:
        return {"model": self.model_name, "version": self.version, "aliases": list(self.aliases),
                "metric": self.metric, "value": self.value, "dataset_hash": self.dataset_hash,
                "run_id": self.run_id, "promotion_reason": self.promotion_reason, "created": self.created}


def list_versions(settings=None, model_names: list[str] | None = None, client=None) -> list[VersionRow]:
    """Every version of the configured models (or ``model_names``), newest first, with aliases and
    the promotion metric recorded at registration."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from signpose.tracking.registry import METRIC_TAG_PREFIX, TAG_PROMOTION_REASON
    from signpose.tracking.runs import configure_mlflow

    settings = configure_mlflow(settings)
    client = client or MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    names = model_names or [task.model_name for task in settings.tasks.values()]
    rows: list[VersionRow] = []
    for name in names:
        found = settings.task_for_model(name)
        metric = found[1].promotion_metric if found else ""
        aliases_by_version: dict[str, list[str]] = {}
        try:
            registered = client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":  # not trained yet: nothing to list
                continue
            raise
        for alias, version in (registered.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name = '{name}'")
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            tags = mv.tags or {}
            raw = tags.get(f"{METRIC_TAG_PREFIX}{metric}")
            rows.append(VersionRow(
                name, str(mv.version), tuple(sorted(aliases_by_version.get(str(mv.version), []))), metric,
                float(raw) if raw is not None else None, tags.get("dataset_hash", ""), mv.run_id or "",
                tags.get(TAG_PROMOTION_REASON, ""), int(mv.creation_timestamp or 0),
            ))
    return rows


def format_versions(rows: list[VersionRow]) -> str:
    if not rows:
        return "no registered model versions"
    header = ("MODEL", "VERSION", "ALIASES", "METRIC", "VALUE", "DATASET", "RUN")
    table = [header] + [
        (r.model_name, r.version, ",".join(r.aliases) or "-", r.metric or "-",
         "-" if r.value is None else f"{r.value:.6g}", r.dataset_hash[:12] or "-", r.run_id[:12] or "-")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table)


# Shown by `make run` for the newest version of each task: lower is better except these.
REPORT_METRICS = {"face": ("nme",), "skeleton": ("ssim", "psnr", "mse_hands", "mse_body", "nmse_hands", "nmse_body")}
HIGHER_IS_BETTER = {"ssim", "psnr"}


def real_signer_report(settings=None, client=None) -> str:
    """The newest registered version of each task: its generated validation metrics next to those on
    real signers (``val_real/``) and the trivial baseline's on the same real frames (``val_real_baseline/``),
    from the metric tags the version was registered with."""
    from mlflow import MlflowClient

    from signpose.tracking.registry import metric_tag
    from signpose.tracking.runs import configure_mlflow

    settings = configure_mlflow(settings)
    client = client or MlflowClient(settings.tracking_uri, settings.effective_registry_uri)
    newest: dict[str, VersionRow] = {}
    for row in list_versions(settings, client=client):
        newest.setdefault(row.model_name, row)
    table = [("MODEL", "VERSION", "METRIC", "GENERATED", "REAL SIGNERS", "BASELINE ON REAL", "BEATS IT")]
    for task_name, task in settings.tasks.items():
        row = newest.get(task.model_name)
        if row is None:
            continue
        tags = client.get_model_version(row.model_name, row.version).tags or {}

        def value(key, tags=tags):
            raw = tags.get(metric_tag(key))
            return None if raw is None else float(raw)

        for metric in REPORT_METRICS.get(task_name, ()):
            generated, real, base = (value(f"{prefix}/{metric}") for prefix in ("val", "val_real", "val_real_baseline"))
            beats = "-" if real is None or base is None else (
                "yes" if (real > base if metric in HIGHER_IS_BETTER else real < base) else "NO")
            version = f"{row.version} ({','.join(row.aliases)})" if row.aliases else row.version
            table.append((row.model_name, version, metric, *(_cell(v) for v in (generated, real, base)), beats))
    if len(table) == 1:
        return "no registered model versions"
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _cmd_models(args) -> int:
    from signpose.tracking.settings import load_mlflow_settings

    settings = load_mlflow_settings(args.config)
    with mlflow_errors(settings):
        rows = list_versions(settings, args.name or None)
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(format_versions(rows))
    return 0


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list registered model versions with aliases and metrics",
                                   description="List every registered version of the signpose models "
                                               "with its aliases (champion/challenger) and promotion metric.")
    parser.add_argument("--name", action="append",
                        help="model name (repeatable; default: the models named in mlflow.yaml)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--config", default=None, help="mlflow.yaml to read (default: ./mlflow.yaml)")
    parser.set_defaults(func=_cmd_models)
    return parser


# --- predict ------------------------------------------------------------------------------------------

def model_task(model_uri: str) -> str:
    """The task a logged model serves: its metadata's ``task``, else the task whose input shape its
    signature has (``signpose.tasks``)."""
    import mlflow

    from signpose.tasks import task_for_input_shape, task_names

    info = mlflow.models.get_model_info(model_uri)
    task = (info.metadata or {}).get("task")
    if task in task_names():
        return task
    inputs = info.signature.inputs.to_dict() if info.signature is not None else []
    shape = tuple(inputs[0].get("tensor-spec", {}).get("shape", ())) if inputs else ()
    spec = task_for_input_shape(shape) if shape else None
    if spec is not None:
        return spec.name
    raise UserError(f"{model_uri}: cannot tell which task the model serves (metadata {info.metadata}, "
                    f"input shape {shape})")


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, encoded = cv2.imencode(".png", image if image.ndim == 2 else image[..., ::-1])  # RGB -> BGR
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, path)


def predict(model_uri: str, input_path: str, out_dir: str, *, limit: int | None = None, split: str | None = None,
            batch_size: int = 32) -> dict:
    """Run a registered model over every frame of ``input_path`` (any format ``read_keypoints``
    reads) and write one PNG per frame into ``out_dir``: the generated skeleton image (skeleton
    models) or the original face landmarks with the reconstruction overlaid (face models), plus
    ``predictions.npz`` with the raw outputs. Returns a summary dict."""
    with tempfile.TemporaryDirectory(prefix="signpose-model-") as download:
        return _predict(model_uri, input_path, out_dir, download, limit=limit, split=split, batch_size=batch_size)


def _predict(model_uri: str, input_path: str, out_dir: str, download: str, *, limit: int | None,
             split: str | None, batch_size: int) -> dict:
    import torch
    from tqdm.auto import tqdm

    from signpose.io import read_keypoints
    from signpose.tasks import get_task
    from signpose.tracking.model_files import fetch_checked_model
    from signpose.tracking.training import load_registered_model

    frames = read_keypoints(input_path)
    # The model is fetched once and checked before anything reads it (its MLmodel included).
    folder, _ = fetch_checked_model(model_uri, dst_path=download)
    if split:
        frames = frames.subset(frames.split == split)
    keypoints = frames.keypoints
    index = np.arange(len(keypoints))
    task = model_task(str(folder))
    spec = get_task(task)
    usable = spec.samples.usable_frames(keypoints)
    skipped = int((~usable).sum())
    inputs, index = spec.samples.model_input(keypoints[usable]), index[usable]
    if limit is not None:
        inputs, index = inputs[:limit], index[:limit]
    if len(inputs) == 0:
        raise UserError(f"{input_path}: no frames to predict on (task {task}, {skipped} frames without "
                        f"{spec.samples.needs})")

    model = load_registered_model(str(folder))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(inputs), batch_size), desc=f"predict {task}", unit="batch"):
            outputs.append(model(torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size]))).numpy())
    predictions = np.concatenate(outputs)
    written = frame_file_names(frames.video_id[index], frames.frame_index[index])
    for row, name in enumerate(written):
        _write_png(out / name, spec.prediction_image(inputs[row], predictions[row]))
    with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as tmp:
        np.savez_compressed(tmp, inputs=inputs, outputs=predictions, video_id=frames.video_id[index],
                            frame_index=frames.frame_index[index])
    os.replace(tmp.name, out / "predictions.npz")
    summary = {"model": model_uri, "task": task, "input": str(input_path), "frames": len(written),
               "skipped": skipped, "out": str(out), "files": written}
    log.info("wrote %d %s predictions to %s", len(written), task, out)
    return summary


def _cmd_predict(args) -> int:
    from signpose.tasks import get_task
    from signpose.tracking.runs import configure_mlflow
    from signpose.tracking.settings import load_mlflow_settings

    settings = configure_mlflow(load_mlflow_settings(args.config))
    with mlflow_errors(settings, args.model):
        summary = predict(args.model, args.input, args.out, limit=args.limit, split=args.split,
                          batch_size=args.batch_size)
    print(f"{summary['frames']} {summary['task']} predictions from {summary['model']} written to {summary['out']}"
          + (f" ({summary['skipped']} frames without {get_task(summary['task']).samples.needs} skipped)"
             if summary["skipped"] else ""))
    return 0


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("predict", help="render a registered model's predictions for a keypoint file",
                                   description="Skeleton models: one generated skeleton PNG per frame. Face "
                                               "models: original (green) vs reconstruction (red) per frame.")
    parser.add_argument("--model", required=True,
                        help="model URI, e.g. models:/skeleton-generator@champion or models:/NAME/3")
    parser.add_argument("input", help="keypoint file or folder in any supported format")
    parser.add_argument("--out", required=True, help="output folder for the PNGs and predictions.npz")
    parser.add_argument("--limit", type=int_at_least(1), default=None,
                        help="at most this many frames (default: all)")
    parser.add_argument("--split", default=None, choices=SPLITS, help="only this split (default: all)")
    add_flag(parser, "--batch_size", type=int_at_least(1), default=32,
             help="frames per forward pass (default: 32)")
    parser.add_argument("--config", default=None, help="mlflow.yaml to read (default: ./mlflow.yaml)")
    parser.set_defaults(func=_cmd_predict)
    return parser


# --- ui -----------------------------------------------------------------------------------------------

def _cmd_ui(args) -> int:
    from signpose.tracking.server import ui_command
    from signpose.tracking.settings import load_mlflow_settings

    settings = load_mlflow_settings(args.config)
    if settings.is_remote_server:
        print(f"MLflow UI: {settings.tracking_uri} (the tracking URI is already a server)")
        return 0
    command = ui_command(settings, args.host, args.port)
    print(f"MLflow UI: http://{args.host}:{args.port}  (store {settings.tracking_uri}; Ctrl-C stops it)",
          flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    # Become the server: Ctrl-C and SIGTERM (make, a supervisor) reach mlflow directly, no orphan is left.
    os.execvpe(command[0], command, env)


def add_ui_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ui", help="start the MLflow UI on the local store and print its URL",
                                   description="Serve the MLflow UI over the local tracking store (runs, metrics, "
                                               "registered models) until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int_at_least(1), default=5000, help="port to listen on (default: 5000)")
    parser.add_argument("--config", default=None, help="mlflow.yaml to read (default: ./mlflow.yaml)")
    parser.set_defaults(func=_cmd_ui)
    return parser


def add_parser(subparsers) -> None:
    """Add ``models``, ``predict`` and ``ui`` to the ``signpose`` CLI."""
    add_models_parser(subparsers)
    add_predict_parser(subparsers)
    add_ui_parser(subparsers)
