"""The embedded default data: scikit-learn's shipped 8x8 handwritten digits.

1797 grey images of the digits 0-9 (about 180 per class), 8x8 pixels with
integer intensities 0..16. They ship inside scikit-learn, so nothing is
downloaded.
"""

from __future__ import annotations

import numpy as np


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """Return ``(x_train, y_train), (x_test, y_test)`` from scikit-learn's 8x8 digits.

    x: float32 (N, 1, 8, 8) in [0, 1] (intensity / 16); y: int64 (N,) in 0..9.
    The split is stratified (every digit keeps its share in both halves) and
    depends only on ``seed``; ``test_fraction`` of the 1797 images go to the
    test set (360 of them for the default 0.2).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"load_digits: test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_fraction), stratify=y, random_state=int(seed))
    return (x_train, y_train), (x_test, y_test)
