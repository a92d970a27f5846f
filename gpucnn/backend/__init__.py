"""Backends: where arrays live and which kernels run the ops.

``get_backend(name)`` returns a shared instance per name:

- ``"cpu"``: NumPy arrays, Numba-compiled kernels;
- ``"cuda"``: CuPy arrays, our CUDA kernels compiled with NVRTC;
- ``"cuda-emu"``: NumPy arrays, the same CUDA kernel sources compiled by the
  host C++ compiler and executed on the CPU by the emulator;
- ``"auto"``: ``"cuda"`` when a GPU is usable (``cuda_status``), else ``"cpu"``
  with a ``CudaUnusableWarning`` saying why, once per process, when CuPy is
  installed (without CuPy the CPU is what was asked for).
"""

from __future__ import annotations

import functools
import warnings

from .base import Backend
from .geometry import ConvGeometry, PoolGeometry

BACKEND_NAMES = ("cpu", "cuda", "cuda-emu", "auto")

_instances: dict[str, Backend] = {}


class CudaUnusableWarning(RuntimeWarning):
    """``backend="auto"`` runs on the CPU although CuPy is installed; the message says why."""


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether the ``cuda`` backend can run here, and in one line why (not).

    Usable means a device answers and a test kernel of ours compiles, loads
    and runs through the ``cuda`` backend's launcher (see ``cuda_probe``).
    Probed once per process; ``cuda_status.cache_clear()`` probes again.
    """
    from .cuda_probe import probe

    return probe()


def cuda_is_available() -> bool:
    """True when the ``cuda`` backend is usable here (``cuda_status()[0]``)."""
    return cuda_status()[0]


# Whether "auto" has already said why it runs on the CPU in this process.
_auto_warned = False


def _resolve_auto() -> str:
    """The backend "auto" stands for; warns once per process when CuPy is there but the GPU is not usable."""
    from .cuda_probe import CUPY_MISSING

    global _auto_warned
    usable, reason = cuda_status()
    if usable:
        return "cuda"
    if not _auto_warned and not reason.startswith(CUPY_MISSING):
        _auto_warned = True
        warnings.warn(f"backend 'auto' runs on the CPU: {reason}", CudaUnusableWarning, stacklevel=3)
    return "cpu"


def _create(name: str) -> Backend:
    if name == "cpu":
        from .cpu import CPUBackend
        return CPUBackend()
    if name == "cuda":
        from .cuda import make_cuda_backend
        return make_cuda_backend()
    if name == "cuda-emu":
        from .cuda import make_emulated_cuda_backend
        return make_emulated_cuda_backend()
    raise AssertionError(name)


def get_backend(name="auto") -> Backend:
    """Return the backend called ``name`` (a ``Backend`` is returned unchanged).

    Raises ValueError for an unknown name, listing the known ones, and
    RuntimeError when ``"cuda"`` is asked for on a machine without a usable GPU.
    """
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        name = _resolve_auto()
    if name not in _instances:
        _instances[name] = _create(name)
    return _instances[name]


__all__ = ["Backend", "ConvGeometry", "PoolGeometry", "get_backend", "cuda_is_available", "cuda_status",
           "CudaUnusableWarning", "BACKEND_NAMES"]
