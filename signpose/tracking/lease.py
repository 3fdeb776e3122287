"""A lease: a lock object in an object store, with an owner and an expiry, so that one process at a
time does some work across processes and machines (here: promoting versions of one registered model,
``signpose.tracking.registry.promote``; docs/mlflow.md, "Concurrent promotions").

Only conditional PUTs are used (S3's ``If-None-Match: *`` / ``If-Match``; a local folder's
``os.link`` / compare-and-rename under ``flock``): every change of the lease object names the ETag
it replaces, so of several writers exactly one succeeds.

- **Acquire**: create the lease object if it does not exist yet (``put_if_absent``), or replace a
  released or expired record (``replace_if_match`` on the ETag just read). The record holds the owner
  (a random id), host, pid, purpose, ``acquired_at`` and ``expires_at`` (wall clock, seconds), and,
  after a takeover, ``took_over``: the expired holder it replaced.
- **Held by someone else**: wait, polling with a growing pause, until it is released or its
  ``expires_at`` has passed; past ``wait_s`` a :class:`LeaseTimeoutError` names the holder.
- **Held**: a heartbeat thread extends ``expires_at`` every ``ttl_s / 3`` with ``replace_if_match`` on
  the holder's last ETag. If that write is refused, another process has taken the lease over: the
  holder has lost it, and :meth:`Lease.ensure_held` (called right before the protected writes, and
  itself a renewal) raises :class:`LeaseLostError`.
- **Release**: ``replace_if_match`` with a record marked ``released`` (a lease taken over meanwhile is
  left alone). The object is never deleted: MinIO ignores ``If-Match`` on DELETE, so a late delete
  could remove a successor's lease.

Clocks: a waiter compares ``expires_at`` (the holder's clock) with its own, so the machines' clocks
must agree to well within ``ttl_s / 3`` (NTP does). A holder that stops for longer than ``ttl_s``
between :meth:`Lease.ensure_held` and its last protected write could still write after a takeover;
keep those writes short (a promotion's are a few registry calls).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlparse

from signpose.store import ObjectStore, StoreError, open_store

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0
DEFAULT_WAIT_S = 1800.0
LEASE_FORMAT = 1


class LeaseError(RuntimeError):
    """A lease could not be acquired or is no longer held."""


class LeaseTimeoutError(LeaseError, TimeoutError):
    """Another owner held the lease for longer than the caller would wait; the message names it."""


class LeaseLostError(LeaseError):
    """The lease expired and was taken over (or removed) while this owner believed it held it."""


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease object (JSON)."""

    owner: str
    host: str
    pid: int
    purpose: str
    acquired_at: float
    expires_at: float
    ttl_s: float
    # The expired record this one replaced: {"owner", "host", "pid", "expires_at"}; None for a free lease.
    took_over: dict | None = None
    released: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps({"format": LEASE_FORMAT, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None for content that is not a lease record."""
        try:
            raw = json.loads(data)
            return cls(str(raw["owner"]), str(raw["host"]), int(raw["pid"]), str(raw.get("purpose", "")),
                       float(raw["acquired_at"]), float(raw["expires_at"]), float(raw["ttl_s"]),
                       raw.get("took_over"), bool(raw.get("released", False)))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return (f"owner {self.owner} (pid {self.pid} on {self.host}: {self.purpose or 'no purpose given'}), "
                f"acquired {_when(self.acquired_at)}, "
                f"{'released' if self.released else 'expires'} {_when(self.expires_at)}")


class Lease:
    """A lease on ``key`` in ``store``; a context manager (acquire on enter, release on exit).

    >>> with Lease(open_store("s3://bucket/locks"), "promotion/model.json", purpose="promote v3") as lease:
    ...     ...                 # read, decide
    ...     lease.ensure_held() # raises LeaseLostError if another process has taken over
    ...     ...                 # write
    """

    def __init__(self, store: ObjectStore | str, key: str, *, ttl_s: float = DEFAULT_TTL_S,
                 wait_s: float = DEFAULT_WAIT_S, purpose: str = "", poll_s: tuple[float, float] = (0.02, 1.0),
                 clock: Callable[[], float] = time.time):
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s must be positive, got {ttl_s}")
        self.store = open_store(store)
        self.key = key
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.purpose = purpose
        self.poll_s = poll_s
        self.clock = clock
        self.owner = ""
        self._record: LeaseRecord | None = None
        self._etag: str | None = None
        self._valid_until = 0.0  # monotonic: last successful write + ttl_s
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.store.url(self.key)

    @property
    def record(self) -> LeaseRecord | None:
        """What the lease object holds while this owner holds it (None before acquire / after release)."""
        return self._record

    @property
    def held(self) -> bool:
        return self._etag is not None and self._lost is None

    # --- acquire -----------------------------------------------------------------------------------------

    def _new_record(self, took_over: LeaseRecord | None = None, unreadable: bool = False) -> LeaseRecord:
        now = self.clock()
        previous = None
        if took_over is not None:
            previous = {"owner": took_over.owner, "host": took_over.host, "pid": took_over.pid,
                        "expires_at": took_over.expires_at}
        elif unreadable:
            previous = {"owner": None, "unreadable": True}
        return LeaseRecord(self.owner, socket.gethostname(), os.getpid(), self.purpose, now, now + self.ttl_s,
                           self.ttl_s, previous)

    def _hold(self, record: LeaseRecord, etag: str, started: float) -> bool:
        self._record, self._etag, self._valid_until, self._lost = record, etag, started + self.ttl_s, None
        return True

    def _attempt(self) -> tuple[bool, LeaseRecord | None]:
        """One try: (acquired, the live holder that prevented it, if one was read)."""
        started = time.monotonic()
        record = self._new_record()
        etag = self.store.put_if_absent(self.key, record.to_bytes())
        if etag is not None:
            return self._hold(record, etag, started), None
        current = self.store.get_with_etag(self.key)
        if current is None:  # removed in between (by hand: leases only ever replace it): try again
            return False, None
        data, etag = current
        holder = LeaseRecord.from_bytes(data)
        if holder is not None and holder.owner == self.owner:
            # Our own write, answered with an error after a transport retry: it is ours.
            return self._hold(holder, etag, started), None
        if holder is not None and not holder.released and self.clock() < holder.expires_at:
            return False, holder
        # Released, expired, or not a lease record at all: replace it unless another waiter is faster.
        expired = holder is not None and not holder.released
        record = self._new_record(holder if expired else None, unreadable=holder is None)
        new_etag = self.store.replace_if_match(self.key, record.to_bytes(), etag)
        if new_etag is None:
            return False, None
        if expired or holder is None:
            log.warning("%s: took over an expired lease (%s)", self.url,
                        holder.describe() if holder else "unreadable content")
        return self._hold(record, new_etag, started), None

    def acquire(self) -> Lease:
        """Take the lease, waiting for a live holder up to ``wait_s`` (LeaseTimeoutError naming it)."""
        if self._etag is not None:
            raise LeaseError(f"{self.url}: already held by this owner ({self.owner})")
        self.owner = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        pause, announced = self.poll_s[0], False
        while True:
            acquired, holder = self._attempt()
            if acquired:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LeaseTimeoutError(f"{self.url}: not acquired after waiting {self.wait_s:g} s; held by "
                                        f"{holder.describe() if holder else 'owners that kept changing'}")
            if holder is None:  # another waiter replaced it first, or it was removed: try again soon
                time.sleep(min(self.poll_s[0] * random.random(), remaining))
                continue
            if not announced:
                log.info("%s: waiting for the lease, held by %s", self.url, holder.describe())
                announced = True
            # Sleep no longer than until the holder's expiry; jitter keeps waiters out of step.
            until_expiry = max(holder.expires_at - self.clock(), 0.0) + 0.001
            time.sleep(min(pause * random.uniform(0.5, 1.0), remaining, until_expiry))
            pause = min(pause * 2, self.poll_s[1])
        log.info("%s: lease acquired by %s (pid %d) for %s", self.url, self.owner, os.getpid(), self.purpose)
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lease-heartbeat {self.key}", daemon=True)
        self._heartbeat.start()
        return self

    # --- hold ----------------------------------------------------------------------------------------------

    def _lose(self, why: str) -> LeaseLostError:
        self._lost = why
        log.error("%s: lease lost: %s", self.url, why)
        return LeaseLostError(f"{self.url}: {why}")

    def _rewrite(self, record: LeaseRecord) -> str:
        """Replace our record with ``record`` (compare-and-set on our last ETag): the new ETag, or
        LeaseLostError naming whoever holds the lease now."""
        data = record.to_bytes()
        etag = self.store.replace_if_match(self.key, data, self._etag)
        if etag is not None:
            return etag
        current = self.store.get_with_etag(self.key)
        if current is not None and current[0] == data:  # our write landed; its answer did not
            return current[1]
        holder = LeaseRecord.from_bytes(current[0]) if current else None
        raise self._lose(f"taken over by {holder.describe()}" if holder else "the lease object is gone")

    def renew(self) -> None:
        """Extend ``expires_at`` to now + ``ttl_s``; LeaseLostError if the lease is no longer ours."""
        with self._mutex:
            if self._lost is not None:
                raise LeaseLostError(f"{self.url}: {self._lost}")
            if self._etag is None or self._record is None:
                raise LeaseError(f"{self.url}: not held")
            started = time.monotonic()
            record = replace(self._record, expires_at=self.clock() + self.ttl_s)
            self._etag = self._rewrite(record)
            self._record, self._valid_until = record, started + self.ttl_s

    def ensure_held(self) -> None:
        """Renew now; raise LeaseLostError unless this owner still holds the lease (call it right
        before the writes the lease protects)."""
        try:
            self.renew()
        except StoreError as e:
            raise LeaseLostError(f"{self.url}: could not confirm the lease: {e}") from e

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseError:
                return
            except StoreError as e:
                if time.monotonic() >= self._valid_until:
                    self._lose(f"not renewed before it expired: {e}")
                    return
                log.warning("%s: lease renewal failed, retrying: %s", self.url, e)

    # --- release ---------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and mark the record released, if the lease is still this owner's (the next
        owner replaces it at once instead of waiting for ``expires_at``)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        with self._mutex:
            try:
                if self._etag is not None and self._record is not None and self._lost is None:
                    self._rewrite(replace(self._record, expires_at=self.clock(), released=True))
            except LeaseLostError:
                pass  # taken over meanwhile: the new holder's record stays
            except StoreError as e:
                log.warning("%s: could not release the lease (it expires on its own): %s", self.url, e)
            finally:
                self._etag = self._record = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- promotions -------------------------------------------------------------------------------------------------

_WARNED: set[str] = set()


def promotion_lock_key(model_name: str) -> str:
    """The lease object of one registered model's promotions, relative to the lock location."""
    return f"promotion/{quote(model_name, safe='')}.json"


def _local_registry_path(registry_uri: str) -> Path | None:
    if registry_uri.startswith("sqlite:///"):
        path = registry_uri[len("sqlite:///"):].split("?")[0]
        return Path(path).resolve() if path and path != ":memory:" else None
    if registry_uri.startswith("file:"):
        return Path(urlparse(registry_uri).path).resolve()
    if "://" not in registry_uri and ":" not in registry_uri.split("/")[0] and not registry_uri.startswith(
            "databricks"):  # a plain path is a file store
        return Path(registry_uri).resolve()
    return None


def _user_folder() -> Path:
    """``$XDG_CACHE_HOME/signpose`` (``~/.cache/signpose``); a per-user folder in the temporary folder
    where the home folder is not writable (containers running as an arbitrary user)."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signpose"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"signpose-{os.getuid()}"


def promotion_lock_location(registry_uri: str, configured: str | None = None) -> str:
    """Where promotions against ``registry_uri`` take turns: ``configured`` (mlflow.yaml
    ``promotion_lock`` / ``$SIGNPOSE_PROMOTION_LOCK``) if set; else a folder beside a local registry
    (``<database>.locks``); else, for a remote registry, a per-user folder on this machine, with a
    warning that promotions from other machines are then not serialised."""
    if configured:
        return configured
    local = _local_registry_path(registry_uri)
    if local is not None:
        return f"{local}.locks"
    parsed = urlparse(registry_uri)
    ident = f"{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}" or registry_uri
    folder = _user_folder() / "promotion-locks" / quote(ident, safe="")
    if registry_uri not in _WARNED:
        _WARNED.add(registry_uri)
        log.warning("promotions against the remote registry %s take turns only on this machine (lock folder %s): "
                    "set promotion_lock in mlflow.yaml or SIGNPOSE_PROMOTION_LOCK to s3://<bucket>/locks so "
                    "that promotions from other machines are serialised too", ident, folder)
    return str(folder)
