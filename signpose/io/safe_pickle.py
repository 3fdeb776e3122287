"""A restricted unpickler: builtins containers/scalars and numpy arrays, nothing else, within a size budget.

``pickle.load`` runs whatever a file tells it to import (``os.system`` through ``__reduce__`` is the
classic). :func:`load_pickle` resolves only the globals in :data:`ALLOWED_GLOBALS` -- the ones plain
Python containers and numpy arrays/scalars/dtypes need -- and refuses every other import *before*
anything is called, with a :class:`KeypointFormatError` naming the global.

The allowed callables are safe to call but not free: ``bytearray(1500000000)`` is a 58-byte pickle,
``list(bytes(200000000))`` a 71-byte one, and a numpy array's pickled state may declare any shape.
So every allowed callable that sizes what it creates (``bytes``, ``bytearray``, ``str``, the
containers, ``numpy.ndarray``, ``_reconstruct``, ``scalar``, ``_codecs.encode``) and every numpy
array state is checked *before* the allocation against a budget of what the file can legitimately
describe -- :data:`MATERIALISE_FACTOR` times its size plus :data:`MATERIALISE_FLOOR` -- and the
pickle is refused, naming the call and the size, when the sum would exceed it. Legitimate pickles
spend about their own size (the array bytes they carry). Object graphs are at most
:data:`MAX_DEPTH` levels deep (a keypoint pickle has five), so nothing later recurses without bound.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
from collections import OrderedDict

import numpy as np

from signpose.io.errors import KeypointFormatError
from signpose.io.safe_files import read_regular, size_text

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

MATERIALISE_FACTOR = 4
MATERIALISE_FLOOR = 16 << 20
MAX_DEPTH = 32
# _codecs.encode as pickle uses it (latin1), and the plain text encodings; never a bytes-to-bytes codec.
_TEXT_ENCODINGS = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "ascii",
                             "utf-8", "utf8", "utf_8"})
_ATOMS = (int, float, complex, bool, str, bytes, bytearray, type(None), slice, np.generic)
_ATOM_TYPES = frozenset({int, float, complex, bool, str, bytes, bytearray, type(None), slice})


class _Budget:
    """What the callables of one load may still allocate."""

    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self.limit = MATERIALISE_FACTOR * size + MATERIALISE_FLOOR
        self.used = 0

    def refuse(self, what: str) -> KeypointFormatError:
        return KeypointFormatError(self.path, f"refused to load: {what}; keypoint pickles hold plain containers "
                                   "and numeric numpy arrays")

    def charge(self, nbytes: int, what) -> None:
        """Spend ``nbytes``; ``what`` (a string, or a callable giving one) names the call when refused."""
        self.used += max(0, int(nbytes))
        if self.used > self.limit:
            what = what() if callable(what) else what
            raise KeypointFormatError(
                self.path, f"refused to load: {what} would materialise {size_text(int(nbytes))}, more than a "
                f"pickle of {size_text(self.size)} can describe (at most {size_text(self.limit)} in all)")


def _length(budget: _Budget, name: str, value) -> int:
    if isinstance(value, _ATOMS) and not isinstance(value, (str, bytes, bytearray)):
        raise budget.refuse(f"{name}() of a {type(value).__name__}")
    try:
        return len(value)
    except TypeError:
        raise budget.refuse(f"{name}() of a {type(value).__name__}") from None


def _bytes_cost(budget, name, args, kwargs) -> int:
    if not args:
        return 0
    first = args[0]
    if isinstance(first, int):
        return first  # bytes(n): n zero bytes
    if isinstance(first, str):
        return 4 * len(first)
    return _length(budget, name, first)


def _str_cost(budget, name, args, kwargs) -> int:
    if not args:
        return 0
    first = args[0]
    if isinstance(first, (str, bytes, bytearray)):
        return 4 * len(first) + 8
    if isinstance(first, (int, float, complex, bool, type(None))):
        return 64 + (first.bit_length() // 3 if isinstance(first, int) else 0)
    raise budget.refuse(f"{name}() of a {type(first).__name__}")


def _container_cost(per_item: int):
    def cost(budget, name, args, kwargs) -> int:
        n = len(kwargs)
        if len(args) > 1:
            raise budget.refuse(f"{name}() with {len(args)} arguments")
        if args:
            n += _length(budget, name, args[0])
        return per_item * n
    return cost


_COSTS = {bytes: _bytes_cost, bytearray: _bytes_cost, str: _str_cost, list: _container_cost(8),
          tuple: _container_cost(8), set: _container_cost(32), frozenset: _container_cost(32),
          dict: _container_cost(64), OrderedDict: _container_cost(96)}


def _checked_type(base: type, budget: _Budget) -> type:
    """A stand-in for ``base`` (a type, so REDUCE and NEWOBJ both work) that charges the budget and
    returns a plain ``base`` instance."""
    cost, name = _COSTS[base], f"builtins.{base.__name__}"

    def __new__(cls, *args, **kwargs):
        budget.charge(cost(budget, name, args, kwargs), lambda: f"{name}() of {_describe(args)}")
        return base(*args, **kwargs)
    return type(base.__name__, (base,), {"__new__": __new__, "__module__": __name__})


def _describe(args) -> str:
    return ", ".join(f"{type(a).__name__} {a}" if isinstance(a, float) or (isinstance(a, int) and abs(a) < 10**18) else
                     f"{type(a).__name__} of length {len(a)}" if hasattr(a, "__len__") else type(a).__name__
                     for a in args[:2]) or "nothing"


def _array_bytes(budget: _Budget, shape, dtype, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array a pickle asks for, and its size charged to the budget."""
    if type(shape) is tuple and isinstance(dtype, np.dtype) and all(type(d) is int and d >= 0 for d in shape):
        dims, descr = shape, dtype  # what numpy's own pickles hold: no conversion needed
    else:
        try:
            dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
            descr = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        except (TypeError, ValueError, OverflowError) as err:
            raise budget.refuse(f"{what} with shape {str(shape)[:80]} and dtype {str(dtype)[:80]} ({err})") from None
        if any(d < 0 for d in dims):
            raise budget.refuse(f"{what} with a negative dimension {dims}")
    budget.charge(math.prod(dims) * (descr.itemsize or 1), lambda: f"{what} of shape {dims} and dtype {descr}")
    return dims, descr


