"""Seeded data augmentation applied to host batches by ``Trainer.fit(augment=...)``."""

from __future__ import annotations

import numpy as np

from ..arguments import as_int


class RandomShift:
    """Shift every image by up to ``max_shift`` pixels in each direction, filling with zeros.

    ``RandomShift(1)(x, rng)``: x (N, C, H, W) -> shifted copy of the same shape;
    the offsets (dy, dx) of each image are drawn uniformly from
    [-max_shift, max_shift] with ``rng``, so a seeded Generator gives the same
    batch every time.
    """

    def __init__(self, max_shift: int = 1):
        self.max_shift = as_int(max_shift, "max_shift", "RandomShift", minimum=0)

    def __call__(self, x, rng: np.random.Generator):
        if x.ndim != 4:
            raise ValueError(f"RandomShift: expected images (N, C, H, W), got shape {x.shape}")
        m = self.max_shift
        H, W = x.shape[2:]
        offsets = rng.integers(-m, m + 1, size=(len(x), 2))
        out = np.zeros_like(x)
        # One slice assignment per distinct offset: at most (2m+1)^2 of them.
        for dy, dx in {tuple(o) for o in offsets.tolist()}:
            rows = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
            out[rows, :, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
                x[rows, :, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
        return out

    def __repr__(self) -> str:
        return f"RandomShift({self.max_shift})"
