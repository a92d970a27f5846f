"""What this machine offers gpucnn: versions, the CUDA driver and toolkit CuPy sees, the GPUs.

One place gathers it, as plain data, for every command that reports it
(``gpucnn selftest`` writes it into its JSON; ``gpucnn info`` prints the same
facts). Nothing here raises: a missing library or driver is a fact to report,
recorded as ``None`` or as the error's one-line message.
"""

from __future__ import annotations

import importlib.metadata
import platform

from .backend.cuda_probe import cuda_version, first_line


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``'s "model name" where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    """A distribution's version without importing it (importing PyTorch starts its thread pools)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_environment() -> dict:
    """CuPy's view of CUDA: ``cupy``, ``driver``, ``runtime``, ``nvrtc`` versions and ``devices``.

    Each device is ``{"index", "name", "compute_capability", "memory_gib",
    "free_gib"}``. A value CuPy cannot give is the error's one-line message.
    """
    try:
        import cupy
    except ImportError as err:
        return {"cupy": None, "cupy_error": first_line(err), "devices": []}
    out = {"cupy": cupy.__version__}
    runtime = cupy.cuda.runtime
    for key, query in (("driver", runtime.driverGetVersion), ("runtime", runtime.runtimeGetVersion)):
        try:
            out[key] = cuda_version(query())
        except Exception as err:  # a CUDA error is what there is to report
            out[key] = first_line(err)
    try:
        from cupy_backends.cuda.libs import nvrtc
        out["nvrtc"] = ".".join(map(str, nvrtc.getVersion()))
    except Exception as err:  # NVRTC missing is the most common broken install
        out["nvrtc"] = first_line(err)
    out["devices"] = []
    try:
        count = runtime.getDeviceCount()
    except Exception as err:  # no driver, or a driver too old for CuPy's CUDA
        out["device_error"] = first_line(err)
        count = 0
    for i in range(count):
        props = runtime.getDeviceProperties(i)
        free, total = cupy.cuda.Device(i).mem_info
        out["devices"].append({"index": i, "name": props["name"].decode(),
                               "compute_capability": f"{props['major']}.{props['minor']}",
                               "memory_gib": round(total / 2**30, 1), "free_gib": round(free / 2**30, 1)})
    return out


def gather() -> dict:
    """Everything above in one dict: versions, processor, ``cuda_usable`` and its reason, ``cuda``."""
    import numba
    import numpy

    from . import __version__
    from .backend import cuda_status

    usable, reason = cuda_status()
    return {"gpucnn": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "processor": cpu_model(), "numpy": numpy.__version__, "numba": numba.__version__,
            "torch": _package_version("torch"), "cuda_usable": usable, "cuda_reason": reason,
            "cuda": cuda_environment()}
