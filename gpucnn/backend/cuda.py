"""The ``cuda`` and ``cuda-emu`` backends: our CUDA kernels (``kernels/*.cu``) and their host code.

The host code -- checking the operands, choosing the kernel and its float or
double variant, allocating the outputs, computing grid and block (in
``launch.py``) and packing the arguments with exact NumPy scalar types -- is
written once, in ``CudaBackend``. It launches through a *launcher*::

    module = load_module(path, options)
    module.get_function(name)(grid, block, args, shared_mem=0)

- ``make_cuda_backend()``: the CuPy launcher (NVRTC + ``cupy.RawModule``) on
  CuPy arrays; the kernels run on the GPU.
- ``make_emulated_cuda_backend()``: the emulator launcher on NumPy arrays;
  the same kernel sources are compiled by the host C++ compiler and run on
  the CPU, so a machine without a GPU still executes every kernel.
"""

from __future__ import annotations

import os

from pathlib import Path

import numpy as np

from . import conv_algorithms
from .base import Backend
from .geometry import ConvGeometry, PoolGeometry
from .launch import elementwise_launch

#: The CUDA sources, shipped inside the package (``gpucnn/kernels`` links to ``kernels/``).
KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"

#: Compiler options of every kernel source, for NVRTC and the emulator alike.
COMPILE_OPTIONS = ("-std=c++17", f"-I{KERNELS_DIR}")

CONV_SOURCE = "conv2d_direct.cu"
POOL_SOURCE = "pooling.cu"

# Kernel entry points are named "<op>_f32" / "<op>_f64" after their element type.
_DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

# The kernels take every size as a C int; their 64-bit arithmetic starts from there.
_INT32_MAX = 2**31 - 1


def _int32_args(op: str, values) -> tuple:
    """The sizes ``values`` as ``np.int32`` kernel arguments; ValueError naming ``op`` if one overflows."""
    for v in values:
        if not 0 <= v <= _INT32_MAX:
            raise ValueError(f"{op}: size {v} does not fit the kernels' 32-bit int parameters")
    return tuple(np.int32(v) for v in values)


def _conv_args(op: str, g: ConvGeometry) -> tuple:
    """Scalar arguments of every kernel in conv2d_direct.cu, in the order of their signature."""
    return _int32_args(op, (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q,
                            *g.stride, *g.pad, *g.dilation))


