"""Calling emulated kernels from Python: ``Module.get_function(name)(grid, block, args, shared_mem=0)``.

The call has the shape of CuPy's ``RawKernel.__call__`` and checks what a GPU
would not: every argument against the compiled kernel's parameter types, with
CuPy's own conversions in mind, so a launch that passes here passes the same
bytes on a GPU. Pointers take C-contiguous NumPy arrays of the pointee's dtype
(or None for a null pointer). Scalars take the NumPy scalar of the exact C
type; a Python ``int`` only for 64-bit integers and a Python ``float`` only for
``double``, because CuPy sends those as 8-byte ``int64``/``float64`` whatever
the kernel declares.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import numpy as np

from .build import HEADER, BuiltLibrary, EmulatorError


class EmulatorLaunchError(EmulatorError):
    """A kernel failed while running (divergent barrier, deadlock, misused warp function, trap),
    or its launch exceeds the kernel's ``__launch_bounds__``."""


class SharedMemoryRaceError(EmulatorLaunchError):
    """Two threads of a block accessed a shared word with no barrier between them, at least one
    writing (found by a race-checking build); the message names both source lines and threads."""


# What launch_grid returns for a race (kLaunchRace in runtime.cpp; 0 is success, 1 any other failure).
_LAUNCH_RACE = 2
_CODE_ADDRESS_RE = re.compile(r"@pc\[(0x[0-9a-f]+)\]")


def symbolize(message: str, library) -> str:
    """Replace the runtime's ``@pc[0x...]`` code addresses in ``message`` by source lines.

    Each becomes ``file:line`` of the access, followed by ``(inlined into
    file:line, ...)`` when the access sits in an inlined function; frames in
    cuda_emu.h (the body of atomicAdd, ...) are left out, so the kernel's line
    comes first. addr2line reads the library's line tables. Without addr2line
    the addresses stay, as ``library+0x...``.
    """
    addresses = list(dict.fromkeys(_CODE_ADDRESS_RE.findall(message)))
    if not addresses:
        return message
    names = {a: f"{library}+{a}" for a in addresses}
    addr2line = shutil.which("addr2line")
    if addr2line:
        proc = subprocess.run([addr2line, "-e", str(library), "-i", "-a", *addresses],
                              capture_output=True, text=True)
        # With -a every address is echoed first, then its inline chain, innermost first.
        chains, current = {}, None
        for line in proc.stdout.splitlines():
            if re.fullmatch(r"0x[0-9a-f]+", line.strip()):
                current = chains.setdefault(line.strip(), [])
            elif current is not None and not line.startswith("??") and HEADER.name + ":" not in line:
                current.append(line.split(" (discriminator")[0].strip())
        for a in addresses:
            chain = chains.get("0x" + format(int(a, 16), "016x"), chains.get(a))
            if chain:
                names[a] = chain[0] + (f" (inlined into {', '.join(chain[1:])})" if len(chain) > 1 else "")
    return _CODE_ADDRESS_RE.sub(lambda m: names[m.group(1)], message)


class KernelNotFoundError(KeyError):
    """``get_function`` was asked for a name the module does not define."""

    def __str__(self):
        return str(self.args[0])


class LaunchConfig(ctypes.Structure):
    """Mirrors ``gpucnn_emu::LaunchConfig`` in cuda_emu.h."""

    _fields_ = [("grid", ctypes.c_uint32 * 3), ("block", ctypes.c_uint32 * 3),
                ("shared_mem", ctypes.c_uint64), ("use_fibers", ctypes.c_int32)]


_CTYPES = {"b1": ctypes.c_bool, "i1": ctypes.c_int8, "u1": ctypes.c_uint8, "i2": ctypes.c_int16,
           "u2": ctypes.c_uint16, "i4": ctypes.c_int32, "u4": ctypes.c_uint32, "i8": ctypes.c_int64,
           "u8": ctypes.c_uint64, "f4": ctypes.c_float, "f8": ctypes.c_double}
_C_NAMES = {"b1": "bool", "i1": "signed char", "u1": "unsigned char", "i2": "short", "u2": "unsigned short",
            "i4": "int", "u4": "unsigned int", "i8": "long long", "u8": "unsigned long long",
            "f4": "float", "f8": "double", "v": "void"}
