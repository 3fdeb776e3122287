"""``signpose train <task>``: the seed's training commands, one subcommand per registered task.

Every field of the task's config is a flag of the same name (the seed's flags among them); a bool
that defaults to False is a switch (``--use_weighted_loss``, as in the seed), one that defaults to
True gets ``--no_<field>``. The help text is the field's comment in the config's source; a
``Literal`` field offers its values as choices.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
import re
import tokenize
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from functools import cache

from signpose.errors import UserError
from signpose.ranges import field_range
from signpose.tasks import TaskSpec, get_task, list_tasks
from signpose.train.config import TrainConfig

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_arg(text: str) -> str:
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return text


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``name -> comment`` for the fields of ``cls`` and its dataclass bases, read from the source
    (``name: type = default  # comment``, continued by comment-only lines below it)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass) or klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # no source (a frozen install): flags keep their defaults as help
            continue
        current = None
        for line in source.splitlines():
            code, _, comment = _split_comment(line)
            match = re.match(r"^\s+([A-Za-z_]\w*)\s*:", code)
            if match and code.strip():
                current = match.group(1)
                if comment:
                    comments[current] = comment
            elif not code.strip() and comment and current in comments:
                comments[current] += " " + comment
            else:
                current = None
    return comments


def _split_comment(line: str) -> tuple[str, str, str]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return line, "", ""
    for token in tokens:
        if token.type == tokenize.COMMENT:
            return line[: token.start[1]], "#", token.string.lstrip("#").strip()
    return line, "", ""


def _group_of(parser: argparse.ArgumentParser, config_cls: type[TrainConfig], spec_name: str):
    model_fields = {f.name for f in fields(config_cls.model_config_cls())}
    base_fields = {f.name for f in fields(TrainConfig)}
    groups = {"train": parser.add_argument_group("training"),
              "task": parser.add_argument_group(f"{spec_name} task"),
              "model": parser.add_argument_group("model")}
    return lambda name: groups["model" if name in model_fields and name not in base_fields
                               else "train" if name in base_fields else "task"]


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[TrainConfig]) -> None:
    """``--<field>`` for every field of ``config_cls`` (see the module docstring)."""
    hints = typing.get_type_hints(config_cls)
    defaults = config_cls()
    comments = field_comments(config_cls)
    group_of = _group_of(parser, config_cls, config_cls.task)
    for f in sorted(fields(config_cls), key=lambda f: f.name not in {g.name for g in fields(TrainConfig)}):
        default, kind, about = getattr(defaults, f.name), hints[f.name], comments.get(f.name, "")
        group = group_of(f.name)
        if kind is bool:
            if default:
                group.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                                   help=f"turn off: {about}" if about else f"disable {f.name}")
            else:
                group.add_argument(f"--{f.name}", action="store_true", help=about or f"enable {f.name}")
            continue
        if type(None) in typing.get_args(kind):  # an optional value (int | None): a flag of its type
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        options: dict = {"type": kind, "default": default, "metavar": f.name.upper()}
        if typing.get_origin(kind) is typing.Literal:
            options.update(type=str, choices=typing.get_args(kind), metavar=None)
        if f.name == "device":
            options["type"] = device_arg
        elif (rule := field_range(f.name, kind)) is not None:
            options["type"] = rule  # signpose.ranges: refused at parse time, before any work
        help_text = f"{about} (default: %(default)s)" if about else "(default: %(default)s)"
        group.add_argument(f"--{f.name}", required=f.name == "data_path" and f.default is MISSING,
                           help=help_text, **options)


def config_from_args(args: argparse.Namespace, config_cls: type[TrainConfig]):
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})


def make_parser(config_cls: type[TrainConfig], description: str,
                parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=description)
    add_config_arguments(parser, config_cls)
    parser.set_defaults(_config_cls=config_cls, func=run_from_args)
    return parser


def add_task_parser(subparsers, spec: TaskSpec) -> argparse.ArgumentParser:
    """``signpose train <spec.name>``."""
    description = spec.description
    if spec.seed_script:
        description += f" Replaces the seed's {spec.seed_script} (same flags)."
    parser = subparsers.add_parser(spec.name, help=spec.description, description=description)
    return make_parser(spec.config_cls, description, parser)


def add_parser(subparsers) -> None:
    """``signpose train``, with one subcommand per registered task."""
    train = subparsers.add_parser("train", help="train a model (the seed's flags)",
                                  description="Train one task's model; the seed's flags.")
    tasks = train.add_subparsers(dest="task", required=True, metavar="{" + ",".join(s.name for s in list_tasks()) + "}")
    for spec in list_tasks():
        add_task_parser(tasks, spec)


def main_for(task: str, argv: Sequence[str] | None = None) -> int:
    """The seed-compatible ``python -m signpose.train.<task>`` (errors propagate to the caller)."""
    spec = get_task(task)
    args = make_parser(spec.config_cls, spec.description).parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    from signpose.train.entry import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args, args._config_cls)
    if not cfg.data_path:
        raise UserError(f"signpose train {cfg.task}: --data_path is required: a raw keypoint file or a "
                        "preprocessed data set (manifest.json or its store location)")
    data = None
    if cfg.track and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        data, decision = retraining_decision(cfg)
        if not decision.train:
            print(decision.reason)
            return 0
    result = run(cfg, track=cfg.track, data=data)
    outcome = result.extra.get("tracking")
    if outcome is not None:
        print(f"registered {outcome.model_name} version {outcome.model_version} ({outcome.alias}: "
              f"{outcome.reason}); MLflow run {outcome.run_id}")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = {k: round(v, 6) for k, v in result.best_metrics.items()}
    print(json.dumps({"task": cfg.task, "best_epoch": result.best_epoch, "best_metrics": best}, indent=2))
    return 0


def retraining_decision(cfg: TrainConfig):
    """(the task's data, the retraining policy's decision) for a tracked single-process training; under
    torchrun the launcher (the pipeline's training stage) decides before the ranks start."""
    from signpose.tracking import load_mlflow_settings
    from signpose.tracking.retrain import decide
    from signpose.train.inputs import load_task_data

    data = load_task_data(cfg.task, cfg)
    return data, decide(cfg.task, cfg, data.dataset_hash, data.info.get("manifest_uri", ""), load_mlflow_settings())
