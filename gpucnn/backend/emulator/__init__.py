"""The CUDA emulator: our unchanged ``kernels/*.cu`` sources, compiled by g++ and run on the CPU.

    from gpucnn.backend.emulator import load_module
    module = load_module("kernels/pooling.cu", options=("-DTILE=16",))
    kernel = module.get_function("max_pool2d_forward_f32")
    kernel(grid, block, (x, y, np.int32(n)), shared_mem=0)

The launcher has the shape of CuPy's ``RawModule``/``RawKernel``, so the cuda
backend's host code runs unchanged on either. Blocks run one after another;
the threads of a block run as cooperative fibers that switch at barriers and
warp functions (or as a plain loop when the kernel has none); divergent
barriers, deadlocks and wrongly typed arguments raise; shared memory starts
as NaN; a block larger than the kernel's ``__launch_bounds__`` is refused.
``sanitize=True`` (or ``GPUCNN_EMU_ASAN=1``) builds with AddressSanitizer,
which needs the process started with the compiler's libasan preloaded (see
``asan_environment``). ``racecheck=True`` (or ``GPUCNN_EMU_RACECHECK=1``)
builds with the shared-memory race checker: two threads of a block touching
the same shared word with no barrier between them, one of them writing, raise
SharedMemoryRaceError naming both source lines (it needs no preloading).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from .build import EmulatorCompileError, EmulatorError, build_library, cache_dir, compiler, compiler_available
from .launcher import EmulatorLaunchError, Kernel, KernelNotFoundError, Module, SharedMemoryRaceError

_modules: dict[tuple, Module] = {}
_lock = threading.Lock()


def _asan_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


def asan_environment() -> dict[str, str]:
    """Environment variables that let a child Python process load sanitized modules.

    Raises EmulatorError when the compiler ships no libasan. ``LD_PRELOAD``
    puts the compiler's libasan first (so NumPy's buffers get
    redzones too) and ``ASAN_OPTIONS`` turns off leak checking, which would
    report the interpreter's own allocations at exit.
    """
    libasan = subprocess.run([compiler(), "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        raise EmulatorError(f"{compiler()} has no AddressSanitizer runtime (libasan.so not found)")
    return {"LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0", "GPUCNN_EMU_ASAN": "1"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def load_module(path, options=(), sanitize: bool | None = None, racecheck: bool | None = None) -> Module:
    """Compile (or fetch from the caches) the CUDA source ``path`` for the emulator.

    options: NVRTC-style compile options; ``-D``, ``-U`` and ``-I`` reach g++,
    ``-arch=sm_XY`` sets ``__CUDA_ARCH__``, the rest is ignored.
    sanitize: build with AddressSanitizer; default from ``GPUCNN_EMU_ASAN``.
    racecheck: build with the shared-memory race checker; default from
    ``GPUCNN_EMU_RACECHECK``. Not both: a sanitized build wins over the
    environment's racecheck, an explicit pair of True raises ValueError.
    Modules are cached per process (by path, options and the file's mtime) and
    on disk (by the contents of the source, its includes, the options and the
    compiler). Raises EmulatorCompileError naming the ``.cu`` lines g++ rejects.
    """
    if sanitize is None:
        sanitize = _env_flag("GPUCNN_EMU_ASAN")
    if racecheck is None:
        racecheck = _env_flag("GPUCNN_EMU_RACECHECK") and not sanitize
    if sanitize and racecheck:
        raise ValueError("load_module: sanitize and racecheck cannot be combined (AddressSanitizer and the "
                         "race checker each instrument every memory access); run them one at a time")
    if sanitize and not _asan_loaded():
        raise EmulatorError("a sanitized emulator module needs AddressSanitizer's runtime loaded first: "
                            "start Python with the variables of gpucnn.backend.emulator.asan_environment() "
                            "(LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0)")
    if isinstance(options, str):
        raise TypeError("options must be a sequence of strings such as ('-DTILE=16',), not one string")
    src = Path(path).resolve()
    stat = src.stat()
    options = tuple(options)
    key = (str(src), options, bool(sanitize), bool(racecheck), str(cache_dir()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        module = _modules.get(key)
        if module is None:
            built = build_library(src, options, sanitize=bool(sanitize), racecheck=bool(racecheck))
            module = Module(src, built, bool(sanitize), bool(racecheck))
            _modules[key] = module
        return module


def clear_process_cache() -> None:
    """Forget the modules loaded by this process (the on-disk cache stays)."""
    with _lock:
        _modules.clear()


__all__ = ["load_module", "Module", "Kernel", "EmulatorError", "EmulatorCompileError", "EmulatorLaunchError",
           "SharedMemoryRaceError", "KernelNotFoundError", "compiler_available", "asan_environment", "clear_process_cache"]
