"""Skeleton task CLI (the seed's ``training/skeleton/train.py``; same flags):

    python -m signpose.train.skeleton --data_path phoenix_keypoints.pkl --batch_size 16 --epochs 100 \\
        --image_size 256 --use_weighted_loss --hand_weight 2.0 --face_weight 1.5

Also mounted as ``signpose train skeleton`` through :func:`add_parser`. Every field of
:class:`~signpose.train.config.SkeletonTrainConfig` is a flag of the same name.
"""

from __future__ import annotations

import sys

from signpose.cli.train import main_for, make_parser, run_from_args
from signpose.train.config import SkeletonTrainConfig

DESCRIPTION = "Train HierarchicalSkeletonTransformer: keypoints (143, 3) -> skeleton image (1, S, S)."


def add_parser(subparsers):
    parser = subparsers.add_parser("skeleton", help=DESCRIPTION, description=DESCRIPTION)
    make_parser(SkeletonTrainConfig, DESCRIPTION, parser)
    parser.set_defaults(func=run_from_args)
    return parser


def main(argv=None) -> int:
    return main_for(SkeletonTrainConfig, DESCRIPTION, argv)


if __name__ == "__main__":
    sys.exit(main())
