"""The `signpose` command line as a person meets it: one flag style, help for every flag, a version,
and every mistake the user can fix reported as one line on stderr with exit status 2, no traceback.

The error tests run `python -m signpose.cli` in a subprocess so that what they check is the real
stderr and exit status of the program, not what a test harness makes of an exception.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from signpose.cli import build_parser, main
from signpose.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    add_flag,
    run_command,
    user_error_message,
    walk_parsers,
)
from signpose.errors import UserError

HYPHENATED_FLAG = re.compile(r"(?<![\w-])--[a-z0-9]+-[a-z0-9-]+")
PARSERS = dict(walk_parsers(build_parser()))


def signpose(*argv, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`signpose ARGV...` in a fresh process, in ``cwd``, with MLflow pointed at ``cwd`` and no
    debug setting inherited from the caller."""
    environ = {k: v for k, v in os.environ.items() if k != "SIGNPOSE_DEBUG"}
    environ.update({"MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlruns.db", "MLFLOW_REGISTRY_URI": ""})
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "signpose.cli", *map(str, argv)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=600)


def assert_user_error(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit status 2, exactly one non-empty line on stderr that names every one of ``names``, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def keypoints(tmp_path_factory) -> Path:
    """A small valid keypoint file (2 videos x 3 frames)."""
    from signpose.io.writers import write_npz
    from signpose.synth import generate_signer_frames

    path = tmp_path_factory.mktemp("input") / "signer.npz"
    write_npz(path, generate_signer_frames(n_videos=2, frames_per_video=3, seed=5))
    return path


@pytest.fixture
def empty_registry(tmp_path) -> Path:
    """A working folder whose MLflow store exists and holds no model (created here, so the command
    under test does not print MLflow's database set-up lines)."""
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").search_registered_models()
    return tmp_path


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections for the whole test: bound here and never listened on,
    so no other process can take it and answer on it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# ---- one flag style, help for every flag ------------------------------------------------------------

@pytest.mark.parametrize("path", list(PARSERS), ids=lambda path: " ".join(path) or "signpose")
def test_every_help_page_shows_only_underscore_flags(path):
    page = PARSERS[path].format_help()
    assert not HYPHENATED_FLAG.findall(page), page


@pytest.mark.parametrize("path", [p for p in PARSERS if p and p[0] != "train"],
                         ids=lambda path: " ".join(path))
def test_every_flag_of_the_command_line_modules_has_help_text(path):
    for action in PARSERS[path]._actions:
        if action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help text"


def test_the_hyphenated_spelling_of_a_flag_still_parses_as_a_hidden_alias():
    parser = build_parser()
    new = parser.parse_args(["render", "in.pose", "--out", "d", "--image_size", "96", "--no_antialias"])
    old = parser.parse_args(["render", "in.pose", "--out", "d", "--image-size", "96", "--no-antialias"])
    assert (old.image_size, old.no_antialias) == (new.image_size, new.no_antialias) == (96, True)
    old = parser.parse_args(["schedule", "--cron", "0 0 3 * * 1", "--max-concurrency", "2",
                             "--params-json", "{}", "--token-file", "t"])
    assert (old.max_concurrency, old.params_json, old.token_file) == (2, "{}", "t")
    assert "--image-size" not in PARSERS[("render",)].format_help()


def test_add_flag_registers_the_underscore_name_and_its_hyphenated_alias():
    parser = argparse.ArgumentParser()
    add_flag(parser, "--batch_size", type=int, default=1, help="h")
    add_flag(parser, "--epochs", type=int, default=1, help="h")
    assert parser.parse_args(["--batch-size", "4"]).batch_size == 4
    assert "--epochs" in parser._option_string_actions and "--epochs-" not in parser._option_string_actions


@pytest.mark.parametrize("argv, flag", [
    (["render", "in.pose", "--out", "d", "--animation", "avi"], "--animation"),
    (["predict", "--model", "models:/m/1", "in.pose", "--out", "d", "--split", "val"], "--split"),
    (["render", "in.pose", "--out", "d", "--image-size", "0"], "--image_size"),
    (["render", "in.pose"], "--out"),
    (["train", "skeleton", "--data_path", "x.pkl", "--model", "resnet50"], "--model"),
], ids=["choices", "split-choices", "alias-named-by-its-underscore-name", "missing-required", "model-choices"])
def test_a_bad_flag_value_is_one_line_naming_the_flag_and_status_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == EXIT_USER_ERROR
    assert len(err.strip().splitlines()) == 1 and flag in err and "--help" in err, err
    assert "-size/" not in err and "/--image-size" not in err


def test_version_prints_the_package_version(tmp_path):
    result = signpose("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"signpose {metadata.version('signpose')}"


# ---- user errors: one line, status 2, no traceback -------------------------------------------------

def test_predict_on_a_missing_input_file_names_the_file(empty_registry):
    result = signpose("predict", "--model", "models:/skeleton-generator@champion", "nope.pkl",
                      "--out", "out", cwd=empty_registry)
    assert_user_error(result, "nope.pkl", "no such file")


def test_predict_on_an_unreadable_input_file_names_the_file(empty_registry):
    bad = empty_registry / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    result = signpose("predict", "--model", "models:/skeleton-generator@champion", bad, "--out", "out",
                      cwd=empty_registry)
    assert_user_error(result, str(bad))
    assert not (empty_registry / "out").exists()


def test_predict_with_an_unknown_model_uri_names_the_uri_and_the_models_command(empty_registry, keypoints):
    result = signpose("predict", "--model", "models:/no-such-model@champion", keypoints, "--out", "out",
                      cwd=empty_registry)
    assert_user_error(result, "--model models:/no-such-model@champion", "signpose models")


@pytest.mark.parametrize("command", ["models", "predict"])
def test_an_unreachable_mlflow_server_names_its_address_and_what_to_set(command, tmp_path, keypoints, closed_port):
    port = closed_port
    argv = ["models"] if command == "models" else ["predict", "--model", "models:/m@champion", keypoints,
                                                   "--out", "out"]
    result = signpose(*argv, cwd=tmp_path, env={
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    assert_user_error(result, f"127.0.0.1:{port}", "MLFLOW_TRACKING_URI")


def test_an_unreachable_kfp_api_names_the_host_and_the_flag(tmp_path, closed_port):
    host = f"http://127.0.0.1:{closed_port}"
    result = signpose("submit", "--host", host, cwd=tmp_path)
    assert_user_error(result, host, "--host")


def test_a_missing_token_file_names_the_flag_and_the_file(tmp_path, closed_port):
    result = signpose("submit", "--host", f"http://127.0.0.1:{closed_port}", "--token_file",
                      tmp_path / "no-token", cwd=tmp_path)
    assert_user_error(result, "--token_file", "no-token")


def test_dataset_info_on_a_folder_without_a_data_set_names_the_manifest(tmp_path):
    result = signpose("dataset", "info", tmp_path, cwd=tmp_path)
    assert_user_error(result, str(tmp_path), "no manifest")


def test_dataset_info_on_a_deeply_nested_manifest_is_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text("[" * 100_000)
    result = signpose("dataset", "info", tmp_path, cwd=tmp_path)
    assert_user_error(result, "manifest.json", "nested too deeply")


def test_train_without_data_path_says_to_pass_it(tmp_path):
    result = signpose("train", "face", "--epochs", "1", cwd=tmp_path)
    assert_user_error(result, "--data_path")


@pytest.mark.parametrize("how", [pytest.param("env", marks=pytest.mark.slow), "flag"])
def test_debug_shows_the_traceback_of_a_user_error(how, tmp_path):
    argv = ["inspect", "nope.pkl"]
    env = {"SIGNPOSE_DEBUG": "1"} if how == "env" else {}
    result = signpose(*(argv + ["--debug"] if how == "flag" else argv), cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "KeypointFormatError" in result.stderr


# ---- the one error path ----------------------------------------------------------------------------

def _raise(exc: BaseException):
    def command(args):
        raise exc
    return command


def test_a_user_error_is_printed_once_and_returns_2(capsys):
    assert run_command(_raise(UserError("--data_path x.pkl: no such file")), argparse.Namespace()) == 2
    assert capsys.readouterr().err == "error: --data_path x.pkl: no such file\n"


def test_ctrl_c_is_one_line_and_status_130(capsys):
    assert run_command(_raise(KeyboardInterrupt()), argparse.Namespace()) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "interrupted" in err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_command(_raise(ZeroDivisionError("bug")), argparse.Namespace())


def test_with_debug_a_user_error_is_raised_for_its_traceback():
    with pytest.raises(UserError):
        run_command(_raise(UserError("x")), argparse.Namespace(), debug=True)


def test_which_errors_count_as_user_errors():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    from signpose.deploy.submit import SubmitError
    from signpose.io.errors import KeypointFormatError
    from signpose.shards import ManifestNotFoundError, ShardCorruptError
    from signpose.store import ObjectNotFoundError

    assert user_error_message(FileNotFoundError(2, "No such file or directory", "/x/model.yaml")) == \
        "/x/model.yaml: No such file or directory"
    assert "x.pkl" in user_error_message(KeypointFormatError("x.pkl", "truncated"))
    assert user_error_message(SubmitError("--cron: bad")) == "--cron: bad"
    assert user_error_message(ManifestNotFoundError("d/manifest.json: no manifest")) == "d/manifest.json: no manifest"
    assert user_error_message(ShardCorruptError("d/shards/0.npz: sha256 differs")) == "d/shards/0.npz: sha256 differs"
    assert user_error_message(ObjectNotFoundError("s3://b/k: no such object")) == "s3://b/k: no such object"
    missing = MlflowException("Registered Model with name=m not found", error_code=RESOURCE_DOES_NOT_EXIST)
    assert "signpose models" in user_error_message(missing)
    assert user_error_message(UserError("first line\n  second line")) == "first line; second line"
    # Not the user's doing: these keep their tracebacks.
    assert user_error_message(ValueError("bug")) is None
    assert user_error_message(OSError("no file involved")) is None
    assert user_error_message(MlflowException("boom", error_code=INTERNAL_ERROR)) is None
