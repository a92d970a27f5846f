"""Numba kernels of the ``cpu`` backend: the loops around the BLAS GEMMs, and pooling.

Convolution runs as im2col + one GEMM (see ``cpu.py``); the kernels here move
data between the NCHW tensors and the column matrix, and never call BLAS
themselves, so the Numba threads (``prange``) and the BLAS threads never run
at the same time and together never exceed the cores.

Layouts used by the convolution kernels, for a chunk of ``nb`` images starting
at image ``n0``:

- column matrix ``col`` (C*R*S, nb*P*Q): row ``(c*R + r)*S + s`` holds, for
  every image i of the chunk and output position (p, q), the input value
  ``x[n0+i, c, p*sh - ph + r*dh, q*sw - pw + s*dw]`` (zero in the padding) at
  column ``(i*P + p)*Q + q``;
- "K-major" outputs ``(K, nb*P*Q)``: what ``W (K, CRS) @ col`` produces, the
  NCHW output with the channel axis moved in front of the batch.

Every parallel loop is over independent output rows or planes, so no two
threads write the same element. Each kernel is compiled once per dtype
(float32 and float64) and cached on disk.
"""

from numba import njit, prange


@njit(cache=True, inline="always")
def valid_range(out_size, stride, offset, size):
    """Output positions ``o`` in ``[lo, hi)`` that read inside the image.

    An output position o reads input index ``o*stride + offset``; the result is
    the range where ``0 <= o*stride + offset < size``, clipped to ``[0, out_size)``.
    Positions below ``lo`` and from ``hi`` on fall in the padding.
    """
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (size - 1 - offset) // stride + 1
    hi = max(0, min(hi, out_size))
    lo = min(lo, hi)
    return lo, hi


# --- convolution: im2col / col2im and the layout changes around the GEMM ------

