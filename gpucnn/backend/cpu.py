"""The ``cpu`` backend: NumPy arrays, Numba kernels, and BLAS (called from Numba) for the convolution GEMMs.

Convolution is im2col + one GEMM per image, each image's GEMM reading and
writing the NCHW tensors in place (for image n, with PQ = P*Q):

- forward:          y[n] (K, PQ) = [W | b] (K, CRS+1) @ [col; 1] (CRS+1, PQ): the
                    bias is a column of the weights times a row of ones under the
                    column matrix, so the GEMM writes the finished output;
- backward-data:    dcol (CRS, PQ) = W^T @ dy[n] (K, PQ), then col2im adds it into dx[n];
- backward-filter:  [dw | db]^T (CRS+1, K) += [col; 1] @ dy[n]^T: the row of
                    ones yields the bias gradient in the same GEMM; for small
                    images (``_filter_strategy``) one GEMM per chunk of images
                    instead, on a K-major copy of the chunk's dy.

``conv2d_backward`` (what ``Conv2D`` calls) does all three gradients in one
pass over the images: per image, dy masked by a fused ReLU's [y > 0] as it is
read, im2col, the filter GEMM, then backward-data in the same column buffer;
``conv2d_backward_filter`` is that pass without dx and db. (Where Winograd
runs a backward op, see below, it runs that op instead.)

Otherwise no operand is transposed or moved between layouts: dy[n] and y[n]
are already the (K, PQ) matrices the GEMMs want, and BLAS reads W^T, col^T
and dy[n]^T as they are. The column matrix of one image ((CRS+1) x PQ floats, 226 KiB
for a 32-channel 14x14 3x3 layer) stays in the L2 cache between im2col and
the GEMM. Measured against the previous design (one GEMM per multi-image
chunk into a K-major buffer, then a layout pass): see ``benchmarks/RESULTS.md``,
the CPU-speed session.

3x3 stride-1 convolutions with enough channels run by Winograd F(2x2, 3x3)
instead (``cpu_winograd.py``), per op where it was measured faster
(``WINOGRAD_MIN_CHANNELS``).

Threads: the images are shared among ``cpu_pool.threads()`` Python threads
(``cpu_pool.parallel``) in chunks (work items) of ``_chunk_size`` images;
a thread runs a chunk's whole loop over its images -- im2col/col2im, the
GEMMs, the ReLU clamp or mask, the filter gradient's partial sum -- in one
Numba call compiled ``nogil`` (``cpu_kernels.conv_*_images``), the GEMMs
as ``np.dot`` into single-threaded BLAS, on its own column buffer. Why one
call per chunk: Python code holds the GIL, and the per-image loop in Python
(a few Numba calls, a ``np.matmul`` and a NumPy ``+=`` per image, each a few
microseconds under the GIL) kept the threads waiting for each other where
the per-image GEMM is small: the digits CNN's first layer (1 -> 32
channels, 28x28, batch 128) ran slower on two threads than on one. The
filter gradient is summed per chunk of images, then over the chunks in
order, so the result does not depend on which thread ran what.
"""

from __future__ import annotations

import numpy as np

from . import counter_rng
from . import cpu_kernels as kern
from . import cpu_pool
from . import cpu_winograd as wino
from .cpu_pool import thread_buffer as _thread_buffer
from .base import Backend, check_conv_activation
from .geometry import ConvGeometry, PoolGeometry

# Images per work item handed to a thread: as many as keep their column
# matrices under COL_BYTES (one at least), and few enough that a batch makes
# CONV_ITEMS_PER_BATCH items, so each of a few threads gets several and a
# thread the scheduler parks leaves its share to the others. The count is
# fixed, not taken from the threads of the moment: backward-filter sums per
# item, then over the items, so the items decide the rounding, and the same
# seed must give the same weights whatever the thread setting and the load.
COL_BYTES = 2 * 2**20
CONV_ITEMS_PER_BATCH = 8
ITEMS_PER_THREAD = 4