_ERROR_BYTES = 4096
# Device limits of the GPUs we support (compute capability 7.5 and newer).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
DEFAULT_MAX_DYNAMIC_SHARED = 48 * 1024  # without cudaFuncAttributeMaxDynamicSharedMemorySize
MAX_DYNAMIC_SHARED = 227 * 1024  # the largest opt-in (sm_90); matches kMaxDynamicShared


class Param:
    """One kernel parameter: its declared name and type, and its compiled type code.

    code: "f4", "i8", "b1", ... (NumPy dtype strings), "v" (void), "f4x4" (a
    vector type such as float4) or "?" (a type the launcher cannot pass).
    """

    __slots__ = ("index", "name", "declared", "pointer", "const", "code", "dtype", "alignment")

    def __init__(self, index: int, name: str, declared: str, pointer: bool, const: bool, code: str):
        self.index, self.name, self.declared = index, name, declared
        self.pointer, self.const, self.code = pointer, const, code
        base, _, lanes = code.partition("x")
        # dtype of the value (scalar) or of the elements (pointer); None for void and unknown types.
        self.dtype = None if base in ("v", "?") else np.dtype(base)
        # CUDA aligns a vector type (float2, float4, ...) to its whole size up to 16 bytes, a
        # 3-vector and a scalar to the element size.
        size = self.dtype.itemsize if self.dtype is not None else 1
        self.alignment = size if lanes in ("", "3") else min(16, size * int(lanes))

    def where(self, kernel: str) -> str:
        return f"kernel '{kernel}' argument {self.index} ({self.declared} {self.name})"


def _parse_signature(signature: str, names, declared) -> tuple[Param, ...]:
    params = []
    for i, entry in enumerate(filter(None, signature.split(";"))):
        kind, code = entry.split(":")
        params.append(Param(i, names[i] if i < len(names) else f"arg{i}",
                            declared[i] if i < len(declared) else _C_NAMES.get(code, code),
                            kind.startswith("p"), kind == "pc", code))
    return tuple(params)


