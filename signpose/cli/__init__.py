"""``signpose``: one command line over the library.

    signpose inspect FILE                 what a keypoint file holds
    signpose render FILE --out DIR        the skeleton images the model is trained on
    signpose preprocess [--data_path F] --store URI   shards + manifest
    signpose dataset info|verify URI      a preprocessed data set: manifest, checksums
    signpose train skeleton|face --data_path ...      the seed's two training commands
    signpose models / predict / ui        the MLflow registry
    signpose submit / schedule --host URL Kubeflow Pipelines

Multi-word flags use underscores (--image_size); the older hyphenated spellings still work.
A mistake you can fix (a missing or bad file, an unknown model, a server that does not answer) is
one line on stderr and exit status 2; --debug or SIGNPOSE_DEBUG=1 shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from signpose import ranges
from signpose.cli.common import (
    Parser,
    RawDescriptionHelpFormatter,
    add_flag,
    debug_requested,
    package_version,
    run_command,
    walk_parsers,
)
from signpose.cli.dataset import add_parser as add_dataset_commands
from signpose.cli.io import add_parser as add_io_commands
from signpose.cli.io import add_read_limit_args
from signpose.cli.kfp import add_parser as add_kfp_commands
from signpose.cli.registry import add_parser as add_registry_commands
from signpose.cli.train import add_parser as add_train_commands


def _run_preprocess(args: argparse.Namespace) -> int:
    from signpose import stages
    from signpose.io.limits import ReadLimits

    ranges.check_split_fractions(args.dev_fraction, args.test_fraction)
    if not args.data_path:
        ranges.check_synthetic(args.synthetic_videos, args.synthetic_frames_per_video,
                               ReadLimits.resolve(args.max_frames).max_frames)
    manifest = stages.preprocess(args.data_path, args.store, image_size=args.image_size,
                                 shard_size=args.shard_size, synthetic_videos=args.synthetic_videos,
                                 synthetic_frames_per_video=args.synthetic_frames_per_video,
                                 workers=args.workers, max_frames=args.max_frames, max_rejected=args.max_rejected,
                                 replace=args.replace, dev_fraction=args.dev_fraction,
                                 test_fraction=args.test_fraction)
    print(f"{manifest.uri}: dataset {manifest.dataset_hash[:12]}, {manifest.splits}, "
          f"{len(manifest.shards)} shards")
    return 0


def _add_preprocess_parser(subparsers) -> None:
    parser = subparsers.add_parser("preprocess", help="validate, render and shard a keypoint file",
                                   description="The preprocess stage: read + validate keypoints, render "
                                               "skeleton images, write shards and the manifest (last).")
    add_flag(parser, "--data_path", default="", help="keypoint file or folder (default: generated signer data)")
    parser.add_argument("--store", required=True, help="destination: local folder or s3://bucket/prefix")
    add_flag(parser, "--image_size", type=ranges.DATASET_IMAGE_SIZE, default=256,
             help=f"rendered skeleton image side in pixels, {ranges.DATASET_IMAGE_SIZE.describe()} (default: 256)")
    add_flag(parser, "--shard_size", type=ranges.SHARD_SIZE, default=4096, help="frames per shard (default: 4096)")
    parser.add_argument("--workers", type=ranges.WORKERS, default=None,
                        help="render processes, for a corpus each rendering one source at a time (default: all cores)")
    add_flag(parser, "--dev_fraction", type=ranges.SPLIT_FRACTION, default=0.1,
             help=f"share of new videos held out for dev, {ranges.SPLIT_FRACTION.describe()}, dev + test below 1 "
                  "(default: 0.1); videos an earlier version placed keep their split, splits the input "
                  "gives are kept")
    add_flag(parser, "--test_fraction", type=ranges.SPLIT_FRACTION, default=0.1,
             help=f"share of new videos held out for test, {ranges.SPLIT_FRACTION.describe()} (default: 0.1)")
    add_flag(parser, "--synthetic_videos", type=ranges.SYNTHETIC_VIDEOS, default=24,
             help="videos of generated data when --data_path is not given (default: 24)")
    add_flag(parser, "--synthetic_frames_per_video", type=ranges.SYNTHETIC_FRAMES_PER_VIDEO, default=64,
             help="frames per generated video (default: 64)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the data set the store already holds (one data set per store prefix; "
                             "without it a different input is refused); its objects are deleted after the commit")
    add_read_limit_args(parser)
    parser.set_defaults(func=_run_preprocess)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="signpose", description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"signpose {package_version()}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_io_commands(commands)
    _add_preprocess_parser(commands)
    add_dataset_commands(commands)
    add_train_commands(commands)
    add_registry_commands(commands)
    add_kfp_commands(commands)
    _add_debug_flag(parser)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` before or after the command (``signpose --debug predict ...``, ``... predict --debug``)."""
    for path, sub in walk_parsers(parser):
        if "--debug" not in sub._option_string_actions:
            # Below the top level the default is "not given", so it cannot undo a --debug given earlier.
            sub.add_argument("--debug", action="store_true", default=False if not path else argparse.SUPPRESS,
                             help="on an error, show the full traceback (also: SIGNPOSE_DEBUG=1)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = debug_requested(getattr(args, "debug", False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:  # urllib3 warns on every retry of a server that does not answer: the error says it once
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return run_command(args.func, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
