"""Losses: ``forward(logits, target)`` -> mean loss (a Python float); ``backward()`` -> dlogits.

Targets may be NumPy arrays or arrays of the loss's backend; they are moved
to the backend of the logits' model by ``to(backend)`` (the Trainer does it).
"""

from __future__ import annotations

import numpy as np

from .backend import get_backend


class Loss:
    """Base class: backend handling and the "backward before forward" check."""

    def __init__(self):
        self.backend = get_backend("cpu")
        self._cache = None

    def to(self, backend):
        """Compute on ``backend`` from now on; returns self."""
        self.backend = get_backend(backend)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _saved(self):
        if self._cache is None:
            raise ValueError(f"{self!r}: backward called before forward")
        return self._cache

    def __call__(self, logits, target) -> float:
        return self.forward(logits, target)


class SoftmaxCrossEntropy(Loss):
    """Mean over the batch of -log softmax(logits)[label].

    logits (N, K) float, target (N,) integer labels in [0, K).
    dlogits = (softmax(logits) - onehot(target)) / N.
    """

    def forward(self, logits, target) -> float:
        xp = self.backend.xp
        if logits.ndim != 2:
            raise ValueError(f"{self!r}: expected logits of shape (N, classes), got {tuple(logits.shape)}")
        target_host = np.asarray(self.backend.to_numpy(target))
        if target_host.shape != (logits.shape[0],):
            raise ValueError(f"{self!r}: expected integer labels of shape ({logits.shape[0]},) "
                             f"for logits {tuple(logits.shape)}, got {target_host.shape}")
        if not np.issubdtype(target_host.dtype, np.integer):
            raise TypeError(f"{self!r}: labels must be integers, got dtype {target_host.dtype}")
        if target_host.size and (target_host.min() < 0 or target_host.max() >= logits.shape[1]):
            raise ValueError(f"{self!r}: labels must lie in [0, {logits.shape[1]}), "
                             f"got range [{target_host.min()}, {target_host.max()}]")
        labels = self.backend.asarray(target_host.astype(np.int64))
        # log-sum-exp with the row maximum taken out, so exp never overflows
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        rows = xp.arange(logits.shape[0])
        self._cache = (log_p, labels, rows)
        return float(-log_p[rows, labels].mean())

    def backward(self):
        log_p, labels, rows = self._saved()
        d = self.backend.xp.exp(log_p)
        d[rows, labels] -= 1
        return d / log_p.shape[0]


class BinaryCrossEntropyWithLogits(Loss):
    """Mean of -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))] over all elements.

    logits z of any shape, target t of the same shape with values in [0, 1].
    Computed as max(z, 0) - z t + log(1 + exp(-|z|)) so that no exp overflows;
    dz = (sigmoid(z) - t) / size.
    """

    def forward(self, logits, target) -> float:
        xp = self.backend.xp
        t = self.backend.asarray(target, dtype=logits.dtype)
        if t.shape != logits.shape:
            raise ValueError(f"{self!r}: target of shape {tuple(t.shape)} does not match "
                             f"logits of shape {tuple(logits.shape)}")
        # A target outside [0, 1] (or NaN) is no probability: the loss would go
        # negative and training would push the logits to infinity.
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"{self!r}: target values must lie in [0, 1], got values in "
                             f"[{float(t.min())}, {float(t.max())}]")
        e = xp.exp(-xp.abs(logits))
        loss = xp.maximum(logits, 0) - logits * t + xp.log1p(e)
        sigmoid = xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
        self._cache = (sigmoid, t)
        return float(loss.mean())

    def backward(self):
        sigmoid, t = self._saved()
        return ((sigmoid - t) / t.size).astype(t.dtype, copy=False)


class MSELoss(Loss):
    """Mean of (prediction - target)^2 over all elements; d/dprediction = 2 (prediction - target) / size."""

    def forward(self, prediction, target) -> float:
        t = self.backend.asarray(target, dtype=prediction.dtype)
        if t.shape != prediction.shape:
            raise ValueError(f"{self!r}: target of shape {tuple(t.shape)} does not match "
                             f"prediction of shape {tuple(prediction.shape)}")
        diff = prediction - t
        self._cache = diff
        return float((diff * diff).mean())

    def backward(self):
        diff = self._saved()
        return 2 * diff / diff.size
