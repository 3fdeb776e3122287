"""``python -m signpose.train.skeleton``: the seed's training/skeleton/train.py with the same flags.

    python -m signpose.train.skeleton --data_path phoenix_keypoints.pkl --batch_size 16 --epochs 100 \\
        --image_size 256 --use_weighted_loss --hand_weight 2.0 --face_weight 1.5

The same command as ``signpose train skeleton``; the task itself is defined in :mod:`signpose.tasks.skeleton`.
"""

from __future__ import annotations

import sys

from signpose.cli.train import add_task_parser, main_for
from signpose.tasks import get_task

TASK = "skeleton"


def add_parser(subparsers):
    return add_task_parser(subparsers, get_task(TASK))


def main(argv=None) -> int:
    return main_for(TASK, argv)


if __name__ == "__main__":
    from signpose.cli import main as signpose_main

    sys.exit(signpose_main(["train", TASK, *sys.argv[1:]]))
