"""The one error every reader raises for bad input."""

from __future__ import annotations

import os

from signpose.errors import UserError


class KeypointFormatError(UserError, ValueError):
    """Bad keypoint input, located as precisely as the format allows.

    ``str(err)`` reads like ``"phoenix.pkl: split 'train', sample 12, field 'left_hand': expected shape
    (21, 3), got (20, 3)"``; the parts are also attributes so callers and tests can check them.
    """

    def __init__(self, file: str | os.PathLike, message: str, *, sample: int | None = None,
                 field: str | None = None, split: str | None = None):
        self.file = os.fspath(file)
        self.sample = None if sample is None else int(sample)
        self.field = field
        self.split = split
        self.reason = message
        where = []
        if split is not None:
            where.append(f"split '{split}'")
        if sample is not None:
            where.append(f"sample {self.sample}")
        if field is not None:
            where.append(f"field '{field}'")
        location = f"{self.file}: {', '.join(where)}" if where else self.file
        super().__init__(f"{location}: {message}")
