"""The valid range of every numeric flag and training-config field, in one place.

A value outside its range is refused before any work: on the command line by the flag's argparse
``type`` (one ``error:`` line, exit status 2), and for a config built elsewhere (a KFP parameter dict,
``TrainConfig.from_dict``) by the config's ``__post_init__`` (:func:`check_config`). Every float must
be finite (``--lr nan`` is refused). The upper bounds keep one process's memory sane: an image side
of 100,000 pixels asks for 10 GB per frame before anything is drawn.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields

from signpose.errors import UserError


class RangeError(UserError, ValueError):
    """A number outside its documented range; the message names the flag/field and the range."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    integer: bool = True
    low_open: bool = False  # the low end itself is refused (lr > 0, fps > 0)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"{self.low:,}" if self.integer else f"{self.low:g}"
        high = f"{self.high:,}" if self.integer else f"{self.high:g}"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}]"

    def problem(self, value) -> str | None:
        """None when ``value`` is in range, else why not."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {self.describe()}, got {value!r}"
        if self.integer and not float(value).is_integer():
            return f"must be {self.describe()}, got {value!r}"
        inside = math.isfinite(value) and (self.low < value if self.low_open else self.low <= value) \
            and value <= self.high
        return None if inside else f"must be {self.describe()}, got {value!r}"

    def __call__(self, text: str):
        """argparse ``type``: the parsed value, or a usage error naming the range."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if (why := self.problem(value)) is not None:
            raise argparse.ArgumentTypeError(why)
        return value

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return self.describe()


ANY_FINITE = Range(-1e300, 1e300, integer=False)

# --- rendering and preprocessing (render, preprocess) --------------------------------------------------
RENDER_IMAGE_SIZE = Range(8, 4096)        # 4,096^2 px = 16.8 MB per image, one image at a time
DATASET_IMAGE_SIZE = Range(8, 1024)       # preprocess renders a whole shard of images per worker
THICKNESS = Range(0, 256)
FPS = Range(0, 1000, integer=False, low_open=True)  # the GIF frame time is 1 / fps
WORKERS = Range(1, 256)
SHARD_SIZE = Range(1, 65_536)
SYNTHETIC_VIDEOS = Range(1, 100_000)
SYNTHETIC_FRAMES_PER_VIDEO = Range(1, 100_000)
# The share of new videos held out for dev / test (signpose.datasets.splits); together below 1.
SPLIT_FRACTION = Range(0, 1, integer=False)

# --- training: fields of signpose.train.config.TrainConfig and the task configs ------------------------
TRAIN_RANGES: dict[str, Range] = {
    "batch_size": Range(1, 65_536),
    "epochs": Range(1, 1_000_000),
    "lr": Range(0, 10, integer=False),      # 0 freezes the weights (an evaluation-only run)
    "weight_decay": Range(0, 10, integer=False),
    "warmup_fraction": Range(0, 1, integer=False),
    "min_lr_ratio": Range(0, 1, integer=False),
    "grad_clip": Range(0, 1e6, integer=False),
    "seed": Range(0, 2**32 - 1),
    "num_workers": Range(-1, 256),
    "val_fraction": Range(0, 1, integer=False),
    "checkpoint_every": Range(0, 10**12),
    "early_stopping_patience": Range(0, 1_000_000),
    "max_frames": Range(1, 10**12),
    "max_rejected": Range(0, 1, integer=False),
    "image_size": Range(64, 1024),        # the skeleton model's output side (also a power of two)
    "dropout": Range(0, 1, integer=False, low_open=False),
    "hand_weight": Range(0, 1e6, integer=False),
    "face_weight": Range(0, 1e6, integer=False),
    "weight_margin": Range(0, 1, integer=False),
}


def field_range(name: str, kind: type) -> Range | None:
    """The range of the config field ``name`` of type ``kind``: its entry in :data:`TRAIN_RANGES`,
    any finite number for other floats, None (no check) for other types."""
    if name in TRAIN_RANGES:
        return TRAIN_RANGES[name]
    return ANY_FINITE if kind is float else None


def check_config(config) -> None:
    """Refuse the first field of the dataclass ``config`` outside its range (:class:`RangeError`)."""
    import typing

    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        kind = hints.get(f.name)
        if value is None or kind is bool or isinstance(value, (str, bool)):
            continue
        rule = field_range(f.name, float if isinstance(value, float) else kind)
        if rule is not None and (why := rule.problem(value)) is not None:
            raise RangeError(f"{type(config).__name__}.{f.name} (--{f.name}) {why}")


def check_synthetic(videos: int, frames_per_video: int, max_frames: int) -> None:
    """Generated data must fit the frame ceiling of one read (``--max_frames``): checked before a frame
    is generated."""
    if videos * frames_per_video > max_frames:
        raise RangeError(f"--synthetic_videos {videos:,} x --synthetic_frames_per_video {frames_per_video:,} = "
                         f"{videos * frames_per_video:,} frames, more than the ceiling of {max_frames:,} frames "
                         "per read; ask for fewer (or raise --max_frames)")


def check_split_fractions(dev_fraction: float, test_fraction: float) -> None:
    """``--dev_fraction`` and ``--test_fraction`` each in :data:`SPLIT_FRACTION` and together below 1
    (some new videos must train)."""
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if (why := SPLIT_FRACTION.problem(value)) is not None:
            raise RangeError(f"--{name} {why}")
    if dev_fraction + test_fraction >= 1:
        raise RangeError(f"--dev_fraction {dev_fraction:g} + --test_fraction {test_fraction:g} = "
                         f"{dev_fraction + test_fraction:g}: together they must stay below 1 (the other new videos "
                         "train); lower one of them")
