"""Security: hostile pickles, tampered checkpoints, credential leaks, store-escaping paths, the chart.

Every exploit test carries its own proof: the payload is a real one (a control run through plain
``pickle.loads`` in a throw-away subprocess executes it and creates its marker file), and through
signpose's loaders it is refused with an error naming the offending import while the marker file
stays absent, i.e. nothing ran.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from pickle_opcodes import glob, int4, pickle4, ustr

from signpose.io import KeypointFormatError, read_keypoints
from signpose.io.safe_pickle import load_pickle

ROOT = Path(__file__).resolve().parents[1]


# --- hostile pickles -------------------------------------------------------------------------------

def _reduce_payload(func, *args) -> bytes:
    class Gadget:
        def __reduce__(self):
            return func, args
    return pickle.dumps({"train": {"keypoints": [Gadget()]}}, protocol=4)


def _global(module: str, name: str, arg_opcodes: bytes) -> bytes:
    """Protocol-0 opcodes: push ``module.name``, call it with the tuple built by ``arg_opcodes``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n(" + arg_opcodes + b"tR."


def _str(text: str) -> bytes:
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def payloads(marker: Path, tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes that create ``marker`` when unpickled by plain pickle, the refused global)."""
    touch = f"touch {marker}"
    create = f"open({str(marker)!r}, 'w').close()"
    # numpy.load(..., allow_pickle=True) on an attacker's .npy: a pickle inside the array.
    npy = tmp / "nested.npy"
    np.save(npy, np.array([_Touch(str(marker))], dtype=object), allow_pickle=True)
    import subprocess as sp
    return {
        "os.system": (_reduce_payload(os.system, touch), "system"),
        "os.system via protocol 0 INST": (b"(" + _str(touch) + b"ios\nsystem\n.", "os.system"),
        "posix.system by its real module": (_global("posix", "system", _str(touch)), "posix.system"),
        "subprocess.Popen": (_reduce_payload(sp.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "subprocess.check_output": (_reduce_payload(sp.check_output, ["touch", str(marker)]),
                                    "subprocess.check_output"),
        "builtins.eval": (_reduce_payload(eval, create), "builtins.eval"),
        "builtins.exec": (_reduce_payload(exec, create), "builtins.exec"),
        "builtins.getattr gadget": (
            # getattr(__import__('os'), 'system')('touch ...'): no forbidden name appears as a global
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(" + _str("os") + b"tR" + _str("system")
            + b"tR(" + _str(touch) + b"tR.", "builtins.getattr"),
        "builtins.__import__": (_global("builtins", "__import__", _str("os")), "builtins.__import__"),
        "numpy.testing runstring (exec)": (
            _global("numpy.testing._private.utils", "runstring", _str(create) + b"(d"),
            "numpy.testing._private.utils.runstring"),
        "numpy.load allow_pickle nested pickle": (
            _global("numpy", "load", _str(str(npy)) + b"NI01\n"), "numpy.load"),
        "numpy.f2py run_main": (_global("numpy.f2py.f2py2e", "run_main", b"(" + _str("-h") + b"l"),
                                "numpy.f2py.f2py2e.run_main"),
        "object array with a gadget inside": (
            pickle.dumps(np.array([_Touch(str(marker))], dtype=object), protocol=2), "system"),
    }


class _Touch:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


GADGETS = ["os.system", "os.system via protocol 0 INST", "posix.system by its real module", "subprocess.Popen",
           "subprocess.check_output", "builtins.eval", "builtins.exec", "builtins.getattr gadget",
           "builtins.__import__", "numpy.testing runstring (exec)", "numpy.load allow_pickle nested pickle",
           "numpy.f2py run_main", "object array with a gadget inside"]
# Controls: the payloads really execute under plain pickle (f2py's is left out: it would run f2py; a
# bare __import__ only imports, its harm is the first step of the getattr gadget).
CONTROLLED = [g for g in GADGETS if g not in ("numpy.f2py run_main", "builtins.__import__")]

PLAIN_UNPICKLE = r"""
import pickle, subprocess, sys
for path in sys.argv[1:]:
    try:
        result = pickle.loads(open(path, "rb").read())
    except Exception as e:  # some gadgets fail after they ran (e.g. an int where a list was expected)
        result = e
import os
while True:  # reap the commands the gadgets started, so their marker files exist before we look
    try:
        os.wait()
    except ChildProcessError:
        break
"""


@pytest.fixture(scope="module")
def gadget_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gadgets")
    files = {}
    for i, name in enumerate(GADGETS):
        marker = tmp / f"marker-{i}"
        scratch = tmp / f"scratch-{i}"
        scratch.mkdir()
        data, refused = payloads(marker, scratch)[name]
        path = tmp / f"gadget-{i}.pkl"
        path.write_bytes(data)
        files[name] = (path, marker, refused)
    return files


def test_every_gadget_is_a_real_exploit_under_plain_pickle(gadget_files, tmp_path):
    """The control: without the restricted unpickler each payload runs (so the tests below can fail)."""
    paths = [str(gadget_files[name][0]) for name in CONTROLLED]
    subprocess.run([sys.executable, "-c", PLAIN_UNPICKLE, *paths], capture_output=True, timeout=120, cwd=tmp_path)
    executed = {name for name in CONTROLLED if gadget_files[name][1].exists()}
    for name in CONTROLLED:
        gadget_files[name][1].unlink(missing_ok=True)
    assert executed == set(CONTROLLED), f"payloads that did not run under plain pickle: {set(CONTROLLED) - executed}"


@pytest.mark.parametrize("name", GADGETS)
def test_restricted_unpickler_refuses_the_gadget_and_nothing_executes(gadget_files, name):
    path, marker, refused = gadget_files[name]
    for load in (load_pickle, read_keypoints):
        with pytest.raises(KeypointFormatError) as failure:
            load(path)
        message = str(failure.value)
        assert "refused to load" in message and refused in message and str(path) in message, message
    assert not marker.exists(), f"{name}: the payload ran"


def test_restricted_unpickler_still_loads_plain_numpy_keypoint_pickles(tmp_path):
    """Positive control: the refusals above are not a loader that refuses everything."""
    data = {"keypoints": np.random.default_rng(0).random((3, 68, 3)).astype(np.float32)}
    path = tmp_path / "face.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    assert np.array_equal(load_pickle(path)["keypoints"], data["keypoints"])


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_numpy_files_holding_pickled_objects_are_refused(tmp_path, suffix):
    marker = tmp_path / "marker"
    array = np.array([_Touch(str(marker))], dtype=object)
    path = tmp_path / f"evil{suffix}"
    if suffix == ".npy":
        np.save(path, array, allow_pickle=True)
    else:
        np.savez(path, keypoints=array)
    with pytest.raises((KeypointFormatError, ValueError)) as failure:
        read_keypoints(path)
    assert "pickle" in str(failure.value).lower() or "object" in str(failure.value).lower(), str(failure.value)
    assert not marker.exists()


SOURCE_DIRS = ("signpose", "components", "pipelines")


def python_sources():
    for folder in SOURCE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


# --- allowed callables with size arguments: bounded by what the pickle can describe -----------------

_MIB_STRING = b"X" + (1 << 20).to_bytes(4, "little") + b"a" * (1 << 20)
AMPLIFIERS = {  # name -> a pickle of a few bytes (one: 1 MB) asking an allowed callable for gigabytes
    "bytearray(1.5e9)": pickle4(glob("builtins", "bytearray"), int4(1_500_000_000), b"\x85R"),
    "list(bytes(2e8))": pickle4(glob("builtins", "list"), glob("builtins", "bytes"), int4(200_000_000), b"\x85R\x85R"),
    "bytes(1.5e9) through NEWOBJ": pickle4(glob("builtins", "bytes"), int4(1_500_000_000), b"\x85\x81"),
    "str() of 1000 references to a 1 MB string": pickle4(glob("builtins", "str"), _MIB_STRING, b"\x940](",
                                                         b"h\x00" * 1000, b"e\x85R"),
    "numpy.ndarray((2e9,))": pickle4(glob("numpy", "ndarray"), int4(2_000_000_000), b"\x85R"),
    "numpy _reconstruct((2e9,))": pickle4(glob("numpy._core.multiarray", "_reconstruct"), glob("numpy", "ndarray"),
                                          int4(2_000_000_000), b"\x85C\x01b\x87R"),
    "numpy scalar of a 1.5 GB dtype": pickle4(glob("numpy._core.multiarray", "scalar"), glob("numpy", "dtype"),
                                              ustr("S1500000000"), b"\x89\x88\x87R\x85R"),
    "numpy object array state of 1e9 elements": pickle4(
        glob("numpy._core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), b"K\x00\x85C\x01b\x87R(K\x01",
        int4(1_000_000_000), b"\x85", glob("numpy", "dtype"), ustr("O8"), b"\x89\x88\x87R(K\x03", ustr("|"),
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89]tb"),
}

BOUNDED_LOAD = r"""
import json, pickle, resource, sys
from signpose.io import KeypointFormatError
from signpose.io.safe_pickle import loads_pickle
with open("/proc/self/status") as status:  # what the interpreter and numpy hold already, plus 64 MiB
    size = int(next(line for line in status if line.startswith("VmSize:")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), size + (64 << 20)))
