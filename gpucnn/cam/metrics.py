"""Numbers that score an explanation: the pointing game and a deletion-based faithfulness test.

- ``pointing_game(maps, masks)``: does each map's maximum fall on the object?
  (Zhang et al., "Top-down neural attention by excitation backprop".)
- ``faithfulness(model, x, maps)``: remove the pixels a map ranks highest and
  measure how much the model's confidence drops, against removing as many
  random pixels -- the deletion idea of RISE (Petsiuk et al.,
  arXiv:1806.07421) and ROAD (Rong et al., arXiv:2202.00449). A map that
  finds the evidence the model uses makes the confidence fall faster than
  chance. Removed pixels are filled from a blurred copy of the image (or
  the image's mean), which keeps the input closer to the training data than
  black holes would; ROAD's point that the shape of the removed region can
  itself leak information applies, so compare methods with the same fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arguments import as_int
from ..backend.base import host_array
from .base import Explainer, split_class_idx
from .imageops import gaussian_blur
from .targets import ClassTarget, resolve_target


def pointing_game(maps, masks, tolerance: float = 0) -> np.ndarray:
    """hits (N,) bool: whether the arg-max of each map (N, H, W) lies on its mask (N, H, W).

    ``tolerance`` (pixels): a peak within that Euclidean distance of a mask
    pixel also counts, as in Zhang et al., who allow 15 pixels on 224-pixel
    images (about 7% of the side). ``tolerance=0`` asks for the peak to lie
    exactly on the object. An all-zero map points nowhere and counts as a miss.
    """
    maps, masks = host_array(maps), host_array(masks).astype(bool, copy=False)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"pointing_game: maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    if tolerance < 0:
        raise ValueError(f"pointing_game: tolerance must be >= 0, got {tolerance}")
    N, H, W = maps.shape
    flat = maps.reshape(N, -1)
    py, px = np.divmod(flat.argmax(axis=1), W)
    yy, xx = np.mgrid[0:H, 0:W]
    hit = np.empty(N, dtype=bool)
    for i in range(N):
        near = (yy - py[i]) ** 2 + (xx - px[i]) ** 2 <= tolerance ** 2
        hit[i] = bool(np.any(masks[i] & near))
    return hit & (flat.max(axis=1) > 0)


@dataclass
class Faithfulness:
    """Result of ``faithfulness``: mean confidence drops per removed fraction of pixels.

    fractions (F,); confidence (N,): the explained confidence on the intact
    images; drop (F,): the mean drop when the most-highlighted pixels are
    removed; random_drop (F,): the same for random pixels (mean over repeats).
    """

    fractions: np.ndarray
    confidence: np.ndarray
    drop: np.ndarray
    random_drop: np.ndarray

    @property
    def gain(self) -> float:
        """Mean over the fractions of drop - random_drop: > 0 when the map beats chance."""
        return float(np.mean(self.drop - self.random_drop))


def faithfulness(model, x, maps, class_idx=None, fractions=(0.05, 0.1, 0.2, 0.3), fill="blur",
                 blur_sigma=None, n_random=3, seed=0, batch_size=256) -> Faithfulness:
    """Confidence drop when the top ``fractions`` of each map's pixels are removed, against random pixels.

    x (N, C, H, W) images; maps (N, H, W) their heatmaps (any scale; only the
    ranking counts; ties are broken at random). ``class_idx`` as for Grad-CAM
    (pass the one the maps were made for); the confidence is the softmax
    probability of that class, or a callable target's score. A removed pixel
    has all its channels replaced by the ``fill``: ``"blur"`` (a Gaussian blur
    of the image, std ``blur_sigma``, default an eighth of the image's larger
    side) or ``"mean"`` (the image's per-channel mean).

    The images are scored ``batch_size`` at a time, so memory does not grow
    with N. Image i's random tie-breaks and random pixel orders come from its
    own stream, ``numpy.random.default_rng([seed, i])``: the result is the same
    for any ``batch_size``.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or np.any((fractions <= 0) | (fractions > 1)):
        raise ValueError(f"faithfulness: fractions must be a 1-D list of values in (0, 1], got {fractions}")
    n_random = as_int(n_random, "n_random", "faithfulness", minimum=1)
    seed = as_int(seed, "seed", "faithfulness", minimum=0)
    if fill not in ("blur", "mean"):
        raise ValueError(f"faithfulness: fill must be 'blur' or 'mean', got {fill!r}")
    explainer = Explainer(model, batch_size)
    x = explainer.check_images(x)
    N, C, H, W = x.shape
    maps = host_array(maps)
    if maps.shape != (N, H, W):
        raise ValueError(f"faithfulness: maps have shape {maps.shape}; expected (N, H, W) = {(N, H, W)} "
                         f"for images of shape {tuple(x.shape)}")
    sigma = max(H, W) / 8 if blur_sigma is None else float(blur_sigma)
    counts = [max(1, int(round(f * H * W))) for f in fractions]
    xp = explainer.backend.xp

    def batch_drops(xb, batch_class_idx, start):
        """(confidence (n,), summed drops (F,), summed random drops (F,)) of images start..start+n."""
        n = xb.shape[0]
        filler = (gaussian_blur(xb, sigma, explainer.backend) if fill == "blur"
                  else xb.mean(axis=(2, 3), keepdims=True))  # (n, C, 1, 1), broadcast where pixels go
        logits = explainer.forward(xb)[0]
        target = resolve_target(batch_class_idx, logits, explainer.backend)

        def confidence(z):
            if isinstance(target, ClassTarget):
                e = xp.exp(z - z.max(axis=1, keepdims=True))
                return (e / e.sum(axis=1, keepdims=True))[xp.arange(n), target.classes]
            return target.score(z)

        base = confidence(logits)

        def summed_drop(order, k):
            removed = np.zeros((n, H * W), dtype=bool)
            removed[np.arange(n)[:, None], order[:, :k]] = True
            removed = explainer.backend.asarray(removed.reshape(n, 1, H, W))
            return float((base - confidence(explainer.forward(xp.where(removed, filler, xb))[0])).sum())

        rngs = [np.random.default_rng([seed, i]) for i in range(start, start + n)]
        draw = lambda: np.stack([rng.random(H * W) for rng in rngs])  # noqa: E731
        flat = maps[start:start + n].reshape(n, -1)
        ranked = np.lexsort((draw(), -flat), axis=-1)  # highest first, random among ties
        drop = np.array([summed_drop(ranked, k) for k in counts])
        random_drop = np.zeros(len(counts))
        for _ in range(n_random):
            shuffled = np.argsort(draw(), axis=1)
            random_drop += [summed_drop(shuffled, k) for k in counts]
        return explainer.backend.to_numpy(base), drop, random_drop / n_random

    class_idx_of = split_class_idx(class_idx, N)
    parts = [batch_drops(explainer.to_input(x[start:start + batch_size]),
                         class_idx_of(start, start + batch_size), start)
             for start in range(0, N, batch_size)]
    return Faithfulness(fractions=fractions, confidence=np.concatenate([p[0] for p in parts]),
                        drop=sum(p[1] for p in parts) / N, random_drop=sum(p[2] for p in parts) / N)
