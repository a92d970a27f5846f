"""The machinery every explanation method shares: forward with a tap, partial backward, combination.

``Explainer`` runs a ``Sequential`` in inference mode (BatchNorm on its
running statistics, Dropout off), keeps the output of one chosen layer, and
runs the layers' own ``backward`` from a score at the head down to any layer
-- and no further, since the layers below would cost time and change
nothing. Backward accumulates parameter gradients as a side effect of the
layer contract; the explainer restores them afterwards, so explaining a
model in the middle of training leaves its gradients as they were.

``BaseCAM`` adds the class-activation-map recipe of Selvaraju et al.
(arXiv:1610.02391): with A (N, C, h, w) the chosen layer's output, a method
supplies channel weights w (N, C) and the map is ``ReLU(sum_k w_k A^k)``,
then upsampled bilinearly to the input and scaled per image to [0, 1]. The
subclasses (Grad-CAM, Grad-CAM++, Score-CAM) only supply the weights.

Everything stays on the model's backend (``backend.xp``) until the result is
returned as a NumPy array. Inputs are explained in batches of ``batch_size``
images (default 256), each moved to the backend only when its turn comes, so
the memory an explanation needs beyond its input and result does not grow
with the number of images; every sample's result is the same in any batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..arguments import as_int
from ..backend.base import host_array
from ..layers import BatchNorm2D, Conv2D, Layer, LeakyReLU, ReLU
from .imageops import scale_to_unit, upsample_bilinear
from .targets import resolve_target


@contextmanager
def preserved_gradients(layers):
    """Restore the ``grads`` arrays of ``layers`` (in place) when the block ends, even on error."""
    saved = [{key: g.copy() for key, g in layer.grads.items()} for layer in layers]
    try:
        yield
    finally:
        for layer, grads in zip(layers, saved):
            for key, g in grads.items():
                layer.grads[key][...] = g


def resolve_layer(model, layer) -> int:
    """The index in ``model.layers`` whose output is explained.

    ``layer``: an int index (negative counts from the end), a layer object of
    the model, or None for the last convolution block: the last ``Conv2D``,
    past any ``BatchNorm2D`` right after it, and past the ``ReLU``/``LeakyReLU``
    that follows, so the maps are the block's activations. Raises ValueError
    when there is no such layer.
    """
    layers = model.layers
    name = type(model).__name__
    if layer is None:
        convs = [i for i, lay in enumerate(layers) if isinstance(lay, Conv2D)]
        if not convs:
            raise ValueError(f"{name} has no Conv2D layer to explain; pass layer= an index into its "
                             f"{len(layers)} layers")
        i = convs[-1]
        while i + 1 < len(layers) and isinstance(layers[i + 1], BatchNorm2D):
            i += 1
        if i + 1 < len(layers) and isinstance(layers[i + 1], (ReLU, LeakyReLU)):
            i += 1
        return i
    if isinstance(layer, Layer):
        for i, lay in enumerate(layers):
            if lay is layer:
                return i
        raise ValueError(f"layer {layer!r} is not one of the model's {len(layers)} layers")
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"layer index {layer} is out of range for a model of {len(layers)} layers")
        return int(layer) % len(layers)
    raise TypeError(f"layer must be an int index, a layer of the model or None, got {type(layer).__name__}")


def split_class_idx(class_idx, n: int):
    """``class_idx`` for a batch of rows ``start:stop`` of n samples: ``split(start, stop)``.

    One class per sample (a sequence or array of length n) is sliced; None, an
    int or a callable target serves every batch as it is. A sequence of
    another length is a ValueError here, where the whole batch size n is known.
    """
    if callable(class_idx) or isinstance(class_idx, str) or not hasattr(class_idx, "__len__"):
        return lambda start, stop: class_idx
    if len(class_idx) != n:
        raise ValueError(f"class_idx has {len(class_idx)} entries; expected an int or one class per "
                         f"sample, shape ({n},), for a batch of {n}")
    return lambda start, stop: class_idx[start:stop]


def concatenate_batches(parts):
    """Join per-batch results along the sample axis: arrays, or tuples of arrays (None stays None)."""
    if isinstance(parts[0], tuple):
        return tuple(None if column[0] is None else np.concatenate(column) for column in zip(*parts))
    return np.concatenate(parts)


class Explainer:
    """Inference-mode forward with a tap on one layer, and backward from the head down to a layer.

    ``batch_size``: how many images one forward/backward pass takes; larger
    inputs are explained batch by batch (see ``map_batches``).
    """

    def __init__(self, model, batch_size: int = 256):
        if not hasattr(model, "layers") or not hasattr(model, "backend"):
            raise TypeError(f"{type(self).__name__}: expected a gpucnn Sequential, got {type(model).__name__}")
        self.model = model
        self.batch_size = as_int(batch_size, "batch_size", type(self).__name__, minimum=1)

    @property
    def backend(self):
        return self.model.backend

    def check_images(self, x):
        """x (N, C, H, W) with N >= 1: a backend array, left where it is, or a host array, nested
        lists or another device's array (CuPy, anything with ``__cuda_array_interface__``), on the host."""
        if not isinstance(x, self.backend.xp.ndarray):
            x = host_array(x)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: expected images of shape (N, C, H, W) with N >= 1, "
                             f"got shape {tuple(x.shape)}")
        return x

    def to_input(self, x):
        """x (N, C, H, W) -- host or backend array, or nested lists -- on the model's backend, in its dtype."""
        return self.backend.asarray(self.check_images(x), dtype=self.model.dtype)

    def map_batches(self, compute, x, class_idx=None):
        """``compute(x_batch, class_idx_batch)`` over batches of ``batch_size`` images, joined on the host.

        x_batch is on the backend in the model's dtype; ``compute`` returns a
        NumPy array or a tuple of them (or of None) with the batch's samples
        first, and the results are concatenated in order (see
        ``concatenate_batches``).
        """
        x = self.check_images(x)
        n = len(x)
        class_idx_of = split_class_idx(class_idx, n)
        return concatenate_batches([compute(self.to_input(x[start:start + self.batch_size]),
                                            class_idx_of(start, start + self.batch_size))
                                    for start in range(0, n, self.batch_size)])

    def forward(self, x, tap: int | None = None):
        """Run every layer with ``training=False``; return (logits (N, K), output of layer ``tap``)."""
        self.model.input_shape = tuple(x.shape[1:])  # as model.forward does, for summary()
        kept = None
        for i, layer in enumerate(self.model.layers):
            x = layer.forward(x, training=False)
            if i == tap:
                kept = x
        if x.ndim != 2:
            raise ValueError(f"{type(self).__name__}: the model's output has shape {tuple(x.shape)}; "
                             f"explanations need logits of shape (N, classes)")
        return x, kept

    def backward(self, dy, start: int, stop: int):
        """Backward through layers ``start, start-1, ..., stop+1``; returns d/d(output of layer ``stop``).

        ``dy`` is the gradient of the output of layer ``start``; ``stop = -1``
        runs down to the input. Parameter gradients are left as they were.
        """
        layers = self.model.layers[stop + 1:start + 1]
        with preserved_gradients(layers):
            for layer in reversed(layers):
                dy = layer.backward(dy)
        return dy