@njit(parallel=True, cache=True)
def im2col(x, n0, col, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """Fill ``col`` (C*R*S, nb*P*Q) from images ``x[n0 : n0+nb]`` of x (N, C, H, W).

    One task per (row, image) pair writes one contiguous run of P*Q values, so
    the tasks are independent; padding positions are written as zero.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    PQ = P * Q
    nb = col.shape[1] // PQ
    for task in prange(C * R * S * nb):
        row = task // nb
        i = task - row * nb
        c = row // (R * S)
        r = (row // S) % R
        s = row % S
        out = col[row, i * PQ:(i + 1) * PQ]
        plane = x[n0 + i, c]
        plo, phi = valid_range(P, sh, r * dh - ph, H)
        qlo, qhi = valid_range(Q, sw, s * dw - pw, W)
        out[:plo * Q] = 0
        out[phi * Q:] = 0
        for p in range(plo, phi):
            h = p * sh + r * dh - ph
            o = p * Q
            for q in range(qlo):
                out[o + q] = 0
            for q in range(qlo, qhi):
                out[o + q] = plane[h, q * sw + s * dw - pw]
            for q in range(qhi, Q):
                out[o + q] = 0


@njit(parallel=True, cache=True)
def col2im(dcol, n0, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """Overwrite ``dx[n0 : n0+nb]`` (of dx (N, C, H, W)) with the sum of ``dcol`` entries.

    The adjoint of ``im2col``: every column-matrix entry is added back to the
    input cell it was read from. One task per (image, channel) plane owns that
    plane of dx, so overlapping windows never race.
    """
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    PQ = P * Q
    nb = dcol.shape[1] // PQ
    for task in prange(nb * C):
        i = task // C
        c = task - i * C
        plane = dx[n0 + i, c]
        plane[:, :] = 0
        for r in range(R):
            plo, phi = valid_range(P, sh, r * dh - ph, H)
            for s in range(S):
                qlo, qhi = valid_range(Q, sw, s * dw - pw, W)
                src = dcol[(c * R + r) * S + s, i * PQ:(i + 1) * PQ]
                for p in range(plo, phi):
                    h = p * sh + r * dh - ph
                    o = p * Q
                    for q in range(qlo, qhi):
                        plane[h, q * sw + s * dw - pw] += src[o + q]


@njit(parallel=True, cache=True)
def k_major_to_nchw(ycol, n0, y, b):
    """``y[n0+i, k, :] = ycol[k, i*PQ : (i+1)*PQ] + b[k]``: ycol (K, nb*PQ) -> y (N, K, PQ)."""
    K, PQ = y.shape[1], y.shape[2]
    nb = ycol.shape[1] // PQ
    for task in prange(nb * K):
        i = task // K
        k = task - i * K
        y[n0 + i, k, :] = ycol[k, i * PQ:(i + 1) * PQ] + b[k]


@njit(parallel=True, cache=True)
def nchw_to_k_major(dy, n0, out):
    """``out[k, i*PQ : (i+1)*PQ] = dy[n0+i, k, :]``: dy (N, K, PQ) -> out (K, nb*PQ)."""
    K, PQ = dy.shape[1], dy.shape[2]
    nb = out.shape[1] // PQ
    for task in prange(K * nb):
        k = task // nb
        i = task - k * nb
        out[k, i * PQ:(i + 1) * PQ] = dy[n0 + i, k, :]


# --- pooling: one task per (n, c) plane ------------------------------------------

@njit(parallel=True, cache=True)
def max_pool2d_forward(x, R, S, sh, sw, ph, pw, y, argmax):
    """y[n,c,p,q] = max of the window, argmax = flat index h*W + w of its first maximum.

    x (N, C, H, W) -> y (N, C, P, Q), argmax (N, C, P, Q) int32. Windows are
    clipped to the image, so padding never wins; a NaN wins over numbers (the
    first NaN of the window), so NaNs propagate as in PyTorch.
    """
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    for task in prange(N * C):
        n = task // C
        c = task - n * C
        plane = x[n, c]
        for p in range(P):
            h0 = p * sh - ph
            hlo, hhi = max(h0, 0), min(h0 + R, H)
            for q in range(Q):
                w0 = q * sw - pw
                wlo, whi = max(w0, 0), min(w0 + S, W)
                best = plane[hlo, wlo]
                where = hlo * W + wlo
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        v = plane[h, w]
                        if v > best or (v != v and best == best):
                            best = v
                            where = h * W + w
                y[n, c, p, q] = best
                argmax[n, c, p, q] = where


@njit(parallel=True, cache=True)
def max_pool2d_backward(dy, argmax, dx):
    """dx[n, c, argmax[n,c,j]] += dy[n,c,j]: dy, argmax (N, C, P*Q) -> dx (N, C, H*W), overwritten.

    The caller has checked ``0 <= argmax < H*W``.
    """
    N, C, PQ = dy.shape
    for task in prange(N * C):
        n = task // C
        c = task - n * C
        plane = dx[n, c]
        plane[:] = 0
        for j in range(PQ):
            plane[argmax[n, c, j]] += dy[n, c, j]


@njit(parallel=True, cache=True)
def avg_pool2d_forward(x, R, S, sh, sw, ph, pw, y):
    """y[n,c,p,q] = (sum of the window's in-image cells) / (R*S): x (N, C, H, W) -> y (N, C, P, Q)."""
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    scale = 1.0 / (R * S)
    for task in prange(N * C):
        n = task // C
        c = task - n * C
        plane = x[n, c]
        for p in range(P):
            h0 = p * sh - ph
            hlo, hhi = max(h0, 0), min(h0 + R, H)
            for q in range(Q):
                w0 = q * sw - pw
                wlo, whi = max(w0, 0), min(w0 + S, W)
                acc = 0.0
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        acc += plane[h, w]
                y[n, c, p, q] = acc * scale


@njit(parallel=True, cache=True)
def avg_pool2d_backward(dy, R, S, sh, sw, ph, pw, dx):
    """Each window adds dy[n,c,p,q]/(R*S) to its in-image cells: dy (N, C, P, Q) -> dx (N, C, H, W), overwritten."""
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    scale = 1.0 / (R * S)
    for task in prange(N * C):
        n = task // C
        c = task - n * C
        plane = dx[n, c]
        plane[:, :] = 0
        for p in range(P):
            h0 = p * sh - ph
            hlo, hhi = max(h0, 0), min(h0 + R, H)
            for q in range(Q):
                w0 = q * sw - pw
                wlo, whi = max(w0, 0), min(w0 + S, W)
                g = dy[n, c, p, q] * scale
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        plane[h, w] += g