class _PickledArray(np.ndarray):
    """The ``numpy.ndarray`` a pickle sees: creating one (REDUCE/NEWOBJ, ``_reconstruct``) and
    restoring its state (BUILD) are checked against the load's budget; :func:`_plain` turns every
    instance back into a plain ``numpy.ndarray`` view once the load is done."""

    _budget: _Budget

    def __new__(cls, shape, dtype=float, buffer=None, offset=0, strides=None, order=None):
        if buffer is None:
            _array_bytes(cls._budget, shape, dtype, "numpy.ndarray")
        return np.ndarray(shape, dtype, buffer, offset, strides, order)

    def __setstate__(self, state):
        budget = type(self)._budget
        if type(state) is tuple and len(state) == 5 and type(state[1]) is tuple and type(state[4]) is bytes \
                and isinstance(state[2], np.dtype) and not state[2].hasobject:
            nbytes, plain = state[2].itemsize, True  # numpy's own pickles: checked without further calls
            for d in state[1]:
                if type(d) is not int or d < 0:
                    plain = False
                    break
                nbytes *= d
            if plain and nbytes == len(state[4]):
                budget.charge(nbytes, "a numpy array state")
                return np.ndarray.__setstate__(self, state)
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise budget.refuse("a numpy array state that is not numpy's")
        shape, dtype, _, raw = state[-4:]
        dims, descr = _array_bytes(budget, shape, dtype, "a numpy array")
        count = math.prod(dims)
        if descr.hasobject:
            if not isinstance(raw, list) or len(raw) != count:
                raise budget.refuse(f"a numpy object array of {count} elements whose data is not a list of them")
        elif not isinstance(raw, (bytes, bytearray)) or len(raw) != count * descr.itemsize:
            raise budget.refuse(f"a numpy array of shape {dims} and dtype {descr} whose data is not its "
                                f"{count * descr.itemsize} bytes")
        np.ndarray.__setstate__(self, state)


def _numpy_helper(name: str, real, budget: _Budget, array_type: type):
    """The checked stand-in for numpy's ``_reconstruct``, ``_frombuffer`` or ``scalar`` (``real``)."""
    def _reconstruct(subtype, shape, dtype):
        if subtype is array_type and type(shape) is tuple and shape == (0,):
            return real(array_type, shape, dtype)  # what numpy's pickles do: an empty array, then its state
        if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)):
            raise budget.refuse(f"numpy _reconstruct of a {type(subtype).__name__}")
        dims, descr = _array_bytes(budget, shape, dtype, "numpy _reconstruct")
        return real(array_type, dims, descr)

    def _frombuffer(buf, dtype, shape, order):
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise budget.refuse(f"numpy _frombuffer of a {type(buf).__name__}")
        return real(buf, dtype, shape, order)  # a view of bytes the pickle carries: nothing allocated

    def scalar(dtype, *args):
        _array_bytes(budget, (), dtype, "a numpy scalar")
        return real(dtype, *args)

    return {"_reconstruct": _reconstruct, "_frombuffer": _frombuffer, "scalar": scalar}[name]