@dataclass
class CAMExplanation:
    """Every number behind a batch of class activation maps, as NumPy arrays.

    activations (N, C, h, w): the chosen layer's output A; gradients (N, C, h, w):
    d score / dA (None for gradient-free methods); weights (N, C): the channel
    weights; raw (N, h, w): ReLU(sum_k weights_k A^k); scores (N,): the
    explained scores; classes (N,): the explained classes (None for a callable target).
    """

    activations: np.ndarray
    gradients: np.ndarray | None
    weights: np.ndarray
    raw: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None


class BaseCAM(Explainer, ABC):
    """Class activation maps of one layer: ``cam(x, class_idx=None, raw=False)`` -> NumPy maps.

    Subclasses set ``needs_gradient`` and implement ``_weights(A, dA, x, target)``
    -> (N, C); the base runs the forward, the backward (only when a gradient
    is needed, and only from the head down to the chosen layer), and the
    combination, in batches of ``batch_size`` images.
    """

    needs_gradient = True

    def __init__(self, model, layer=None, batch_size: int = 256):
        super().__init__(model, batch_size)
        self.layer_index = resolve_layer(model, layer)

    @property
    def layer(self) -> Layer:
        """The layer whose output is explained."""
        return self.model.layers[self.layer_index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer {self.layer_index}: {self.layer!r})"

    @abstractmethod
    def _weights(self, A, dA, x, target):
        """Channel weights (N, C) from activations A, gradients dA (or None), input x and the target."""

    def _run(self, x, class_idx):
        """Forward, optional backward, weights and the raw map of one batch x on the backend."""
        logits, A = self.forward(x, tap=self.layer_index)
        if A.ndim != 4:
            raise ValueError(f"{type(self).__name__}: {self.layer.where} outputs shape {tuple(A.shape)}; "
                             f"a class activation map needs a 4-D (N, C, h, w) feature map")
        target = resolve_target(class_idx, logits, self.backend)
        dA = None
        if self.needs_gradient:
            dA = self.backward(target.gradient(logits), len(self.model.layers) - 1, self.layer_index)
        weights = self._weights(A, dA, x, target)
        raw = self.backend.xp.maximum((weights[:, :, None, None] * A).sum(axis=1), 0)
        return x, logits, A, dA, weights, raw, target

    def __call__(self, x, class_idx=None, raw: bool = False) -> np.ndarray:
        """Heatmaps of images x (N, C, H, W) for the target ``class_idx``.

        ``class_idx``: None (each sample's predicted class), an int, one int
        per sample, or a callable from logits (N, K) to scores (N,). Returns
        (N, H, W) maps in [0, 1] (upsampled bilinearly, each divided by its
        maximum; an all-zero map stays zero), or with ``raw=True`` the
        layer-resolution maps ReLU(sum_k w_k A^k) of shape (N, h, w).
        """
        def maps_of(xb, batch_class_idx):
            _, _, _, _, _, maps, _ = self._run(xb, batch_class_idx)
            if not raw:
                maps = scale_to_unit(upsample_bilinear(maps, xb.shape[2:], self.backend), self.backend.xp)
            return self.backend.to_numpy(maps)

        return self.map_batches(maps_of, x, class_idx)

    def explain(self, x, class_idx=None) -> CAMExplanation:
        """Like ``__call__`` with ``raw=True``, returning every intermediate array (see CAMExplanation)."""
        def arrays_of(xb, batch_class_idx):
            _, logits, A, dA, weights, raw, target = self._run(xb, batch_class_idx)
            host = self.backend.to_numpy
            classes = target.host_classes() if hasattr(target, "host_classes") else None
            return (host(A), None if dA is None else host(dA), host(weights), host(raw),
                    host(target.score(logits)), classes)

        A, dA, weights, raw, scores, classes = self.map_batches(arrays_of, x, class_idx)
        return CAMExplanation(activations=A, gradients=dA, weights=weights, raw=raw, scores=scores,
                              classes=classes)