def _dims(value, what: str, kernel: str) -> tuple[int, int, int]:
    """An int or a tuple of 1-3 ints -> a 3-tuple, as CuPy accepts grid and block."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(items) <= 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(f"kernel '{kernel}': {what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(v) for v in items) + (1,) * (3 - len(items))
    if min(dims) < 1:
        raise ValueError(f"kernel '{kernel}': {what} {dims} has a zero or negative size "
                         "(a GPU refuses it: invalid configuration argument)")
    return dims


class Kernel:
    """One emulated kernel, called like CuPy's RawKernel: ``kernel(grid, block, args, shared_mem=0)``.

    ``max_dynamic_shared_size_bytes`` mirrors CuPy's attribute of that name:
    dynamic shared memory beyond 48 KiB needs it raised first, as on a GPU.
    """

    def __init__(self, module: Module, name: str, launch_fn, params: tuple[Param, ...], needs_fibers: bool,
                 max_threads: int):
        self.module = module
        self.name = name
        self.params = params
        self.needs_fibers = needs_fibers
        self.max_threads = max_threads  # the kernel's __launch_bounds__ (0: none)
        self.max_dynamic_shared_size_bytes = DEFAULT_MAX_DYNAMIC_SHARED
        self._launch = launch_fn

    def __repr__(self) -> str:
        params = ", ".join(f"{p.declared} {p.name}" for p in self.params)
        mode = "fibers" if self.needs_fibers else "plain loop"
        return f"<emulated kernel {self.name}({params}) [{mode}]>"

    def __call__(self, grid, block, args, shared_mem=0):
        """Run the kernel over ``grid`` blocks of ``block`` threads, on the CPU, to completion.

        grid, block: int or tuple of 1-3 ints; args: tuple with one value per
        kernel parameter; shared_mem: bytes of dynamic shared memory per block.
        Raises TypeError for arguments a GPU launch would misread, ValueError
        for a launch configuration a GPU refuses, EmulatorLaunchError when the
        block exceeds the kernel's ``__launch_bounds__`` or the kernel
        deadlocks, diverges at a barrier or traps, SharedMemoryRaceError (a
        subclass) when a race-checking build sees a shared-memory race.
        """
        grid3 = _dims(grid, "grid", self.name)
        block3 = _dims(block, "block", self.name)
        self._check_config(grid3, block3, shared_mem)
        if not isinstance(args, tuple):
            raise TypeError(f"kernel '{self.name}': args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            expected = ", ".join(f"{p.declared} {p.name}" for p in self.params)
            raise TypeError(f"kernel '{self.name}' takes {len(self.params)} arguments ({expected}), "
                            f"got {len(args)}")
        holders = [self._convert(p, a) for p, a in zip(self.params, args)]
        pointers = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        config = LaunchConfig((ctypes.c_uint32 * 3)(*grid3), (ctypes.c_uint32 * 3)(*block3),
                              int(shared_mem), int(self.needs_fibers))
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        status = self._launch(ctypes.byref(config), pointers, error, _ERROR_BYTES)
        if status == _LAUNCH_RACE:
            raise SharedMemoryRaceError(symbolize(error.value.decode("utf-8", "replace"), self.module.library_path))
        if status != 0:
            raise EmulatorLaunchError(error.value.decode("utf-8", "replace"))

    def _check_config(self, grid, block, shared_mem) -> None:
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS_PER_BLOCK or any(b > m for b, m in zip(block, MAX_BLOCK_DIM)):
            raise ValueError(f"kernel '{self.name}': block {block} exceeds the GPU limits "
                             f"({MAX_THREADS_PER_BLOCK} threads, dimensions {MAX_BLOCK_DIM})")
        if self.max_threads and threads > self.max_threads:
            # The driver refuses it (CUDA_ERROR_INVALID_VALUE / "too many resources requested").
            raise EmulatorLaunchError(f"kernel '{self.name}' is declared __launch_bounds__({self.max_threads}) "
                                      f"but was launched with block {block} = {threads} threads per block")
        if any(g > m for g, m in zip(grid, MAX_GRID_DIM)):
            raise ValueError(f"kernel '{self.name}': grid {grid} exceeds the GPU limits {MAX_GRID_DIM}")
        if not isinstance(shared_mem, (int, np.integer)) or isinstance(shared_mem, bool) or shared_mem < 0:
            raise ValueError(f"kernel '{self.name}': shared_mem must be a non-negative int, got {shared_mem!r}")
        limit = min(int(self.max_dynamic_shared_size_bytes), MAX_DYNAMIC_SHARED)
        if shared_mem > limit:
            raise ValueError(f"kernel '{self.name}': {shared_mem} bytes of dynamic shared memory exceed the "
                             f"limit of {limit} (raise kernel.max_dynamic_shared_size_bytes, as on a GPU, "
                             f"up to {MAX_DYNAMIC_SHARED})")

    def _convert(self, param: Param, value):
        """A ctypes object holding the bytes a GPU launch would receive for ``value``."""
        if param.pointer:
            return ctypes.c_void_p(self._pointer(param, value))
        expected = param.dtype
        if isinstance(value, np.generic):
            if value.dtype != expected or param.code not in _CTYPES:
                raise self._scalar_error(param, value)
            return _CTYPES[param.code](value.item())
        if param.code == "i8" and isinstance(value, int) and not isinstance(value, bool):
            if not -2**63 <= value < 2**63:
                raise OverflowError(f"{param.where(self.name)}: {value} does not fit in int64")
            return ctypes.c_int64(value)
        if param.code == "f8" and isinstance(value, float):
            return ctypes.c_double(value)
        if param.code == "b1" and isinstance(value, bool):
            return ctypes.c_bool(value)
        raise self._scalar_error(param, value)

    def _scalar_error(self, param: Param, value) -> TypeError:
        where = param.where(self.name)
        if param.code not in _CTYPES:
            return TypeError(f"{where}: parameters of this type cannot be passed by the launcher")
        expected = param.dtype
        c_name = _C_NAMES[param.code]
        if isinstance(value, np.generic):
            return TypeError(f"{where} needs numpy.{expected.name}, got numpy.{value.dtype.name} "
                             f"(a GPU would read {expected.itemsize} of its {value.dtype.itemsize} bytes)")
        if isinstance(value, np.ndarray):
            return TypeError(f"{where} is a scalar; got an array of shape {value.shape}")
        if isinstance(value, bool):
            return TypeError(f"{where} needs numpy.{expected.name}, got a Python bool")
        if isinstance(value, int):
            return TypeError(f"{where} needs numpy.{expected.name}({value}), not a Python int: CuPy passes a "
                             f"Python int as an 8-byte int64 where the kernel reads a {expected.itemsize}-byte "
                             f"{c_name}")
        if isinstance(value, float):
            return TypeError(f"{where} needs numpy.{expected.name}({value}), not a Python float: CuPy passes a "
                             f"Python float as an 8-byte double where the kernel reads a {expected.itemsize}-byte "
                             f"{c_name}")
        return TypeError(f"{where} needs numpy.{expected.name}, got {type(value).__name__}")

    def _pointer(self, param: Param, value) -> int:
        if value is None:
            return 0
        if not isinstance(value, np.ndarray):
            hint = (" (a CuPy array: the emulator runs on NumPy arrays)"
                    if hasattr(value, "__cuda_array_interface__") else "")
            raise TypeError(f"{param.where(self.name)} is a pointer and needs a NumPy array, "
                            f"got {type(value).__name__}{hint}")
        if param.code == "?":
            raise TypeError(f"{param.where(self.name)}: pointers to this type cannot be passed by the launcher")
        if param.dtype is not None and value.dtype != param.dtype:
            raise TypeError(f"{param.where(self.name)} needs a {param.dtype.name} array, got {value.dtype.name}")
        flags = value.flags
        if not flags.c_contiguous:
            raise TypeError(f"{param.where(self.name)} needs a C-contiguous array "
                            f"(shape {value.shape}, strides {value.strides})")
        if not param.const and not flags.writeable:
            raise TypeError(f"{param.where(self.name)} points to mutable data but the array is read-only "
                            "(declare the parameter const if the kernel only reads it)")
        address = value.__array_interface__["data"][0]
        if address % param.alignment and value.size:
            raise TypeError(f"{param.where(self.name)}: the array's data address is not {param.alignment}-byte "
                            "aligned (a GPU raises a misaligned address error)")
        return address


class Module:
    """A compiled ``.cu`` file: ``get_function(name)`` returns its kernels.

    ``compiled`` tells whether loading it ran the compiler (False: taken from
    the on-disk cache); ``sanitize`` and ``racecheck`` whether it is an
    AddressSanitizer or a race-checking build.
    """

    def __init__(self, source_path, built: BuiltLibrary, sanitize: bool, racecheck: bool):
        self.source_path = source_path
        self.sanitize = sanitize
        self.racecheck = racecheck
        self.compiled = built.compiled
        self.library_path = built.path
        self._lib = ctypes.CDLL(str(built.path))
        self._kernels: dict[str, Kernel] = {}
        for decl in built.kernels:
            launch = getattr(self._lib, f"gpucnn_emu_launch_{decl.name}")
            launch.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.POINTER(ctypes.c_void_p),
                               ctypes.c_char_p, ctypes.c_ulong]
            launch.restype = ctypes.c_int
            signature_fn = getattr(self._lib, f"gpucnn_emu_signature_{decl.name}")
            signature_fn.restype = ctypes.c_char_p
            params = _parse_signature(signature_fn().decode(), decl.param_names, decl.param_types)
            max_threads_fn = getattr(self._lib, f"gpucnn_emu_max_threads_{decl.name}")
            max_threads_fn.restype = ctypes.c_int
            self._kernels[decl.name] = Kernel(self, decl.name, launch, params, built.needs_fibers[decl.name],
                                              max_threads_fn())

    @property
    def kernel_names(self) -> tuple[str, ...]:
        """Names of the ``extern "C" __global__`` kernels, in source order."""
        return tuple(self._kernels)

    def get_function(self, name: str) -> Kernel:
        """The kernel called ``name``; KernelNotFoundError (a KeyError) lists the known ones."""
        try:
            return self._kernels[name]
        except KeyError:
            known = ", ".join(self._kernels) or "none"
            raise KernelNotFoundError(f"no extern \"C\" __global__ kernel named {name!r} in "
                                      f"{self.source_path}; its kernels: {known}") from None

    def __repr__(self) -> str:
        return f"<emulated CUDA module {self.source_path} kernels={list(self._kernels)}>"