plain = sys.argv[1] == "plain"
out = {}
for name, data in json.loads(sys.stdin.read()).items():
    try:
        (pickle.loads if plain else loads_pickle)(bytes.fromhex(data))
        out[name] = "loaded"
    except KeypointFormatError as err:
        out[name] = str(err)
    except MemoryError:
        out[name] = "MemoryError"
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def _load_bounded(how: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", BOUNDED_LOAD, how], input=json.dumps(
        {name: data.hex() for name, data in AMPLIFIERS.items()}), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_allowed_callables_cannot_allocate_more_than_the_pickle_can_describe():
    """Each payload is a real amplifier (the control: plain pickle runs out of its 64 MiB headroom), and
    the restricted unpickler refuses it before the allocation, naming the call and the size."""
    control = _load_bounded("plain")
    assert all(outcome == "MemoryError" for outcome in control.values()), control
    for name, outcome in _load_bounded("restricted").items():
        assert "refused to load" in outcome and "MemoryError" not in outcome, (name, outcome)
        assert len(outcome) < 600 and "\n" not in outcome


def test_restricted_unpickler_returns_plain_numpy_arrays_for_every_protocol():
    data = {"train": {"keypoints": [{"face": np.arange(204, dtype=np.float32).reshape(68, 3)}],
                      "extra": (np.zeros(3), [np.ones(2, np.float64)])}, "scalar": np.float32(1.5)}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        loaded = load_pickle_bytes(pickle.dumps(data, protocol=protocol))
        face = loaded["train"]["keypoints"][0]["face"]
        assert type(face) is np.ndarray and np.array_equal(face, data["train"]["keypoints"][0]["face"]), protocol
        assert type(loaded["train"]["extra"][0]) is np.ndarray and type(loaded["train"]["extra"][1][0]) is np.ndarray
        assert loaded["scalar"] == np.float32(1.5)


