"""What an explanation explains: one score per sample, computed from the model's logits.

``resolve_target(class_idx, logits, backend)`` turns what the user passes as
``class_idx`` into a target object with

- ``score(logits)`` -> (N,): the number being explained, per sample;
- ``gradient(logits)`` -> (N, K): d score / d logits, where backward starts;
- ``take(rows)``: the same target for a batch whose row i belongs to sample
  ``rows[i]`` (Score-CAM feeds many masked copies of each sample).

Class targets score the logit itself, before any softmax (as Grad-CAM does),
so their gradient is a one-hot row. Any callable from logits (N, K) to one
score per sample (N,) is a target too -- a binary "signal" logit, a
regression output, a difference of two classes -- like pytorch-grad-cam's
targets.
"""

from __future__ import annotations

import numpy as np


class ClassTarget:
    """Score = logits[n, classes[n]]; ``classes`` is an integer array (N,) on the backend."""

    def __init__(self, classes, backend):
        self.classes = classes
        self.backend = backend

    def score(self, logits):
        """logits (N, K) -> (N,) the logit of each sample's class."""
        return logits[self.backend.xp.arange(logits.shape[0]), self.classes]

    def gradient(self, logits):
        """(N, K) one-hot rows: the derivative of a logit with respect to the logits."""
        xp = self.backend.xp
        d = xp.zeros(logits.shape, dtype=logits.dtype)
        d[xp.arange(logits.shape[0]), self.classes] = 1
        return d

    def take(self, rows):
        return ClassTarget(self.classes[rows], self.backend)

    def host_classes(self) -> np.ndarray:
        return self.backend.to_numpy(self.classes).astype(np.int64)


class CallableTarget:
    """Score = fn(logits), one value per sample; each sample's score may use only its own row.

    The derivative is ``fn.gradient(logits)`` when ``fn`` has such a method;
    otherwise it is taken by central differences in float64 on the logits
    alone (2 K evaluations of ``fn`` on an (N, K) array -- no extra pass
    through the network), which is exact up to rounding for the linear
    scores that are the common case (a logit, a difference of logits).
    """

    def __init__(self, fn, backend):
        self.fn = fn
        self.backend = backend

    def __repr__(self) -> str:
        return f"CallableTarget({self.fn!r})"

    def score(self, logits):
        """logits (N, K) -> (N,) as returned by the callable, checked for its shape."""
        out = self.backend.xp.asarray(self.fn(logits))
        if out.shape != (logits.shape[0],):
            raise ValueError(f"target {self.fn!r}: returned shape {tuple(out.shape)} for logits of "
                             f"shape {tuple(logits.shape)}; expected one score per sample "
                             f"({logits.shape[0]},)")
        return out

    def gradient(self, logits):
        """(N, K) d score / d logits, from ``fn.gradient`` or float64 central differences."""
        xp = self.backend.xp
        if hasattr(self.fn, "gradient"):
            g = xp.asarray(self.fn.gradient(logits))
            if g.shape != logits.shape:
                raise ValueError(f"target {self.fn!r}: gradient has shape {tuple(g.shape)}, "
                                 f"expected the logits' shape {tuple(logits.shape)}")
            return g.astype(logits.dtype, copy=False)
        z = logits.astype(np.float64)
        # Step ~ cube root of float64 epsilon, relative to the logit's size: the
        # balance of truncation and rounding error for central differences.
        step = 1e-5 * (1.0 + xp.abs(z))
        g = xp.empty_like(z)
        for k in range(z.shape[1]):
            plus, minus = z.copy(), z.copy()
            plus[:, k] += step[:, k]
            minus[:, k] -= step[:, k]
            # Divide by the step actually taken (after rounding), not the one asked for.
            g[:, k] = (self.score(plus) - self.score(minus)) / (plus[:, k] - minus[:, k])
        return g.astype(logits.dtype)

    def take(self, rows):
        return self


def resolve_target(class_idx, logits, backend):
    """``class_idx`` (None, int, a sequence of N ints, or a callable) -> a target for ``logits``.

    None picks each sample's predicted class (the arg-max logit). Raises
    TypeError for other kinds of ``class_idx`` and ValueError for classes
    outside [0, K) or a sequence whose length is not the batch size N.
    """
    n, k = logits.shape
    xp = backend.xp
    if callable(class_idx):
        return CallableTarget(class_idx, backend)
    if class_idx is None:
        return ClassTarget(xp.argmax(logits, axis=1), backend)
    if isinstance(class_idx, (bool, np.bool_)):
        raise TypeError("class_idx must be None, an int, a sequence of ints or a callable, got a bool")
    if isinstance(class_idx, (int, np.integer)):
        classes = np.full(n, int(class_idx), dtype=np.int64)
    else:
        classes = np.asarray(backend.to_numpy(class_idx) if hasattr(class_idx, "shape") else class_idx)
        if classes.dtype == object or not np.issubdtype(classes.dtype, np.integer):
            raise TypeError(f"class_idx must hold integers, got dtype {classes.dtype}")
        if classes.shape != (n,):
            raise ValueError(f"class_idx has shape {classes.shape}; expected an int or one class "
                             f"per sample, shape ({n},), for a batch of {n}")
        classes = classes.astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= k):
        raise ValueError(f"class_idx must lie in [0, {k}) for logits of shape {(n, k)}, "
                         f"got range [{classes.min()}, {classes.max()}]")
    return ClassTarget(backend.asarray(classes), backend)