# Per-shape strategy of backward-filter, the one op whose per-image GEMM
# sums over the image's output positions ([dw | db]^T += [col; 1] @ dy[n]^T):
# with fewer than this many positions the GEMM is too short for BLAS, and a
# chunk of images goes through one GEMM on a K-major copy of dy instead.
# Forward and backward-data sum over C*R*S or K and run per image always.
# Measured (CPU time, one thread, batch 64 (R2: 16), per-chunk / per-image),
# with the earlier dw (K, CRS) += dy[n] @ col^T:
# L2 (P*Q = 64) 0.86; D2 and R2 (196) 1.02 and 0.96; J2 (400) 1.04, D1 (784) 1.80;
# with the transposed GEMM, conv2d_backward_filter / conv2d_backward with a ReLU mask
# (R2 at stride 1, 14x14): L2 0.76 / 0.71; D2 0.84 / 0.92; R2 0.89 / 0.92; J2 0.96 / 0.95;
# D1 1.90 / 1.35; 32->32 channels at 28x28 (784, batch 128) 0.96 / 0.97.
MIN_FILTER_GEMM_DEPTH = 256


# Elements per work item of the elementwise ops (ReLU, Dropout): large enough that
# handing out an item (a few microseconds of Python) is small against its pass
# over memory, small enough that a (128, 32, 28, 28) batch makes dozens of items
# for the threads to share. Elementwise results do not depend on the split.
ELEMENTWISE_ITEM = 2**16

# Work items of ``matmul``: blocks of the product's rows, each one single-threaded
# BLAS call of at least MATMUL_ITEM_MACS multiply-adds and MATMUL_MIN_ROWS rows:
# cut finer, BLAS repacks the other operand per block, and the 4 blocks of 32
# rows of the digits CNN's Dense (128 x 3136 @ 3136 x 10) took twice the time of
# one call (0.38 against 0.20 ms, one thread). The blocks follow from the shapes
# alone, not from the thread count, since BLAS may sum a block of rows in
# another order than a single row: the same inputs give the same bits at any
# thread setting.
MATMUL_ITEM_MACS = 2**24
MATMUL_MIN_ROWS = 64