def load_pickle_bytes(data: bytes):
    from signpose.io.safe_pickle import loads_pickle

    return loads_pickle(data)


def test_a_folder_of_pose_files_cannot_pull_in_files_from_outside_it(tmp_path):
    """A link in an input folder pointing outside it is refused, even when the target is a valid
    keypoint file; a FIFO or a device in its place is refused without being opened for reading."""
    from signpose.io.pose_files import holistic_pose_bytes
    from signpose.synth import generate_signer_frames

    outside = tmp_path / "private" / "other-user.pose"
    outside.parent.mkdir()
    outside.write_bytes(holistic_pose_bytes(generate_signer_frames(1, 4, seed=1).keypoints, 640, 480))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.pose").write_bytes(outside.read_bytes())
    (folder / "b.pose").symlink_to(outside)
    with pytest.raises(KeypointFormatError, match="outside the input folder"):
        read_keypoints(folder)
    (folder / "b.pose").unlink()
    (folder / "b.pose").symlink_to("/dev/zero")
    with pytest.raises(KeypointFormatError, match="outside the input folder"):
        read_keypoints(folder)
    with pytest.raises(KeypointFormatError, match="character device"):
        read_keypoints(folder / "b.pose")


def test_source_never_unpickles_unsafely():
    """Static guard: every torch.load passes weights_only=True, no plain pickle.load(s) outside the
    restricted unpickler, no numpy allow_pickle=True, no unsafe yaml loader."""
    problems = []
    for path in python_sources():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for match in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in match.group(0):
                problems.append(f"{rel}: {match.group(0)}")
        if rel.as_posix() != "signpose/io/safe_pickle.py" and re.search(r"\bpickle\.(load|loads|Unpickler)\(", text):
            problems.append(f"{rel}: plain pickle loading")
        if re.search(r"allow_pickle\s*=\s*True", text):
            problems.append(f"{rel}: allow_pickle=True")
        for match in re.finditer(r"yaml\.(load|load_all)\(([^)]*)\)", text):
            if "Loader=" not in match.group(2) or re.search(r"Loader=yaml\.(Loader|UnsafeLoader|FullLoader)",
                                                             match.group(2)):
                problems.append(f"{rel}: {match.group(0)}")
    assert not problems, problems


