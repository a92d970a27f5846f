"""The pieces work together: a small CNN learns which quadrant holds a bright blob."""

import numpy as np
import pytest

import gpucnn as gc
from conftest import backend_unavailable_reason
from gpucnn.trainer import Trainer


def quadrant_blobs(n, seed, size=12):
    """Noise images (n, 1, size, size) with a bright 3x3 blob in quadrant y (0..3) at a random place."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0.0, 0.3, (n, 1, size, size)).astype(np.float32)
    half = size // 2
    for i, q in enumerate(y):
        top, left = (q // 2) * half + rng.integers(0, half - 2), (q % 2) * half + rng.integers(0, half - 2)
        x[i, 0, top:top + 3, left:left + 3] += 1.5
    return x, y.astype(np.int64)


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_small_cnn_learns_quadrants(name):
    reason = backend_unavailable_reason(name)
    if reason:
        pytest.skip(reason)
    x, y = quadrant_blobs(400, seed=0)
    x_test, y_test = quadrant_blobs(200, seed=1)
    model = gc.Sequential([gc.Conv2D(1, 8, 3, padding=1, rng=0), gc.ReLU(), gc.MaxPool2D(2),
                           gc.Conv2D(8, 8, 3, padding=1, rng=1), gc.ReLU(), gc.MaxPool2D(2),
                           gc.Flatten(), gc.Dense(8 * 3 * 3, 4, rng=2)])
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=0.01), backend=name)
    trainer.fit(x, y, epochs=4, batch_size=32, seed=0, verbose=0)
    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] >= 0.95, result
