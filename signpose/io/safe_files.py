"""Opening input files without trusting them: regular files only, links kept inside the input folder.

Every reader opens its files through :func:`open_regular` / :func:`read_regular` and lists folders
through :func:`folder_members`, so

* a FIFO, a socket, a device (``/dev/zero`` behind a ``.pose`` link) or a directory named like a
  file is refused with a :class:`KeypointFormatError` before anything is read -- opening a FIFO does
  not block (``O_NONBLOCK``) and the type is checked on the opened descriptor (``fstat``), so a file
  swapped after a check is still caught;
* a file is read up to the size ``fstat`` reported when it was opened, never "until EOF", and a
  caller can cap that size (:func:`read_regular` ``max_bytes``); every keypoint file is capped by
  ``SIGNPOSE_MAX_INPUT_BYTES`` and every object a local store reads by its kind's ceiling
  (:func:`read_capped`, :mod:`signpose.io.limits`) before a byte is read;
* a member of an input folder that is a symbolic link pointing outside that folder is refused: a
  folder of ``.pose`` files cannot pull in ``/etc/passwd`` or another user's data. A file named
  directly on the command line may be a link to anywhere (that is the user's own choice), as long
  as it ends at a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from signpose.io.errors import KeypointFormatError
from signpose.io.limits import INPUT_FILE_BYTES, size_text

__all__ = ["CeilingError", "NotRegularFileError", "check_inside", "folder_members", "kind_of", "open_regular",
           "open_regular_fd", "read_capped", "read_regular", "size_text"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode: int) -> str:
    """'a directory', 'a FIFO (named pipe)', ... for a non-regular ``st_mode``."""
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


class NotRegularFileError(OSError):
    """``filename`` is a directory, FIFO, socket or device; ``kind`` says which ('a FIFO (named pipe)')."""

    def __init__(self, filename: str, kind: str):
        super().__init__(0, f"is {kind}, not a regular file", filename)
        self.kind = kind


class _DirectoryError(NotRegularFileError, IsADirectoryError):
    pass


def open_regular_fd(path) -> int:
    """A blocking read-only descriptor of the regular file ``path``: opened with ``O_NONBLOCK`` (a FIFO
    without a writer is never waited on), its type checked on the descriptor (``fstat``). Raises
    :class:`NotRegularFileError`, or the ``OSError`` of ``open`` (``FileNotFoundError``, ...). The one
    check behind every reader here and the local object store's reads (:mod:`signpose.store`)."""
    file = os.fspath(path)
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise (_DirectoryError if stat.S_ISDIR(mode) else NotRegularFileError)(file, kind_of(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


class CeilingError(OSError):
    """A file larger than its :class:`~signpose.io.limits.ByteCeiling`; ``strerror`` says which."""


def read_capped(path, ceiling) -> bytes:
    """The bytes of the regular file ``path``, refused (:class:`NotRegularFileError`,
    :class:`CeilingError`) before a byte is read when it is not one or is larger than ``ceiling``."""
    with os.fdopen(open_regular_fd(path), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if excess := ceiling.excess(size):
            raise CeilingError(0, excess, os.fspath(path))
        return handle.read(size)


def open_regular(path, *, field: str | None = None):
    """``path`` opened for binary reading, or a KeypointFormatError when it is not a regular file
    (a FIFO is never waited on). Returns the file object; its size is ``os.fstat(f.fileno()).st_size``."""
    file = os.fspath(path)
    try:
        fd = open_regular_fd(file)
    except NotRegularFileError as err:
        raise KeypointFormatError(file, f"is {err.kind}, not a regular file; keypoint inputs are "
                                  "regular files (or folders of them)", field=field) from None
    except OSError as err:
        raise KeypointFormatError(file, f"cannot open: {err.strerror or err}", field=field) from None
    excess = INPUT_FILE_BYTES.excess(os.fstat(fd).st_size)  # before a byte is read (a sparse file reads as zeros)
    if excess:
        os.close(fd)
        raise KeypointFormatError(file, excess, field=field)
    return os.fdopen(fd, "rb")


def read_regular(path, *, max_bytes: int | None = None, what: str = "file", field: str | None = None) -> bytes:
    """The bytes of the regular file ``path`` (its size when opened, at most ``max_bytes``)."""
    file = os.fspath(path)
    with open_regular(file, field=field) as handle:
        size = os.fstat(handle.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise KeypointFormatError(file, f"is {size_text(size)}, more than a {what} can legitimately hold "
                                      f"({size_text(max_bytes)})", field=field)
        try:
            return handle.read(size)
        except OSError as err:
            raise KeypointFormatError(file, f"cannot read: {err.strerror or err}", field=field) from None


def check_inside(member: Path, root: Path) -> None:
    """Refuse ``member`` (an entry of the input folder ``root``) when it is a link that resolves
    outside ``root`` or to nothing."""
    if not member.is_symlink():
        return
    try:
        target = member.resolve(strict=True)
    except (OSError, RuntimeError):
        raise KeypointFormatError(str(member), "is a broken or looping symbolic link") from None
    if not target.is_relative_to(root.resolve()):
        raise KeypointFormatError(str(member), f"is a symbolic link to {target}, outside the input folder "
                                  f"{root}; copy the file into the folder instead")


def folder_members(root, pattern: str) -> list[Path]:
    """The entries of the folder ``root`` matching ``pattern``, sorted; each must be a regular file
    (links resolving inside ``root`` are followed) -- anything else is a KeypointFormatError."""
    root = Path(os.fspath(root))
    members = sorted(root.glob(pattern))
    for member in members:
        check_inside(member, root)
        try:
            mode = member.stat().st_mode
        except OSError as err:
            raise KeypointFormatError(str(member), f"cannot read: {err.strerror or err}") from None
        if not stat.S_ISREG(mode):
            raise KeypointFormatError(str(member), f"is {kind_of(mode)}, not a regular file; a folder of keypoint "
                                      f"files holds regular files only")
    return members