# --- checkpoints -----------------------------------------------------------------------------------

def test_tampered_checkpoint_is_refused_by_the_engine_loader(tmp_path):
    import torch

    from signpose.train.engine import CHECKPOINT_FORMAT, CHECKPOINT_KEY, load_checkpoint

    marker = tmp_path / "owned"
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(2)}, "extra": _Touch(str(marker))}, buffer)
    (tmp_path / CHECKPOINT_KEY).write_bytes(buffer.getvalue())
    with pytest.raises(pickle.UnpicklingError, match="(?i)weights.only"):
        load_checkpoint(str(tmp_path))
    assert not marker.exists()


# --- store paths -----------------------------------------------------------------------------------

@pytest.fixture
def dataset(tmp_path):
    from signpose import stages

    root = tmp_path / "store" / "dataset"
    stages.preprocess("", str(root), image_size=32, shard_size=8, synthetic_videos=2, synthetic_frames_per_video=8,
                      workers=1)
    return root


@pytest.mark.parametrize("evil_key", ["../outside.npz", "shards/../../outside.npz", "/tmp/outside.npz",
                                      "shards\\..\\..\\outside.npz", "link/outside.npz"])
def test_manifest_naming_a_shard_outside_the_store_is_refused(dataset, evil_key):
    from signpose.data import ShardStream, load_split
    from signpose.shards import read_manifest, read_shard, verify_dataset
    from signpose.store import InvalidKeyError

    # A real, valid shard placed outside the store root: if it were ever read, the read would succeed.
    first = json.loads((dataset / "manifest.json").read_text())["shards"][0]
    shard_bytes = (dataset / first["key"]).read_bytes()
    outside = dataset.parent / "outside.npz"
    outside.write_bytes(shard_bytes)
    if evil_key.startswith("/"):
        evil_key = str(outside)
    if evil_key.startswith("link/"):
        (dataset / "link").symlink_to(dataset.parent)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["shards"][0]["key"] = evil_key
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard_bytes).hexdigest()
    (dataset / "manifest.json").write_text(json.dumps(manifest))

    readers = {
        "read_shard": lambda: read_shard(str(dataset), read_manifest(str(dataset)).shards[0]),
        "verify_dataset": lambda: verify_dataset(str(dataset), progress=False),
        "load_split": lambda: load_split(str(dataset), "train", "face"),
        "ShardStream": lambda: list(ShardStream(str(dataset), "train", task="face", shuffle=False)),
    }
    for name, read in readers.items():
        with pytest.raises((InvalidKeyError, ValueError)) as failure:
            read()
        assert "outside" in str(failure.value) or "escape" in str(failure.value) or "relative" in str(failure.value), \
            f"{name}: {failure.value}"


