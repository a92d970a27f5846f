"""CuPy-strict arrays for ``cuda-emu``: device arrays that NumPy may not touch.

On the ``cuda`` backend an array is a CuPy array: host code that hands it to
NumPy (``np.asarray(a)``, ``np.exp(a)``, ``np.concatenate([a, b])``) fails or
silently copies it to the host. On ``cuda-emu`` the data are NumPy arrays, so
such a slip would pass every test and break only on a GPU. This module gives
``cuda-emu`` an ``xp`` that hands out ``StrictArray`` objects instead:

- ``StrictArray`` wraps a NumPy array and offers the ndarray interface the
  layers use (operators, indexing, ``shape``/``dtype``, methods such as
  ``sum``/``reshape``/``astype``), each result again a ``StrictArray``; a
  reduction gives a 0-d array, as CuPy's does, not a host scalar;
- NumPy refuses it, as it refuses a CuPy array: ``__array__`` raises, NumPy
  ufuncs and ``np.*`` functions raise (``__array_ufunc__ = None``,
  ``__array_function__``), and it exposes no buffer or array interface;
- ``float(a)``, ``int(a)``, ``bool(a)``, ``a.item()`` work on one element only
  (CuPy's rule) and count as a host synchronisation, as does ``asnumpy``;
  ``host_syncs`` is the running count the sync-budget tests read;
- ``strict_numpy`` is the module-like ``xp``: ``strict_numpy.exp(a)`` unwraps
  its arguments, calls NumPy and wraps the arrays it returns;
  ``strict_numpy.asnumpy(a)`` (and ``backend.to_numpy``) is the explicit way back.

The emulator launcher receives plain NumPy arrays: ``unwrap`` takes the buffer
out of a ``StrictArray`` (``strict_launcher`` applies it to every kernel argument).
"""

from __future__ import annotations

import operator

import numpy as np

_REFUSAL = ("is a cuda-emu device array (strict, like a CuPy array): NumPy may not convert "
            "or compute on it implicitly. Move it with backend.to_numpy(a) / "
            "backend.asarray(a), or compute with backend.xp")


class StrictArray:
    """A device array of the ``cuda-emu`` backend: a NumPy buffer NumPy may not use implicitly.

    Build one with ``strict_numpy.asarray(host_array)``; get the data back with
    ``strict_numpy.asnumpy(a)``. Shape, dtype and the array methods behave as
    NumPy's, except that results stay ``StrictArray`` (0-d for reductions).
    """

    __slots__ = ("_data",)
    # NumPy ufuncs (np.exp(a), and np.float32(2) * a) give way: a binary operator with a
    # NumPy scalar falls back to our reflected operator, a direct ufunc call raises TypeError.
    __array_ufunc__ = None

    def __init__(self, data: np.ndarray):
        self._data = data

    # --- what NumPy may not do -------------------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"np.asarray(a): a {_REFUSAL}")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"np.{func.__name__}(...): an argument {_REFUSAL}")

    # --- metadata (no data movement) ----------------------------------------------------------

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    T = property(lambda self: StrictArray(self._data.T))

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"StrictArray(shape={self.shape}, dtype={self.dtype})"

    def __iter__(self):  # as CuPy: the sub-arrays along axis 0, still on the device
        return (StrictArray(row) for row in self._data)

    # --- element access --------------------------------------------------------------------

    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key)])

    def __setitem__(self, key, value):
        self._data[_unwrap(key)] = _unwrap(value)

    # --- host synchronisations ---------------------------------------------------------------

    def _scalar(self, convert):
        if self._data.size != 1:
            raise TypeError(f"only a one-element device array converts to a Python scalar, "
                            f"got shape {self.shape}")
        _count_sync()
        return convert(self._data.reshape(()).item())

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __complex__(self):
        return self._scalar(complex)

    def __bool__(self):
        return self._scalar(bool)

    def item(self):
        """The one element as a Python scalar (a host synchronisation)."""
        return self._scalar(lambda v: v)

    def tolist(self):
        """The elements as nested Python lists (a host synchronisation)."""
        _count_sync()
        return self._data.tolist()

    def get(self) -> np.ndarray:
        """A host copy, as ``cupy.ndarray.get()`` (a host synchronisation)."""
        return asnumpy(self)

    # --- every other ndarray method: unwrap, call, wrap -----------------------------------------

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(self._data, name)
        return _wrapped_function(attribute) if callable(attribute) else attribute

    def __copy__(self):
        return StrictArray(self._data.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._data.copy())

    def __reduce__(self):  # pickling would be an implicit device-to-host copy
        raise TypeError(f"pickle: a {_REFUSAL}")


