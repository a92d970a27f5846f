"""Plain NumPy loop references for the seven backend ops, shared by every backend's tests.

Each function is the definition of its op written as directly as possible: a
Python loop over output positions, vectorised only over the batch and channel
axes, with float64 accumulation. They are slow and obviously right; the tests
compare the backends' kernels against them on small shapes.

Hyper-parameters are ints or (vertical, horizontal) pairs, as in the layers.
Every function returns float64 arrays (argmax is int32).
"""

import numpy as np


def _pair(v):
    return (v, v) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _out_size(size, kernel, stride, pad, dilation=1):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _zero_pad(x, ph, pw):
    """(N, C, H, W) -> (N, C, H + 2*ph, W + 2*pw) float64 with a border of zeros."""
    return np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _window(p, q, R, S, stride, dilation):
    """Index of the (R, S) window of output (p, q) inside the zero-padded input."""
    (sh, sw), (dh, dw) = stride, dilation
    return (slice(p * sh, p * sh + dh * (R - 1) + 1, dh),
            slice(q * sw, q * sw + dw * (S - 1) + 1, dw))


# --- convolution -------------------------------------------------------------

def conv2d_forward_ref(x, w, b=None, stride=1, padding=0, dilation=1):
    """y[n,k,p,q] = b[k] + sum_{c,r,s} xpad[n, c, p*sh + r*dh, q*sw + s*dw] * w[k,c,r,s].

    x (N, C, H, W), w (K, C, R, S), b (K,) or None -> y (N, K, P, Q) float64.
    """
    stride, (ph, pw), dilation = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P = _out_size(H, R, stride[0], ph, dilation[0])
    Q = _out_size(W, S, stride[1], pw, dilation[1])
    xp = _zero_pad(x, ph, pw)
    w64 = np.asarray(w, dtype=np.float64)
    y = np.zeros((N, K, P, Q))
    for p in range(P):
        for q in range(Q):
            rows, cols = _window(p, q, R, S, stride, dilation)
            patch = xp[:, :, rows, cols]                                 # (N, C, R, S)
            y[:, :, p, q] = np.einsum("ncrs,kcrs->nk", patch, w64)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_backward_data_ref(dy, w, x_shape, stride=1, padding=0, dilation=1):
    """dx = d(sum y*dy)/dx: each output position spreads dy[n,:,p,q] . w over its window.

    dy (N, K, P, Q), w (K, C, R, S), x_shape (N, C, H, W) -> dx (N, C, H, W) float64.
    """
    stride, (ph, pw), dilation = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x_shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2:]
    w64 = np.asarray(w, dtype=np.float64)
    dy64 = np.asarray(dy, dtype=np.float64)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for p in range(P):
        for q in range(Q):
            rows, cols = _window(p, q, R, S, stride, dilation)
            dxp[:, :, rows, cols] += np.einsum("nk,kcrs->ncrs", dy64[:, :, p, q], w64)
    return dxp[:, :, ph:ph + H, pw:pw + W]


def conv2d_backward_filter_ref(dy, x, kernel_size, stride=1, padding=0, dilation=1):
    """dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * xpad[n, c, p*sh + r*dh, q*sw + s*dw].

    dy (N, K, P, Q), x (N, C, H, W), kernel_size (R, S) -> dw (K, C, R, S) float64.
    """
    stride, (ph, pw), dilation = _pair(stride), _pair(padding), _pair(dilation)
    R, S = _pair(kernel_size)
    N, K, P, Q = dy.shape
    C = x.shape[1]
    xp = _zero_pad(x, ph, pw)
    dy64 = np.asarray(dy, dtype=np.float64)
    dw = np.zeros((K, C, R, S))
    for p in range(P):
        for q in range(Q):
            rows, cols = _window(p, q, R, S, stride, dilation)
            dw += np.einsum("nk,ncrs->kcrs", dy64[:, :, p, q], xp[:, :, rows, cols])
    return dw


# --- pooling -------------------------------------------------------------------

def _pool_args(kernel_size, stride, padding):
    R, S = _pair(kernel_size)
    stride = (R, S) if stride is None else _pair(stride)
    return R, S, stride, _pair(padding)


def max_pool2d_forward_ref(x, kernel_size, stride=None, padding=0):
    """Max over each window, and where it was: the first maximum in row-major window order.

    x (N, C, H, W) -> (y (N, C, P, Q) float64, argmax (N, C, P, Q) int32 flat index h*W + w).
    Padding never wins: only cells inside the image are candidates. A NaN in a
    window wins over numbers (the first NaN), so NaNs propagate as in PyTorch.
    """
    R, S, (sh, sw), (ph, pw) = _pool_args(kernel_size, stride, padding)
    N, C, H, W = x.shape
    P, Q = _out_size(H, R, sh, ph), _out_size(W, S, sw, pw)
    x64 = np.asarray(x, dtype=np.float64)
    y = np.zeros((N, C, P, Q))
    argmax = np.zeros((N, C, P, Q), dtype=np.int32)
    for p in range(P):
        for q in range(Q):
            best = np.full((N, C), np.nan)
            where = np.full((N, C), -1)
            for r in range(R):
                for s in range(S):
                    h, w = p * sh - ph + r, q * sw - pw + s
                    if not (0 <= h < H and 0 <= w < W):
                        continue
                    v = x64[:, :, h, w]
                    first = where < 0
                    wins = first | (v > best) | (np.isnan(v) & ~np.isnan(best))
                    best = np.where(wins, v, best)
                    where = np.where(wins, h * W + w, where)
            y[:, :, p, q] = best
            argmax[:, :, p, q] = where
    return y, argmax


def max_pool2d_backward_ref(dy, argmax, x_shape):
    """dx[n,c].flat[argmax[n,c,p,q]] += dy[n,c,p,q]: dy (N, C, P, Q) -> dx (N, C, H, W) float64."""
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W))
    dy64 = np.asarray(dy, dtype=np.float64)
    for n in range(N):
        for c in range(C):
            np.add.at(dx[n, c], argmax[n, c].ravel(), dy64[n, c].ravel())
    return dx.reshape(N, C, H, W)


def avg_pool2d_forward_ref(x, kernel_size, stride=None, padding=0):
    """Mean over each window of the zero-padded input, divided by R*S (padding counts).

    x (N, C, H, W) -> y (N, C, P, Q) float64.
    """
    R, S, (sh, sw), (ph, pw) = _pool_args(kernel_size, stride, padding)
    N, C, H, W = x.shape
    P, Q = _out_size(H, R, sh, ph), _out_size(W, S, sw, pw)
    xp = _zero_pad(x, ph, pw)
    y = np.zeros((N, C, P, Q))
    for p in range(P):
        for q in range(Q):
            rows, cols = _window(p, q, R, S, (sh, sw), (1, 1))
            y[:, :, p, q] = xp[:, :, rows, cols].sum(axis=(2, 3)) / (R * S)
    return y


def avg_pool2d_backward_ref(dy, x_shape, kernel_size, stride=None, padding=0):
    """Each window spreads dy/(R*S) over its cells: dy (N, C, P, Q) -> dx (N, C, H, W) float64."""
    R, S, (sh, sw), (ph, pw) = _pool_args(kernel_size, stride, padding)
    N, C, H, W = x_shape
    P, Q = dy.shape[2:]
    dy64 = np.asarray(dy, dtype=np.float64)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for p in range(P):
        for q in range(Q):
            rows, cols = _window(p, q, R, S, (sh, sw), (1, 1))
            dxp[:, :, rows, cols] += dy64[:, :, p, q, None, None] / (R * S)
    return dxp[:, :, ph:ph + H, pw:pw + W]
