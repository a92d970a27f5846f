"""Seeding: every random number in gpucnn comes from a ``numpy.random.Generator``.

A layer or routine takes ``rng`` as an int seed, a Generator, or None; None
draws from one package-wide Generator that ``gpucnn.seed(n)`` resets, so a
script that calls ``gc.seed(0)`` first builds the same model every time.
"""

from __future__ import annotations

import numpy as np

_global = np.random.default_rng()


def seed(value: int) -> None:
    """Reset the package-wide Generator used where no explicit ``rng`` is given."""
    global _global
    _global = np.random.default_rng(value)


def as_generator(rng=None) -> np.random.Generator:
    """An int seed or None or a Generator -> a Generator (None: the package-wide one)."""
    if rng is None:
        return _global
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be an int seed, a numpy.random.Generator or None, got {type(rng).__name__}")