def _matmul_rows(M: int, K: int, N: int) -> int:
    """Rows of the (M, N) product per work item of ``matmul`` (see ``MATMUL_ITEM_MACS``)."""
    return max(MATMUL_MIN_ROWS, -(-MATMUL_ITEM_MACS // max(1, K * N)))


# Per-op choice of Winograd F(2x2, 3x3) (``cpu_winograd``) over im2col + GEMM for the
# convolutions it computes (3x3, stride 1, dilation 1, padding 0..2): the least (C, K)
# for which it was measured faster. Its 16 GEMMs sum over C (forward), K
# (backward-data) or the tiles (backward-filter), and its tile transforms cost
# per channel what GEMMs over few channels do not win back. Measured in one
# sitting (CPU time, one thread, float32, batch 64 unless named, 3x3 pad 1;
# im2col / Winograd ms for forward, backward-data, backward-filter with the
# bias gradient; "Intel(R) Xeon(R) Processor" per lscpu, AVX-512, a 2-core VM
# shared with other work, load average 0.6):
#   C=1  28x28 K=32 (D1):    0.83/11.03  0.79/4.14   1.36/2.91
#   C=3  32x32 K=16:         1.48/2.22   1.38/3.14   1.90/2.64
#   C=8  32x32 K=16:         3.65/3.81   3.67/4.15   5.63/4.15
#   C=16 32x32 K=16:         7.56/5.63   7.90/5.48  10.80/5.83
#   C=16 16x16 K=32:         2.86/2.11   2.40/2.46   3.95/2.30   (backward-data a tie)
#   C=32 16x16 K=8:          3.05/1.96   2.29/1.47   5.22/1.98
#   C=32 14x14 K=64 (D2):    6.66/4.66   6.01/5.00   8.05/4.94
#   C=32 20x20 K=64 (J2):   12.71/7.24  10.67/8.01  14.08/8.15
#   C=64 10x10 K=128 (J3):  11.08/8.02   9.30/8.48  11.45/9.35
#   C=64 56x56 K=64 (R1, batch 16):  42.58/24.23  37.28/24.26  48.77/34.50
#   C=32 28x28 K=32 (batch 128):     32.97/20.38  28.51/19.42  44.76/21.06
WINOGRAD_MIN_CHANNELS = {"forward": (16, 8), "backward_data": (16, 8), "backward_filter": (8, 8)}


def _use_winograd(op: str, geom: ConvGeometry) -> bool:
    """Whether ``op`` ("forward", "backward_data", "backward_filter") runs by Winograd on ``geom``."""
    min_c, min_k = WINOGRAD_MIN_CHANNELS[op]
    return wino.applies(geom) and geom.C >= min_c and geom.K >= min_k


def _filter_strategy(geom: ConvGeometry) -> str:
    """``"image"`` (one GEMM per image) or ``"chunk"`` (one per chunk, dy moved to K-major) for backward-filter."""
    return "image" if geom.P * geom.Q >= MIN_FILTER_GEMM_DEPTH else "chunk"


def _chunk_size(geom: ConvGeometry, itemsize: int) -> int:
    """Images per work item: their column matrix (C*R*S, nb*P*Q) and K-major buffer (K, nb*P*Q)
    each under COL_BYTES, and ``CONV_ITEMS_PER_BATCH`` items or more where the batch allows
    (one image at least), their number a multiple of ``cpu_pool.CHUNK_COUNT_MULTIPLE`` where the
    batch allows; a function of the geometry alone."""
    per_image = max(geom.C * geom.R * geom.S, geom.K) * geom.P * geom.Q * itemsize
    balanced = -(-geom.N // CONV_ITEMS_PER_BATCH)
    return cpu_pool.even_chunk_size(geom.N, max(1, min(geom.N, balanced, COL_BYTES // per_image)))


def _conv_args(geom: ConvGeometry):
    """The geometry as the positional ints the im2col/col2im kernels take."""
    return (geom.R, geom.S, geom.P, geom.Q, geom.stride[0], geom.stride[1],
            geom.pad[0], geom.pad[1], geom.dilation[0], geom.dilation[1])


def _pool_args(geom: PoolGeometry):
    """The geometry as the positional ints the pooling kernels take."""
    return (geom.R, geom.S, geom.stride[0], geom.stride[1], geom.pad[0], geom.pad[1])


def _column_buffer(rows: int, cols: int, dtype) -> np.ndarray:
    """This thread's (rows + 1, cols) column buffer whose last row is ones (the bias row)."""
    buf = _thread_buffer("col", (rows + 1, cols), dtype)
    buf[rows] = 1
    return buf


class _Chunks(cpu_pool.Chunks):
    """``cpu_pool.Chunks`` sized for a convolution or for pooling."""

    @classmethod
    def for_conv(cls, geom: ConvGeometry, dtype) -> "_Chunks":
        """Chunks of ``_chunk_size`` images for a convolution."""
        return cls(geom.N, _chunk_size(geom, dtype.itemsize))

    @classmethod
    def balanced(cls, batch: int) -> "_Chunks":
        """``ITEMS_PER_THREAD`` chunks per thread (pooling: no buffers to bound)."""
        return cls(batch, max(1, -(-batch // (ITEMS_PER_THREAD * cpu_pool.threads()))))


class CPUBackend(Backend):
    """NumPy arrays; Numba kernels for pooling, the activations, Dropout and the data movement of
    im2col; BLAS for the GEMMs. Every op shares its work among ``cpu_pool``'s threads."""

    name = "cpu"
    xp = np

    # --- convolution ------------------------------------------------------

    def conv_algorithm(self, op: str, geom: ConvGeometry) -> str:
        """What runs for ``op`` on ``geom``: Winograd F(2x2, 3x3) where ``_use_winograd`` says so;
        else im2col (or col2im) around one BLAS GEMM per image, or for backward-filter of small
        images one per chunk of images (``_filter_strategy``)."""
        if op in WINOGRAD_MIN_CHANNELS and _use_winograd(op, geom):
            return "winograd F(2x2,3x3)"
        if op == "backward_filter" and _filter_strategy(geom) == "chunk":
            return "im2col+gemm per chunk (K-major dy)"
        return {"forward": "im2col+gemm per image (bias row)",
                "backward_data": "gemm+col2im per image"}.get(op, "im2col+gemm per image")

    def conv2d_forward(self, x, w, b, geom: ConvGeometry, activation=None):
        check_conv_activation(activation)
        arrays = {"x": (x, geom.x_shape), "w": (w, geom.w_shape)}
        if b is not None:
            arrays["b"] = (b, (geom.K,))
        dtype = self.check_operands("conv2d_forward", arrays)
        x = np.ascontiguousarray(x)
        if _use_winograd("forward", geom):
            return wino.winograd_forward(x, w, b, geom, activation)
        CRS, PQ = geom.C * geom.R * geom.S, geom.P * geom.Q
        # [W | b]: with a row of ones under the column matrix, the GEMM adds the bias.
        w_bias = np.empty((geom.K, CRS + 1), dtype)
        w_bias[:, :CRS] = w.reshape(geom.K, CRS)
        w_bias[:, CRS] = 0 if b is None else b
        y = np.empty((geom.N, geom.K, PQ), dtype)
        args = _conv_args(geom)
        relu = activation == "relu"

        def work(chunk, images):
            kern.conv_forward_images(x, images.start, images.stop, w_bias, _column_buffer(CRS, PQ, dtype), y,
                                     relu, *args)

        _Chunks.for_conv(geom, dtype).run(work)
        return y.reshape(geom.y_shape)

    def conv2d_backward_data(self, dy, w, geom: ConvGeometry):
        dtype = self.check_operands("conv2d_backward_data", {"dy": (dy, geom.y_shape), "w": (w, geom.w_shape)})
        if _use_winograd("backward_data", geom):
            return wino.winograd_backward_data(np.ascontiguousarray(dy), w, geom)
        CRS, PQ = geom.C * geom.R * geom.S, geom.P * geom.Q
        wt = np.ascontiguousarray(w).reshape(geom.K, CRS).T
        dy3 = np.ascontiguousarray(dy).reshape(geom.N, geom.K, PQ)
        dx = np.empty(geom.x_shape, dtype)
        args = _conv_args(geom)

        def work(chunk, images):
            kern.conv_backward_data_images(wt, dy3, images.start, images.stop,
                                           _column_buffer(CRS, PQ, dtype)[:CRS], dx, *args)

        _Chunks.for_conv(geom, dtype).run(work)
        return dx

    def conv2d_backward_filter(self, dy, x, geom: ConvGeometry):
        self.check_operands("conv2d_backward_filter", {"dy": (dy, geom.y_shape), "x": (x, geom.x_shape)})
        if _use_winograd("backward_filter", geom):
            return wino.winograd_backward_filter(np.ascontiguousarray(dy), np.ascontiguousarray(x), geom)[0]
        return self._backward_pass(dy, x, None, geom, need_dx=False, with_bias=False, relu_output=None)[1]

    def conv2d_backward(self, dy, x, w, geom: ConvGeometry, need_dx=True, with_bias=True, relu_output=None):
        """All of a convolution's gradients (see ``Backend.conv2d_backward``): one im2col pass over
        the images (``_backward_pass``); where Winograd runs backward-filter or backward-data
        (``_use_winograd``), each gradient by the op that runs it (Winograd's backward-filter
        yields the bias gradient too), each applying the ReLU mask as it reads dy; only
        im2col's backward-data beside Winograd's backward-filter takes dy masked in a pass of its
        own (``relu_backward``)."""
        arrays = {"dy": (dy, geom.y_shape), "x": (x, geom.x_shape), "w": (w, geom.w_shape)}
        if relu_output is not None:
            arrays["relu_output"] = (relu_output, geom.y_shape)
        self.check_operands("conv2d_backward", arrays)
        winograd_filter = _use_winograd("backward_filter", geom)
        winograd_data = need_dx and _use_winograd("backward_data", geom)
        if not winograd_filter and not winograd_data:
            return self._backward_pass(dy, x, w, geom, need_dx, with_bias, relu_output)
        dy = np.ascontiguousarray(dy)
        mask = None if relu_output is None else np.ascontiguousarray(relu_output)
        if winograd_filter:
            dw, db = wino.winograd_backward_filter(dy, np.ascontiguousarray(x), geom, mask)
        else:
            _, dw, db = self._backward_pass(dy, x, None, geom, need_dx=False, with_bias=with_bias,
                                            relu_output=mask)
        dx = None
        if winograd_data:
            dx = wino.winograd_backward_data(dy, w, geom, mask)
        elif need_dx:
            if mask is not None:
                # im2col's backward-data takes no mask: dy masked once, into a buffer kept from
                # call to call (a fresh array each training step would page-fault its way into
                # memory again: digits step, one thread, 1600 -> 340 minor faults per step).
                dy = self._relu_backward_into(dy, mask, _thread_buffer("relu_masked_dy", dy.shape, dy.dtype))
            dx = self.conv2d_backward_data(dy, w, geom)
        return dx, dw, (db if with_bias else None)

    def _backward_pass(self, dy, x, w, geom: ConvGeometry, need_dx, with_bias, relu_output):
        """(dx or None, dw, db or None) from checked operands, in one pass over the images
        (``w`` may be None when ``need_dx`` is false).

        One ``cpu_kernels.conv_backward_images`` call per chunk of images, which
        does, per image (per chunk of images for ``_filter_strategy`` "chunk"): dy, with
        the ReLU mask [relu_output > 0] applied as it is copied, as a K-major
        matrix g (K, PQ); im2col; one GEMM [dW | db]^T += [col; 1] @ g^T (the
        bias gradient is the product with the column buffer's row of ones, so dy
        is not read again for it; the transposed product, (CRS+1, K), runs
        1.1-1.5x faster in OpenBLAS than g @ [col; 1]^T on the shapes of
        ``gpucnn bench``); then dx = col2im(W^T @ g) through the same buffer.
        One partial sum per chunk, added up in chunk order: the result does not
        depend on which thread ran which chunk.
        """
        dtype = dy.dtype
        x = np.ascontiguousarray(x)
        K, CRS, PQ = geom.K, geom.C * geom.R * geom.S, geom.P * geom.Q
        rows = CRS + 1 if with_bias else CRS  # the column rows the filter GEMM reads: [col; 1] or col
        dy3 = np.ascontiguousarray(dy).reshape(geom.N, K, PQ)
        y3 = None if relu_output is None else np.ascontiguousarray(relu_output).reshape(geom.N, K, PQ)
        wt = np.ascontiguousarray(w).reshape(K, CRS).T if need_dx else None
        dx = np.empty(geom.x_shape, dtype) if need_dx else None
        args = _conv_args(geom)
        chunks = _Chunks.for_conv(geom, dtype)
        partial = np.zeros((chunks.count, rows, K), dtype)

        per_image = _filter_strategy(geom) == "image"

        def work(chunk, images):
            cols = PQ if per_image else len(images) * PQ  # one image's columns, or the chunk's
            kern.conv_backward_images(dy3, y3, x, wt, images.start, images.stop, per_image,
                                      _column_buffer(CRS, cols, dtype), _thread_buffer("k_major", (K, cols), dtype),
                                      _thread_buffer("dw", (rows, K), dtype), partial[chunk], dx, *args)

        chunks.run(work)
        total = partial.sum(axis=0)
        dw = np.ascontiguousarray(total[:CRS].T).reshape(geom.w_shape)
        return dx, dw, (total[CRS].copy() if with_bias else None)

    # --- pooling ----------------------------------------------------------

    def max_pool2d_forward(self, x, geom: PoolGeometry):
        dtype = self.check_operands("max_pool2d_forward", {"x": (x, geom.x_shape)})
        x = np.ascontiguousarray(x)
        y = np.empty(geom.y_shape, dtype)
        argmax = np.empty(geom.y_shape, np.int32)
        args = _pool_args(geom)
        _Chunks.balanced(geom.N).slices(lambda xs, ys, am: kern.max_pool2d_forward(xs, *args, ys, am), x, y, argmax)
        return y, argmax

    def max_pool2d_backward(self, dy, argmax, geom: PoolGeometry):
        """See ``Backend``. The kernel drops (and counts) any argmax outside the input plane, so an
        argmax from elsewhere cannot write out of bounds; this raises ValueError if there was one."""
        dtype = self.check_operands("max_pool2d_backward", {"dy": (dy, geom.y_shape)})
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32 or argmax.shape != geom.y_shape:
            raise TypeError(
                f"max_pool2d_backward: argmax must be an int32 array of shape {geom.y_shape} "
                f"(from max_pool2d_forward), got {getattr(argmax, 'dtype', type(argmax).__name__)} "
                f"{getattr(argmax, 'shape', '')}"
            )
        dx = np.empty(geom.x_shape, dtype)
        outside = []
        _Chunks.balanced(geom.N).slices(lambda *a: outside.append(kern.max_pool2d_backward(*a)),
                                        np.ascontiguousarray(dy), np.ascontiguousarray(argmax), dx)
        if sum(outside):
            raise ValueError(f"max_pool2d_backward: argmax holds indices outside [0, {geom.H * geom.W}) "
                             f"of the {geom.H}x{geom.W} input plane")
        return dx

    def avg_pool2d_forward(self, x, geom: PoolGeometry):
        dtype = self.check_operands("avg_pool2d_forward", {"x": (x, geom.x_shape)})
        y = np.empty(geom.y_shape, dtype)
        args = _pool_args(geom)
        _Chunks.balanced(geom.N).slices(lambda xs, ys: kern.avg_pool2d_forward(xs, *args, ys),
                                        np.ascontiguousarray(x), y)
        return y

    def avg_pool2d_backward(self, dy, geom: PoolGeometry):
        dtype = self.check_operands("avg_pool2d_backward", {"dy": (dy, geom.y_shape)})
        dx = np.empty(geom.x_shape, dtype)
        args = _pool_args(geom)
        _Chunks.balanced(geom.N).slices(lambda dys, dxs: kern.avg_pool2d_backward(dys, *args, dxs),
                                        np.ascontiguousarray(dy), dx)
        return dx

    # --- dense ------------------------------------------------------------

    def matmul(self, a, b):
        """See ``Backend``. Blocks of the product's rows (``_matmul_rows``) are shared among the
        backend's threads, each one single-threaded BLAS call: a GEMM outside the pool would run
        BLAS's own threads, which spin after each call and take the cores from ours (measured,
        the digits CNN's Dense forward and backward at two threads beside a busy process:
        19.2 ms median through NumPy's two BLAS threads, 0.79 ms here)."""
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == b.ndim == 2
                and a.dtype == b.dtype and a.dtype in self.float_dtypes):
            return super().matmul(a, b)
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: a {a.shape} and b {b.shape} do not chain (a's columns must be b's rows)")
        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
        _Chunks(a.shape[0], _matmul_rows(a.shape[0], a.shape[1], b.shape[1])).run(
            lambda chunk, rows: np.matmul(a[rows.start:rows.stop], b, out=out[rows.start:rows.stop]))
        return out

    # --- batch normalisation ----------------------------------------------
    # Channel sums: one item per channel, summed by one thread (the result does not depend on
    # the thread count); the elementwise passes: items of whole (n, c) planes.

    @staticmethod
    def _plane_chunks(x) -> "_Chunks":
        """The (n, c) planes of NCHW ``x`` in items of about ``ELEMENTWISE_ITEM`` elements."""
        plane = x.shape[2] * x.shape[3]
        return _Chunks(x.shape[0] * x.shape[1], max(1, ELEMENTWISE_ITEM // max(1, plane)))

    def batchnorm2d_moments(self, x):
        if not (self._float_arrays(x) and x.ndim == 4):
            return super().batchnorm2d_moments(x)
        x = np.ascontiguousarray(x)
        mean, var = np.empty(x.shape[1]), np.empty(x.shape[1])
        _Chunks(x.shape[1], 1).spans(kern.channel_moments, x, mean, var)
        return mean.astype(x.dtype), var.astype(x.dtype)

    def batchnorm2d_normalize(self, x, mean, inv_std, gamma, beta):
        if not (self._float_arrays(x) and x.ndim == 4 and self._float_arrays(inv_std, gamma, beta)
                and gamma.dtype == x.dtype and isinstance(mean, np.ndarray)):
            return super().batchnorm2d_normalize(x, mean, inv_std, gamma, beta)
        x = np.ascontiguousarray(x)
        x_hat, y = np.empty_like(x), np.empty_like(x)
        self._plane_chunks(x).spans(kern.batchnorm_normalize, x, mean.astype(x.dtype), inv_std, gamma, beta, x_hat, y)
        return y, x_hat

    def batchnorm2d_backward(self, dy, x_hat, scale, training: bool):
        if not (training and self._float_arrays(dy, x_hat) and dy.ndim == 4 and isinstance(scale, np.ndarray)
                and scale.dtype == dy.dtype):
            return super().batchnorm2d_backward(dy, x_hat, scale, training)
        dy, x_hat = np.ascontiguousarray(dy), np.ascontiguousarray(x_hat)
        C = dy.shape[1]
        sum_dy, sum_dy_xhat = np.empty(C), np.empty(C)
        _Chunks(C, 1).spans(kern.channel_grad_sums, dy, x_hat, sum_dy, sum_dy_xhat)
        m = dy.size // C
        dx = np.empty_like(dy)
        self._plane_chunks(dy).spans(kern.batchnorm_backward_data, dy, x_hat, scale,
                                     (sum_dy / m).astype(dy.dtype), (sum_dy_xhat / m).astype(dy.dtype), dx)
        return dx, sum_dy_xhat.astype(dy.dtype), sum_dy.astype(dy.dtype)

    # --- elementwise ------------------------------------------------------

    def _float_arrays(self, *arrays) -> bool:
        """Whether the arrays are NumPy arrays of one float dtype and one shape (what the kernels take);
        anything else goes to the ``xp`` defaults, which serve every dtype as before."""
        first = arrays[0]
        return all(isinstance(a, np.ndarray) and a.dtype == first.dtype and a.shape == first.shape
                   for a in arrays) and first.dtype in self.float_dtypes

    def relu_forward(self, x):
        if not self._float_arrays(x):
            return super().relu_forward(x)
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        _Chunks(x.size, ELEMENTWISE_ITEM).spans(kern.relu_forward, x.reshape(-1), y.reshape(-1))
        return y

    def relu_backward(self, dy, y, guided: bool = False):
        if not self._float_arrays(dy, y):
            return super().relu_backward(dy, y, guided)
        return self._relu_backward_into(dy, y, np.empty(dy.shape, dy.dtype), guided)

    @staticmethod
    def _relu_backward_into(dy, y, dx, guided: bool = False):
        """``relu_backward`` written into dx (C-contiguous): dy, y, dx NumPy float arrays of one
        shape and dtype; returns dx."""
        dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
        _Chunks(dy.size, ELEMENTWISE_ITEM).spans(kern.relu_backward, dy.reshape(-1), y.reshape(-1),
                                                 dx.reshape(-1), bool(guided))
        return dx

    def leaky_relu_forward(self, x, negative_slope: float):
        if not self._float_arrays(x):
            return super().leaky_relu_forward(x, negative_slope)
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        _Chunks(x.size, ELEMENTWISE_ITEM).spans(kern.leaky_relu_forward, x.reshape(-1), y.reshape(-1),
                                                x.dtype.type(negative_slope))
        return y

    def leaky_relu_backward(self, dy, x, negative_slope: float):
        if not self._float_arrays(dy, x):
            return super().leaky_relu_backward(dy, x, negative_slope)
        dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
        dx = np.empty_like(dy)
        _Chunks(dy.size, ELEMENTWISE_ITEM).spans(kern.leaky_relu_backward, dy.reshape(-1), x.reshape(-1),
                                                 dx.reshape(-1), dy.dtype.type(negative_slope))
        return dx

    def dropout_forward(self, x, rng, p: float):
        if not self._float_arrays(x):
            return super().dropout_forward(x, rng, p)
        x = np.ascontiguousarray(x)
        stream, key1 = rng.next_stream(x.size)
        y, scale = np.empty_like(x), np.empty_like(x)
        kept = x.dtype.type(1.0 / (1.0 - p))  # as the default's float64 division cast to x's dtype
        _Chunks(x.size, ELEMENTWISE_ITEM).spans(counter_rng.keep_and_scale, x.reshape(-1), y.reshape(-1),
                                                scale.reshape(-1), stream, key1, counter_rng.keep_threshold(p), kept)
        return y, scale
