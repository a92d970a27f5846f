"""The ``cpu`` backend: NumPy arrays, Numba kernels, and NumPy's BLAS for the convolution GEMMs.

Convolution is im2col + one GEMM per batch chunk:

- forward:          ycol (K, nb*PQ) = W (K, CRS) @ col (CRS, nb*PQ), then moved to NCHW with the bias;
- backward-data:    dcol (CRS, nb*PQ) = W^T @ dy (K, nb*PQ), then col2im adds it back into dx;
- backward-filter:  dw (K, CRS) += dy (K, nb*PQ) @ col^T.

The GEMMs run in NumPy's BLAS, which owns the cores; the Numba kernels around
them are single-threaded (``cpu_kernels.py`` says why, with measurements).
For the forward pass, one GEMM over the chunk plus the layout change was
measured against a batched ``matmul`` that writes NCHW directly (one GEMM per
image): 14.1 + 0.4 ms against 13.8 ms at C=32 20x20 -> K=64, N=64, one thread,
so the single GEMM stays.
"""

from __future__ import annotations

import numpy as np

from . import cpu_kernels as kern
from .base import Backend, check_conv_activation
from .geometry import ConvGeometry, PoolGeometry

# A chunk holds as many images as keep its column matrix (and its K-major GEMM
# operand) under COL_BYTES, so memory stays bounded for any batch, and the
# column matrix that im2col writes is still in cache when the GEMM reads it.
# Measured (float32, N=64, 3x3, pad 1, two threads, median ms, load average
# 0.7, 2 MiB / 64 MiB chunks): C=32 14x14 -> K=64 forward 7.1 / 9.4, backward-
# data 6.1 / 9.5, backward-filter 7.4 / 8.5; C=32 20x20 -> K=64 12.8 / 15.0,
# 11.4 / 19.0, 12.9 / 16.0; one thread, CPU time, backward-data at 20x20: 17.7
# with 1 or 2 MiB, 22.1 with 4, 25.0 with 8, 26.9 with one chunk. The price:
# every chunk is a BLAS call, and on a machine crowded with other processes
# each call can wait a scheduler time slice for its second BLAS thread (at
# load average 3 on 2 cores, 2 MiB chunks ran 4-8x slower than one chunk).
# Benchmarks and training want the quiet case, so chunks are cache-sized.
COL_BYTES = 2 * 2**20

