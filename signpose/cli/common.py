"""What every ``signpose`` command shares: the flag style, the help layout and the one error path.

Flags. Multi-word flags are spelled with underscores (``--image_size``, ``--token_file``), the
seed's style. :func:`add_flag` also registers the hyphenated spelling (``--image-size``) as a hidden
alias, so command lines written for the previous release keep working; :class:`HelpFormatter` leaves
the aliases out of ``--help``.

Errors. :func:`user_error_message` decides whether an exception is a mistake the user can fix (a
:class:`~signpose.errors.UserError`, a missing file, an unknown model, a server that does not
answer) and phrases it as one line; :func:`run_command` prints that line as ``error: ...`` on stderr
and returns exit status 2. Anything else is a bug and keeps its traceback. ``--debug`` or
``SIGNPOSE_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from signpose.errors import UserError

DEBUG_VAR = "SIGNPOSE_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
_ALIAS_RE = re.compile(r"^--[a-z0-9]+(?:-[a-z0-9]+)+$")
# argparse names an argument by all its option strings ("--image_size/--image-size"): keep the first.
_ALIAS_IN_MESSAGE_RE = re.compile(r"(--[a-z0-9_]+)/--[a-z0-9]+(?:-[a-z0-9]+)+")


# --- flags and help -----------------------------------------------------------------------------------

def is_hidden_alias(option_string: str) -> bool:
    """``--image-size`` (a hyphenated long option) is the hidden alias of ``--image_size``."""
    return bool(_ALIAS_RE.match(option_string))


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> argparse.Action:
    """``parser.add_argument(name, ...)`` for a ``--long_flag``, plus its hyphenated spelling as a
    hidden alias when the name has more than one word."""
    if not name.startswith("--"):
        raise ValueError(f"add_flag takes a long option (--name), got {name!r}")
    alias = "--" + name[2:].replace("_", "-")
    names = (name, alias) if alias != name else (name,)
    return parser.add_argument(*names, **kwargs)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout without the hidden hyphenated aliases of underscore flags."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [s for s in action.option_strings if not is_hidden_alias(s)]
        if action.option_strings and shown != action.option_strings:
            action = copy.copy(action)
            action.option_strings = shown or action.option_strings[:1]
        return super()._format_action_invocation(action)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks (the top-level command list)."""


class Parser(argparse.ArgumentParser):
    """The parser of every ``signpose`` (sub)command: aliases hidden in help, usage errors in one line.

    ``add_subparsers`` makes parsers of the caller's class, so the whole tree under a :class:`Parser`
    is made of them.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        message = _ALIAS_IN_MESSAGE_RE.sub(r"\1", message)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def walk_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(("train", "face"), parser)`` for ``parser`` and every subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk_parsers(sub, (*path, name))


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse ``type`` for an integer flag that must be ``>= minimum`` (a bad value is a usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def package_version() -> str:
    """The installed distribution's version, else the one in the source tree's pyproject.toml."""
    from importlib import metadata

    try:
        return metadata.version("signpose")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


# --- the one error path -------------------------------------------------------------------------------

def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``SIGNPOSE_DEBUG`` set to anything but empty/0/false/no."""
    return flag or os.environ.get(DEBUG_VAR, "").strip().lower() not in ("", "0", "false", "no")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from or during (``__cause__``, ``__context__``,
    urllib3's ``reason``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__, getattr(current, "reason", None))
                    if isinstance(e, BaseException))


def _connection_types() -> tuple[type[BaseException], ...]:
    import socket

    types: list[type[BaseException]] = [ConnectionError, socket.gaierror]
    try:
        import requests.exceptions

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover - requests comes with MLflow and KFP
        pass
    try:
        import urllib3.exceptions

        types += [urllib3.exceptions.MaxRetryError, urllib3.exceptions.NewConnectionError,
                  urllib3.exceptions.ConnectTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _address_of(exc: BaseException) -> str | None:
    request = getattr(exc, "request", None)  # requests' ConnectionError
    url = getattr(request, "url", None)
    if isinstance(url, str) and "://" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    pool = getattr(exc, "pool", None) or getattr(exc, "conn", None)  # urllib3
    host, port = getattr(pool, "host", None), getattr(pool, "port", None)
    if host:
        scheme = getattr(pool, "scheme", None) or "http"
        return f"{scheme}://{host}" + (f":{port}" if port else "")
    found = re.search(r"host='([^']+)', port=(\d+)", str(exc))
    return f"{found.group(1)}:{found.group(2)}" if found else None


def connection_failure(exc: BaseException) -> tuple[str | None, str] | None:
    """``(address or None, reason)`` when ``exc`` is, or was caused by, a failed connection to a
    server (refused, unknown host, timed out); None otherwise."""
    types = _connection_types()
    failures = [e for e in _chain(exc) if isinstance(e, types) and not isinstance(e, BrokenPipeError)]
    if not failures:
        return None
    address = next((a for a in map(_address_of, failures) if a), None)
    reason = next((e.strerror for e in _chain(exc) if isinstance(e, OSError) and e.strerror), None)
    if reason is None:
        found = re.search(r"\[Errno -?\d+\] ([^\"')]+)", " ".join(str(e) for e in failures))
        reason = found.group(1).strip() if found else type(failures[-1]).__name__
    return address, reason


def _foreign_user_error(exc: BaseException) -> str | None:
    """One line for the library's and the dependencies' user-facing errors that are not
    :class:`UserError` subclasses; None for anything else."""
    from signpose.store import StoreError

    if isinstance(exc, StoreError):  # a store URI that does not resolve, a missing object, a refused upload
        return str(exc)
    failure = connection_failure(exc)
    if failure is not None:
        address, reason = failure
        return (f"cannot reach {address or 'the server'} ({reason}): check that the server is running "
                "and that its URL is right (MLflow: MLFLOW_TRACKING_URI or mlflow.yaml; KFP: --host)")
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - MLflow-less installs (the GPU bench image)
        return None
    if isinstance(exc, MlflowException):
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"{exc.message} (`signpose models` lists the registered models and versions)"
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED"):
            return exc.message
    return None


# torch's DataLoader re-raises a worker's exception as the same type, its message the worker's traceback.
_WORKER_PREFIX_RE = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_EXCEPTION_LINE_RE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): ", re.MULTILINE)


def _worker_error(message: str) -> str:
    """The worker's own error message out of a DataLoader's re-raised one (the shard and the reason,
    not the traceback); other messages unchanged."""
    if not _WORKER_PREFIX_RE.match(message):
        return message
    found = list(_EXCEPTION_LINE_RE.finditer(message))
    return message[found[-1].end():] if found else message


def user_error_message(exc: BaseException) -> str | None:
    """The one line ``signpose`` prints for a user error, or None when ``exc`` is a bug."""
    if isinstance(exc, UserError):
        message = str(exc)
    else:
        message = _foreign_user_error(exc)
    if message is None:
        return None
    message = _worker_error(message)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, *,
                debug: bool = False) -> int:
    """``func(args)``'s exit status; a user error is one ``error: ...`` line on stderr and status 2,
    Ctrl-C one line and status 130. With ``debug`` both raise, so the traceback shows."""
    try:
        return func(args) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("signpose: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
