"""Face auto-encoder CLI (the seed's ``training/hierarchical_keypoint/train.py``; same flags):

    python -m signpose.train.face --data_path keypoints_data.pkl --batch_size 32 --epochs 100 \\
        --d_global 256 --d_region 128

Also mounted as ``signpose train face`` through :func:`add_parser`. Every field of
:class:`~signpose.train.config.FaceTrainConfig` is a flag of the same name.
"""

from __future__ import annotations

import sys

from signpose.cli.train import main_for, make_parser, run_from_args
from signpose.train.config import FaceTrainConfig

DESCRIPTION = "Train HierarchicalKeypointTransformer: face keypoints (68, 3) -> (68, 3) auto-encoder."


def add_parser(subparsers):
    parser = subparsers.add_parser("face", help=DESCRIPTION, description=DESCRIPTION)
    make_parser(FaceTrainConfig, DESCRIPTION, parser)
    parser.set_defaults(func=run_from_args)
    return parser


def main(argv=None) -> int:
    return main_for(FaceTrainConfig, DESCRIPTION, argv)


if __name__ == "__main__":
    sys.exit(main())
