"""A restricted unpickler: builtins containers/scalars and numpy arrays, nothing else.

``pickle.load`` runs whatever a file tells it to import (``os.system`` through ``__reduce__`` is the
classic). :func:`load_pickle` resolves only the globals in :data:`ALLOWED_GLOBALS` -- the ones plain
Python containers and numpy arrays/scalars/dtypes need -- and refuses every other import *before*
anything is called, with a :class:`KeypointFormatError` naming the global.
"""

from __future__ import annotations

import io
import os
import pickle

from signpose.io.errors import KeypointFormatError

_BUILTIN_NAMES = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                  "bytes", "bytearray", "bool", "slice")
# numpy moved numpy.core -> numpy._core in 2.0; pickles from either side name either module.
_NUMPY_NAMES = (
    ("multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 0-4)
    ("multiarray", "scalar"),        # numpy scalars (np.float32(1.0))
    ("numeric", "_frombuffer"),      # ndarray.__reduce_ex__ protocol 5
)

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", name) for name in _BUILTIN_NAMES]
    + [("__builtin__", name) for name in _BUILTIN_NAMES]  # Python 2 pickles
    + [("collections", "OrderedDict")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.{mod}", name) for core in ("core", "_core") for mod, name in _NUMPY_NAMES]
    # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, 'latin1').
    + [("_codecs", "encode")]
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        # numpy dtype classes (numpy.dtypes.Float32DType) appear in some numpy 2 pickles.
        if module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier():
            return super().find_class(module, name)
        raise KeypointFormatError(
            self._path,
            f"refused to load: the pickle tries to import '{module}.{name}'; only builtins "
            "containers/scalars and numpy arrays are allowed in keypoint pickles")

    def persistent_load(self, pid):
        raise KeypointFormatError(self._path, "refused to load: the pickle uses persistent ids")


def loads_pickle(data: bytes, path: str | os.PathLike = "<bytes>"):
    """Unpickle ``data`` with the restricted unpickler; ``path`` only names it in errors."""
    path = os.fspath(path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except KeypointFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, UnicodeDecodeError, ImportError) as err:
        raise KeypointFormatError(
            path, f"not a readable pickle (truncated or corrupt): {type(err).__name__}: {err}") from None


def load_pickle(path: str | os.PathLike):
    """Read a pickle file through the restricted unpickler (see the module docstring)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return loads_pickle(data, path)