def test_s3_store_refuses_keys_that_leave_its_prefix(s3_bucket):
    from signpose.store import InvalidKeyError, open_store

    store = open_store(s3_bucket + "/datasets/a")
    store.put_bytes("ok.txt", b"inside")
    for key in ("../b/shards/x.npz", "shards/../../b/x.npz", "/datasets/b/x.npz"):
        with pytest.raises(InvalidKeyError):
            store.get_bytes(key)
        with pytest.raises(InvalidKeyError):
            store.put_bytes(key, b"x")
    assert open_store(s3_bucket).list() == ["datasets/a/ok.txt"]


# --- credentials -----------------------------------------------------------------------------------

FAKE = {
    "AWS_SECRET_ACCESS_KEY": "FAKESECRET-aws-7f3a9c",
    "AWS_SESSION_TOKEN": "FAKESECRET-session-51be",
    "MLFLOW_TRACKING_PASSWORD": "FAKESECRET-mlflow-c0ffee",
    "MLFLOW_TRACKING_TOKEN": "FAKESECRET-mlflowtoken-9d2",
    "KF_PIPELINES_TOKEN": "FAKESECRET-kfp-4e1d",
    "MLFLOW_S3_ENDPOINT_URL": "",
}
SECRETS = [v for v in FAKE.values() if v]


def find_secrets(text: str) -> list[str]:
    return [s for s in SECRETS if s in text] + (["FAKESECRET"] if "FAKESECRET" in text else [])


@pytest.fixture
def fake_secrets(monkeypatch, s3_endpoint):
    for name, value in FAKE.items():
        if value:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FAKEKEYID-2b7")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "fake-user")
    return FAKE


