"""A counter-based random stream written in ``xp`` arithmetic: the same bits on every backend.

Dropout draws its masks on the device, where a host Generator would cost a
host-to-device copy per forward. NumPy's and CuPy's generators do not give the
same bits for the same seed, so the masks come from a hash of the element
index instead, computed with 32-bit unsigned integer operations that wrap
identically in NumPy and in CUDA:

    stream  = lowbias32(key0 ^ lowbias32(draw ^ key1))     (host, once per draw)
    bits[j] = lowbias32(lowbias32(j * 0x9E3779B9 + stream) ^ key1)

``lowbias32`` is Chris Wellons' 32-bit integer hash (xor-shift-multiply, a
bijection with low avalanche bias). ``key0, key1`` come from a NumPy
Generator, ``draw`` counts the draws of the stream, ``j`` is the element's
flat index (one draw holds fewer than 2**32 elements).

The same hash is compiled with Numba here (``keep_and_scale``) for the cpu
backend's Dropout, which draws a mask in one threaded pass; it lives in
this file because Numba's cache of a compiled function is invalidated by
changes to the function's own file only, so the kernel and the constants
it bakes in must share one.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_M1, _M2 = 0x7FEB352D, 0x846CA68B


def lowbias32(h, xp=None):
    """The lowbias32 hash of uint32 ``h``: an ``xp`` array (overwritten), or a Python int when ``xp`` is None."""
    if xp is None:
        h ^= h >> 16
        h = (h * _M1) & _MASK32
        h ^= h >> 15
        h = (h * _M2) & _MASK32
        return h ^ (h >> 16)
    # uint32 scalars keep every operation in uint32, where products wrap mod 2**32;
    # in place, as ``h`` is always a temporary of ``bits``
    h ^= h >> np.uint32(16)
    h *= np.uint32(_M1)
    h ^= h >> np.uint32(15)
    h *= np.uint32(_M2)
    h ^= h >> np.uint32(16)
    return h


def keep_threshold(p: float) -> np.uint32:
    """The integer threshold of ``keep_mask``: an element is kept where ``bits >> 8 >= keep_threshold(p)``."""
    return np.uint32(math.ceil(p * 2**24))


class CounterRNG:
    """A stream of draws, each a hash of (key, draw number, element index).

    ``CounterRNG(rng)``: the two 32-bit keys are taken from ``rng`` (a NumPy
    Generator) when the first draw is made, so building one consumes nothing.
    """

    def __init__(self, rng: np.random.Generator):
        self._generator = rng
        self._keys = None
        self.draws = 0

    def bits(self, xp, size: int):
        """(size,) uint32 random bits as an ``xp`` array, the next draw of the stream."""
        stream, key1 = self.next_stream(size)
        h = xp.arange(size, dtype=np.uint32)
        h *= np.uint32(_GOLDEN)
        h += np.uint32(stream)
        h = lowbias32(h, xp)
        h ^= np.uint32(key1)
        return lowbias32(h, xp)

    def next_stream(self, size: int) -> tuple[int, int]:
        """``(stream, key1)`` of the next draw, of ``size`` elements (see the module docstring).

        Counts the draw. What ``bits`` and the cpu kernel ``keep_and_scale``
        hash the element indices with. ValueError unless ``0 <= size < 2**32``.
        """
        if not 0 <= size < 2**32:
            raise ValueError(f"CounterRNG: a draw holds fewer than 2**32 elements, asked for {size}")
        if self._keys is None:
            self._keys = tuple(int(k) for k in self._generator.integers(0, 2**32, size=2, dtype=np.uint64))
        key0, key1 = self._keys
        stream = lowbias32(key0 ^ lowbias32((self.draws & _MASK32) ^ key1))
        self.draws += 1
        return stream, key1

    def keep_mask(self, xp, shape, p: float):
        """A bool ``xp`` array of ``shape``, each element True with probability 1 - p (to 2**-24).

        The top 24 bits are compared with an integer threshold, so the result
        does not depend on how a backend rounds floats.
        """
        return (self.bits(xp, math.prod(shape)) >> np.uint32(8) >= keep_threshold(p)).reshape(shape)


# --- the hash compiled with Numba, for the cpu backend ----------------------------------
# uint64 arithmetic masked to 32 bits: Numba widens uint32 products to 64 bits,
# and mixing its signed literals with unsigned 64-bit values would give floats.
_MASK32_U64, _GOLDEN_U64 = np.uint64(_MASK32), np.uint64(_GOLDEN)
_M1_U64, _M2_U64 = np.uint64(_M1), np.uint64(_M2)
_SHIFT8, _SHIFT15, _SHIFT16 = np.uint64(8), np.uint64(15), np.uint64(16)


@njit(cache=True, inline="always")
def _lowbias32_u64(h):
    """``lowbias32`` of a uint64 ``h < 2**32``."""
    h ^= h >> _SHIFT16
    h = (h * _M1_U64) & _MASK32_U64
    h ^= h >> _SHIFT15
    h = (h * _M2_U64) & _MASK32_U64
    return h ^ (h >> _SHIFT16)


@njit(cache=True, nogil=True)
def keep_and_scale(x, y, scale, stream, key1, threshold, kept, start, stop):
    """Dropout on elements ``[start, stop)`` of the flat x, y, scale (one float dtype, one size).

    ``scale[j] = kept`` where ``bits[j] >> 8 >= threshold`` (``bits`` as ``CounterRNG.bits``
    with ``stream, key1`` from ``next_stream``), else 0; ``y[j] = x[j] * scale[j]``.
    ``kept`` (1/(1-p)) has the arrays' dtype, so the products round as NumPy's do.
    """
    zero = kept - kept
    stream, key1, threshold = uint64(stream), uint64(key1), uint64(threshold)
    for j in range(uint64(start), uint64(stop)):  # unsigned: no negative-index wraparound check
        h = (j * _GOLDEN_U64 + stream) & _MASK32_U64
        h = _lowbias32_u64(_lowbias32_u64(h) ^ key1)
        s = kept if h >> _SHIFT8 >= threshold else zero
        scale[j] = s
        y[j] = x[j] * s
