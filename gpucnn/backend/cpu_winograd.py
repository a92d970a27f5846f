"""Winograd F(2x2, 3x3) convolution on the CPU: 3x3 filters, stride 1, dilation 1, padding 0..2.

The math (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
------------------------------------------------------------------------------------
The output is cut into 2x2 tiles; tile (ty, tx) covers outputs p = 2ty + {0, 1},
q = 2tx + {0, 1} and reads the 4x4 input patch d whose corner is input cell
(2ty - pad_h, 2tx - pad_w) (zero outside the image). With

    B^T = [[1,  0, -1,  0],      G = [[1,    0,   0 ],      A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],           [1/2,  1/2, 1/2],             [0, 1, -1, -1]]
           [0, -1,  1,  0],           [1/2, -1/2, 1/2],
           [0,  1,  0, -1]]           [0,    0,   1 ]]

the 2x2 output tile of one filter g (3x3) is  y = A^T [(G g G^T) * (B^T d B)] A
(``*`` elementwise), and over the channels the sum moves inside the brackets:
with U[xi] = (G g[k, c] G^T)[xi] and V[xi] = (B^T d[c] B)[xi] for each of the
16 positions xi of the 4x4 transformed tile,

    M[xi] (K, tiles) = U[xi] (K, C) @ V[xi] (C, tiles),   y tile = A^T M A.

Sixteen GEMMs of K x C x tiles replace one of K x 9C x 4*tiles: 2.25x fewer
multiply-adds, and the GEMMs are BLAS's.

Backward-data is the same convolution: dx[c, h, w] = sum_{k,r,s} dy[k, h+pad-r,
w+pad-s] * w[k, c, r, s], i.e. dy (K channels) correlated with the filter
flipped in r and s and transposed to (C, K, 3, 3), with padding 2 - pad (the
input positions h reach output positions h + pad - 2 .. h + pad). So it runs
through the forward routine, with U taken from the flipped, transposed filter.

Backward-filter differentiates the forward's tile formula: sum over tiles of
<dy_t, A^T (U * V_t) A> = <U, sum_t (A dy_t A^T) * V_t>, and U = G g G^T, so

    dU[xi] (K, C) = sum over tiles of Z[xi] (K, tiles) @ V[xi]^T (tiles, C),
    Z = A dy_t A^T (dy_t zero where the tile overhangs P, Q),   dW = G^T dU G.

Ragged edges: a tile that overhangs the output (odd P or Q) reads zeros from
beyond the image and its extra outputs are not written (forward) or have a zero
gradient (backward-filter), so no special case reaches the GEMMs.

Tiling and blocking
-------------------
The batch is cut into chunks of whole images, or where one image is too big
(R1: 64 channels of 56x56) one image cut into bands of tile rows done in turn
(``_Blocking``), sized from the geometry alone so the rounding does not depend
on the thread count. A chunk's transformed input V (16, C, T) and GEMM result
M (16, K, T) (Z for backward-filter), T = the chunk's tiles, stay near
``CHUNK_BYTES`` so they live in the core's L2 cache from the input transform
through the GEMMs to the output transform: no pass over a whole-batch buffer.
The tile axis is the last (contiguous) one of V, M and Z, so each GEMM's wide
dimension is the tiles of all the chunk's images and the transforms walk the
tiles in memory order. The 16 rows of V (and M, Z) lie ``_slots``' pitch
apart, never a multiple of 4 KiB. Backward-filter writes V tile-major instead,
V[xi] as (T, C), so its GEMM Z[xi] (K, T) @ V[xi] (T, C) reads both operands as
they lie (reading V transposed cost it 2x in the GEMM). Measured per chunk
(one thread, float32, us): D2 (5 images, T = 245): input transform 55, output
50, gradient 45, against 143 for the forward GEMMs and 109 for backward-filter's;
J2 (2 images, T = 200): 37, 37, 35 against 108 and 95. So the transforms are
a third to a half of each op, not negligible: see the note above the kernels.
Backward-filter's tile-major input transform, vectorised over the channels
from 32 of them on, took D2's chunk 53 -> 33 us, J2's 38 -> 28, R1's band
(one image, 6 tile rows) 60 -> 49, 32->32 channels at 28x28 35 -> 31.

A fused ReLU's mask is applied where the backward ops read dy (the input
transform's plane fill, the gradient transform's corners), so dy * (y > 0) is
never written out: one pass less over dy, y and the masked copy (12.8 MB each
at 128 x 32 x 28 x 28).
F(4x4, 3x3) would need fewer of both, but its float32 error was measured at
3e-6 to 7.5e-6 of max|y| on random data at C = 32..128 (F(2x2): 2e-7 to 5e-7),
too close to the 1e-5 the backend promises.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from . import cpu_pool
from .base import check_conv_activation
from .geometry import ConvGeometry

# Bytes of a chunk's V and M (or Z) together: under the 2 MiB L2 of the
# measured Xeon with room for U and the scratch planes.
CHUNK_BYTES = 3 * 2**19
# Chunks per batch at least, where the batch allows (as cpu.py's CONV_ITEMS_PER_BATCH).
CHUNKS_PER_BATCH = 8

# Backward-filter's tile-major input transform: from this many input channels on, the one
# vectorised over the channels (``input_transform_tile_major``), below it the scalar pass per
# tile (``input_transform_tile_major_per_plane``). Measured (backward-filter with the bias
# gradient, one thread, batch 64, 3x3 pad 1, ms, scalar / vectorised): C=8 32x32 K=16
# 3.60 / 3.95, C=16 32x32 K=16 5.51 / 5.54, C=16 16x16 K=32 2.24 / 2.31, C=32 16x16 K=8
# 1.83 / 1.59, D2 (C=32) 4.01 / 3.61.
CHANNELS_LAST_MIN_CHANNELS = 32
# Tiles of a tile row whose B^T row combinations the vectorised one takes at once: 4 rows
# of (2 * TILE_SEGMENT + 2) * C values, 18 KiB at C = 64, stay in the L1 cache.
TILE_SEGMENT = 8

# The transforms' matrices (as above); the filter-side ones run in float64 once per call.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# G (x) G, (16, 9): (G g G^T)[a, b] = sum over (r, s) of G[a, r] g[r, s] G[b, s] is row 4a + b of
# this times g flattened. All filters in one (K*C, 9) @ (9, 16) GEMM: 20x faster than G @ w @ G^T
# as a stack of K*C small products (265 us for a 64x32 filter, a serial part of every call).
_GG = np.kron(_G, _G)


def applies(geom: ConvGeometry) -> bool:
    """Whether ``geom`` is a convolution this module computes: 3x3, stride 1, dilation 1, padding 0..2."""
    return ((geom.R, geom.S) == (3, 3) and geom.stride == (1, 1) and geom.dilation == (1, 1)
            and all(0 <= p <= 2 for p in geom.pad))


def _check_applies(geom: ConvGeometry, where: str) -> None:
    """Raise ValueError, naming ``where`` and the geometry, unless ``applies(geom)``."""
    if not applies(geom):
        raise ValueError(f"{where}: Winograd F(2x2,3x3) computes 3x3 convolutions with stride 1, dilation 1 "
                         f"and padding 0..2; got a {geom.R}x{geom.S} filter, stride {geom.stride}, "
                         f"dilation {geom.dilation}, padding {geom.pad}")


def _tiles(P: int, Q: int) -> tuple[int, int]:
    """Tile rows and columns covering a P x Q output with 2x2 tiles."""
    return -(-P // 2), -(-Q // 2)


class _Blocking:
    """How a batch is cut for the transforms and GEMMs: chunks of ``images`` whole images, or,
    where one image's V and M exceed ``CHUNK_BYTES``, chunks of one image cut into bands of
    ``rows`` tile rows (processed in order). A function of the geometry alone."""

    def __init__(self, batch: int, TH: int, TW: int, channels: int, itemsize: int):
        row_bytes = 16 * channels * TW * itemsize       # V and M of one tile row (channels = Cin + Cout)
        self.TH, self.TW = TH, TW
        self.rows = max(1, min(TH, CHUNK_BYTES // row_bytes))
        self.images = 1 if self.rows < TH else cpu_pool.even_chunk_size(
            batch, min(batch, -(-batch // CHUNKS_PER_BATCH), CHUNK_BYTES // (row_bytes * TH)))
        self.chunks = cpu_pool.Chunks(batch, self.images)

    def bands(self):
        """(first tile row, tile rows) of each band of a chunk."""
        return [(ty0, min(self.rows, self.TH - ty0)) for ty0 in range(0, self.TH, self.rows)]


# --- Numba kernels: the tile transforms ------------------------------------------
#
# What vectorises and what does not (measured, D2's chunks, one thread): a loop
# over the tiles of one tile row is too short for SIMD (7 tiles at 14x14), and
# one that writes all 16 rows of V at once has too many possibly-aliasing
# streams for LLVM's runtime checks, so it stays scalar. Where the 16 values
# are sums of a few others the sums therefore run as flat loops over whole
# rows of Z or M (K*T values each, see _add_into), which LLVM vectorises: the
# gradient transform writes only the four corners per tile in scalar code (2.7x
# faster than all 16), the output transform reduces 16 rows to 4 before the
# scalar pass that places the 2x2 tiles (1.6x).
#
# The input transform's tiles overlap (a 4x4 patch every 2 cells). Forward and
# backward-data keep one scalar pass per plane, 16 stores per tile, after the
# plane is copied into a zero-bordered scratch (contiguous row copies) so that
# pass has no bounds checks. Tried and measured no faster (60-65 us against
# 61 per D2 chunk): planes split by row parity at a pitch of exactly 2*TW, so
# that the B column combinations are flat loops over all rows (the last tile
# column redone from the two cells beyond) and the B^T row combinations flat
# loops per channel straight into V; but those are 16 loops of one channel's
# 49 tiles each, 512 per image, and their set-up, alias checks and remainders
# cost what the scalar pass does (writing V alone takes 9.4 us per chunk).
# Vectorising over the channels instead, as backward-filter's tile-major
# transform does, would need V as (T, C) in the forward too, and the GEMM
# U (K, C) @ V^T reads it transposed: 150 -> 223 us per D2 chunk, more than the
# whole transform. Backward-filter's own GEMM wants V as (T, C), so there the
# channels are the loop: ``input_transform_tile_major``.

@njit(cache=True, nogil=True, inline="always")
def _add_into(dst, d0, src, a, b, n):
    """dst[d0 : d0+n] = src[a : a+n] + src[b : b+n] (flat arrays, dst may be src; one vectorisable loop)."""
    d0, a, b = uint64(d0), uint64(a), uint64(b)
    for j in range(uint64(n)):
        dst[d0 + j] = src[a + j] + src[b + j]


@njit(cache=True, nogil=True, inline="always")
def _sub_into(dst, d0, src, a, b, n):
    """dst[d0 : d0+n] = src[a : a+n] - src[b : b+n] (flat arrays, dst may be src; one vectorisable loop)."""
    d0, a, b = uint64(d0), uint64(a), uint64(b)
    for j in range(uint64(n)):
        dst[d0 + j] = src[a + j] - src[b + j]


@njit(cache=True, nogil=True, inline="always")
def _masked(values, relu_output, i, masked):
    """values[i], or with ``masked`` values[i] * (relu_output[i] > 0): ``relu_backward``'s formula
    (the same bits: a NaN stays NaN, a gradient under a zero output becomes a signed zero)."""
    return values[i] * (relu_output[i] > 0) if masked else values[i]


@njit(cache=True, nogil=True)
def _fill_plane(src, mask, masked, src0, H, W, top, left, plane):
    """``plane`` (Hp, Wp) = zeros with the H x W plane at ``src[src0:]`` (flat) copied in at
    (top, left), with ``masked`` src * (mask > 0) (``_masked``; mask flat, src's size);
    ``top`` may be negative: rows falling outside the Hp rows are skipped (a band)."""
    Hp, Wp = plane.shape
    pf = plane.ravel()
    for i in range(Hp * Wp):
        pf[uint64(i)] = 0
    for h in range(max(0, -top), min(H, Hp - top)):
        dst = uint64((top + h) * Wp + left)
        row = uint64(src0 + h * W)
        if masked:
            for j in range(W):
                pf[dst + uint64(j)] = _masked(src, mask, row + uint64(j), True)
        else:  # a plain copy loop, apart: LLVM vectorises it
            for j in range(W):
                pf[dst + uint64(j)] = src[row + uint64(j)]


@njit(cache=True, nogil=True, inline="always")
def _store_patch_transform(pf, r0, Wp, vf, o, pitch):
    """vf[o + xi*pitch] = (B^T d B)[xi] for the 4x4 patch d of the flat plane ``pf`` whose top
    left cell is pf[r0] (rows ``Wp`` apart), xi = 0..15."""
    r0 = uint64(r0)
    r1 = r0 + uint64(Wp)
    r2 = r1 + uint64(Wp)
    r3 = r2 + uint64(Wp)
    # B^T d: rows 0-2, 1+2, 2-1, 1-3, each over the patch's columns 0..3
    a0 = pf[r0] - pf[r2]
    a1 = pf[r0 + uint64(1)] - pf[r2 + uint64(1)]
    a2 = pf[r0 + uint64(2)] - pf[r2 + uint64(2)]
    a3 = pf[r0 + uint64(3)] - pf[r2 + uint64(3)]
    b0 = pf[r1] + pf[r2]
    b1 = pf[r1 + uint64(1)] + pf[r2 + uint64(1)]
    b2 = pf[r1 + uint64(2)] + pf[r2 + uint64(2)]
    b3 = pf[r1 + uint64(3)] + pf[r2 + uint64(3)]
    c0 = pf[r2] - pf[r1]
    c1 = pf[r2 + uint64(1)] - pf[r1 + uint64(1)]
    c2 = pf[r2 + uint64(2)] - pf[r1 + uint64(2)]
    c3 = pf[r2 + uint64(3)] - pf[r1 + uint64(3)]
    d0 = pf[r1] - pf[r3]
    d1 = pf[r1 + uint64(1)] - pf[r3 + uint64(1)]
    d2 = pf[r1 + uint64(2)] - pf[r3 + uint64(2)]
    d3 = pf[r1 + uint64(3)] - pf[r3 + uint64(3)]
    # (.) B: the same combinations of the columns
    o = uint64(o)
    vf[o] = a0 - a2
    vf[o + uint64(pitch)] = a1 + a2
    vf[o + uint64(2 * pitch)] = a2 - a1
    vf[o + uint64(3 * pitch)] = a1 - a3
    vf[o + uint64(4 * pitch)] = b0 - b2
    vf[o + uint64(5 * pitch)] = b1 + b2
    vf[o + uint64(6 * pitch)] = b2 - b1
    vf[o + uint64(7 * pitch)] = b1 - b3
    vf[o + uint64(8 * pitch)] = c0 - c2
    vf[o + uint64(9 * pitch)] = c1 + c2
    vf[o + uint64(10 * pitch)] = c2 - c1
    vf[o + uint64(11 * pitch)] = c1 - c3
    vf[o + uint64(12 * pitch)] = d0 - d2
    vf[o + uint64(13 * pitch)] = d1 + d2
    vf[o + uint64(14 * pitch)] = d2 - d1
    vf[o + uint64(15 * pitch)] = d1 - d3


@njit(cache=True, nogil=True)
def input_transform(x, relu_output, masked, n0, ty0, ph, pw, TW, plane, T, V):
    """V[xi, c*T + i*TH*TW + ty*TW + tx] = (B^T d B)[xi] of the 4x4 patch d of tile (ty0 + ty, tx)
    of image n0+i, for the TH tile rows from ty0: V[xi] as a (C, T) matrix; with ``masked``,
    of x * (relu_output > 0) (relu_output has x's shape; not read otherwise).

    x (N, C, H, W); ``plane`` a (2*TH + 2, 2*TW + 2) scratch; V (16, >= C*T) (``_slots``),
    T = nb*TH*TW tiles of nb images.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    TH = plane.shape[0] // 2 - 1
    nb = T // (TH * TW)
    xf = x.ravel()
    yf = relu_output.ravel()
    vf = V.ravel()
    Wp = plane.shape[1]
    pf = plane.ravel()
    for i in range(nb):
        for c in range(C):
            _fill_plane(xf, yf, masked, ((n0 + i) * C + c) * H * W, H, W, ph - 2 * ty0, pw, plane)
            for ty in range(TH):
                out = c * T + (i * TH + ty) * TW
                for tx in range(TW):
                    _store_patch_transform(pf, 2 * ty * Wp + 2 * tx, Wp, vf, out + tx, V.shape[1])


@njit(cache=True, nogil=True)
def input_transform_tile_major_per_plane(x, n0, ty0, ph, pw, TW, planes, T, V):
    """``input_transform_tile_major``'s V from one scalar pass per tile over all channels (for
    few channels, where that function's loops over the channels are too short to pay).

    x (N, C, H, W); ``planes`` a (C, 2*TH + 2, 2*TW + 2) scratch: all of an image's channels are
    copied first, so that the stores, channel after channel of one tile, are contiguous.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wp = planes.shape[1], planes.shape[2]
    TH = Hp // 2 - 1
    nb = T // (TH * TW)
    xf = x.ravel()
    vf = V.ravel()
    pf = planes.ravel()
    for i in range(nb):
        for c in range(C):
            _fill_plane(xf, xf, False, ((n0 + i) * C + c) * H * W, H, W, ph - 2 * ty0, pw, planes[c])
        for ty in range(TH):
            for tx in range(TW):
                out = ((i * TH + ty) * TW + tx) * C
                for c in range(C):
                    _store_patch_transform(pf, (c * Hp + 2 * ty) * Wp + 2 * tx, Wp, vf, out + c, V.shape[1])


@njit(cache=True, nogil=True)
def _fill_channels_last(x, n, top, left, Hp, Wp, planes):
    """``planes`` (Hp, Wp, C) flat = zeros with image n of x (N, C, H, W) copied in at (top, left),
    channels last; ``top`` may be negative: rows falling outside the Hp rows are skipped (a band).
    The loop over the channels is innermost: contiguous stores, loads a plane apart."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for i in range(uint64(Hp * Wp * C)):
        planes[i] = 0
    xf = x.ravel()
    plane = uint64(H * W)
    for h in range(max(0, -top), min(H, Hp - top)):
        for j in range(W):
            src = uint64((n * C * H + h) * W + j)
            dst = uint64(((top + h) * Wp + left + j) * C)
            for c in range(uint64(C)):
                planes[dst + c] = xf[src + c * plane]


@njit(cache=True, nogil=True)
def input_transform_tile_major(x, n0, ty0, ph, pw, TH, TW, planes, R, T, V):
    """V[xi, (i*TH*TW + ty*TW + tx)*C + c] = (B^T d B)[xi] as ``input_transform`` computes it,
    but V[xi] as a (T, C) matrix: backward-filter's GEMM then reads it untransposed.

    x (N, C, H, W); ``planes`` a ((2*TH + 2) * (2*TW + 2) * C,) and ``R`` a
    (4 * (2*TILE_SEGMENT + 2) * C,) scratch. Each image is copied channels-last into ``planes``,
    so every value below is a loop over the C channels, contiguous in both planes and V: per
    segment of up to ``TILE_SEGMENT`` tiles of a tile row, the B^T row combinations of all its
    columns (4 loops over the segment's plane cells into R, which stays in the L1 cache), then
    per tile the B column combinations (16 loops of C, straight into V's rows).
    """
    C = x.shape[1]
    Wp = 2 * TW + 2
    nb = T // (TH * TW)
    vf = V.ravel()
    pitch = V.shape[1]
    row = Wp * C
    seg = (2 * TILE_SEGMENT + 2) * C    # the distance between two of R's rows
    for i in range(nb):
        _fill_channels_last(x, n0 + i, ph - 2 * ty0, pw, 2 * TH + 2, Wp, planes)
        for ty in range(TH):
            for tx0 in range(0, TW, TILE_SEGMENT):
                tiles = min(TILE_SEGMENT, TW - tx0)
                p = 2 * ty * row + 2 * tx0 * C    # B^T d: rows 0-2, 1+2, 2-1, 1-3 of the 4 plane rows
                n = (2 * tiles + 2) * C
                _sub_into(R, 0, planes, p, p + 2 * row, n)
                _add_into(R, seg, planes, p + row, p + 2 * row, n)
                _sub_into(R, 2 * seg, planes, p + 2 * row, p + row, n)
                _sub_into(R, 3 * seg, planes, p + row, p + 3 * row, n)
                for tx in range(tiles):
                    o = ((i * TH + ty) * TW + tx0 + tx) * C
                    for a in range(4):  # (.) B: the same combinations of the tile's 4 columns
                        q = a * seg + 2 * tx * C
                        _sub_into(vf, o + 4 * a * pitch, R, q, q + 2 * C, C)
                        _add_into(vf, o + (4 * a + 1) * pitch, R, q + C, q + 2 * C, C)
                        _sub_into(vf, o + (4 * a + 2) * pitch, R, q + 2 * C, q + C, C)
                        _sub_into(vf, o + (4 * a + 3) * pitch, R, q + C, q + 3 * C, C)


@njit(cache=True, nogil=True, inline="always")
def _rows_sum3(zf, dst, a, b, c, n):
    """zf[dst : dst+n] = zf[a : a+n] + zf[b : b+n] + zf[c : c+n] (flat; one vectorisable loop)."""
    for j in range(n):
        zf[uint64(dst + j)] = zf[uint64(a + j)] + zf[uint64(b + j)] + zf[uint64(c + j)]


@njit(cache=True, nogil=True, inline="always")
def _rows_diff3(zf, dst, a, b, c, n):
    """zf[dst : dst+n] = zf[a : a+n] - zf[b : b+n] - zf[c : c+n] (flat; one vectorisable loop)."""
    for j in range(n):
        zf[uint64(dst + j)] = zf[uint64(a + j)] - zf[uint64(b + j)] - zf[uint64(c + j)]


@njit(cache=True, nogil=True, inline="always")
def _relu(v, zero):
    """max(v, 0), a NaN staying NaN (as np.maximum)."""
    return zero if v < zero else v


@njit(cache=True, nogil=True)
def output_transform(M, T, n0, ty0, TH, TW, bias, relu, y):
    """y[n0+i, k, 2ty:2ty+2, 2tx:2tx+2] = A^T M[:, k*T + tile] A + bias[k] (then max(., 0) if
    ``relu``), for the TH tile rows from ty0 of T = nb*TH*TW tiles. M (16, >= K*T) is overwritten.

    bias (K,); y (N, K, P, Q): only the outputs inside P x Q are written. A^T M A is taken in
    flat loops over all of M[xi] (K*T values, vectorised) into M[4:8]; a scalar pass then adds
    the bias and puts each 2x2 tile in its place in y.
    """
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    n = K * T
    slot = M.shape[1]         # the distance between two rows of M
    nb = T // (TH * TW)
    mf = M.ravel()
    # A^T m, per column j: s_j = m0j + m1j + m2j into M[j], t_j = m1j - m2j - m3j into M[12 + j]
    for j in range(4):
        _rows_diff3(mf, (12 + j) * slot, (4 + j) * slot, (8 + j) * slot, (12 + j) * slot, n)
        _rows_sum3(mf, j * slot, j * slot, (4 + j) * slot, (8 + j) * slot, n)
    # (.) A: y00 = s0 + s1 + s2, y01 = s1 - s2 - s3, y10 = t0 + t1 + t2, y11 = t1 - t2 - t3 into M[4:8]
    _rows_sum3(mf, 4 * slot, 0, slot, 2 * slot, n)
    _rows_diff3(mf, 5 * slot, slot, 2 * slot, 3 * slot, n)
    _rows_sum3(mf, 6 * slot, 12 * slot, 13 * slot, 14 * slot, n)
    _rows_diff3(mf, 7 * slot, 13 * slot, 14 * slot, 15 * slot, n)
    yf = y.ravel()
    full_tx = Q // 2          # tiles with both columns inside; an odd Q adds one with the left only
    zero = np.zeros(1, y.dtype)[0]
    for i in range(nb):
        for k in range(K):
            b = bias[k]
            plane0 = ((n0 + i) * K + k) * P * Q
            for ty in range(TH):
                src = uint64(4 * slot + k * T + (i * TH + ty) * TW)
                row0 = uint64(plane0 + 2 * (ty0 + ty) * Q)
                second_row = 2 * (ty0 + ty) + 1 < P
                for tx in range(TW):
                    o = src + uint64(tx)
                    y00, y01 = mf[o] + b, mf[o + uint64(slot)] + b
                    y10, y11 = mf[o + uint64(2 * slot)] + b, mf[o + uint64(3 * slot)] + b
                    if relu:
                        y00, y01, y10, y11 = _relu(y00, zero), _relu(y01, zero), _relu(y10, zero), _relu(y11, zero)
                    d = row0 + uint64(2 * tx)
                    yf[d] = y00
                    if tx < full_tx:
                        yf[d + uint64(1)] = y01
                    if second_row:
                        yf[d + uint64(Q)] = y10
                        if tx < full_tx:
                            yf[d + uint64(Q + 1)] = y11


@njit(cache=True, nogil=True)
def _add_row_sums(rows, out):
    """out[k] += sum of rows[k, :] in float64: rows (K, T), out (K,) float64.

    Four partial sums in turn: one running sum would wait on each add's latency.
    """
    K, T = rows.shape
    for k in range(K):
        s0 = s1 = s2 = s3 = 0.0
        for j in range(0, T - 3, 4):
            s0 += rows[k, j]
            s1 += rows[k, j + 1]
            s2 += rows[k, j + 2]
            s3 += rows[k, j + 3]
        for j in range(T - T % 4, T):
            s0 += rows[k, j]
        out[k] += (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _gradient_corners(dy, relu_output, masked, n0, ty0, TH, TW, T, Z):
    """Z[0] = g00, Z[3] = -g01, Z[12] = -g10, Z[15] = g11 for each 2x2 tile g of dy[n0+i, k] in the
    TH tile rows from ty0 (zero beyond P, Q): the corners of A g A^T, its only single-entry values;
    with ``masked``, of dy * (relu_output > 0) (``_masked``).

    dy, relu_output (N, K, P, Q); Z (16, >= K*T), T = nb*TH*TW tiles; only those four rows of Z are written.
    """
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    KT = Z.shape[1]           # the distance between two rows of Z
    nb = T // (TH * TW)
    full_tx = Q // 2          # tiles with both columns inside; an odd Q adds one with the left only
    gf = dy.ravel()
    yf = relu_output.ravel()
    zf = Z.ravel()
    zero = np.zeros(1, Z.dtype)[0]
    for i in range(nb):
        for k in range(K):
            plane0 = ((n0 + i) * K + k) * P * Q
            for ty in range(TH):
                out = uint64(k * T + (i * TH + ty) * TW)
                row0 = uint64(plane0 + 2 * (ty0 + ty) * Q)
                row1 = row0 + uint64(Q)
                second_row = 2 * (ty0 + ty) + 1 < P
                for tx in range(TW):
                    left = row0 + uint64(2 * tx)
                    right = tx < full_tx
                    g00 = _masked(gf, yf, left, masked)
                    g01 = _masked(gf, yf, left + uint64(1), masked) if right else zero
                    g10 = _masked(gf, yf, left + uint64(Q), masked) if second_row else zero
                    g11 = _masked(gf, yf, left + uint64(Q + 1), masked) if second_row and right else zero
                    o = out + uint64(tx)
                    zf[o] = g00
                    zf[o + uint64(3 * KT)] = -g01
                    zf[o + uint64(12 * KT)] = -g10
                    zf[o + uint64(15 * KT)] = g11


@njit(cache=True, nogil=True)
def gradient_transform(dy, relu_output, masked, n0, ty0, TH, TW, T, Z):
    """Z[xi, k*T + tile] = (A g A^T)[xi] of each 2x2 tile g of dy[n0+i, k] in the TH tile rows from
    ty0 (zero beyond P, Q); with ``masked``, of dy * (relu_output > 0) (``_masked``).

    dy, relu_output (N, K, P, Q); Z (16, >= K*T), T = nb*TH*TW tiles. The four corners come from dy (one
    scalar pass); the other twelve entries are sums and differences of them, each a flat loop
    over all of Z[xi] (K*T values) that LLVM vectorises, where a loop per tile row would be too
    short to.
    """
    _gradient_corners(dy, relu_output, masked, n0, ty0, TH, TW, T, Z)
    zf = Z.ravel()
    n = dy.shape[1] * T
    s = Z.shape[1]            # the distance between two rows of Z
    # A g A^T row by row: (u, u+v, u-v, -v) of rows u, v = (g00, g01), (g00+g10, g01+g11),
    # (g00-g10, g01-g11), (-g10, -g11); with Z[3] = -g01 etc. each entry is one add or subtract.
    _sub_into(zf, 1 * s, zf, 0, 3 * s, n)        # g00 + g01
    _add_into(zf, 2 * s, zf, 0, 3 * s, n)        # g00 - g01
    _sub_into(zf, 4 * s, zf, 0, 12 * s, n)       # g00 + g10
    _add_into(zf, 8 * s, zf, 0, 12 * s, n)       # g00 - g10
    _sub_into(zf, 7 * s, zf, 3 * s, 15 * s, n)   # -(g01 + g11)
    _add_into(zf, 11 * s, zf, 3 * s, 15 * s, n)  # -(g01 - g11)
    _sub_into(zf, 13 * s, zf, 12 * s, 15 * s, n)  # -g10 - g11
    _add_into(zf, 14 * s, zf, 12 * s, 15 * s, n)  # -g10 + g11
    _sub_into(zf, 5 * s, zf, 4 * s, 7 * s, n)    # (g00 + g10) + (g01 + g11)
    _add_into(zf, 6 * s, zf, 4 * s, 7 * s, n)    # (g00 + g10) - (g01 + g11)
    _sub_into(zf, 9 * s, zf, 8 * s, 11 * s, n)   # (g00 - g10) + (g01 - g11)
    _add_into(zf, 10 * s, zf, 8 * s, 11 * s, n)  # (g00 - g10) - (g01 - g11)


# --- the three ops ---------------------------------------------------------------

def _slots(name: str, rows: int, cols: int, dtype) -> np.ndarray:
    """This thread's buffer ``name`` as 16 slots of a (rows, cols) matrix: a (16, pitch) buffer,
    row xi holding slot xi's rows*cols values (the kernels view each as the matrix).

    The pitch is rows*cols rounded up to 4 KiB plus 256 bytes: with a pitch that is a multiple of
    4 KiB (T = 768 tiles of 16 channels) the 16 rows the transforms write at once fall in the same
    L1 cache sets and evict each other, which made those shapes 3x slower.
    """
    itemsize = np.dtype(dtype).itemsize
    page = 4096 // itemsize
    pitch = -(-rows * cols // page) * page + 256 // itemsize
    return cpu_pool.thread_buffer(name, (16, pitch), dtype)


def _filter_transform(w, dtype) -> np.ndarray:
    """U (16, Cout, Cin) = (G w[o, i] G^T) of a (Cout, Cin, 3, 3) filter, in float64 then ``dtype``."""
    cout, cin = w.shape[:2]
    with cpu_pool.single_threaded_blas():
        U = _GG @ np.asarray(w, np.float64).reshape(cout * cin, 9).T      # (16, Cout*Cin)
    return U.astype(dtype).reshape(16, cout, cin)


@njit(cache=True, nogil=True)
def convolve_band(x, relu_output, masked, n0, ty0, ph, pw, TW, plane, T, V, U, M, bias, relu, y):
    """One band of a chunk, forward: ``input_transform`` into V, the 16 GEMMs
    M[xi] (Cout, T) = U[xi] (Cout, Cin) @ V[xi] (Cin, T), then ``output_transform`` into y.

    One ``nogil`` call per band, GEMMs included (``np.dot``, BLAS through SciPy as in
    ``cpu_kernels``): driven from Python, the transforms and the batched GEMM took the GIL three
    times per chunk, and two threads waited for each other there. Shapes as in the two transforms;
    U (16, Cout, Cin).
    """
    cin, cout = U.shape[2], U.shape[1]
    TH = plane.shape[0] // 2 - 1
    input_transform(x, relu_output, masked, n0, ty0, ph, pw, TW, plane, T, V)
    for xi in range(16):
        np.dot(U[xi], V[xi, :cin * T].reshape((cin, T)), M[xi, :cout * T].reshape((cout, T)))
    output_transform(M, T, n0, ty0, TH, TW, bias, relu, y)


@njit(cache=True, nogil=True)
def filter_gradient_band(dy, relu_output, masked, n0, ty0, TH, TW, T, Vt, Z, db, dU, band):
    """One band of a chunk, backward-filter, after its input transform into Vt (V[xi] as (T, C)):
    ``gradient_transform`` of dy into Z, the bias gradient (Z[5], the tile sums) added to db (K,)
    float64, and the 16 GEMMs dU[xi] (K, C) = Z[xi] (K, T) @ V[xi] (T, C): written into dU
    (16, K, C) for the first band of an image (ty0 == 0), else into ``band`` (16, K, C) and added
    to dU. One ``nogil`` call, as ``convolve_band``."""
    K, C = dU.shape[1], dU.shape[2]
    gradient_transform(dy, relu_output, masked, n0, ty0, TH, TW, T, Z)
    # Z[5] = (A dy_t A^T)[1, 1] is the sum of the tile: the bias gradient, read while in cache.
    _add_row_sums(Z[5, :K * T].reshape((K, T)), db)
    out = dU if ty0 == 0 else band
    for xi in range(16):
        np.dot(Z[xi, :K * T].reshape((K, T)), Vt[xi, :T * C].reshape((T, C)), out[xi])
    if ty0 > 0:
        dU += band


def _convolve(x, U, bias, pad, out_shape, activation, relu_output=None) -> np.ndarray:
    """y = the 3x3 stride-1 convolution of x (N, Cin, H, W) by the filter whose transform is
    U (16, Cout, Cin), padding ``pad`` (ph, pw), plus ``bias`` (Cout,), then ``activation``;
    y has ``out_shape`` (N, Cout, P, Q). With ``relu_output`` (x's shape), of x * (relu_output > 0)."""
    N, cin = x.shape[:2]
    cout, P, Q = out_shape[1:]
    dtype = x.dtype
    blocking = _Blocking(N, *_tiles(P, Q), cin + cout, dtype.itemsize)
    TW = blocking.TW
    y = np.empty(out_shape, dtype)
    relu = activation == "relu"
    masked = relu_output is not None
    mask = relu_output if masked else x

    def work(chunk, images):
        for ty0, rows in blocking.bands():
            T = len(images) * rows * TW
            V = _slots("winograd_V", cin, T, dtype)
            M = _slots("winograd_M", cout, T, dtype)
            plane = cpu_pool.thread_buffer("winograd_plane", (2 * rows + 2, 2 * TW + 2), dtype)
            convolve_band(x, mask, masked, images.start, ty0, pad[0], pad[1], TW, plane, T, V, U, M,
                          bias, relu, y)

    blocking.chunks.run(work)
    return y


def winograd_forward(x, w, b, geom: ConvGeometry, activation=None) -> np.ndarray:
    """y = act(conv(x, w) + b) by Winograd F(2x2, 3x3).

    x (N, C, H, W), w (K, C, 3, 3), b (K,) or None -> y (N, K, P, Q), all C-contiguous of one
    dtype (float32 or float64); ``geom`` must satisfy ``applies``; activation None or "relu".
    """
    _check_applies(geom, "winograd_forward")
    check_conv_activation(activation, "winograd_forward")
    U = _filter_transform(w, x.dtype)
    bias = np.zeros(geom.K, x.dtype) if b is None else np.ascontiguousarray(b)
    return _convolve(x, U, bias, geom.pad, geom.y_shape, activation)


def winograd_backward_data(dy, w, geom: ConvGeometry, relu_output=None) -> np.ndarray:
    """dx = d(sum y*dy)/dx by Winograd: the forward routine on dy with the flipped, transposed filter.

    dy (N, K, P, Q), w (K, C, 3, 3) -> dx (N, C, H, W); ``geom`` must satisfy ``applies``. With
    ``relu_output`` (dy's shape, C-contiguous: a fused ReLU's output), of dy * (relu_output > 0)
    (``relu_backward``'s mask, applied as dy is read: no pass of its own).
    """
    _check_applies(geom, "winograd_backward_data")
    U = _filter_transform(np.swapaxes(w, 0, 1)[:, :, ::-1, ::-1], dy.dtype)
    pad = (2 - geom.pad[0], 2 - geom.pad[1])
    return _convolve(dy, U, np.zeros(geom.C, dy.dtype), pad, geom.x_shape, None, relu_output)


def winograd_backward_filter(dy, x, geom: ConvGeometry, relu_output=None) -> tuple[np.ndarray, np.ndarray]:
    """(dw, db): the filter and bias gradients by Winograd F(2x2, 3x3).

    dy (N, K, P, Q), x (N, C, H, W) -> dw (K, C, 3, 3) and db (K,) = dy summed over N, P, Q;
    ``geom`` must satisfy ``applies``. With ``relu_output`` (dy's shape, C-contiguous), the
    gradients of dy * (relu_output > 0), masked as dy is read (as ``winograd_backward_data``).
    Per-chunk partial sums are added in chunk order, so the result does not depend on the threads.
    """
    _check_applies(geom, "winograd_backward_filter")
    N, C, K = geom.N, geom.C, geom.K
    dtype = x.dtype
    blocking = _Blocking(N, *_tiles(geom.P, geom.Q), C + K, dtype.itemsize)
    TW = blocking.TW
    chunks = blocking.chunks
    dU = np.empty((chunks.count, 16, K, C), dtype)
    masked = relu_output is not None
    mask = relu_output if masked else dy
    db = np.zeros((chunks.count, K))

    def work(chunk, images):
        for ty0, rows in blocking.bands():
            T = len(images) * rows * TW
            Vt = _slots("winograd_V", T, C, dtype)      # V[xi] as (T, C): an NN GEMM below
            Z = _slots("winograd_M", K, T, dtype)
            if C >= CHANNELS_LAST_MIN_CHANNELS:
                planes = cpu_pool.thread_buffer("winograd_planes", ((2 * rows + 2) * (2 * TW + 2) * C,), dtype)
                R = cpu_pool.thread_buffer("winograd_R", (4 * (2 * TILE_SEGMENT + 2) * C,), dtype)
                input_transform_tile_major(x, images.start, ty0, geom.pad[0], geom.pad[1], rows, TW, planes, R, T, Vt)
            else:
                planes = cpu_pool.thread_buffer("winograd_planes", (C, 2 * rows + 2, 2 * TW + 2), dtype)
                input_transform_tile_major_per_plane(x, images.start, ty0, geom.pad[0], geom.pad[1], TW, planes, T, Vt)
            filter_gradient_band(dy, mask, masked, images.start, ty0, rows, TW, T, Vt, Z, db[chunk], dU[chunk],
                                 cpu_pool.thread_buffer("winograd_dU", (16, K, C), dtype))

    chunks.run(work)
    dU_sum = dU.sum(axis=0, dtype=np.float64).reshape(16, K * C)
    with cpu_pool.single_threaded_blas():
        dw = (_GG.T @ dU_sum).T.reshape(K, C, 3, 3)       # G^T dU G per filter, as in _filter_transform
    return dw.astype(dtype), db.sum(axis=0).astype(dtype)