def _pool_args(op: str, g: PoolGeometry) -> tuple:
    """Scalar arguments of every kernel in pooling.cu, in the order of their signature."""
    return _int32_args(op, (g.N, g.C, g.H, g.W, g.P, g.Q, g.R, g.S, *g.stride, *g.pad))


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class CudaBackend(Backend):
    """Our CUDA kernels on the arrays of ``xp``, launched through ``load_module``.

    ``name``: "cuda" or "cuda-emu"; ``xp``: ``cupy`` or ``numpy``;
    ``load_module(path, options)``: the launcher (see the module docstring);
    ``synchronize``: a callable that waits for the device, or None when
    launches are synchronous (the emulator); ``device_arch``: a callable
    returning the GPU's compute capability (90 for 9.0), or None for the
    emulator (it executes the tensor-core instructions on every architecture).
    Every op takes float32 or float64 operands of one dtype.
    """

    def __init__(self, name: str, xp, load_module, synchronize=None, device_arch=None):
        self.name = name
        self.xp = xp
        self._load_module = load_module
        self._synchronize = synchronize
        self._device_arch = device_arch
        self._functions: dict = {}
        self._to_numpy_copies = 0
        self._zero_biases: dict = {}

    def to_numpy(self, a) -> np.ndarray:
        """Return ``a`` as a NumPy array on the host (a device-to-host copy, counted in ``host_syncs``)."""
        if isinstance(a, self.xp.ndarray):
            self._to_numpy_copies += 1
        return getattr(self.xp, "asnumpy", np.asarray)(a)

    def host_syncs(self) -> int:
        """Device-to-host crossings so far. On ``cuda-emu`` the strict arrays count every one
        (``to_numpy``, ``float(a)``, ``int(a)``, ``bool(a)``, ``a.item()``); under CuPy only the
        ``to_numpy`` copies are seen (``float`` of a CuPy array cannot be intercepted)."""
        strict_count = getattr(self.xp, "host_syncs", None)
        return strict_count() if strict_count is not None else self._to_numpy_copies

    def free_memory(self) -> int:
        """Bytes free for new arrays: the device's free memory plus CuPy's cached blocks;
        on ``cuda-emu`` the host memory still available, which is where its arrays live."""
        cuda = getattr(self.xp, "cuda", None)
        if cuda is None:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        free, _total = cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def synchronize(self) -> None:
        """Wait until every launched kernel has finished."""
        if self._synchronize is not None:
            self._synchronize()

    def arch(self) -> int | None:
        """The GPU's compute capability as an int (75, 80, 90), or None on the emulator."""
        return None if self._device_arch is None else self._device_arch()

    def conv_algorithm(self, op: str, geom: ConvGeometry) -> str:
        """The kernel ``conv_algorithms.choose`` picks for float32 ``op`` on ``geom``, with its precision."""
        return str(conv_algorithms.choose(op, geom, np.float32, self.arch()))

    def conv_precision(self, op: str, geom: ConvGeometry) -> str:
        """The arithmetic of that kernel: "fp32", "tf32" or "bf16" (see ``gpucnn.backend.precision``)."""
        return conv_algorithms.choose(op, geom, np.float32, self.arch()).precision

    def empty(self, shape, dtype):
        """An uninitialised output array; every kernel writes all of its elements.

        The ragged-edge tests wrap this to put guard cells around each output.
        """
        return self.xp.empty(shape, dtype)

    # --- host-side plumbing ----------------------------------------------

    def _contiguous(self, *arrays):
        """The arrays C-contiguous, as the kernels index them (no copy when they already are)."""
        return tuple(self.xp.ascontiguousarray(a) for a in arrays)

    def _zero_bias(self, size: int, dtype):
        """(size,) zeros of ``dtype``, made once and kept: the kernels only read a bias, and an
        allocation per launch would be a needless device call in every training step."""
        key = (size, np.dtype(dtype))
        zeros = self._zero_biases.get(key)
        if zeros is None:
            zeros = self._zero_biases[key] = self.xp.zeros(size, dtype)
        return zeros

    def function(self, source: str, name: str):
        """The kernel ``name`` of ``kernels/<source>``, compiled once and cached: ``f(grid, block, args)``."""
        key = (source, name)
        function = self._functions.get(key)
        if function is None:
            module = self._load_module(KERNELS_DIR / source, COMPILE_OPTIONS)
            function = self._functions[key] = module.get_function(name)
        return function

    def _launch(self, source: str, kernel: str, dtype: np.dtype, total: int, args: tuple):
        """Launch ``<kernel>_f32|_f64`` from ``kernels/<source>``, one thread per element of ``total``."""
        grid, block = elementwise_launch(total)
        self.function(source, f"{kernel}_{_DTYPE_SUFFIX[dtype]}")(grid, block, args)

    # --- convolution ------------------------------------------------------

    # Each op runs the kernel conv_algorithms chooses; ``direct`` launches the
    # direct kernel into the output conv_algorithms allocated.

    def conv2d_forward(self, x, w, b, geom: ConvGeometry, activation=None):
        op = "conv2d_forward"
        arrays = {"x": (x, geom.x_shape), "w": (w, geom.w_shape)}
        if b is not None:
            arrays["b"] = (b, (geom.K,))
        dtype = self.check_operands(op, arrays)
        x, w = self._contiguous(x, w)
        b = None if b is None else self._contiguous(b)[0]
        args = _conv_args(op, geom)

        def direct(y):
            # The direct kernel always adds b[k]: zeros stand in for a missing bias.
            bias = self._zero_bias(geom.K, dtype) if b is None else b
            self._launch(CONV_SOURCE, "conv2d_forward_direct", dtype, _size(geom.y_shape),
                         (x, w, bias, y) + args)

        return conv_algorithms.conv2d_forward(self, x, w, b, geom, activation=activation,
                                              direct=direct)

    def conv2d_backward_data(self, dy, w, geom: ConvGeometry):
        op = "conv2d_backward_data"
        dtype = self.check_operands(op, {"dy": (dy, geom.y_shape), "w": (w, geom.w_shape)})
        dy, w = self._contiguous(dy, w)
        args = _conv_args(op, geom)

        def direct(dx):
            self._launch(CONV_SOURCE, "conv2d_backward_data_direct", dtype, _size(geom.x_shape),
                         (dy, w, dx) + args)

        return conv_algorithms.conv2d_backward_data(self, dy, w, geom, direct=direct)

    def conv2d_backward_filter(self, dy, x, geom: ConvGeometry):
        op = "conv2d_backward_filter"
        dtype = self.check_operands(op, {"dy": (dy, geom.y_shape), "x": (x, geom.x_shape)})
        dy, x = self._contiguous(dy, x)
        args = _conv_args(op, geom)

        def direct(dw):
            self._launch(CONV_SOURCE, "conv2d_backward_filter_direct", dtype, _size(geom.w_shape),
                         (dy, x, dw) + args)

        return conv_algorithms.conv2d_backward_filter(self, dy, x, geom, direct=direct)

    # --- pooling ----------------------------------------------------------

    def max_pool2d_forward(self, x, geom: PoolGeometry):
        op = "max_pool2d_forward"
        dtype = self.check_operands(op, {"x": (x, geom.x_shape)})
        # argmax holds h*W + w in an int32.
        _int32_args(op, (geom.H * geom.W,))
        (x,) = self._contiguous(x)
        y = self.empty(geom.y_shape, dtype)
        argmax = self.empty(geom.y_shape, np.int32)
        self._launch(POOL_SOURCE, "max_pool2d_forward", dtype, _size(geom.y_shape),
                     (x, y, argmax) + _pool_args(op, geom))
        return y, argmax

    def max_pool2d_backward(self, dy, argmax, geom: PoolGeometry):
        """See ``Backend``. The kernel compares argmax with each input cell and never
        indexes memory with it, so an out-of-range argmax cannot write out of bounds."""
        op = "max_pool2d_backward"
        dtype = self.check_operands(op, {"dy": (dy, geom.y_shape)})
        self.check_operands(op, {"argmax": (argmax, geom.y_shape)}, dtype=np.int32)
        dy, argmax = self._contiguous(dy, argmax)
        dx = self.empty(geom.x_shape, dtype)
        self._launch(POOL_SOURCE, "max_pool2d_backward", dtype, _size(geom.x_shape),
                     (dy, argmax, dx) + _pool_args(op, geom))
        return dx

    def avg_pool2d_forward(self, x, geom: PoolGeometry):
        op = "avg_pool2d_forward"
        dtype = self.check_operands(op, {"x": (x, geom.x_shape)})
        (x,) = self._contiguous(x)
        y = self.empty(geom.y_shape, dtype)
        self._launch(POOL_SOURCE, "avg_pool2d_forward", dtype, _size(geom.y_shape),
                     (x, y) + _pool_args(op, geom))
        return y

    def avg_pool2d_backward(self, dy, geom: PoolGeometry):
        op = "avg_pool2d_backward"
        dtype = self.check_operands(op, {"dy": (dy, geom.y_shape)})
        (dy,) = self._contiguous(dy)
        dx = self.empty(geom.x_shape, dtype)
        self._launch(POOL_SOURCE, "avg_pool2d_backward", dtype, _size(geom.x_shape),
                     (dy, dx) + _pool_args(op, geom))
        return dx


