"""``python -m signpose.train.face``: the seed's training/hierarchical_keypoint/train.py with the same flags.

    python -m signpose.train.face --data_path keypoints_data.pkl --batch_size 32 --epochs 100 \\
        --d_global 256 --d_region 128

The same command as ``signpose train face``; the task itself is defined in :mod:`signpose.tasks.face`.
"""

from __future__ import annotations

import sys

from signpose.cli.train import add_task_parser, main_for
from signpose.tasks import get_task

TASK = "face"


def add_parser(subparsers):
    return add_task_parser(subparsers, get_task(TASK))


def main(argv=None) -> int:
    return main_for(TASK, argv)


if __name__ == "__main__":
    from signpose.cli import main as signpose_main

    sys.exit(signpose_main(["train", TASK, *sys.argv[1:]]))