def test_compiled_pipeline_yaml_holds_no_credential(fake_secrets, tmp_path):
    out = tmp_path / "pipeline.yaml"
    compiled = subprocess.run(
        [sys.executable, "-c", "import sys; from pipelines.training_pipeline import compile_pipeline; "
                               "compile_pipeline(sys.argv[1])", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    text = out.read_text()
    assert "AWS_SECRET_ACCESS_KEY" in text, "the YAML should reference the secret by name (from a Secret)"
    assert find_secrets(text + compiled.stdout + compiled.stderr) == []
    assert "FAKEKEYID" not in text


def failing_stage_errors(store_uri: str, tracking: str, monkeypatch) -> list[str]:
    """The formatted errors (every chained cause included) of stages that fail on S3 and MLflow."""
    from signpose import stages
    from signpose.shards import read_manifest

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    errors = []
    config = dict(batch_size=8, epochs=1, d_region=16, d_global=8, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, progress=False, device="cpu")
    for failing in (lambda: read_manifest(store_uri + "/missing"),
                    lambda: stages.preprocess("s3://no-such-bucket-x/in.pkl", store_uri),
                    lambda: stages.train_task("face", store_uri + "/missing", tracking, config),
                    lambda: stages.train_task("face", store_uri, "http://127.0.0.1:9", config)):
        try:
            failing()
        except Exception as e:  # noqa: BLE001 - any failure is what we search
            errors.append("".join(traceback.format_exception(e)))
        else:
            pytest.fail("the failing stage did not fail")
    return errors


def test_no_credential_in_run_params_tags_logs_or_stage_errors(fake_secrets, s3_bucket, tmp_path, caplog, capfd,
                                                               monkeypatch):
    """Fast check: a training run's params and tags (every config field, lineage) and the errors of
    failing stages, with recognisable fake secrets in the environment."""
    from mlflow import MlflowClient

    from signpose import stages
    from signpose.tasks import FaceTrainConfig
    from signpose.tracking import start_training_run
    from signpose.tracking.settings import MlflowSettings

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # the stage sets it; monkeypatch restores it afterwards
    store_uri = s3_bucket + "/datasets/secrets"
    stages.preprocess("", store_uri, image_size=32, shard_size=8, synthetic_videos=2, synthetic_frames_per_video=8,
                      workers=1)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = MlflowSettings(tracking_uri=tracking, artifact_location=(tmp_path / "art").as_uri(),
                              system_metrics=False)
    with start_training_run("face", FaceTrainConfig(data_path=store_uri), dataset_hash="0" * 64,
                            manifest_uri=store_uri, settings=settings, pipeline_run_id="kfp-run-1") as run:
        run_id = run.info.run_id
    data = MlflowClient(tracking).get_run(run_id).data
    seen = [f"{k}={v}" for k, v in {**data.params, **data.tags}.items()]
    assert len(data.params) > 20, "the config was not logged: nothing was searched"

    errors = failing_stage_errors(store_uri, tracking, monkeypatch)
    captured = capfd.readouterr()
    everything = "\n".join(seen + errors + [r.getMessage() for r in caplog.records] + [captured.out, captured.err])
    assert find_secrets(everything) == []
    assert "FAKEKEYID" not in everything


@pytest.mark.slow
def test_no_credential_in_mlflow_params_tags_artifacts_logs_or_errors(fake_secrets, s3_bucket, tmp_path, caplog,
                                                                     capfd, monkeypatch):
    """A whole preprocess + tracked training with recognisable fake secrets in the environment, then
    a search of everything it produced: MLflow params, tags, metric names, artifacts, registered
    version tags, the log records, stdout/stderr, and the errors of failing stages."""
    import mlflow
    from mlflow import MlflowClient

    from signpose import stages

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # the stage sets it; monkeypatch restores it afterwards
    monkeypatch.chdir(tmp_path)  # mlflow.yaml defaults: sqlite + artifacts in this folder
    monkeypatch.setenv("SIGNPOSE_MLFLOW_CONFIG", str(ROOT / "mlflow.yaml"))
    store_uri = s3_bucket + "/datasets/secrets"
    stages.preprocess("", store_uri, image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8,
                      workers=1)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = dict(batch_size=8, epochs=1, d_region=16, d_global=8, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, progress=False, device="cpu")
    outcome = stages.train_task("face", store_uri, tracking, config)

    seen = []
    client = MlflowClient(tracking)
    run = client.get_run(outcome.run_id)
    seen += [f"{k}={v}" for k, v in run.data.params.items()]
    seen += [f"{k}={v}" for k, v in run.data.tags.items()]
    seen += list(run.data.metrics)
    version = client.get_model_version(outcome.model_name, outcome.model_version)
    seen += [f"{k}={v}" for k, v in version.tags.items()]
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id, dst_path=str(tmp_path / "dl")))
    for path in artifacts.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".py", ""):
            seen.append(path.read_text(errors="replace"))
    assert run.data.params, "no params were logged: nothing was searched"

    # Failing stages: their errors, with every chained cause, must not carry a secret either.
    errors = failing_stage_errors(store_uri, tracking, monkeypatch)
    captured = capfd.readouterr()
    everything = "\n".join(seen + errors + [r.getMessage() for r in caplog.records] + [captured.out, captured.err])
    assert find_secrets(everything) == []
    assert "FAKEKEYID" not in everything


# --- the Helm chart --------------------------------------------------------------------------------

def test_chart_defaults_put_mlflow_behind_auth_and_run_every_container_non_root_read_only():
    pytest.importorskip("helm_python")
    from tools import chartcheck

    objects, notes = chartcheck.render_chart({})
    deployments = {o.name: o.doc for o in objects if o.kind == "Deployment"}
    mlflow = next(doc for name, doc in deployments.items() if name.endswith("mlflow"))
    container = next(c for c in mlflow["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow")
    script = " ".join(container.get("command", []) + container.get("args", []))
    assert "--app-name basic-auth" in script
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]
    service = next(o.doc for o in objects if o.kind == "Service" and o.name.endswith("mlflow"))
    assert service["spec"]["type"] == "ClusterIP"
    assert not [o for o in objects if o.kind == "Ingress"], "the UI is exposed by default"
    assert "WARNING: basic auth is OFF" not in notes

    pods = [(o, chartcheck.pod_spec(o)) for o in objects if chartcheck.pod_spec(o) is not None]
    assert pods
    for obj, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, obj
        for _, c in chartcheck.containers(spec):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (obj, c["name"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (obj, c["name"])
    assert chartcheck.security_problems(objects) == []
    assert chartcheck.leak_problems(objects) == []
