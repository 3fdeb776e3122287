"""Atomic file writes: readers never see half a file (a temporary file in the target folder, then a
rename). Every writer of local files in signpose goes through :func:`atomic_write_bytes`."""

from __future__ import annotations

import os
import tempfile


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # disk full, quota, file size limit: name the file
            raise OSError(err.errno, err.strerror or str(err), path) from err
        raise
