"""Synthetic shapes with object masks: a data set where the right explanation is known.

Each image holds one filled object -- a square, a circle, a cross or a
triangle -- at a random place and size on a noisy background; its label is the
object's kind and its mask says which pixels belong to the object. A model
that classifies these images must look at the object, so a heatmap's peak
should fall inside the mask (the "pointing game" of the Grad-CAM tests).

With ``channels > 1`` the object also carries colour: each class has its own
colour vector (one value per channel), jittered per image, so the images are
"colour images" like the multi-channel jet images (tracks, ECAL, HCAL), where
which channel lights up is part of the evidence.
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ("square", "circle", "cross", "triangle")


def _square(yy, xx, cy, cx, r):
    return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)


def _circle(yy, xx, cy, cx, r):
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _cross(yy, xx, cy, cx, r):
    # Arms a third of the extent wide, so the cross is as visible as the filled shapes.
    half = max(r / 3.0, 1.0)
    vertical = (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= r)
    horizontal = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= r)
    return vertical | horizontal


def _triangle(yy, xx, cy, cx, r):
    # Apex up, base down: inside when below the two slanted sides and above the base.
    top, bottom = cy - r, cy + r
    half_width = r * (yy - top) / (2.0 * r)
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


_DRAW = (_square, _circle, _cross, _triangle)


def class_colours(n_classes: int, channels: int) -> np.ndarray:
    """The colour of each class, (n_classes, channels) with values in [0.25, 1].

    One channel: every class has intensity 1 (shape alone tells the classes
    apart). Several channels: a fixed, distinct colour per class -- for three
    channels red, green, blue and yellow; otherwise drawn once from a fixed seed.
    """
    if channels == 1:
        return np.ones((n_classes, 1))
    if channels == 3 and n_classes <= 4:
        palette = np.array([[1.0, 0.25, 0.25], [0.25, 1.0, 0.25], [0.25, 0.25, 1.0], [1.0, 1.0, 0.25]])
        return palette[:n_classes]
    return np.random.default_rng(12345).uniform(0.25, 1.0, size=(n_classes, channels))


def make_shapes(n: int, size: int = 32, channels: int = 1, seed=0, noise: float = 0.1,
                colour_jitter: float = 0.2):
    """Draw ``n`` images of one random shape each, with labels and object masks.

    Returns ``(images, labels, masks)``:

    - images: float32 (n, channels, size, size), object values about 0.6-1.0
      (times the class colour) on Gaussian background noise of std ``noise``;
    - labels: int64 (n,), indices into ``SHAPE_NAMES`` (balanced, shuffled);
    - masks: bool (n, size, size), True on the object's pixels.

    The object's half-extent is 20-35% of ``size``; it lies wholly inside the
    image. ``colour_jitter`` (channels > 1 only) is the std of the per-image,
    per-channel change of the class colour, so colour is evidence but not a
    certainty. ``seed`` is an int or a ``numpy.random.Generator``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"make_shapes: n must be a non-negative int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"make_shapes: size must be an int >= 8, got {size!r}")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"make_shapes: channels must be a positive int, got {channels!r}")
    if noise < 0 or colour_jitter < 0:
        raise ValueError(f"make_shapes: noise ({noise}) and colour_jitter ({colour_jitter}) must be >= 0")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_classes = len(SHAPE_NAMES)
    labels = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    colours = class_colours(n_classes, channels)

    images = rng.normal(0.0, noise, size=(n, channels, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for i, label in enumerate(labels):
        r = rng.uniform(0.2, 0.35) * size
        margin = r + 0.5
        cy, cx = rng.uniform(margin, size - 1 - margin, size=2)
        mask = _DRAW[label](yy, xx, cy, cx, r)
        colour = colours[label]
        if channels > 1:
            colour = np.clip(colour + rng.normal(0.0, colour_jitter, size=channels), 0.05, 1.0)
        brightness = rng.uniform(0.6, 1.0)
        images[i][:, mask] += (brightness * colour)[:, None].astype(np.float32)
        masks[i] = mask
    return images, labels, masks
