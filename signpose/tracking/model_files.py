"""Loading a model signpose did not just write: the format it logs, and nothing else.

signpose logs its models with ``mlflow.pytorch`` in the ``pt2`` serialisation (a ``torch.export``
archive, ``data/model.pt2``). A registered version, a ``runs:/`` URI or a folder handed to
``signpose predict`` may hold anything its author put there, so before MLflow touches a model folder
:func:`check_model_folder` requires exactly that shape and refuses everything else in one line
naming the file and the flavour:

* ``data/model.pth`` (the pickle serialisation: ``torch.load`` without ``weights_only`` runs whatever
  the pickle says), ``pickle_module_info.txt`` (MLflow imports the module it names before any check),
  and a ``code`` folder in the flavour (MLflow puts it on ``sys.path`` and imports from it) -- each
  of these runs code even with MLflow's pickle switch off, so they are refused here, before MLflow
  sees the folder;
* a flavour other than ``pytorch`` (sklearn, pyfunc, ...);
* an ``MLmodel`` or ``model.pt2`` that is not a regular file (a FIFO would block the read), an
  ``MLmodel`` over :data:`MAX_MLMODEL_BYTES`, a data folder outside the model folder.

The archive itself is then checked by MLflow, which refuses a ``.pt2`` record that is not plain
JSON/text or a ``weights_only`` tensor record while ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false
(:mod:`signpose.process_env` forces that in every signpose process).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from signpose import process_env
from signpose.errors import UserError
from signpose.io.safe_files import NotRegularFileError, open_regular_fd

PT2_FILE = "model.pt2"
# What MLflow's pickle serialisation writes; its presence makes MLflow take the pickle path.
PICKLE_FILES = ("model.pth", "pickle_module_info.txt")
MAX_MLMODEL_BYTES = 1 << 20
FLAVOUR = "pytorch"


class UnsafeModelError(UserError):
    """A model folder that is not a pt2 ``mlflow.pytorch`` model: refused before anything of it is loaded."""


def _refuse(path: Path, why: str) -> UnsafeModelError:
    return UnsafeModelError(f"{path}: {why}; signpose loads only the pt2 (torch.export) models it logs "
                            f"(mlflow.pytorch, serialization_format='pt2'), nothing of this model was loaded")


def _regular_size(path: Path, what: str) -> int:
    """The size of ``path``, which must be a regular file (never opened in a way that could block)."""
    try:
        fd = open_regular_fd(path)
    except NotRegularFileError as err:
        raise _refuse(path, f"the model's {what} is {err.kind}, not a regular file") from None
    except FileNotFoundError:
        raise _refuse(path, f"no {what} here") from None
    except OSError as err:
        raise UnsafeModelError(f"{path}: cannot read the model's {what}: {err.strerror or err}") from None
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _flavours(folder: Path) -> dict:
    import yaml

    mlmodel = folder / "MLmodel"
    size = _regular_size(mlmodel, "MLmodel file")
    if size > MAX_MLMODEL_BYTES:
        raise _refuse(mlmodel, f"the MLmodel file is {size:,} bytes, more than the {MAX_MLMODEL_BYTES:,} an "
                               "MLmodel file holds")
    try:
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise _refuse(mlmodel, f"not a readable MLmodel file ({type(err).__name__})") from None
    flavours = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavours, dict):
        raise _refuse(mlmodel, "the MLmodel file lists no flavours")
    return flavours


def check_model_folder(folder: str | os.PathLike) -> Path:
    """The ``model.pt2`` of the local MLflow model ``folder`` after the checks of the module
    docstring; :class:`UnsafeModelError` otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnsafeModelError(f"{folder}: no such model folder (a folder holding an MLmodel file, or a "
                               "models:/NAME/VERSION URI)")
    flavours = _flavours(folder)
    conf = flavours.get(FLAVOUR)
    if not isinstance(conf, dict):
        raise _refuse(folder / "MLmodel", f"a {'/'.join(map(str, flavours)) or 'flavourless'} model, not "
                                          f"an mlflow.pytorch one")
    if conf.get("code"):
        raise _refuse(folder / str(conf["code"]), "a pytorch model shipping a code folder (MLflow would import "
                                                  "from it)")
    data = (folder / str(conf.get("model_data", "data"))).resolve()
    if not data.is_relative_to(folder.resolve()):
        raise _refuse(folder / "MLmodel", f"its model_data {conf.get('model_data')!r} leaves the model folder")
    for name in PICKLE_FILES:
        if os.path.lexists(data / name):
            raise _refuse(data / name, "a pytorch model in the pickle serialisation (flavour pytorch, "
                                       f"{name})")
    pt2 = data / PT2_FILE
    _regular_size(pt2, f"{PT2_FILE} archive")
    return pt2


def local_model_folder(model_uri: str, dst_path: str | None = None) -> Path:
    """``model_uri`` as a local folder: a local path (or ``file://``) as it is, anything else
    (``models:/``, ``runs:/``, ``s3://``) downloaded by MLflow into ``dst_path`` (default: a new
    temporary folder)."""
    parsed = urlparse(model_uri)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:
        return Path(parsed.path if parsed.scheme == "file" else model_uri)
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst_path))


def fetch_checked_model(model_uri: str, dst_path: str | None = None) -> tuple[Path, Path]:
    """(the local folder, its ``model.pt2``) of ``model_uri`` after :func:`check_model_folder`; a
    refusal of a downloaded model names the URI too, not only the temporary copy."""
    folder = local_model_folder(model_uri, dst_path)
    try:
        return folder, check_model_folder(folder)
    except UnsafeModelError as err:
        if Path(model_uri) == folder:
            raise
        raise UnsafeModelError(f"{model_uri} (downloaded to {folder}): {err}") from None


def load_pt2_model(model_uri: str):
    """The ``torch.export`` module of the pt2 model at ``model_uri`` (a folder or any MLflow URI),
    after :func:`check_model_folder`; MLflow then loads it with pickle deserialisation off."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    process_env.apply()  # also when a caller's code changed the environment after importing signpose
    folder, pt2 = fetch_checked_model(model_uri)
    try:
        return mlflow.pytorch.load_model(str(folder))
    except MlflowException as err:
        if "pickle" in err.message:
            raise _refuse(pt2, "a pt2 archive holding pickled records (MLflow refused it: "
                               f"{err.message.split('.')[0]})") from None
        raise