def _binary(op):
    def forward(self, other):
        return _wrap(op(self._data, _operand(other)))

    def reflected(self, other):
        return _wrap(op(_operand(other), self._data))

    def in_place(self, other):
        # NumPy writes into the same buffer, so every view of this array sees the update
        self._data = _INPLACE[op](self._data, _operand(other))
        return self

    return forward, reflected, in_place


_INPLACE = {operator.add: operator.iadd, operator.sub: operator.isub, operator.mul: operator.imul,
            operator.truediv: operator.itruediv, operator.floordiv: operator.ifloordiv,
            operator.mod: operator.imod, operator.pow: operator.ipow, operator.matmul: operator.imatmul,
            operator.and_: operator.iand, operator.or_: operator.ior, operator.xor: operator.ixor,
            operator.lshift: operator.ilshift, operator.rshift: operator.irshift}

for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)):
    _f, _r, _i = _binary(_op)
    setattr(StrictArray, f"__{_name}__", _f)
    setattr(StrictArray, f"__r{_name}__", _r)
    setattr(StrictArray, f"__i{_name}__", _i)

for _name, _op in (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)):
    setattr(StrictArray, f"__{_name}__", _binary(_op)[0])

for _name, _op in (("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)):
    setattr(StrictArray, f"__{_name}__", (lambda op: lambda self: _wrap(op(self._data)))(_op))

StrictArray.__hash__ = None  # arrays are mutable, as NumPy's and CuPy's


# --- wrapping and unwrapping ---------------------------------------------------------------------

def _unwrap(value):
    """NumPy's view of ``value``: StrictArray -> its buffer, inside tuples/lists/dicts too.

    For indices and assigned values, where CuPy takes host arrays as well.
    """
    if type(value) is StrictArray:
        return value._data
    if type(value) in (tuple, list):
        return type(value)(_unwrap(v) for v in value)
    if type(value) is dict:
        return {k: _unwrap(v) for k, v in value.items()}
    return value


_PLAIN = frozenset((int, float, bool, str, type(None), slice, type(Ellipsis), np.dtype))


def _operand(value):
    """``_unwrap`` for the operands of arithmetic and xp functions, which refuse host arrays
    as CuPy's do (``cupy_array + numpy_array`` is a TypeError): a host array must be uploaded."""
    kind = type(value)
    if kind is StrictArray:
        return value._data
    if kind in _PLAIN:
        return value
    if isinstance(value, np.ndarray):
        raise TypeError(f"a NumPy array of shape {value.shape} meets a cuda-emu device array: upload "
                        f"it with backend.asarray first (CuPy refuses host arrays as operands)")
    if type(value) in (tuple, list):
        return type(value)(_operand(v) for v in value)
    if type(value) is dict:
        return {k: _operand(v) for k, v in value.items()}
    return value


def _wrap(value):
    """Arrays NumPy returned, back on the device; NumPy scalars become 0-d arrays, as CuPy's."""
    if isinstance(value, np.ndarray):
        return StrictArray(value)
    if isinstance(value, np.generic):
        return StrictArray(np.asarray(value))
    if type(value) is tuple:
        return tuple(_wrap(v) for v in value)
    if type(value) is list:
        return [_wrap(v) for v in value]
    return value


def _call(function, args: tuple, kwargs: dict):
    """``function(*args, **kwargs)`` on the buffers of device arrays, its arrays wrapped back."""
    if kwargs:
        kwargs = {k: _operand(v) for k, v in kwargs.items()}
    return _wrap(function(*map(_operand, args), **kwargs))


def _wrapped_function(function):
    """``function`` (a NumPy function or a bound ndarray method) taking and returning device arrays."""
    def call(*args, **kwargs):
        return _call(function, args, kwargs)

    call.__name__ = getattr(function, "__name__", "function")
    return call


def _method(name):
    """The ndarray method ``name`` as a StrictArray method (a class attribute: no per-call lookup)."""
    def method(self, *args, **kwargs):
        return _call(getattr(self._data, name), args, kwargs)

    method.__name__ = name
    method.__doc__ = f"``numpy.ndarray.{name}`` on the device; array results stay device arrays."
    return method


# The methods host code calls in every step; the rarer ones go through __getattr__.
for _name in ("all", "any", "argmax", "argmin", "astype", "clip", "copy", "cumsum", "dot", "fill",
              "max", "mean", "min", "nonzero", "prod", "ravel", "repeat", "reshape", "squeeze", "std",
              "sum", "swapaxes", "take", "transpose", "var"):
    setattr(StrictArray, _name, _method(_name))


def unwrap(value):
    """The NumPy buffer of a StrictArray (anything else unchanged): what the emulator launches on."""
    return value._data if type(value) is StrictArray else value


# --- synchronisation count -----------------------------------------------------------------------

_syncs = 0


def _count_sync() -> None:
    global _syncs
    _syncs += 1


def host_syncs() -> int:
    """How many device-to-host crossings (``asnumpy``, ``float(a)``, ``a.item()`` ...) happened so far."""
    return _syncs


def asnumpy(a) -> np.ndarray:
    """A host NumPy copy of ``a`` (a StrictArray, or anything NumPy accepts), as ``cupy.asnumpy``."""
    if type(a) is StrictArray:
        _count_sync()
        return a._data.copy()
    return np.asarray(a)


# --- the xp module ---------------------------------------------------------------------------------

class _StrictNumpy:
    """NumPy's namespace with device semantics: functions take and return ``StrictArray``.

    Types (``float32``, ``dtype``) and constants pass through unchanged; every
    other callable is wrapped on first use and kept.
    """

    __name__ = "gpucnn.backend.strict (NumPy as a strict device)"
    ndarray = StrictArray

    def __getattr__(self, name):  # called once per name: the result is kept as an attribute
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(np, name)
        if callable(attribute) and not isinstance(attribute, type):
            attribute = _wrapped_function(attribute)
        setattr(self, name, attribute)
        return attribute

    def asarray(self, a, dtype=None, order=None):
        """``a`` as a StrictArray: a device array unchanged when nothing changes; host data
        uploaded, i.e. always copied (as CuPy does), so no host array aliases device memory."""
        if type(a) is StrictArray:
            data = a._data if dtype is None else a._data.astype(dtype, copy=False)
            return a if data is a._data else StrictArray(data)
        _refuse_foreign(a)
        return StrictArray(np.array(a, dtype=dtype, order=order or "K", copy=True))

    def array(self, a, dtype=None, copy=True, order="K"):
        """A new StrictArray holding ``a`` (host data or a StrictArray)."""
        _refuse_foreign(a)
        return StrictArray(np.array(_unwrap(a), dtype=dtype, order=order, copy=True))

    def ascontiguousarray(self, a, dtype=None):
        """``a`` as a C-contiguous StrictArray (uploaded with a copy when it is host data)."""
        if type(a) is StrictArray:
            data = np.ascontiguousarray(a._data, dtype=dtype)
            return a if data is a._data else StrictArray(data)
        _refuse_foreign(a)
        return StrictArray(np.array(a, dtype=dtype, order="C", copy=True))

    @staticmethod
    def asnumpy(a) -> np.ndarray:
        return asnumpy(a)

    @staticmethod
    def host_syncs() -> int:
        return host_syncs()


def _refuse_foreign(a) -> None:
    """Another device's array (a CuPy array) must come through the host explicitly."""
    if hasattr(a, "__cuda_array_interface__"):
        raise TypeError(f"{type(a).__name__} lives on a CUDA device, not on cuda-emu: "
                        f"copy it to the host first (cupy.asnumpy)")


strict_numpy = _StrictNumpy()


def strict_launcher(load_module):
    """Wrap an emulator ``load_module`` so its kernels accept StrictArray arguments.

    A GPU launch passes device pointers; here the kernel gets the NumPy buffer
    behind each StrictArray, so the emulator itself needs no change.
    """

    def load(path, options=(), **flags):
        return _StrictModule(load_module(path, options, **flags))

    return load


class _StrictModule:
    """The wrapped emulator module, handing out kernels that unwrap StrictArray arguments."""

    def __init__(self, module):
        self._module = module

    def get_function(self, name):
        return _StrictKernel(self._module.get_function(name))

    def __getattr__(self, name):
        return getattr(self._module, name)


class _StrictKernel:
    """A kernel of the wrapped module, launched on the NumPy buffers behind StrictArrays.

    Everything else (``module``, the kernel's name and bounds) is the wrapped kernel's.
    """

    def __init__(self, kernel):
        self._kernel = kernel

    def __call__(self, grid, block, args, *rest, **kwargs):
        return self._kernel(grid, block, tuple(unwrap(a) for a in args), *rest, **kwargs)

    def __getattr__(self, name):
        return getattr(self._kernel, name)
