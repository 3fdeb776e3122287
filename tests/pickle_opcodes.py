"""Protocol-4 pickle opcodes, for hand-built hostile pickles that ``pickle.dumps`` cannot produce
(a call of an allowed callable with a huge size argument, deep nesting, ...)."""

from __future__ import annotations


def pickle4(*parts: bytes) -> bytes:
    """PROTO 4 + the opcodes + STOP."""
    return b"\x80\x04" + b"".join(parts) + b"."


def ustr(text: str) -> bytes:
    """SHORT_BINUNICODE: push ``text`` (< 256 bytes)."""
    return b"\x8c" + bytes([len(text)]) + text.encode()


def glob(module: str, name: str) -> bytes:
    """Push ``module.name`` (STACK_GLOBAL)."""
    return ustr(module) + ustr(name) + b"\x93"


def int4(n: int) -> bytes:
    """BININT: push a signed 4-byte integer."""
    return b"J" + n.to_bytes(4, "little", signed=True)
