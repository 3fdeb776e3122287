"""How much one read may hold: the frame ceiling and the share of frames validation may reject.

``--max_frames`` (``inspect``, ``render``, ``preprocess``; ``SIGNPOSE_MAX_FRAMES`` for every
command, training included) caps the frames one :func:`~signpose.io.read_keypoints` call accepts,
file or folder. Readers check the frame count a file *declares* (an ``.npy`` header's shape, a
``.pose`` body's frame count, the number of JSON / ``.pts`` files, the frames of a pickle's splits)
against it before they allocate the frames, so a small file declaring millions of frames is refused
with a one-line error instead of exhausting memory. The default, 1,000,000 frames (1.7 GB of
float32 keypoints), holds all of PHOENIX-2014T (827k frames) in one file.

``--max_rejected`` (``SIGNPOSE_MAX_REJECTED``) is the share of frames validation may reject for
outlier coordinates (see :mod:`signpose.io.checks`) before the read fails; default 0.01 (1 %).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from signpose.errors import UserError
from signpose.io.errors import KeypointFormatError

DEFAULT_MAX_FRAMES = 1_000_000
DEFAULT_MAX_REJECTED = 0.01
MAX_FRAMES_ENV = "SIGNPOSE_MAX_FRAMES"
MAX_REJECTED_ENV = "SIGNPOSE_MAX_REJECTED"


def size_text(n: int) -> str:
    """``1.5 GB``-style size for messages."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _from_env(name: str, cast, default):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return cast(text)
    except ValueError:
        raise UserError(f"{name}={text!r}: expected a number") from None


@dataclass(frozen=True)
class ReadLimits:
    """``max_frames``: frames one read may return; ``max_rejected``: share of frames (0..1) that
    validation may reject before the read fails."""

    max_frames: int = DEFAULT_MAX_FRAMES
    max_rejected: float = DEFAULT_MAX_REJECTED

    def __post_init__(self):
        if int(self.max_frames) < 1:
            raise UserError(f"max_frames must be at least 1, got {self.max_frames}")
        if not 0.0 <= float(self.max_rejected) <= 1.0:
            raise UserError(f"max_rejected must be a share between 0 and 1, got {self.max_rejected}")

    @classmethod
    def resolve(cls, max_frames: int | None = None, max_rejected: float | None = None) -> "ReadLimits":
        """The given values, else ``SIGNPOSE_MAX_FRAMES`` / ``SIGNPOSE_MAX_REJECTED``, else the defaults."""
        if max_frames is None:
            max_frames = _from_env(MAX_FRAMES_ENV, int, DEFAULT_MAX_FRAMES)
        if max_rejected is None:
            max_rejected = _from_env(MAX_REJECTED_ENV, float, DEFAULT_MAX_REJECTED)
        return cls(int(max_frames), float(max_rejected))


class FrameBudget:
    """The frames left to one read: every file's declared frame count is taken from it before the
    file's frames are allocated."""

    def __init__(self, limits: ReadLimits | None = None):
        self.limits = limits or ReadLimits.resolve()
        self.taken = 0

    @property
    def left(self) -> int:
        return self.limits.max_frames - self.taken

    def take(self, file, n: int, *, what: str = "frames", field: str | None = None, split: str | None = None) -> None:
        n = int(n)
        if n > self.left:
            before = f" after {self.taken:,} frames read from earlier files" if self.taken else ""
            raise KeypointFormatError(
                file, f"declares {n:,} {what}{before}, more than the ceiling of {self.limits.max_frames:,} frames "
                f"per read; pass --max_frames N (or set {MAX_FRAMES_ENV}) if the file really is that large",
                field=field, split=split)
        self.taken += n


# --- byte ceilings: how large a file may be before it is read ------------------------------------------

@dataclass(frozen=True)
class ByteCeiling:
    """The largest ``what`` (a manifest, a shard, a .pose file, ...) a command reads: checked against
    the size the file system or the object store reports, before a byte is read. ``env`` overrides
    ``default`` (bytes); the error names both."""

    what: str
    env: str
    default: int

    @property
    def limit(self) -> int:
        value = _from_env(self.env, int, self.default)
        if value < 1:
            raise UserError(f"{self.env}={value}: a byte ceiling must be at least 1")
        return value

    def excess(self, size: int) -> str | None:
        """None when ``size`` is within the ceiling, else the reason (one line) it is refused."""
        limit = self.limit
        if size <= limit:
            return None
        return (f"is {size_text(size)}, more than the {self.what} ceiling of {size_text(limit)}; set {self.env}=BYTES "
                f"if a {self.what} really is that large")


# A manifest of PHOENIX-2014T (232 shards) is ~0.2 MB; a plan or a shard's record a few kB.
MANIFEST_BYTES = ByteCeiling("manifest", "SIGNPOSE_MAX_MANIFEST_BYTES", 64_000_000)
PLAN_BYTES = ByteCeiling("plan", "SIGNPOSE_MAX_PLAN_BYTES", 64_000_000)
STORE_RECORD_BYTES = ByteCeiling("store record", "SIGNPOSE_MAX_RECORD_BYTES", 64_000_000)
# A 4,096-frame 256x256 shard is ~55 MB packed (docs/storage.md); 2 GB leaves room for --shard_size.
SHARD_BYTES = ByteCeiling("shard", "SIGNPOSE_MAX_SHARD_BYTES", 2_000_000_000)
# Anything else a store holds (a checkpoint, an input file downloaded from S3).
STORE_OBJECT_BYTES = ByteCeiling("store object", "SIGNPOSE_MAX_OBJECT_BYTES", 8_000_000_000)
# Keypoint files read whole (.pose, pickles) or by member (.npz, .npy): PHOENIX-2014T's 827k frames
# are ~1.4 GB of float32 keypoints in one file; the frame ceiling (--max_frames) still applies inside.
INPUT_FILE_BYTES = ByteCeiling("keypoint file", "SIGNPOSE_MAX_INPUT_BYTES", 4_000_000_000)


def store_ceiling(key: str) -> ByteCeiling:
    """The ceiling of the store object ``key``, by the store layout's names (``manifest*.json``,
    ``plans/``, ``shards/*.npz``, other ``.json`` records, anything else)."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".json"):
        if name.startswith("manifest") or key.startswith("manifests/"):
            return MANIFEST_BYTES
        return PLAN_BYTES if key.startswith("plans/") else STORE_RECORD_BYTES
    return SHARD_BYTES if key.startswith("shards/") else STORE_OBJECT_BYTES