def _chunk_size(geom: ConvGeometry, itemsize: int) -> int:
    """Images per chunk so that the column matrix (C*R*S, nb*P*Q) and the K-major
    operand (K, nb*P*Q) beside it each stay under COL_BYTES (one image at least)."""
    per_image = max(geom.C * geom.R * geom.S, geom.K) * geom.P * geom.Q * itemsize
    return max(1, min(geom.N, COL_BYTES // per_image))


def _chunks(geom: ConvGeometry, dtype, rows_a: int, rows_b: int):
    """Yield ``(n0, a, b)`` for each batch chunk of ``nb`` images starting at image ``n0``.

    ``a`` (rows_a, nb*P*Q) and ``b`` (rows_b, nb*P*Q) are C-contiguous views of
    two buffers allocated once per call and reused by every chunk (the last
    chunk may be shorter).
    """
    PQ = geom.P * geom.Q
    nb_max = _chunk_size(geom, dtype.itemsize)
    buf_a = np.empty(rows_a * nb_max * PQ, dtype)
    buf_b = np.empty(rows_b * nb_max * PQ, dtype)
    for n0 in range(0, geom.N, nb_max):
        cols = min(nb_max, geom.N - n0) * PQ
        yield n0, buf_a[:rows_a * cols].reshape(rows_a, cols), buf_b[:rows_b * cols].reshape(rows_b, cols)


def _conv_args(geom: ConvGeometry):
    """The geometry as the positional ints the im2col/col2im kernels take."""
    return (geom.R, geom.S, geom.P, geom.Q, geom.stride[0], geom.stride[1],
            geom.pad[0], geom.pad[1], geom.dilation[0], geom.dilation[1])


def _pool_args(geom: PoolGeometry):
    """The geometry as the positional ints the pooling kernels take."""
    return (geom.R, geom.S, geom.stride[0], geom.stride[1], geom.pad[0], geom.pad[1])


class CPUBackend(Backend):
    """NumPy arrays; Numba kernels for pooling and the data movement of im2col; BLAS for the GEMMs."""

    name = "cpu"
    xp = np

    # --- convolution ------------------------------------------------------

    def conv_algorithm(self, op: str, geom: ConvGeometry) -> str:
        """Every convolution op here is im2col (or col2im) around one BLAS GEMM per
        column chunk; a cache-blocked direct loop measured 5-30x slower on every
        shape of the benchmark workload, so there is no per-shape choice."""
        return "im2col+gemm"

    def conv2d_forward(self, x, w, b, geom: ConvGeometry, activation=None):
        check_conv_activation(activation)
        arrays = {"x": (x, geom.x_shape), "w": (w, geom.w_shape)}
        if b is not None:
            arrays["b"] = (b, (geom.K,))
        dtype = self.check_operands("conv2d_forward", arrays)
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        b = np.zeros(geom.K, dtype) if b is None else np.ascontiguousarray(b)
        CRS = geom.C * geom.R * geom.S
        w2 = w.reshape(geom.K, CRS)
        y = np.empty((geom.N, geom.K, geom.P * geom.Q), dtype)
        for n0, col, ycol in _chunks(geom, dtype, CRS, geom.K):
            kern.im2col(x, n0, col, *_conv_args(geom))
            np.matmul(w2, col, out=ycol)
            kern.k_major_to_nchw(ycol, n0, y, b)
        if activation == "relu":
            np.maximum(y, 0, out=y)
        return y.reshape(geom.y_shape)

    def conv2d_backward_data(self, dy, w, geom: ConvGeometry):
        dtype = self.check_operands("conv2d_backward_data", {"dy": (dy, geom.y_shape), "w": (w, geom.w_shape)})
        dy, w = np.ascontiguousarray(dy), np.ascontiguousarray(w)
        CRS = geom.C * geom.R * geom.S
        wt = w.reshape(geom.K, CRS).T
        dy3 = dy.reshape(geom.N, geom.K, geom.P * geom.Q)
        dx = np.empty(geom.x_shape, dtype)
        for n0, dcol, dyk in _chunks(geom, dtype, CRS, geom.K):
            kern.nchw_to_k_major(dy3, n0, dyk)
            np.matmul(wt, dyk, out=dcol)
            kern.col2im(dcol, n0, dx, *_conv_args(geom))
        return dx

    def conv2d_backward_filter(self, dy, x, geom: ConvGeometry):
        dtype = self.check_operands("conv2d_backward_filter", {"dy": (dy, geom.y_shape), "x": (x, geom.x_shape)})
        dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
        CRS = geom.C * geom.R * geom.S
        dy3 = dy.reshape(geom.N, geom.K, geom.P * geom.Q)
        dw = np.zeros((geom.K, CRS), dtype)
        for n0, col, dyk in _chunks(geom, dtype, CRS, geom.K):
            kern.im2col(x, n0, col, *_conv_args(geom))
            kern.nchw_to_k_major(dy3, n0, dyk)
            dw += dyk @ col.T
        return dw.reshape(geom.w_shape)

    # --- pooling ----------------------------------------------------------

    def max_pool2d_forward(self, x, geom: PoolGeometry):
        dtype = self.check_operands("max_pool2d_forward", {"x": (x, geom.x_shape)})
        x = np.ascontiguousarray(x)
        y = np.empty(geom.y_shape, dtype)
        argmax = np.empty(geom.y_shape, np.int32)
        kern.max_pool2d_forward(x, *_pool_args(geom), y, argmax)
        return y, argmax

    def max_pool2d_backward(self, dy, argmax, geom: PoolGeometry):
        dtype = self.check_operands("max_pool2d_backward", {"dy": (dy, geom.y_shape)})
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32 or argmax.shape != geom.y_shape:
            raise TypeError(
                f"max_pool2d_backward: argmax must be an int32 array of shape {geom.y_shape} "
                f"(from max_pool2d_forward), got {getattr(argmax, 'dtype', type(argmax).__name__)} "
                f"{getattr(argmax, 'shape', '')}"
            )
        HW = geom.H * geom.W
        if argmax.min() < 0 or argmax.max() >= HW:
            # The kernel scatters to argmax unchecked; an index from elsewhere must not write out of bounds.
            raise ValueError(f"max_pool2d_backward: argmax holds indices outside [0, {HW}) of the "
                             f"{geom.H}x{geom.W} input plane")
        dx = np.empty(geom.x_shape, dtype)
        kern.max_pool2d_backward(np.ascontiguousarray(dy), np.ascontiguousarray(argmax), dx)
        return dx

    def avg_pool2d_forward(self, x, geom: PoolGeometry):
        dtype = self.check_operands("avg_pool2d_forward", {"x": (x, geom.x_shape)})
        y = np.empty(geom.y_shape, dtype)
        kern.avg_pool2d_forward(np.ascontiguousarray(x), *_pool_args(geom), y)
        return y

    def avg_pool2d_backward(self, dy, geom: PoolGeometry):
        dtype = self.check_operands("avg_pool2d_backward", {"dy": (dy, geom.y_shape)})
        dx = np.empty(geom.x_shape, dtype)
        kern.avg_pool2d_backward(np.ascontiguousarray(dy), *_pool_args(geom), dx)
        return dx
