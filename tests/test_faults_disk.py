"""Disk full on a local store: a clear error naming the object, no manifest, no partial file, and a
re-run after space is freed completes byte-identical.

Two ways to run out of space, both real kernel errors:

* a 2 MiB tmpfs mounted for the test (``mount -t tmpfs -o size=2m``; needs root or CAP_SYS_ADMIN,
  skipped otherwise): ENOSPC, "No space left on device";
* ``RLIMIT_FSIZE`` in a subprocess (no privileges needed, always runs): a write past the limit fails
  with EFBIG, "File too large" (SIGXFSZ is ignored so the write returns the error instead of killing
  the process).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from faultproxy import store_snapshot

from signpose import stages
from signpose.shards import ManifestNotFoundError, read_manifest
from signpose.store import LocalStore, StoreError

ARGS = dict(image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8, workers=1)
TMP_SUFFIX = ".tmp-signpose"


@pytest.fixture(scope="module")
def clean_snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "dataset"
    stages.preprocess("", str(root), **ARGS)
    return store_snapshot(str(root))


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the RLIMIT_FSIZE test covers disk full")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path, chunk: int = 4096) -> None:
    """Write to ``path`` until the file system refuses: it is then full."""
    with open(path, "ab", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def leftovers(root) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def assert_failed_cleanly(failure, store_dir, key_part: str) -> None:
    message = str(failure.value)
    assert str(store_dir) in message and key_part in message, f"the error does not name the object: {message}"
    with pytest.raises(ManifestNotFoundError):
        read_manifest(str(store_dir))
    assert not (store_dir / "manifest.json").exists()
    assert leftovers(store_dir) == [], "a partial temporary file was left behind"


@pytest.mark.parametrize("when", ["shards", "commit"])
def test_disk_full_on_a_tmpfs_is_a_clear_error_and_leaves_no_manifest(tiny_tmpfs, monkeypatch, clean_snapshot, when):
    store_dir = tiny_tmpfs / "dataset"
    filler = tiny_tmpfs / "filler"
    if when == "shards":
        fill(filler)  # full before the first shard
        os.truncate(filler, os.path.getsize(filler) - 40 * 1024)  # room for the plan and about two shards
    else:
        # Everything but the manifest fits: the disk fills up right at the commit.
        real_put, real_create = LocalStore.put_bytes, LocalStore.put_if_absent

        def put_bytes(self, key, data):
            if key == "manifest.json":
                fill(filler)
            return real_put(self, key, data)

        def put_if_absent(self, key, data):  # the manifest's commit is a conditional create
            if key == "manifest.json":
                fill(filler)
            return real_create(self, key, data)

        monkeypatch.setattr(LocalStore, "put_bytes", put_bytes)
        monkeypatch.setattr(LocalStore, "put_if_absent", put_if_absent)
    with pytest.raises(StoreError) as failure:
        stages.preprocess("", str(store_dir), **ARGS)
    assert "No space left on device" in str(failure.value)
    assert_failed_cleanly(failure, store_dir, "shards/" if when == "shards" else "manifest.json")

    monkeypatch.undo()
    filler.unlink()  # space is freed: the re-run completes
    stages.preprocess("", str(store_dir), **ARGS)
    assert store_snapshot(str(store_dir)) == clean_snapshot


FILE_SIZE_LIMITED = r"""
import resource, signal, sys
from signpose import stages
from signpose.store import StoreError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write returns EFBIG instead of the signal killing us
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    stages.preprocess("", sys.argv[1], **%r)
except StoreError as e:
    print("STORE-ERROR", e)
    sys.exit(3)
""" % (ARGS,)


def test_file_size_limit_is_a_clear_error_and_leaves_no_manifest(tmp_path, clean_snapshot):
    store_dir = tmp_path / "dataset"
    # 8 KiB: the plan (about 1 KiB) fits, a shard (about 14 KiB) does not.
    limited = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(store_dir), str(8 * 1024)],
                             capture_output=True, text=True, timeout=300)
    assert limited.returncode == 3, limited.stderr[-3000:]
    assert "File too large" in limited.stdout

    class Failure:  # the shape of pytest's ExceptionInfo, for the shared assertions
        value = limited.stdout
    assert_failed_cleanly(Failure, store_dir, "shards/")

    stages.preprocess("", str(store_dir), **ARGS)
    assert store_snapshot(str(store_dir)) == clean_snapshot
