"""Backends: where arrays live and which kernels run the ops.

``get_backend(name)`` returns a shared instance per name:

- ``"cpu"``: NumPy arrays, Numba-compiled kernels;
- ``"cuda"``: CuPy arrays, our CUDA kernels compiled with NVRTC;
- ``"cuda-emu"``: NumPy arrays, the same CUDA kernel sources compiled by the
  host C++ compiler and executed on the CPU by the emulator;
- ``"auto"``: ``"cuda"`` when a GPU is usable, else ``"cpu"``.
"""

from __future__ import annotations

from .base import Backend
from .geometry import ConvGeometry, PoolGeometry

BACKEND_NAMES = ("cpu", "cuda", "cuda-emu", "auto")

_instances: dict[str, Backend] = {}


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:  # ImportError, or a CUDA driver error on a GPU-less machine
        return False


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
        name = "cuda" if cuda_is_available() else "cpu"
    if name not in _instances:
        _instances[name] = _create(name)
    return _instances[name]


__all__ = ["Backend", "ConvGeometry", "PoolGeometry", "get_backend", "cuda_is_available",
           "BACKEND_NAMES"]
