"""The model zoo: ready-made CNNs by name, sized for the data they are given.

``build_model(name, in_channels, num_classes, image_size)`` returns a fresh
``Sequential``; the same ``rng`` seed gives the same weights.

- ``"small"``: the default digits CNN. Two 3x3 convolutions at full
  resolution, a pooled 3x3 convolution, then a dense head; it reaches about
  99% on the 8x8 digits in a few dozen CPU-seconds.
- ``"lenet"``: LeNet-5 in spirit (LeCun et al. 1998): 5x5 convolutions with
  6 and 16 filters, each followed by 2x2 max pooling, then dense layers of
  120 and 84 units. Padding keeps it valid for images as small as 8x8.
- ``"jet"``: a jet-image CNN: 5x5 convolution to 32 channels, pooling, 3x3
  to 64, pooling, 3x3 to 128, global average pooling, dense. Its head does
  not depend on the image size.
- ``"jet-small"``: the jet CNN for CPUs: 5x5 to 16 channels, pooling, 3x3 to
  32, pooling, 3x3 to 32, pooling, then a dense head of 64 units on the
  flattened map. Jet images are centred and rotated, so where a prong sits
  matters and the head keeps it; at 40x40 it needs about a quarter of the
  ``jet`` model's multiply-adds.
- ``"dnn"``: a dense network and nothing else (the lecture's network before
  convolutions): flatten, 128 and 64 ReLU units, the class logits. Any
  image size; the baseline a CNN is compared with.
"""

from __future__ import annotations

import numpy as np

from .arguments import as_int
from .layers import Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from .model import Sequential
from .random import as_generator

MODEL_NAMES = ("small", "lenet", "jet", "jet-small", "dnn")


def _size_pair(image_size, where: str) -> tuple[int, int]:
    """H or (H, W) -> (H, W), positive integers of any integer type."""
    if isinstance(image_size, (tuple, list, np.ndarray)) and len(image_size) == 2:
        h, w = image_size
    else:
        h = w = image_size
    try:
        return as_int(h, "image_size", where, minimum=1), as_int(w, "image_size", where, minimum=1)
    except TypeError:
        raise TypeError(f"{where}: image_size must be an int or (height, width), "
                        f"got {image_size!r}") from None


def _flat_features(layers, in_channels: int, size: tuple[int, int]) -> int:
    """Number of features after ``layers`` for one image (C, H, W)."""
    shape = (1, in_channels) + size
    for layer in layers:
        shape = layer.output_shape(shape)
    count = 1
    for d in shape[1:]:
        count *= d
    return count


def _small(c, k, size, rng):
    trunk = [Conv2D(c, 32, 3, padding=1, rng=rng), ReLU(),
             Conv2D(32, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
             Conv2D(32, 64, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2), Flatten()]
    return trunk + [Dropout(0.25, rng=rng), Dense(_flat_features(trunk, c, size), k, rng=rng)]


def _lenet(c, k, size, rng):
    trunk = [Conv2D(c, 6, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),
             Conv2D(6, 16, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2), Flatten()]
    return trunk + [Dense(_flat_features(trunk, c, size), 120, rng=rng), ReLU(),
                    Dense(120, 84, rng=rng), ReLU(), Dense(84, k, rng=rng)]


def _jet(c, k, size, rng):
    return [Conv2D(c, 32, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),
            Conv2D(32, 64, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
            Conv2D(64, 128, 3, padding=1, rng=rng), ReLU(), GlobalAvgPool2D(),
            Dense(128, k, rng=rng)]


def _jet_small(c, k, size, rng):
    trunk = [Conv2D(c, 16, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),
             Conv2D(16, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
             Conv2D(32, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2), Flatten()]
    return trunk + [Dense(_flat_features(trunk, c, size), 64, rng=rng), ReLU(), Dense(64, k, rng=rng)]


def _dnn(c, k, size, rng):
    return [Flatten(), Dense(c * size[0] * size[1], 128, rng=rng), ReLU(),
            Dense(128, 64, rng=rng), ReLU(), Dense(64, k, rng=rng)]


_BUILDERS = {"small": _small, "lenet": _lenet, "jet": _jet, "jet-small": _jet_small, "dnn": _dnn}


def build_model(name: str, in_channels: int, num_classes: int, image_size, rng=None) -> Sequential:
    """A fresh model ``name`` (one of ``MODEL_NAMES``) for images (in_channels, H, W).

    ``image_size`` is H (square) or (H, W); ``num_classes`` logits come out:
    x (N, in_channels, H, W) -> logits (N, num_classes). ``rng`` (a seed, a
    Generator or None for the package-wide one) draws every initial weight.
    Raises ValueError for an unknown name or an image too small for the model.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    where = f"build_model({name!r})"
    in_channels = as_int(in_channels, "in_channels", where, minimum=1)
    num_classes = as_int(num_classes, "num_classes", where, minimum=1)
    size = _size_pair(image_size, where)
    rng = as_generator(rng)
    try:
        layers = _BUILDERS[name](in_channels, num_classes, size, rng)
        model = Sequential(layers)
        model.summary((in_channels,) + size)  # checks every layer's geometry once
    except ValueError as err:
        raise ValueError(f"model {name!r} does not fit images of shape "
                         f"{(in_channels,) + size}: {err}") from None
    return model
