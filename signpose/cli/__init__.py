"""``signpose``: one command line over the library.

    signpose inspect FILE                 what a keypoint file holds
    signpose render FILE --out DIR        the skeleton images the model is trained on
    signpose preprocess [--data_path F] --store URI   shards + manifest
    signpose dataset info|verify URI      a preprocessed data set: manifest, checksums
    signpose train skeleton|face --data_path ...      the seed's two training commands
    signpose models / predict / ui        the MLflow registry
    signpose submit / schedule --host URL Kubeflow Pipelines
"""

from __future__ import annotations

import argparse
import logging
import sys

from signpose.cli.io import add_parser as add_io_commands
from signpose.cli.registry import add_parser as add_registry_commands
from signpose.shards import add_parser as add_dataset_commands
from signpose.deploy.submit import add_parser as add_kfp_commands
from signpose.train import face as train_face
from signpose.train import skeleton as train_skeleton


def _run_preprocess(args: argparse.Namespace) -> int:
    from signpose import stages

    manifest = stages.preprocess(args.data_path, args.store, image_size=args.image_size,
                                 shard_size=args.shard_size, synthetic_videos=args.synthetic_videos,
                                 synthetic_frames_per_video=args.synthetic_frames_per_video,
                                 workers=args.workers)
    print(f"{manifest.uri}: dataset {manifest.dataset_hash[:12]}, {manifest.splits}, "
          f"{len(manifest.shards)} shards")
    return 0


def _add_preprocess_parser(subparsers) -> None:
    parser = subparsers.add_parser("preprocess", help="validate, render and shard a keypoint file",
                                   description="The preprocess stage: read + validate keypoints, render "
                                               "skeleton images, write shards and the manifest (last).")
    parser.add_argument("--data_path", default="", help="keypoint file (default: generated signer data)")
    parser.add_argument("--store", required=True, help="destination: local folder or s3://bucket/prefix")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--shard_size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    parser.add_argument("--synthetic_videos", type=int, default=24)
    parser.add_argument("--synthetic_frames_per_video", type=int, default=64)
    parser.set_defaults(func=_run_preprocess)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signpose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_io_commands(commands)
    _add_preprocess_parser(commands)
    add_dataset_commands(commands)
    train = commands.add_parser("train", help="train a model (the seed's flags)")
    tasks = train.add_subparsers(dest="task", required=True)
    train_skeleton.add_parser(tasks)
    train_face.add_parser(tasks)
    add_registry_commands(commands)
    add_kfp_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
