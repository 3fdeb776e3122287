"""The stage images' names: defined once, read by the KFP components and by ``make images``.

Registry and tag come from ``images.env`` at the repository root (plain ``KEY=VALUE`` lines that
Make ``include``s too); environment variables of the same name win, so
``SIGNPOSE_IMAGE_TAG=0.2.0 make images compile`` builds, pushes and compiles against the same tag.
``SIGNPOSE_IMAGES_FILE`` points at another file. When no file is found (the package installed in an
image, say) the built-in defaults below are used.

    python -m signpose.deploy.images            # prints PREPROCESS_IMAGE=..., TRAIN_IMAGE=..., MLFLOW_IMAGE=...
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REGISTRY = "localhost:5000/signpose"
DEFAULT_TAG = "0.1.0"
PREPROCESS_REPOSITORY = "signpose-preprocess"
TRAIN_REPOSITORY = "signpose-train"
MLFLOW_REPOSITORY = "signpose-mlflow"

# Comma-separated names of Kubernetes Secrets (type kubernetes.io/dockerconfigjson) in the pipeline's
# namespace that pull the stage images: compiled into the task pods and the TrainJob pods.
IMAGE_PULL_SECRETS_VAR = "SIGNPOSE_IMAGE_PULL_SECRETS"
REGISTRY_VAR = "SIGNPOSE_REGISTRY"
TAG_VAR = "SIGNPOSE_IMAGE_TAG"
FILE_VAR = "SIGNPOSE_IMAGES_FILE"
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "images.env"

# Docker's reference grammar, reduced: lowercase path components separated by '/', an optional
# host[:port] first; tags are at most 128 word characters, '.' or '-', not starting with '.' or '-'.
_REGISTRY_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"
    r"|^[a-zA-Z0-9.-]+(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A Secret's name: a DNS subdomain (RFC 1123), at most 253 characters.
_SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ImageSettingsError(ValueError):
    """A registry or tag that no container runtime would accept, with where it came from."""


@dataclass(frozen=True)
class ImageSettings:
    registry: str
    tag: str
    pull_secrets: tuple[str, ...] = ()

    @property
    def preprocess(self) -> str:
        return f"{self.registry}/{PREPROCESS_REPOSITORY}:{self.tag}"

    @property
    def train(self) -> str:
        return f"{self.registry}/{TRAIN_REPOSITORY}:{self.tag}"

    @property
    def mlflow(self) -> str:
        """The tracking server image the Helm chart deploys (not a pipeline stage)."""
        return f"{self.registry}/{MLFLOW_REPOSITORY}:{self.tag}"


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; '#' comments and blank lines skipped; optional quotes stripped."""
    path = Path(path)
    values: dict[str, str] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ImageSettingsError(f"{path}:{line_no}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_image_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> ImageSettings:
    environ = os.environ if environ is None else environ
    file_path = Path(path or environ.get(FILE_VAR) or DEFAULT_FILE)
    from_file: dict[str, str] = {}
    if file_path.is_file():
        from_file = read_env_file(file_path)
    elif path is not None or environ.get(FILE_VAR):
        raise ImageSettingsError(f"image settings file {file_path} does not exist")

    def pick(var: str, default: str) -> tuple[str, str]:
        if environ.get(var):
            return environ[var].strip(), f"environment variable {var}"
        if from_file.get(var):
            return from_file[var], f"{file_path} ({var})"
        return default, f"built-in default for {var}"

    registry, registry_src = pick(REGISTRY_VAR, DEFAULT_REGISTRY)
    registry = registry.rstrip("/")
    tag, tag_src = pick(TAG_VAR, DEFAULT_TAG)
    if not _REGISTRY_RE.match(registry):
        raise ImageSettingsError(
            f"{registry_src}: {registry!r} is not a valid image registry/namespace "
            "(lowercase path components, optional host[:port] first)")
    if not _TAG_RE.match(tag):
        raise ImageSettingsError(
            f"{tag_src}: {tag!r} is not a valid image tag (letters, digits, '_', '.', '-'; at most 128)")
    secrets_text, secrets_src = pick(IMAGE_PULL_SECRETS_VAR, "")
    pull_secrets = tuple(name.strip() for name in secrets_text.split(",") if name.strip())
    for name in pull_secrets:
        if len(name) > 253 or not _SECRET_NAME_RE.match(name):
            raise ImageSettingsError(f"{secrets_src}: {name!r} is not a Kubernetes Secret name "
                                     "(lowercase letters, digits, '-' and '.'; comma-separate several)")
    return ImageSettings(registry=registry, tag=tag, pull_secrets=pull_secrets)


IMAGES = load_image_settings()
PREPROCESS_IMAGE = IMAGES.preprocess
TRAIN_IMAGE = IMAGES.train
MLFLOW_IMAGE = IMAGES.mlflow
IMAGE_PULL_SECRETS = IMAGES.pull_secrets


def main() -> None:
    print(f"PREPROCESS_IMAGE={PREPROCESS_IMAGE}")
    print(f"TRAIN_IMAGE={TRAIN_IMAGE}")
    print(f"MLFLOW_IMAGE={MLFLOW_IMAGE}")
    print(f"{IMAGE_PULL_SECRETS_VAR}={','.join(IMAGE_PULL_SECRETS)}")


if __name__ == "__main__":
    main()
