"""One object-store interface over a local folder and ``s3://bucket/prefix``.

``open_store(uri)`` returns an :class:`ObjectStore`. Keys are ``/``-separated and relative to the
store root; a key that would escape the root (``..``, an absolute path, a backslash) is refused.

Writes are atomic: an object is either absent or complete.
- Local folder: the bytes go to a temporary file in the destination folder, are fsync'ed, then
  ``os.replace``'d onto the final name (atomic on POSIX within one file system).
- S3: a single PUT is atomic per object; large objects go through boto3's multipart upload, which
  only becomes visible when ``CompleteMultipartUpload`` succeeds.

Conditional writes (compare-and-set on one object, for ``signpose.tracking.lease`` and the manifest
commit of ``signpose.shards.commit``; an ETag is an opaque token of an object's content): S3 (AWS,
MinIO, moto) sends ``If-None-Match: *`` / ``If-Match`` on PUT and the server refuses a stale condition
(412); an endpoint answering 501 raises :class:`ConditionalWritesUnsupported`. No conditional DELETE: MinIO ignores ``If-Match``
there. A local folder takes an exclusive ``flock`` of the object's folder, links a complete temporary
file onto a new key (``os.link`` fails if it exists) and uses the content's SHA-256 as ETag: one
machine only (not NFS).

S3 configuration: signpose's own variables first (``SIGNPOSE_S3_*``, :mod:`signpose.s3_env`: what
pipeline pods get, so KFP's launcher never picks signpose's identity up), else the AWS conventions so
MinIO and moto work unchanged: the endpoint comes from the ``endpoint_url`` argument, else
``SIGNPOSE_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (boto3 reads them
natively), else ``MLFLOW_S3_ENDPOINT_URL``; credentials are ``SIGNPOSE_S3_ACCESS_KEY_ID`` /
``SIGNPOSE_S3_SECRET_ACCESS_KEY``, else the standard AWS chain; retries use botocore's retry modes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from signpose import s3_env
from signpose.io.limits import store_ceiling
from signpose.io.safe_files import read_capped

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # local stores work without the S3 libraries (e.g. a GPU image with torch alone);
    # S3Store's own import of boto3 then fails with a plain ImportError when an s3:// URI is opened.
    class BotoCoreError(Exception):
        pass

    class ClientError(Exception):
        pass

# Temporary files of in-flight local writes carry this suffix; listing ignores them.
_TMP_SUFFIX = ".tmp-signpose"


class StoreError(RuntimeError):
    """An object-store operation failed; the message names the store and the key."""


class ObjectNotFoundError(StoreError, FileNotFoundError):
    """The key does not exist in the store."""


class StoreWriteError(StoreError, OSError):
    """A local write failed (disk full, file too large, quota, permissions); names the object."""


class ConditionalWritesUnsupported(StoreError, NotImplementedError):
    """The endpoint refuses ``If-None-Match`` / ``If-Match`` on PUT (501 NotImplemented)."""


class InvalidKeyError(StoreError, ValueError):
    """The key is malformed or escapes the store root."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a clean relative ``/``-separated key, else raise InvalidKeyError."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"object key {key!r} must be relative and '/'-separated")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKeyError(f"object key {key!r} has an empty, '.' or '..' component "
                              "(keys may not escape the store root)")
    return key


def join_key(*parts: str) -> str:
    """Join key fragments with '/', tolerating leading/trailing slashes on the fragments."""
    pieces = [p.strip("/") for p in parts if p and p.strip("/")]
    return validate_key("/".join(pieces))


