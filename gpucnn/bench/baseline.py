"""The NumPy baseline the benchmarks compare against when PyTorch is not importable.

Convolution is textbook im2col + one matmul over the whole batch (no
chunking, no Numba): the column matrix is gathered with
``sliding_window_view`` and one copy, the GEMM is NumPy's BLAS. Pooling
works on the same window views. This is what a NumPy programmer writes in
an afternoon; ``gpucnn``'s ``cpu`` backend should beat it.

All functions follow ``Backend``'s op signatures and shapes (see
``gpucnn/backend/base.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..backend.geometry import ConvGeometry, PoolGeometry


def _windows(x, R, S, stride, pad, dilation=(1, 1), fill=0.0):
    """x (N, C, H, W) -> a read-only view (N, C, P, Q, R, S) of every (dilated) window of the padded x."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    span = ((R - 1) * dh + 1, (S - 1) * dw + 1)
    v = sliding_window_view(x, span, axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


def _scatter_windows(cols, g, out_shape, dtype):
    """Sum window contributions back into an image: cols (N, C, P, Q, R, S) -> (N, C, H, W).

    One strided slice-add per (r, s): output (p, q) of tap (r, s) lands at
    padded position (p*sh + r*dh, q*sw + s*dw).
    """
    (sh, sw), (ph, pw) = g.stride, g.pad
    dh, dw = getattr(g, "dilation", (1, 1))
    N, C, H, W = out_shape
    padded = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype)
    for r in range(g.R):
        for s in range(g.S):
            padded[:, :, r * dh:r * dh + sh * (g.P - 1) + 1:sh,
                   s * dw:s * dw + sw * (g.Q - 1) + 1:sw] += cols[:, :, :, :, r, s]
    return padded[:, :, ph:ph + H, pw:pw + W]


def _im2col(x, g: ConvGeometry):
    """x (N, C, H, W) -> col (C*R*S, N*P*Q), a copy."""
    v = _windows(x, g.R, g.S, g.stride, g.pad, g.dilation)
    return v.transpose(1, 4, 5, 0, 2, 3).reshape(g.C * g.R * g.S, g.N * g.P * g.Q)


def _k_major(dy, g: ConvGeometry):
    """dy (N, K, P, Q) -> (K, N*P*Q)."""
    return dy.transpose(1, 0, 2, 3).reshape(g.K, g.N * g.P * g.Q)


def conv2d_forward(x, w, b, g: ConvGeometry):
    """y (N, K, P, Q) = w (K, C*R*S) @ im2col(x), bias added."""
    y = (w.reshape(g.K, -1) @ _im2col(x, g)).reshape(g.K, g.N, g.P, g.Q).transpose(1, 0, 2, 3)
    if b is not None:
        y = y + b[None, :, None, None]
    return np.ascontiguousarray(y)


def conv2d_backward_data(dy, w, g: ConvGeometry):
    """dx (N, C, H, W) = col2im(w^T @ dy)."""
    dcol = (w.reshape(g.K, -1).T @ _k_major(dy, g)).reshape(g.C, g.R, g.S, g.N, g.P, g.Q)
    return np.ascontiguousarray(_scatter_windows(dcol.transpose(3, 0, 4, 5, 1, 2), g, g.x_shape, dy.dtype))


def conv2d_backward_filter(dy, x, g: ConvGeometry):
    """dw (K, C, R, S) = dy (K, N*P*Q) @ im2col(x)^T."""
    return (_k_major(dy, g) @ _im2col(x, g).T).reshape(g.w_shape)


def max_pool2d_forward(x, g: PoolGeometry):
    """(y, argmax) with argmax the flat ``h*W + w`` of each window's first maximum (padding is -inf)."""
    v = _windows(x, g.R, g.S, g.stride, g.pad, fill=-np.inf).reshape(g.N, g.C, g.P, g.Q, g.R * g.S)
    local = v.argmax(axis=-1)
    y = np.take_along_axis(v, local[..., None], axis=-1)[..., 0]
    h = np.arange(g.P)[:, None] * g.stride[0] - g.pad[0] + local // g.S
    w = np.arange(g.Q)[None, :] * g.stride[1] - g.pad[1] + local % g.S
    return np.ascontiguousarray(y), (h * g.W + w).astype(np.int32)


def max_pool2d_backward(dy, argmax, g: PoolGeometry):
    """dx: every dy added at its window's argmax (one ``bincount`` over the flat input)."""
    HW = g.H * g.W
    plane = np.arange(g.N * g.C).reshape(g.N, g.C, 1, 1) * HW
    dx = np.bincount((plane + argmax).ravel(), weights=dy.ravel(), minlength=g.N * g.C * HW)
    return dx.astype(dy.dtype).reshape(g.x_shape)


def avg_pool2d_forward(x, g: PoolGeometry):
    """y: each window's sum divided by R*S (padding counts as zeros)."""
    v = _windows(x, g.R, g.S, g.stride, g.pad)
    return np.ascontiguousarray(v.sum(axis=(-2, -1)) / x.dtype.type(g.R * g.S))


def avg_pool2d_backward(dy, g: PoolGeometry):
    """dx: dy / (R*S) spread over each window."""
    share = np.broadcast_to((dy / dy.dtype.type(g.R * g.S))[..., None, None], dy.shape + (g.R, g.S))
    return np.ascontiguousarray(_scatter_windows(share, g, g.x_shape, dy.dtype))
