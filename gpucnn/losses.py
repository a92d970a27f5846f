"""Losses: ``forward(logits, target)`` -> mean loss (a Python float); ``backward()`` -> dlogits.

Targets may be NumPy arrays or arrays of the loss's backend; they are moved
to the backend of the logits' model by ``to(backend)`` (the Trainer does it).

``forward_device(logits, target)`` computes the same mean loss and leaves it
on the device as a 0-d backend array: reading a float is a host
synchronisation on a GPU, so the Trainer accumulates these and reads them
once per epoch. It takes the target as a backend array whose values have been
checked already (``check_target``, on the host); ``forward`` is
``float(forward_device(...))`` after that check.
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

    def check_target(self, target, logits_shape) -> None:
        """Check the values of ``target`` (host or backend array) for logits of ``logits_shape``.

        Value checks run on the host, so ``forward_device`` trusts its target
        (on a GPU a check there would cost a synchronisation per batch): the
        Trainer calls this once per fit or evaluate, ``forward`` on every call.
        Raises ValueError/TypeError naming the loss; the default has nothing to check.
        """

    def forward(self, logits, target) -> float:
        """The mean loss over the batch as a Python float (one host synchronisation on a GPU)."""
        self.check_target(target, logits.shape)
        return float(self.forward_device(logits, self.backend.asarray(target)))

    def forward_device(self, logits, target):
        """The mean loss as a 0-d array of the backend, with no host synchronisation."""
        raise NotImplementedError


class SoftmaxCrossEntropy(Loss):
    """Mean over the batch of -log softmax(logits)[label].

    logits (N, K) float, target (N,) integer labels in [0, K).
    dlogits = (softmax(logits) - onehot(target)) / N.
    """

    def check_target(self, target, logits_shape) -> None:
        """See ``Loss``: labels (N,) of an integer dtype in [0, K) for logits (N, K)."""
        if len(logits_shape) != 2:
            raise ValueError(f"{self!r}: expected logits of shape (N, classes), got {tuple(logits_shape)}")
        labels = np.asarray(self.backend.to_numpy(target))
        if labels.shape != (logits_shape[0],):
            raise ValueError(f"{self!r}: expected integer labels of shape ({logits_shape[0]},) "
                             f"for logits {tuple(logits_shape)}, got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{self!r}: labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= logits_shape[1]):
            raise ValueError(f"{self!r}: labels must lie in [0, {logits_shape[1]}), "
                             f"got range [{labels.min()}, {labels.max()}]")

    def forward_device(self, logits, target):
        """See ``Loss``; ``target``: (N,) integer labels on the backend, already in [0, K)."""
        xp = self.backend.xp
        if logits.ndim != 2 or target.shape != (logits.shape[0],):
            raise ValueError(f"{self!r}: expected logits (N, classes) and labels (N,), "
                             f"got {tuple(logits.shape)} and {tuple(target.shape)}")
        # log-sum-exp with the row maximum taken out, so exp never overflows
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        rows = xp.arange(logits.shape[0])
        self._cache = (log_p, target, rows)
        return -log_p[rows, target].mean()

    def backward(self):
        log_p, labels, rows = self._saved()
        d = self.backend.xp.exp(log_p)
        d[rows, labels] -= 1
        return d / log_p.shape[0]


class _ElementwiseLoss(Loss):
    """A loss whose target is shaped like the logits: moves and checks the target once."""

    def _target(self, logits, target):
        t = self.backend.asarray(target, dtype=logits.dtype)
        if t.shape != logits.shape:
            raise ValueError(f"{self!r}: target of shape {tuple(t.shape)} does not match "
                             f"logits of shape {tuple(logits.shape)}")
        return t


class BinaryCrossEntropyWithLogits(_ElementwiseLoss):
    """Mean of -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))] over all elements.

    logits z of any shape, target t of the same shape with values in [0, 1].
    Computed as max(z, 0) - z t + log(1 + exp(-|z|)) so that no exp overflows;
    dz = (sigmoid(z) - t) / size.
    """

    def check_target(self, target, logits_shape) -> None:
        """See ``Loss``: every value in [0, 1]."""
        t = np.asarray(self.backend.to_numpy(target))
        # A target outside [0, 1] (or NaN) is no probability: the loss would go
        # negative and training would push the logits to infinity.
        if not ((t >= 0) & (t <= 1)).all():
            raise ValueError(f"{self!r}: target values must lie in [0, 1], got values in "
                             f"[{float(t.min())}, {float(t.max())}]")

    def forward_device(self, logits, target):
        xp = self.backend.xp
        t = self._target(logits, target)
        e = xp.exp(-xp.abs(logits))
        loss = xp.maximum(logits, 0) - logits * t + xp.log1p(e)
        sigmoid = xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
        self._cache = (sigmoid, t)
        return loss.mean()

    def backward(self):
        sigmoid, t = self._saved()
        return ((sigmoid - t) / t.size).astype(t.dtype, copy=False)


class MSELoss(_ElementwiseLoss):
    """Mean of (prediction - target)^2 over all elements; d/dprediction = 2 (prediction - target) / size."""

    def forward_device(self, prediction, target):
        diff = prediction - self._target(prediction, target)
        self._cache = diff
        return (diff * diff).mean()

    def backward(self):
        diff = self._saved()
        return 2 * diff / diff.size
