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
"""

from __future__ import annotations

import math

import numpy as np

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
        if not 0 <= size < 2**32:
            raise ValueError(f"CounterRNG: a draw holds fewer than 2**32 elements, asked for {size}")
        if self._keys is None:
            self._keys = tuple(int(k) for k in self._generator.integers(0, 2**32, size=2, dtype=np.uint64))
        key0, key1 = self._keys
        stream = lowbias32(key0 ^ lowbias32((self.draws & _MASK32) ^ key1))
        self.draws += 1
        h = xp.arange(size, dtype=np.uint32)
        h *= np.uint32(_GOLDEN)
        h += np.uint32(stream)
        h = lowbias32(h, xp)
        h ^= np.uint32(key1)
        return lowbias32(h, xp)

    def keep_mask(self, xp, shape, p: float):
        """A bool ``xp`` array of ``shape``, each element True with probability 1 - p (to 2**-24).

        The top 24 bits are compared with an integer threshold, so the result
        does not depend on how a backend rounds floats.
        """
        threshold = np.uint32(math.ceil(p * 2**24))
        return (self.bits(xp, math.prod(shape)) >> np.uint32(8) >= threshold).reshape(shape)
