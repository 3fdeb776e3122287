"""The one error type the command line shows as a message instead of a traceback.

A :class:`UserError` is a mistake the user can fix (a missing file, a bad flag value, an unknown
model URI, a server that does not answer): ``signpose`` prints it as one line on stderr, naming the
thing and what to do, and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO


class UserError(Exception):
    """A mistake the user can fix; the message names the file/field/flag and what to do."""


@contextlib.contextmanager
def exit_on_user_error(stream: TextIO | None = None) -> Iterator[None]:
    """Where no command line catches it (a KFP component's body), a :class:`UserError` becomes the
    same one ``error: ...`` line on stderr and exit status 2; other exceptions pass unchanged."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=stream or sys.stderr, flush=True)
        raise SystemExit(2) from None
