"""The CuPy launcher: our kernel sources compiled by NVRTC and loaded as CuPy modules.

It has the launcher interface shared with the emulator
(``gpucnn.backend.emulator.load_module``)::

    module = load_module(path, options)
    module.get_function(name)(grid, block, args, shared_mem=0)

Loading is two steps, so that everything but the last can run (and be
tested) on a machine with no GPU:

1. ``compile_binary(path, options, arch)``: NVRTC turns the source into a
   cubin for ``sm_<arch>`` (PTX when this NVRTC has no code generator for the
   device's architecture, for the driver to compile). No device is needed.
   ``cupy.RawModule`` cannot do this without one: it asks the device for its
   architecture before compiling.
2. ``load_module``: the device's architecture, the binary from step 1 (kept
   in an on-disk cache, since NVRTC takes seconds per file), loaded into a
   ``cupy.cuda.function.Module`` -- the object ``cupy.RawModule`` wraps, whose
   functions take the same ``(grid, block, args, shared_mem=...)`` call.

Every failure of either step is a ``KernelLoadError`` (a RuntimeError) that
names the source file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_modules: dict = {}
_lock = threading.Lock()

# Bump when the cached binaries change meaning (a new compile flag, say).
_CACHE_FORMAT = 1


class KernelLoadError(RuntimeError):
    """A kernel source that could not be compiled or loaded; the message names the file."""


def _headers_digest(path: Path, options) -> str:
    """Hash of every ``*.cuh`` the source may include: next to it and in its ``-I`` folders.

    Part of the cache key, so an edited header recompiles the sources that may include it.
    """
    folders = [path.parent] + [Path(o[2:]) for o in options if o.startswith("-I")]
    digest = hashlib.sha256()
    for folder in dict.fromkeys(f.resolve() for f in folders):
        for header in sorted(folder.glob("*.cuh")):
            digest.update(header.name.encode())
            digest.update(header.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Where compiled binaries are kept: ``nvrtc/`` beside the emulator's ``emu/`` build cache
    (``$GPUCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpucnn``, else ``~/.cache/gpucnn``)."""
    from .emulator.build import cache_dir as emulator_cache_dir

    return emulator_cache_dir().parent / "nvrtc"


def nvrtc_target(arch: int) -> tuple[str, str]:
    """The NVRTC ``-arch`` option and output kind ("cubin" or "ptx") for a device of compute capability ``arch``.

    A cubin when this NVRTC generates code for ``arch``; otherwise PTX for the
    newest architecture below it, which the driver compiles for the device.
    Raises RuntimeError when the device is older than every architecture
    this NVRTC knows.
    """
    import cupy

    supported = cupy.cuda.nvrtc.getSupportedArchs()
    if arch in supported:
        return f"-arch=sm_{arch}", "cubin"
    older = [a for a in supported if a < arch]
    if not older:
        raise RuntimeError(f"this NVRTC generates code for sm_{min(supported)} and newer; "
                           f"the GPU is sm_{arch}")
    return f"-arch=compute_{max(older)}", "ptx"


def compile_binary(path, options, arch: int) -> bytes:
    """Compile the CUDA source file ``path`` with NVRTC and ``options`` for compute capability ``arch``.

    Returns the cubin (PTX, see ``nvrtc_target``) with its ``extern "C"``
    kernels. Needs NVRTC but no device. Raises KernelLoadError naming
    ``path``, with NVRTC's log, when the source does not compile.
    """
    import cupy

    nvrtc = cupy.cuda.nvrtc
    path = Path(path)
    arch_option, kind = nvrtc_target(arch)
    program = nvrtc.createProgram(path.read_text(), str(path), [], [])
    try:
        try:
            nvrtc.compileProgram(program, [*options, arch_option])
        except nvrtc.NVRTCError as error:
            raise KernelLoadError(f"NVRTC could not compile {path} ({arch_option}):\n"
                                  f"{nvrtc.getProgramLog(program)}") from error
        return nvrtc.getCUBIN(program) if kind == "cubin" else nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)


def cached_binary(path, options, arch: int) -> bytes:
    """``compile_binary(path, options, arch)``, read from the on-disk cache when compiled before.

    The key covers the source, the headers it may include, the options, the
    architecture and the NVRTC version. An unwritable cache only costs the
    compilation.
    """
    import cupy

    path = Path(path).resolve()
    key = hashlib.sha256(json.dumps([
        _CACHE_FORMAT, path.read_text(), _headers_digest(path, options), list(options),
        nvrtc_target(arch), list(cupy.cuda.nvrtc.getVersion())]).encode()).hexdigest()
    cached = cache_dir() / f"{path.stem}-{key[:32]}.bin"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    binary = compile_binary(path, options, arch)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed: a reader never sees half a binary.
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as tmp:
            tmp.write(binary)
        os.replace(tmp.name, cached)
    except OSError:
        pass
    return binary


def device_arch() -> int:
    """Compute capability of CuPy's current device as an int (9.0 -> 90)."""
    import cupy

    return int(cupy.cuda.Device().compute_capability)


def load_module(path, options=()):
    """The kernels of the CUDA source file ``path``, compiled with ``options`` for the current device.

    Returns a ``cupy.cuda.function.Module``; ``module.get_function(name)``
    launches as ``f(grid, block, args, shared_mem=0)``. Compiled (or read
    from the cache) and loaded once per (path, options, device) in a process.
    Raises KernelLoadError naming ``path`` for any failure: NVRTC missing or
    rejecting the source, no device, a driver that cannot load the binary.
    """
    path = Path(path).resolve()
    options = tuple(options)
    with _lock:
        try:
            import cupy

            key = (path, options, cupy.cuda.runtime.getDevice())
            module = _modules.get(key)
            if module is None:
                binary = cached_binary(path, options, device_arch())
                module = cupy.cuda.function.Module()
                module.load(binary)
                _modules[key] = module
        except KernelLoadError:
            raise
        except Exception as error:  # whatever CuPy, NVRTC or the driver raised: name the file
            raise KernelLoadError(f"could not load the CUDA kernels of {path}: "
                                  f"{type(error).__name__}: {error}") from error
    return module