def _encoder(budget: _Budget):
    def encode(obj, encoding="utf-8", errors="strict"):
        if not isinstance(encoding, str) or encoding.lower() not in _TEXT_ENCODINGS:
            raise budget.refuse(f"_codecs.encode to {str(encoding)[:40]!r} (only text encodings such as latin1)")
        if not isinstance(obj, str):
            raise budget.refuse(f"_codecs.encode of a {type(obj).__name__}")
        budget.charge(4 * len(obj), lambda: f"_codecs.encode of a string of length {len(obj)}")
        return codecs.encode(obj, encoding, errors)
    return encode


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, size: int):
        super().__init__(file)
        self._path = path
        self._budget = _Budget(path, size)
        self._array_type = type("ndarray", (_PickledArray,), {"_budget": self._budget, "__module__": __name__})
        self._resolved: dict[tuple[str, str], object] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(module, name)
        return self._resolved[key]

    def _resolve(self, module: str, name: str):
        # numpy dtype classes (numpy.dtypes.Float32DType) appear in some numpy 2 pickles.
        if (module, name) not in ALLOWED_GLOBALS and not (
                module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()):
            raise KeypointFormatError(
                self._path,
                f"refused to load: the pickle tries to import '{module}.{name}'; only builtins "
                "containers/scalars and numpy arrays are allowed in keypoint pickles")
        real = super().find_class(module, name)
        if real is np.ndarray:
            return self._array_type
        if module.startswith("numpy.") and name in ("_reconstruct", "_frombuffer", "scalar"):
            return _numpy_helper(name, real, self._budget, self._array_type)
        if (module, name) == ("_codecs", "encode"):
            return _encoder(self._budget)
        if isinstance(real, type) and real in _COSTS:
            return _checked_type(real, self._budget)
        return real  # scalars, slice, numpy.dtype and the dtype classes allocate nothing by size

    def persistent_load(self, pid):
        raise KeypointFormatError(self._path, "refused to load: the pickle uses persistent ids")


def _plain(obj, path: str, depth: int = 0, memo: dict | None = None):
    """``obj`` with every :class:`_PickledArray` replaced by a plain ndarray view; refuses graphs
    deeper than :data:`MAX_DEPTH` (nothing downstream then recurses without bound)."""
    if isinstance(obj, _ATOMS):
        return obj
    if depth > MAX_DEPTH:
        raise KeypointFormatError(path, f"refused to load: the data is nested more than {MAX_DEPTH} levels deep "
                                  "(a keypoint pickle has about five)")
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, np.ndarray):
        out = obj.view(np.ndarray) if isinstance(obj, _PickledArray) else obj
        memo[key] = out
        if out.dtype.hasobject:
            flat = out.reshape(-1)
            for i in range(flat.size):
                flat[i] = _plain(flat[i], path, depth + 1, memo)
        return out
    memo[key] = obj
    if isinstance(obj, (dict, list)):
        for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
            if isinstance(k, tuple):
                _plain(k, path, depth + 1, memo)
            if type(v) in _ATOM_TYPES:
                continue
            if isinstance(v, _PickledArray) and not v.dtype.hasobject:
                obj[k] = v.view(np.ndarray)  # the common leaf, handled without a call
                continue
            new = _plain(v, path, depth + 1, memo)
            if new is not v:
                obj[k] = new
    elif isinstance(obj, tuple):
        items = [_plain(v, path, depth + 1, memo) for v in obj]
        if any(a is not b for a, b in zip(items, obj)):
            memo[key] = obj = tuple(items)
    elif isinstance(obj, (set, frozenset)):
        for v in obj:
            _plain(v, path, depth + 1, memo)
    return obj


def loads_pickle(data: bytes, path: str | os.PathLike = "<bytes>"):
    """Unpickle ``data`` with the restricted unpickler; ``path`` only names it in errors."""
    path = os.fspath(path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), path, len(data)).load()
        return _plain(obj, path)
    except KeypointFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, UnicodeDecodeError, ImportError, RecursionError) as err:
        raise KeypointFormatError(
            path, f"not a readable pickle (truncated or corrupt): {type(err).__name__}: {err}") from None


def load_pickle(path: str | os.PathLike):
    """Read a pickle file (a regular file) through the restricted unpickler (see the module docstring)."""
    return loads_pickle(read_regular(path, what="pickle"), path)
