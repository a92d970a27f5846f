"""Numba kernels of the ``cpu`` backend: the loops around the BLAS GEMMs, pooling and the activations.

(Dropout's kernel lives in ``counter_rng.py``, beside the hash it computes.)

Convolution runs as im2col + one GEMM per image (per chunk of images for
some backward-filter shapes; see ``cpu.py``); the kernels here move data
between the NCHW tensors and the column matrix, and ``conv_*_images`` run
a work item's whole loop over its images, GEMMs included (``np.dot``,
which Numba compiles to a BLAS call), so that the backend's threads take
the GIL once per work item (see "a work item's images" below).

Layouts used by the convolution kernels, for a chunk of ``nb`` images starting
at image ``n0`` (``nb`` = 1 for the per-image GEMMs):

- column matrix ``col`` (C*R*S, nb*P*Q): row ``(c*R + r)*S + s`` holds, for
  every image i of the chunk and output position (p, q), the input value
  ``x[n0+i, c, p*sh - ph + r*dh, q*sw - pw + s*dw]`` (zero in the padding) at
  column ``(i*P + p)*Q + q``;
- "K-major" ``(K, nb*P*Q)``: an NCHW tensor's chunk with the channel axis
  moved in front of the batch (the per-chunk backward-filter GEMM's dy).

Threads: each kernel is serial and compiled ``nogil=True``; the backend
runs several of them at once on different images from a pool of Python
threads (``cpu_pool.py``), with BLAS single-threaded meanwhile. Numba's own
parallel loops (``prange``) were measured and rejected: Numba's default
threading layer is GNU OpenMP, whose idle workers spin after every parallel
loop; that spin takes a core from the OpenBLAS GEMM that follows, and
OpenBLAS's idle workers do the same back.
Measured in an earlier design (one GEMM per 2 MiB chunk; float32, N=64,
C=32 14x14 -> K=64, 3x3, pad 1; min of 15 runs on a 2-core VM at load
average ~1.5; forward / backward-data / backward-filter in ms):

- ``prange`` kernels, default OpenMP, 2 BLAS threads:   63.9 / 68.0 / 60.1
- ``prange`` kernels, ``OMP_WAIT_POLICY=PASSIVE``:        6.0 /  5.5 /  6.3
- single-threaded kernels, 2 BLAS threads:               6.7 /  5.4 /  6.0

The passive wait policy only helps when it is set before the process loads
libgomp (PyTorch ships its own and may load it first), so the backend does
not depend on it; its own threads sleep when idle.

Direct loops instead of im2col + GEMM were measured too and lost on every
shape tried (one thread, CPU time, ms, forward / backward-data /
backward-filter): C=1 28x28 -> K=32 3x3: direct 17.8 / 13.6 / 15.5 against
2.9 / 1.9 / 2.8 for im2col + GEMM; C=32 14x14 -> K=64: 345 / 286 / 277
against 10.4 / 10.5 / 12.4. OpenBLAS's packed micro-kernels beat a Numba
loop nest even at C*R*S = 9, so the backend has no direct path.

Indexing: the convolution kernels address the arrays flat (``x.ravel()``,
``col.ravel()``) and cast each index to ``uint64``. Numba wraps a negative
signed index around (``a[-1]``), which costs a compare per access and keeps
LLVM from vectorising the copy loops; an unsigned index skips that. The
indices are non-negative by construction (``valid_range`` clips every loop to
the cells inside the image), and the test-suite runs these kernels with
``NUMBA_BOUNDSCHECK=1`` to prove they stay in bounds. Every array passed in
must be C-contiguous (``ravel`` of any other array is a copy, and writes to
it would be lost); ``cpu.py`` guarantees that. Measured on the same
machine (one thread, float32, N=64, 3x3, pad 1), this made im2col 2-4x
faster than the same loops over 2-D slices: 2.4 vs 9.2 ms at C=32 14x14,
4.4 vs 7.5 ms at C=32 20x20.
"""

import numpy as np
from numba import njit, uint64


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

