"""The one error every reader raises for bad input."""

from __future__ import annotations

import os

from signpose.errors import UserError

# A hostile file can put megabytes into a key or a value an error quotes: messages stay one short line.
MAX_MESSAGE_CHARS = 600
MAX_FIELD_CHARS = 120


def one_line(text: str, limit: int) -> str:
    """``text`` without line breaks or control characters, shortened to ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class KeypointFormatError(UserError, ValueError):
    """Bad keypoint input, located as precisely as the format allows.

    ``str(err)`` reads like ``"phoenix.pkl: split 'train', sample 12, field 'left_hand': expected shape
    (21, 3), got (20, 3)"``; the parts are also attributes so callers and tests can check them. The
    message is one line of bounded length whatever the file holds.
    """

    def __init__(self, file: str | os.PathLike, message: str, *, sample: int | None = None,
                 field: str | None = None, split: str | None = None):
        self.file = os.fspath(file)
        self.sample = None if sample is None else int(sample)
        self.field = None if field is None else one_line(field, MAX_FIELD_CHARS)
        self.split = split
        self.reason = one_line(message, MAX_MESSAGE_CHARS)
        where = []
        if split is not None:
            where.append(f"split '{split}'")
        if sample is not None:
            where.append(f"sample {self.sample}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        file_text = one_line(self.file, MAX_MESSAGE_CHARS)
        location = f"{file_text}: {', '.join(where)}" if where else file_text
        super().__init__(f"{location}: {self.reason}")

    def __reduce__(self):  # rebuilt from its parts, so it crosses back from a worker process as itself
        return (_rebuild_format_error, (type(self), self.file, self.reason, self.sample, self.field, self.split))


def _rebuild_format_error(kind, file, reason, sample, field, split):
    return kind(file, reason, sample=sample, field=field, split=split)
