"""Image operators the explanation methods share, written as small matrices.

Bilinear resizing and Gaussian blurring are both separable linear maps, so an
(h, w) -> (H, W) resize is ``U_rows @ image @ U_cols.T`` with two small
interpolation matrices. Written this way one ``matmul`` does the work on any
backend (NumPy or CuPy), batched over every leading axis, with no kernel of
our own; the matrices are built once per size on the host and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of 1-D linear interpolation, half-pixel centres.

    Output sample i sits at input coordinate ``(i + 0.5) * n_in / n_out - 0.5``
    (clamped to the input), as PyTorch's ``interpolate(mode="bilinear",
    align_corners=False)`` and OpenCV's ``resize`` place it; each row holds the
    two weights of its neighbours and sums to 1. ``n_out == n_in`` gives the identity.
    """
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = min(max((i + 0.5) * scale - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


@lru_cache(maxsize=64)
def gaussian_blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) float64 matrix of a 1-D Gaussian blur with mirrored edges; each row sums to 1.

    The kernel reaches 3 sigma on each side; samples beyond an edge are
    mirrored back into the image (``scipy.ndimage``'s "reflect" mode).
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for offset, weight in zip(range(-radius, radius + 1), taps):
            j = i + offset
            # Reflect (d c b a | a b c d | d c b a) until j is inside; repeat for tiny images.
            while j < 0 or j >= n:
                j = -j - 1 if j < 0 else 2 * n - j - 1
            m[i, j] += weight
    return m


def _separable(images, rows: np.ndarray, cols: np.ndarray, backend):
    """``rows @ images @ cols.T`` over the last two axes, in the images' dtype and backend."""
    r = backend.asarray(rows, dtype=images.dtype)
    c = backend.asarray(cols.T, dtype=images.dtype)
    xp = backend.xp
    return xp.matmul(xp.matmul(r, images), c)


def upsample_bilinear(maps, size: tuple, backend):
    """Bilinear resize of maps (..., h, w) to (..., H, W) with ``size = (H, W)``, on ``backend``."""
    h, w = maps.shape[-2:]
    H, W = size
    return _separable(maps, bilinear_matrix(H, h), bilinear_matrix(W, w), backend)


def gaussian_blur(images, sigma: float, backend):
    """Gaussian blur (std ``sigma`` pixels) of images (..., H, W) over the last two axes."""
    H, W = images.shape[-2:]
    return _separable(images, gaussian_blur_matrix(H, float(sigma)),
                      gaussian_blur_matrix(W, float(sigma)), backend)


def scale_to_unit(maps, xp):
    """Divide each map (N, H, W) of non-negative values by its maximum.

    Every map that is not all zero then peaks at exactly 1; an all-zero map
    stays zero (the divisor is at least the dtype's smallest normal number,
    so there is never a 0/0 and never a NaN).
    """
    peak = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.size else xp.zeros(0, maps.dtype)
    tiny = np.finfo(maps.dtype).tiny
    return maps / xp.maximum(peak, tiny)[:, None, None]
