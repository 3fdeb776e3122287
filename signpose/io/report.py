"""The validation summary of one read: per file, what validation rejected or set missing.

Every reader adds one :class:`FileReport` per file (per folder for OpenPose JSON and ``.pts``
folders) to the read's :class:`ReadReport`; :func:`~signpose.io.read_keypoints` attaches it to the
frames it returns (``frames.report``), logs a warning for every file with rejected frames, and fails
the read -- one line naming the first rejected frame's file, sample and field -- when the share of
rejected frames exceeds ``max_rejected`` (see :mod:`signpose.io.limits`). ``signpose inspect``
prints it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from signpose.io.errors import KeypointFormatError
from signpose.io.limits import MAX_REJECTED_ENV

log = logging.getLogger(__name__)


@dataclass
class FileReport:
    """``frames`` read from ``file``, ``kept`` of them returned; ``rejected`` for an outlier
    coordinate (the first: ``first_rejected``, keys sample/split/field/point/axis/value);
    ``dropped_empty`` video frames with nothing detected; ``off_frame_points`` points set missing for
    lying outside the frame."""

    file: str
    frames: int
    kept: int
    rejected: int = 0
    dropped_empty: int = 0
    off_frame_points: int = 0
    first_rejected: dict | None = None

    def describe_first(self) -> str:
        first = self.first_rejected or {}
        where = ", ".join(part for part in (
            f"split '{first['split']}'" if first.get("split") else "",
            f"sample {first['sample']}" if "sample" in first else "",
            f"field '{first['field']}' point {first.get('point')}" if first.get("field") else "") if part)
        return f"{where}: {first.get('axis', '?')} = {first.get('value', float('nan')):.6g}" if first else ""


@dataclass
class ReadReport:
    files: list[FileReport] = field(default_factory=list)

    def add_file(self, file: str, frames: int, kept: int, info: dict | None = None, *, dropped_empty: int = 0,
                 split_of=None) -> FileReport:
        """Record one file from the ``info`` :func:`~signpose.io.checks.normalise_coordinates` returned.
        ``split_of(index)`` names the split of a frame (by its position in the file) for the report."""
        info = info or {}
        rejected = info.get("rejected")
        first = dict(info["first_rejected"]) if info.get("first_rejected") else None
        if first is not None and split_of is not None:
            first["split"] = split_of(first["index"])
        entry = FileReport(file, int(frames), int(kept), int(rejected.sum()) if rejected is not None else 0,
                           int(dropped_empty), int(info.get("off_frame_points", 0)), first)
        self.files.append(entry)
        if entry.rejected:
            log.warning("%s: %d of %d frames rejected for an outlier coordinate (first: %s); they are left out",
                        file, entry.rejected, entry.frames, entry.describe_first())
        if entry.off_frame_points:
            log.info("%s: %d points outside the frame set missing", file, entry.off_frame_points)
        return entry

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def off_frame_points(self) -> int:
        return sum(f.off_frame_points for f in self.files)

    @property
    def dropped_empty(self) -> int:
        return sum(f.dropped_empty for f in self.files)

    def enforce(self, max_rejected: float) -> None:
        """Fail when more than ``max_rejected`` of the frames read were rejected."""
        frames, rejected = self.frames, self.rejected
        if not rejected or rejected <= max_rejected * frames:
            return
        first = next(f for f in self.files if f.rejected)
        where = first.first_rejected or {}
        others = f" ({len([f for f in self.files if f.rejected])} files with rejected frames)" if len(self.files) > 1 else ""
        raise KeypointFormatError(
            first.file, f"{rejected} of {frames} frames ({rejected / frames:.1%}) rejected for outlier coordinates"
            f"{others}, more than --max_rejected {max_rejected:g} allows (or {MAX_REJECTED_ENV}); the first: point "
            f"{where.get('point')} {where.get('axis')} = {where.get('value', float('nan')):.6g}, far outside the "
            "frame the other frames span", sample=where.get("sample"), field=where.get("field"),
            split=where.get("split"))

    def to_dict(self) -> dict:
        return {"frames": self.frames, "rejected": self.rejected, "dropped_empty": self.dropped_empty,
                "off_frame_points": self.off_frame_points,
                "files": [asdict(f) for f in self.files if f.rejected or f.off_frame_points or f.dropped_empty]}

    def lines(self) -> list[str]:
        """What ``inspect`` prints: the totals, and each file with rejected frames."""
        out = [f"checked: {self.frames} frames read, {self.rejected} rejected (outlier coordinates), "
               f"{self.dropped_empty} dropped (nothing detected), {self.off_frame_points} points outside the "
               "frame set missing"]
        out += [f"rejected: {f.file}: {f.rejected} frame(s); first {f.describe_first()}"
                for f in self.files if f.rejected][:20]
        return out
