"""Run commands inside the built OCI images, without a Docker daemon: Debian's ``buildah`` with chroot
isolation (``buildah from`` + ``buildah run --isolation chroot``), on the host's network, so services
the test starts on loopback (moto's S3, an MLflow server, PostgreSQL) are reachable from inside.

A :class:`Container` is a fresh working container of an image (its own writable layer over the image's
read-only ones), removed on exit. What a command wrote to the image's root file system, outside the
folders mounted into it, is in that writable layer: :meth:`Container.written_paths` lists it, which is
what would fail on a pod with ``readOnlyRootFilesystem: true``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

BUILDAH = shutil.which("buildah")
# Written by ``buildah run`` itself into every container it runs (the kubelet provides them as mounts).
RUNTIME_FILES = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv", "run", "etc"}


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([BUILDAH, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args[:3])} ... exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def image_exists(ref: str) -> bool:
    return BUILDAH is not None and buildah("inspect", "--type", "image", ref, check=False).returncode == 0


def require_image(ref: str) -> None:
    """Skip (cleanly, with the reason) where buildah or the image is absent: `make image-test` builds it."""
    if BUILDAH is None:
        pytest.skip("buildah is not installed (`make image-test` installs it and builds the images)")
    if not image_exists(ref):
        pytest.skip(f"image {ref} is not built here: run `make image-test` (or `make images PUSH=0 STANDIN=1`)")


def image_config(ref: str) -> dict:
    """The image's OCI config (``config``: Env, User, WorkingDir, Labels; ``rootfs``; ``history``)."""
    return json.loads(buildah("inspect", "--type", "image", ref).stdout)["OCIv1"]


def image_env(ref: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in image_config(ref)["config"].get("Env", []))


class Container:
    """A working container of ``ref``; use as a context manager (removed on exit)."""

    def __init__(self, ref: str):
        self.ref = ref
        self.name = buildah("from", "--pull-never", "--quiet", ref).stdout.strip()
        self._rootfs: Path | None = None

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        buildah("rm", self.name, check=False)

    def argv(self, command: list[str], env: dict[str, str] | None = None, volumes: dict[str, Path] | None = None,
             user: str | None = None, workdir: str | None = None) -> list[str]:
        """``buildah run`` of ``command`` as the image's own user (unless ``user``), the image's environment
        plus ``env``, each ``volumes`` folder mounted read-write at its path in the container."""
        argv = [BUILDAH, "run", "--isolation", "chroot", "--network", "host"]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        for path, folder in (volumes or {}).items():
            argv += ["--volume", f"{folder}:{path}:rw"]
        if user:
            argv += ["--user", user]
        if workdir:
            argv += ["--workingdir", workdir]
        return [*argv, self.name, "--", *command]

    def run(self, command: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command, **kwargs), capture_output=True, text=True, timeout=timeout)

    def start(self, command: list[str], log_path: Path, **kwargs) -> subprocess.Popen:
        """A long-running command (a server) in a process group of its own: stop with :func:`stop`."""
        with open(log_path, "wb") as log:
            return subprocess.Popen(self.argv(command, **kwargs), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    @property
    def rootfs(self) -> Path:
        """The container's merged root file system, as seen from the host."""
        if self._rootfs is None:
            self._rootfs = Path(buildah("mount", self.name).stdout.strip())
        return self._rootfs

    def copy_in(self, source: Path, dest: str, owner: str = "1000:1000") -> None:
        """Put a host file into the container (what KFP's launcher does with input artifacts)."""
        buildah("copy", "--quiet", "--chown", owner, self.name, str(source), dest)

    def written_paths(self) -> set[str]:
        """Paths (relative to /) the container wrote to the image's root file system: its writable layer,
        the overlay ``diff`` folder next to ``merged``, minus what ``buildah run`` itself writes."""
        upper = self.rootfs.parent / "diff"
        assert upper.is_dir(), f"no overlay upper folder at {upper}: is the storage driver overlay?"
        found = {str(p.relative_to(upper)) for p in upper.rglob("*")}
        return {p for p in found if p not in RUNTIME_FILES}




def under(paths: set[str], roots: list[str]) -> set[str]:
    """The ``paths`` (relative to /) that lie outside every one of ``roots`` (absolute) and are not one of
    the folders leading to them."""
    roots = [r.strip("/") for r in roots]
    outside = set()
    for path in paths:
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        if any(r.startswith(path + "/") for r in roots):
            continue  # a parent folder of an allowed path (its mtime changed)
        outside.add(path)
    return outside