class ObjectStore(ABC):
    """Minimal key -> bytes store. Implementations: :class:`LocalStore`, :class:`S3Store`."""

    @property
    @abstractmethod
    def uri(self) -> str:
        """The URI this store was opened with (normalised)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` atomically (readers see the old object or the new one)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the whole object; ObjectNotFoundError if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; ObjectNotFoundError if absent."""

    @abstractmethod
    def modified(self, key: str) -> float:
        """Last modification time (seconds since the epoch); ObjectNotFoundError if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under ``prefix`` (a plain string prefix of the key, '' = everything)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def temporaries(self) -> list[str]:
        """Keys of the temporary files a killed local writer left (:meth:`list` hides them); none in S3."""
        return []

    # --- conditional writes: compare-and-set on one object (leases, locks) ---------------------------

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Create ``key`` only if no object has that key: the new ETag, or None if one exists."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object and its ETag, or None if absent."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def replace_if_match(self, key: str, data: bytes, etag: str) -> str | None:
        """Overwrite ``key`` only if its ETag is still ``etag``: the new ETag, else None."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def join(self, *parts: str) -> str:
        return join_key(*parts)

    def url(self, key: str) -> str:
        """Full URI of ``key``, for messages and logs."""
        return self.uri.rstrip("/") + "/" + validate_key(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalStore(ObjectStore):
    """A folder on the local file system, created by its first write (opening it or reading creates nothing)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # resolve() follows symlinks, so a symlinked folder cannot lead outside the root either.
        if path != self.root and self.root not in path.parents:
            raise InvalidKeyError(f"object key {key!r} resolves outside the store root {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=_TMP_SUFFIX)
        except OSError as e:
            raise StoreWriteError(f"{self.url(key)}: write failed: {e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            # Disk full (ENOSPC), file size limit (EFBIG), quota (EDQUOT): name the object, as S3 does.
            if isinstance(e, OSError):
                raise StoreWriteError(f"{self.url(key)}: write failed: {e}") from e
            raise
        # Persist the rename itself (the directory entry), so a crash cannot lose a committed object.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get_bytes(self, key: str) -> bytes:
        """A regular file (never a FIFO waited on) within its size ceiling, both checked before reading."""
        try:
            return read_capped(self._path(key), store_ceiling(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"{self.url(key)}: no such object") from None
        except OSError as err:
            raise StoreError(f"{self.url(key)}: {err.strerror or err}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"{self.url(key)}: no such object")
        return path.stat().st_size

    def modified(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.url(key)}: no such object") from None

    def list(self, prefix: str = "", temporaries: bool = False) -> list[str]:
        keys = []
        # A folder prefix ("shards/") walks that folder only, not the whole store.
        top = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        for dirpath, _dirnames, filenames in os.walk(top):
            for name in filenames:
                if name.endswith(_TMP_SUFFIX) != temporaries:  # in-flight writes: listed on request only
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def temporaries(self) -> list[str]:
        return self.list("", temporaries=True)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    # --- conditional writes ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked_folder(self, key: str):
        """An exclusive ``flock`` of the object's folder (this machine's conditional operations take
        turns; closing the descriptor releases it, also when the process dies): (path, current ETag)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path, (_etag(self.get_bytes(key)) if path.is_file() else None)
            os.fsync(fd)  # persist the new directory entry (link or rename)
        finally:
            os.close(fd)

    def _conditional_write(self, key: str, data: bytes, etag: str | None) -> str | None:
        """Create (``etag`` None: the key must be absent) or replace (the key must have ``etag``): the
        complete content goes to a temporary file, then is linked or renamed onto the key."""
        tmp = None
        try:
            with self._locked_folder(key) as (path, current):
                if current != etag:
                    return None
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=_TMP_SUFFIX)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                (os.link if etag is None else os.replace)(tmp, path)
        except FileExistsError:  # a plain put_bytes got there first
            return None
        except OSError as e:
            raise StoreWriteError(f"{self.url(key)}: conditional write failed: {e}") from e
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return _etag(data)

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        return self._conditional_write(key, data, None)

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get_bytes(key)
        except ObjectNotFoundError:
            return None
        return data, _etag(data)

    def replace_if_match(self, key: str, data: bytes, etag: str) -> str | None:
        return self._conditional_write(key, data, etag)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class S3Options:
    """Client settings for :class:`S3Store`; defaults suit AWS, MinIO and moto alike."""

    endpoint_url: str | None = None
    region_name: str | None = None
    retry_mode: str = "adaptive"  # botocore: "legacy" | "standard" | "adaptive" (client-side rate limiting)
    max_attempts: int = 10  # total attempts per request, the first one included
    # Objects at or above this size use multipart upload (parts of multipart_chunksize, >= 5 MiB on S3).
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    max_concurrency: int = 4


