"""Score-CAM: channel weights from forward passes on masked inputs, no gradients."""

from __future__ import annotations

from .base import BaseCAM
from .imageops import upsample_bilinear


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., arXiv:1910.01279, Algorithm 1).

    Each activation channel A^k (N, C, h, w) is upsampled to the input size and
    min-max scaled to [0, 1] per image (a constant channel becomes all zero);
    the input times that mask is run through the model, and the explained
    score (a logit, as the paper's f^c) of each masked copy is S_k. The
    weights are softmax_k(S_k) over the channels, and the map is
    ReLU(sum_k w_k A^k). The paper's baseline score f^c(X_b) is the same for
    every channel and cancels in the softmax.

    Cost: N * C extra images through the network. ``batch_size`` bounds both
    the images explained at once and the masked copies in one forward pass.
    """

    needs_gradient = False

    def _weights(self, A, dA, x, target):
        xp = self.backend.xp
        N, C = A.shape[:2]
        up = upsample_bilinear(A, x.shape[2:], self.backend)           # (N, C, H, W)
        low = up.min(axis=(2, 3), keepdims=True)
        span = up.max(axis=(2, 3), keepdims=True) - low
        masks = xp.where(span > 0, (up - low) / xp.where(span > 0, span, 1), 0)
        masks = masks.reshape((N * C, 1) + tuple(x.shape[2:]))
        scores = xp.empty(N * C, dtype=A.dtype)
        for start in range(0, N * C, self.batch_size):
            rows = xp.arange(start, min(start + self.batch_size, N * C))
            sample = rows // C                                         # masked copy -> its image
            logits, _ = self.forward(x[sample] * masks[rows])
            scores[rows] = target.take(sample).score(logits)
        scores = scores.reshape(N, C)
        e = xp.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