@njit(cache=True, nogil=True)
def im2col(x, n0, col, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """Fill ``col`` (C*R*S, nb*P*Q) from images ``x[n0 : n0+nb]`` of x (N, C, H, W).

    One task per (row, image) pair writes one contiguous run of P*Q values, so
    the tasks are independent. Within a run, output rows p outside
    ``valid_range`` and the columns q outside it are padding and written as
    zero; the rest is a strided copy of one input row (contiguous when sw = 1).
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    PQ = P * Q
    ncols = col.shape[1]
    nb = ncols // PQ
    xf = x.ravel()
    cf = col.ravel()
    for task in range(C * R * S * nb):
        row = task // nb
        i = task - row * nb
        c = row // (R * S)
        r = (row // S) % R
        s = row % S
        plo, phi = valid_range(P, sh, r * dh - ph, H)
        qlo, qhi = valid_range(Q, sw, s * dw - pw, W)
        out0 = row * ncols + i * PQ                                  # start of this run in col
        in0 = ((n0 + i) * C + c) * H * W + qlo * sw + s * dw - pw    # plane start + column of q=qlo
        for o in range(out0, out0 + plo * Q):
            cf[uint64(o)] = 0
        for o in range(out0 + phi * Q, out0 + PQ):
            cf[uint64(o)] = 0
        for p in range(plo, phi):
            o = out0 + p * Q
            for q in range(qlo):
                cf[uint64(o + q)] = 0
            for q in range(qhi, Q):
                cf[uint64(o + q)] = 0
            src = uint64(in0 + (p * sh + r * dh - ph) * W)
            dst = uint64(o + qlo)
            if sw == 1:
                for j in range(qhi - qlo):
                    cf[dst + uint64(j)] = xf[src + uint64(j)]
            else:
                for j in range(qhi - qlo):
                    cf[dst + uint64(j)] = xf[src + uint64(j * sw)]


@njit(cache=True, nogil=True)
def col2im(dcol, n0, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """Overwrite ``dx[n0 : n0+nb]`` (of dx (N, C, H, W)) with the sum of ``dcol`` entries.

    The adjoint of ``im2col``: every in-image column-matrix entry is added back
    to the input cell it was read from (padding entries are dropped). One task
    per (image, channel) plane owns that plane of dx, so overlapping windows
    never race.
    """
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    PQ = P * Q
    ncols = dcol.shape[1]
    nb = ncols // PQ
    df = dcol.ravel()
    xf = dx.ravel()
    for task in range(nb * C):
        i = task // C
        c = task - i * C
        plane0 = ((n0 + i) * C + c) * H * W
        for o in range(plane0, plane0 + H * W):
            xf[uint64(o)] = 0
        for r in range(R):
            plo, phi = valid_range(P, sh, r * dh - ph, H)
            for s in range(S):
                qlo, qhi = valid_range(Q, sw, s * dw - pw, W)
                run0 = ((c * R + r) * S + s) * ncols + i * PQ + qlo
                in0 = plane0 + qlo * sw + s * dw - pw
                for p in range(plo, phi):
                    src = uint64(run0 + p * Q)
                    dst = uint64(in0 + (p * sh + r * dh - ph) * W)
                    if sw == 1:
                        for j in range(qhi - qlo):
                            xf[dst + uint64(j)] += df[src + uint64(j)]
                    else:
                        for j in range(qhi - qlo):
                            xf[dst + uint64(j * sw)] += df[src + uint64(j)]


@njit(cache=True, nogil=True)
def to_k_major(dy, mask, masked, n0, out):
    """``out[k, i*PQ : (i+1)*PQ] = dy[n0+i, k, :]``: dy (N, K, PQ) -> out (K, nb*PQ); with
    ``masked``, of ``dy * [mask > 0]`` (mask (N, K, PQ): a ReLU's output y; not read otherwise).

    The gradient through a ReLU, written where the GEMMs want it, in the same
    pass as the copy. A masked entry is ``dy * 0`` (as NumPy's ``dy * (y > 0)``:
    -0 for a negative dy, NaN for a NaN), so the result has the bits of the
    unfused ReLU layer's backward. With nb = 1 the K-major layout is one
    image's (K, PQ) plane.
    """
    K, PQ = dy.shape[1], dy.shape[2]
    ncols = out.shape[1]
    nb = ncols // PQ
    src_f = dy.ravel()
    mask_f = mask.ravel()
    dst_f = out.ravel()
    for task in range(K * nb):
        k = task // nb
        i = task - k * nb
        src = uint64(((n0 + i) * K + k) * PQ)
        dst = uint64(k * ncols + i * PQ)
        for j in range(PQ):
            g = src_f[src + uint64(j)]
            dst_f[dst + uint64(j)] = g if not masked or mask_f[src + uint64(j)] > 0 else g * 0


# --- convolution: a work item's images, GEMMs included, in one call -------------------
# What a pool thread runs per chunk of images. The GEMMs are ``np.dot(a, b, out)``,
# which Numba compiles to a call into BLAS (SciPy's ``cython_blas``: an OpenBLAS of
# its own beside NumPy's, held at one thread inside ``cpu_pool.parallel`` as NumPy's
# is). One call per chunk, not a few Numba calls, a ``np.matmul`` and a NumPy ``+=``
# per image from Python: each of those takes the GIL for a few microseconds, and
# where the per-image GEMM is small the pool's threads queued for it (the digits
# CNN's first layer, 1 -> 32 channels at 28x28, ran slower at two threads than at one).
# Both BLAS builds here are OpenBLAS (SciPy's 0.3.30, NumPy's 0.3.31, SkylakeX kernels)
# and gave the same bits as ``np.matmul`` on the convolutions of the tests and the bench.
# Measured on one thread ("Intel(R) Xeon(R) Processor", 2-core KVM guest, best of 7):
# ``np.dot`` in Numba against ``np.matmul``: 32x10 @ 10x784 (D1) 4.1-5.0 against
# 5.4-6.1 us; 256x1153 @ 1153x196 (R2) 954-960 against 911-924 us (3-5% slower).

@njit(cache=True, nogil=True)
def conv_forward_images(x, n0, n1, w_bias, col, y, relu, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """y[n] = [W | b] @ [col(x[n]); 1] for n in [n0, n1), clamped by ``relu_in_place`` when ``relu``.

    x (N, C, H, W); w_bias (K, C*R*S + 1); col (C*R*S + 1, P*Q), the caller's
    buffer whose last row is ones (the bias row); y (N, K, P*Q). Each image's
    output is clamped while it is still in cache.
    """
    rows = col.shape[0] - 1
    for n in range(n0, n1):
        im2col(x, n, col[:rows], R, S, P, Q, sh, sw, ph, pw, dh, dw)
        np.dot(w_bias, col, y[n])
        if relu:
            relu_in_place(y[n].ravel())


@njit(cache=True, nogil=True)
def conv_backward_data_images(wt, dy, n0, n1, dcol, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """dx[n] = col2im(W^T @ dy[n]) for n in [n0, n1): wt (C*R*S, K), dy (N, K, P*Q),
    dcol (C*R*S, P*Q) scratch, dx (N, C, H, W)."""
    for n in range(n0, n1):
        np.dot(wt, dy[n], dcol)
        col2im(dcol, n, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw)


@njit(cache=True, nogil=True)
def _conv_gradients(x, g, n0, col, out, wt, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """out = [col; 1] @ g^T (or col @ g^T when ``out`` has C*R*S rows) for the images from n0 that
    g (K, nb*P*Q) holds, col filled here; then, unless dx is None, their dx = col2im(W^T @ g)
    through col."""
    crs = col.shape[0] - 1
    im2col(x, n0, col[:crs], R, S, P, Q, sh, sw, ph, pw, dh, dw)
    np.dot(col[:out.shape[0]], g.T, out)
    if dx is not None:
        np.dot(wt, g, col[:crs])
        col2im(col[:crs], n0, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw)


@njit(cache=True, nogil=True)
def conv_backward_images(dy, y, x, wt, n0, n1, per_image, col, g_buf, term, partial, dx,
                         R, S, P, Q, sh, sw, ph, pw, dh, dw):
    """A chunk's share of a convolution's gradients: images [n0, n1).

    dy, y (N, K, P*Q) (y, the fused ReLU's output, or None: dy is masked by
    [y > 0] as ``to_k_major`` reads it); x (N, C, H, W); wt
    (C*R*S, K) or None and dx (N, C, H, W) or None (no data gradient); col
    (C*R*S + 1, cols) with a last row of ones; partial (rows, K) receives
    [dW | db]^T (rows = C*R*S + 1) or dW^T (rows = C*R*S).

    ``per_image``: per image, g = dy[n] (masked into g_buf (K, P*Q)), the
    GEMM into term (rows, K), then ``partial += term``, image by image.
    Otherwise one GEMM for the chunk, straight into partial, on g_buf
    (K, (n1-n0)*P*Q), dy's chunk in K-major order (one unmasked image: dy[n0]).
    """
    if per_image:
        for n in range(n0, n1):
            g = dy[n]
            if y is not None:
                to_k_major(dy, y, True, n, g_buf)
                g = g_buf
            _conv_gradients(x, g, n, col, term, wt, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw)
            partial += term
    else:
        g = dy[n0]
        if y is not None:
            to_k_major(dy, y, True, n0, g_buf)
            g = g_buf
        elif n1 - n0 > 1:
            to_k_major(dy, dy, False, n0, g_buf)
            g = g_buf
        _conv_gradients(x, g, n0, col, partial, wt, dx, R, S, P, Q, sh, sw, ph, pw, dh, dw)


# --- pooling: one task per (n, c) plane; flat unsigned indexing as above ----------

@njit(cache=True, inline="always")
def _window(o, stride, pad, size, extent):
    """[lo, hi): the cells of an image axis of ``extent`` that the pooling window of output
    position ``o`` covers (``size`` cells from ``o*stride - pad``, clipped to the image)."""
    start = o * stride - pad
    return max(start, 0), min(start + size, extent)


@njit(cache=True, inline="always")
def _max_pool_plane(xf, plane0, H, W, R, S, sh, sw, ph, pw, yf, af, out0, P, Q, nan_rule):
    """Max-pool one plane into ``yf[out0:out0+P*Q]``, ``af`` likewise; return whether a NaN was read.

    Without ``nan_rule`` a NaN never wins (``v > best`` is false for it); the
    caller reruns a plane that read one with ``nan_rule``, under which the
    first NaN of a window wins over numbers. The winner is picked with
    selects, not a branch, since on real data the comparison is unpredictable.
    """
    saw_nan = False
    for p in range(P):
        hlo, hhi = _window(p, sh, ph, R, H)
        for q in range(Q):
            wlo, whi = _window(q, sw, pw, S, W)
            where = hlo * W + wlo
            best = xf[uint64(plane0 + where)]
            for h in range(hlo, hhi):
                for w in range(wlo, whi):
                    v = xf[uint64(plane0 + h * W + w)]
                    saw_nan |= v != v
                    wins = v > best
                    if nan_rule:
                        wins = wins | ((v != v) & (best == best))
                    best = v if wins else best
                    where = h * W + w if wins else where
            yf[uint64(out0 + p * Q + q)] = best
            af[uint64(out0 + p * Q + q)] = where
    return saw_nan


@njit(cache=True, inline="always")
def _max_pool_plane_2x2(xf, plane0, W, sh, sw, yf, af, out0, P, Q):
    """``_max_pool_plane`` for an unpadded 2x2 window (every window inside the image), without
    the NaN rule: the four cells unrolled, compared in the same row-major order. Returns
    whether the plane may hold a NaN (true for every plane that does)."""
    saw_nan = False
    for p in range(P):
        top = p * sh * W
        for q in range(Q):
            i00 = top + q * sw
            a = xf[uint64(plane0 + i00)]
            b = xf[uint64(plane0 + i00 + 1)]
            c = xf[uint64(plane0 + i00 + W)]
            d = xf[uint64(plane0 + i00 + W + 1)]
            # The sum is NaN if a cell is (and for inf + -inf: a false alarm, which costs the
            # plane a rerun with the NaN rule and changes nothing). Measured on a copy of this
            # loop with stride 2 (N=128, C=32, 28x28, one thread): 1.2 ms, against 1.5 with no
            # NaN check at all and 1.8 with a separate NaN scan of each plane.
            total = (a + b) + (c + d)
            saw_nan |= total != total
            best, where = a, i00
            best, where = (b, i00 + 1) if b > best else (best, where)
            best, where = (c, i00 + W) if c > best else (best, where)
            best, where = (d, i00 + W + 1) if d > best else (best, where)
            yf[uint64(out0 + p * Q + q)] = best
            af[uint64(out0 + p * Q + q)] = where
    return saw_nan


@njit(cache=True, nogil=True)
def max_pool2d_forward(x, R, S, sh, sw, ph, pw, y, argmax):
    """y[n,c,p,q] = max of the window, argmax = flat index h*W + w of its first maximum.

    x (N, C, H, W) -> y (N, C, P, Q), argmax (N, C, P, Q) int32. Windows are
    clipped to the image, so padding never wins; a NaN wins over numbers (the
    first NaN of the window), so NaNs propagate as in PyTorch.

    One pass per plane: the NaN rule costs two more comparisons per cell,
    which made the kernel 3x slower (10.1 against 3.6 ms, N=64, C=32, 28x28,
    2x2), so each plane is pooled without it while noting whether it read a
    NaN, and only such a plane is pooled again with it. Unpadded 2x2 windows
    (the usual CNN pooling) run an unrolled loop, stride 2 a compiled-in constant.
    """
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    xf, yf, af = x.ravel(), y.ravel(), argmax.ravel()
    unrolled = R == 2 and S == 2 and ph == 0 and pw == 0
    for task in range(N * C):
        plane0 = task * H * W
        out0 = task * P * Q
        if unrolled and sh == 2 and sw == 2:
            # The stride as a constant lets LLVM vectorise the loop: 1.25 against 1.77 ms
            # (N=128, C=32, 28x28, one thread).
            saw_nan = _max_pool_plane_2x2(xf, plane0, W, 2, 2, yf, af, out0, P, Q)
        elif unrolled:
            saw_nan = _max_pool_plane_2x2(xf, plane0, W, sh, sw, yf, af, out0, P, Q)
        else:
            saw_nan = _max_pool_plane(xf, plane0, H, W, R, S, sh, sw, ph, pw, yf, af, out0, P, Q, False)
        if saw_nan:
            _max_pool_plane(xf, plane0, H, W, R, S, sh, sw, ph, pw, yf, af, out0, P, Q, True)


@njit(cache=True, nogil=True)
def max_pool2d_backward(dy, argmax, dx):
    """dx[n, c, argmax[n,c,j]] += dy[n,c,j]: dy, argmax (N, C, P, Q) -> dx (N, C, H, W), overwritten.

    Returns how many argmax values lay outside ``[0, H*W)``; their dy is
    dropped, not written out of bounds (the caller raises).

    Plane by plane: a plane of dx is zeroed and at once receives its
    scatter, while it is in the L1 cache, so memory sees one write of dx.
    Zeroing the whole of dx first and scattering after (two passes) was
    measured slower, and so was writing each window's cells once (dy to
    the argmax, zero elsewhere: a compare per cell) -- 5.9 against 1.7 ms
    for the latter, one thread, float32, N=128, C=32, 28x28, 2x2.
    """
    HW = dx.shape[2] * dx.shape[3]
    PQ = dy.shape[2] * dy.shape[3]
    dyf, af, dxf = dy.ravel(), argmax.ravel(), dx.ravel()
    outside = 0
    for task in range(dx.shape[0] * dx.shape[1]):
        plane0 = task * HW
        for i in range(plane0, plane0 + HW):
            dxf[uint64(i)] = 0
        for j in range(task * PQ, (task + 1) * PQ):
            a = af[uint64(j)]
            if 0 <= a < HW:
                dxf[uint64(plane0 + a)] += dyf[uint64(j)]
            else:
                outside += 1
    return outside


@njit(cache=True, nogil=True)
def avg_pool2d_forward(x, R, S, sh, sw, ph, pw, y):
    """y[n,c,p,q] = (sum of the window's in-image cells) / (R*S): x (N, C, H, W) -> y (N, C, P, Q)."""
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    scale = 1.0 / (R * S)
    xf, yf = x.ravel(), y.ravel()
    for task in range(N * C):
        plane0 = task * H * W
        out0 = task * P * Q
        for p in range(P):
            hlo, hhi = _window(p, sh, ph, R, H)
            for q in range(Q):
                wlo, whi = _window(q, sw, pw, S, W)
                acc = 0.0
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        acc += xf[uint64(plane0 + h * W + w)]
                yf[uint64(out0 + p * Q + q)] = acc * scale


@njit(cache=True, nogil=True)
def avg_pool2d_backward(dy, R, S, sh, sw, ph, pw, dx):
    """Each window adds dy[n,c,p,q]/(R*S) to its in-image cells: dy (N, C, P, Q) -> dx (N, C, H, W), overwritten."""
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    scale = 1.0 / (R * S)
    dyf, dxf = dy.ravel(), dx.ravel()
    dxf[:] = 0
    for task in range(N * C):
        plane0 = task * H * W
        out0 = task * P * Q
        for p in range(P):
            hlo, hhi = _window(p, sh, ph, R, H)
            for q in range(Q):
                wlo, whi = _window(q, sw, pw, S, W)
                g = dyf[uint64(out0 + p * Q + q)] * scale
                for h in range(hlo, hhi):
                    for w in range(wlo, whi):
                        dxf[uint64(plane0 + h * W + w)] += g


# --- activations: elements [start, stop) of flat arrays, one float dtype ----------------
# Unsigned indices, as above: with signed ones these loops ran at half the speed (not vectorised).

@njit(cache=True, nogil=True)
def relu_in_place(y):
    """y = y * (y > 0) (``relu_forward``'s formula: the same bits), y (size,).

    The clamp of a convolution's output with a fused ReLU, on one image's
    plane while it is in cache. ``relu_forward(y, y, ...)`` does the same, but
    with two arrays that may alias LLVM leaves the loop scalar: 3x slower
    (128 planes of 32x784 floats, one thread: 0.94 against 2.96 ms).
    """
    for i in range(y.size):
        v = y[i]
        y[i] = v * (v > 0)


@njit(cache=True, nogil=True)
def relu_forward(x, y, start, stop):
    """y[i] = x[i] * (x[i] > 0) for i in [start, stop): x, y (size,).

    The product, not a max, as ``Backend.relu_forward`` computes it: a NaN stays NaN.
    """
    for i in range(uint64(start), uint64(stop)):
        v = x[i]
        y[i] = v * (v > 0)


@njit(cache=True, nogil=True)
def relu_backward(dy, y, dx, guided, start, stop):
    """dx[i] = dy[i] * (y[i] > 0), and with ``guided`` * (dy[i] > 0), for i in [start, stop): all (size,)."""
    if guided:
        for i in range(uint64(start), uint64(stop)):
            g = dy[i]
            dx[i] = g * ((y[i] > 0) & (g > 0))
    else:
        for i in range(uint64(start), uint64(stop)):
            dx[i] = dy[i] * (y[i] > 0)


@njit(cache=True, nogil=True)
def leaky_relu_forward(x, y, slope, start, stop):
    """y[i] = x[i] if x[i] > 0 else x[i] * slope, for i in [start, stop): x, y (size,), slope of their dtype."""
    for i in range(uint64(start), uint64(stop)):
        v = x[i]
        y[i] = v if v > 0 else v * slope


@njit(cache=True, nogil=True)
def leaky_relu_backward(dy, x, dx, slope, start, stop):
    """dx[i] = dy[i] if x[i] > 0 else dy[i] * slope, for i in [start, stop): all (size,)."""
    for i in range(uint64(start), uint64(stop)):
        g = dy[i]
        dx[i] = g if x[i] > 0 else g * slope


# --- batch normalisation: channels [c0, c1) or (n, c) planes [p0, p1) of NCHW arrays ------------
# The per-channel sums run in float64 with ``reassoc`` (LLVM may reorder the
# additions, so it vectorises them; one thread sums a whole channel, so the
# result does not depend on the thread count). float32 x (128, 32, 28, 28),
# one thread: mean and variance 0.9 ms against 4.6 ms for NumPy's.

@njit(cache=True, nogil=True, fastmath={"reassoc"})
def channel_moments(x, mean, var, c0, c1):
    """mean[c], var[c] (biased) of x[:, c] over N, H, W, for c in [c0, c1): x (N, C, H, W) -> (C,), (C,).

    Two passes (the sum, then the squared deviations from the mean); the
    second reads the channel from the cache the first brought it into.
    """
    N, C, H, W = x.shape
    HW = uint64(H * W)
    xf = x.ravel()
    for c in range(c0, c1):
        total = 0.0
        for n in range(N):
            plane0 = uint64(n * C + c) * HW
            for i in range(plane0, plane0 + HW):
                total += xf[i]
        mu = total / (N * HW)
        squares = 0.0
        for n in range(N):
            plane0 = uint64(n * C + c) * HW
            for i in range(plane0, plane0 + HW):
                d = xf[i] - mu
                squares += d * d
        mean[c] = mu
        var[c] = squares / (N * HW)


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def channel_grad_sums(dy, x_hat, sum_dy, sum_dy_xhat, c0, c1):
    """sum_dy[c] = sum of dy[:, c], sum_dy_xhat[c] = sum of dy[:, c] * x_hat[:, c], for c in [c0, c1).

    dy, x_hat (N, C, H, W) -> (C,), (C,); each product rounded to the arrays' dtype, as NumPy's.
    """
    N, C, H, W = dy.shape
    HW = uint64(H * W)
    dyf, xf = dy.ravel(), x_hat.ravel()
    for c in range(c0, c1):
        s, sx = 0.0, 0.0
        for n in range(N):
            plane0 = uint64(n * C + c) * HW
            for i in range(plane0, plane0 + HW):
                g = dyf[i]
                s += g
                sx += g * xf[i]
        sum_dy[c] = s
        sum_dy_xhat[c] = sx


@njit(cache=True, nogil=True)
def batchnorm_normalize(x, mean, inv_std, gamma, beta, x_hat, y, p0, p1):
    """x_hat = (x - mean[c]) * inv_std[c], y = x_hat * gamma[c] + beta[c] on planes [p0, p1).

    x, x_hat, y (N, C, H, W); mean, inv_std, gamma, beta (C,), all of one dtype;
    the operations in the order of ``Backend.batchnorm2d_normalize``'s, so
    each element rounds as NumPy rounds it there.
    """
    C = x.shape[1]
    HW = uint64(x.shape[2] * x.shape[3])
    xf, hf, yf = x.ravel(), x_hat.ravel(), y.ravel()
    for plane in range(p0, p1):
        c = plane % C
        mu, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        plane0 = uint64(plane) * HW
        for i in range(plane0, plane0 + HW):
            h = (xf[i] - mu) * s
            hf[i] = h
            yf[i] = h * g + b


@njit(cache=True, nogil=True)
def batchnorm_backward_data(dy, x_hat, scale, mean_dy, mean_dy_xhat, dx, p0, p1):
    """dx = scale[c] * (dy - mean_dy[c] - x_hat * mean_dy_xhat[c]) on planes [p0, p1).

    dy, x_hat, dx (N, C, H, W); scale, mean_dy, mean_dy_xhat (C,), one dtype;
    the operations in ``Backend.batchnorm2d_backward``'s order.
    """
    C = dy.shape[1]
    HW = uint64(dy.shape[2] * dy.shape[3])
    dyf, hf, dxf = dy.ravel(), x_hat.ravel(), dx.ravel()
    for plane in range(p0, p1):
        c = plane % C
        s, m, mx = scale[c], mean_dy[c], mean_dy_xhat[c]
        plane0 = uint64(plane) * HW
        for i in range(plane0, plane0 + HW):
            dxf[i] = s * ((dyf[i] - m) - hf[i] * mx)