def make_cuda_backend() -> CudaBackend:
    """The ``cuda`` backend: CuPy arrays, kernels compiled by NVRTC and run on the GPU.

    Raises RuntimeError with the reason (``gpucnn.backend.cuda_status``) when
    the GPU is not usable here: CuPy or NVRTC missing, a driver too old for
    CuPy's CUDA, no device, or a test kernel that failed.
    """
    from . import cuda_status

    usable, reason = cuda_status()
    if not usable:
        raise RuntimeError(f"the cuda backend is not usable here: {reason}. Use 'cpu', "
                           "or 'cuda-emu' to run the CUDA kernels on the CPU")
    return cupy_cuda_backend()


def cupy_cuda_backend() -> CudaBackend:
    """The ``cuda`` backend without the usability check: the check's own test kernel runs on it."""
    import cupy

    from .cupy_launcher import device_arch, load_module

    return CudaBackend("cuda", cupy, load_module, synchronize=cupy.cuda.runtime.deviceSynchronize,
                       device_arch=device_arch)


def make_emulated_cuda_backend() -> CudaBackend:
    """The ``cuda-emu`` backend: the same kernels compiled by g++ and run on the CPU.

    Its arrays are CuPy-strict (``strict.StrictArray``): NumPy refuses them as it
    refuses CuPy arrays, so host code that would break on a GPU breaks here too.
    """
    from .emulator import load_module
    from .strict import strict_launcher, strict_numpy

    return CudaBackend("cuda-emu", strict_numpy, strict_launcher(load_module))