class S3Store(ObjectStore):
    """``s3://bucket/prefix`` through boto3 (AWS S3, MinIO, moto)."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options = S3Options()):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise InvalidKeyError("s3 URI needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.options = options
        config = Config(retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts})
        self.client = boto3.session.Session(**s3_env.session_kwargs()).client(
            "s3",
            endpoint_url=options.endpoint_url or s3_env.endpoint_url(),
            region_name=options.region_name or s3_env.region(),
            config=config,
        )
        self.transfer_config = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_chunksize,
            max_concurrency=options.max_concurrency,
        )

    # The boto3 client holds sockets and locks; rebuild it after pickling (DataLoader workers, pools).
    def __getstate__(self):
        return {"bucket": self.bucket, "prefix": self.prefix, "options": self.options}

    def __setstate__(self, state):
        self.__init__(state["bucket"], state["prefix"], state["options"])

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{validate_key(key)}" if self.prefix else validate_key(key)

    @staticmethod
    def _is_not_found(error) -> bool:
        return str(error.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound")

    def put_bytes(self, key: str, data: bytes) -> None:
        s3_key = self._key(key)
        try:
            if len(data) >= self.options.multipart_threshold:
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, s3_key, Config=self.transfer_config)
            else:
                self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"{self.url(key)}: upload failed: {e}") from e

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return self._read_capped(key, response)
        except ClientError as e:
            if self._is_not_found(e):
                raise ObjectNotFoundError(f"{self.url(key)}: no such object") from None
            raise StoreError(f"{self.url(key)}: download failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"{self.url(key)}: download failed: {e}") from e

    def _read_capped(self, key: str, response: dict) -> bytes:
        if excess := store_ceiling(key).excess(int(response.get("ContentLength") or 0)):
            raise StoreError(f"{self.url(key)}: {excess}")
        return response["Body"].read()

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._is_not_found(e):
                return None
            raise StoreError(f"{self.url(key)}: HEAD failed: {e}") from e

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def _existing_head(self, key: str) -> dict:
        head = self._head(key)
        if head is None:
            raise ObjectNotFoundError(f"{self.url(key)}: no such object")
        return head

    def size(self, key: str) -> int:
        return int(self._existing_head(key)["ContentLength"])

    def modified(self, key: str) -> float:
        return self._existing_head(key)["LastModified"].timestamp()

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    keys.append(item["Key"][len(base):])
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"{self.uri}: listing {prefix!r} failed: {e}") from e
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"{self.url(key)}: delete failed: {e}") from e

    # --- conditional writes: If-None-Match / If-Match (AWS S3, MinIO, moto) --------------------------

    _CONFLICT_RETRIES = 6  # S3 may answer concurrent conditional requests 409: retry those

    def _conditional(self, key: str, what: str, call):
        """``call()``'s response, or None when the server refuses the condition (412, or the object is
        gone). A transport-level retry of a request that had succeeded also ends here: callers that
        must know compare the stored content with what they wrote."""
        for attempt in range(self._CONFLICT_RETRIES):
            try:
                return call()
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412 or self._is_not_found(e):
                    return None
                if code == "NotImplemented" or status == 501:
                    raise ConditionalWritesUnsupported(f"{self.url(key)}: {what}: the endpoint has no "
                                                       f"conditional writes ({code or status})") from e
                if code != "ConditionalRequestConflict" and status != 409:
                    raise StoreError(f"{self.url(key)}: {what} failed: {e}") from e
            except BotoCoreError as e:
                raise StoreError(f"{self.url(key)}: {what} failed: {e}") from e
            time.sleep(0.05 * 2 ** attempt)
        raise StoreError(f"{self.url(key)}: {what} kept conflicting with concurrent requests")

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        response = self._conditional(key, "conditional create", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"))
        return response["ETag"] if response is not None else None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        response = self._conditional(key, "download", lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._key(key)))
        return (self._read_capped(key, response), response["ETag"]) if response is not None else None

    def replace_if_match(self, key: str, data: bytes, etag: str) -> str | None:
        response = self._conditional(key, "conditional replace", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=etag))
        return response["ETag"] if response is not None else None


def open_store(uri: str | os.PathLike | ObjectStore, *, endpoint_url: str | None = None,
               **s3_options) -> ObjectStore:
    """Open a local folder (``/path``, ``file:///path``) or ``s3://bucket/prefix``.

    An :class:`ObjectStore` is returned unchanged, so functions can take either.
    ``endpoint_url`` and ``s3_options`` (fields of :class:`S3Options`) apply to S3 only.
    """
    if isinstance(uri, ObjectStore):
        return uri
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        options = S3Options(endpoint_url=endpoint_url, **s3_options)
        return S3Store(parsed.netloc, parsed.path, options)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter = a Windows drive, not a scheme
        raise InvalidKeyError(f"unsupported store URI {text!r}: use a local path, file:// or s3://")
    return LocalStore(text)
