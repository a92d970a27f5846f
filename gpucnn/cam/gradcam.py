"""Gradient-weighted class activation maps: Grad-CAM and Grad-CAM++.

Both read g = d score / dA, the gradient of the explained score with respect
to the chosen layer's activations A (N, C, h, w), from one backward pass that
stops at that layer.
"""

from __future__ import annotations

from .base import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., arXiv:1610.02391).

    alpha_k = (1 / hw) sum_ij dY/dA^k_ij -- the gradient of the class score Y
    (a logit) averaged over space -- and the map is ReLU(sum_k alpha_k A^k).

        cam = GradCAM(model)              # the last convolution block
        maps = cam(x)                     # (N, H, W) in [0, 1]
        raw = cam(x, class_idx=3, raw=True)   # (N, h, w)

    Cost: one forward pass and a backward pass from the head down to the
    chosen layer only.
    """

    def _weights(self, A, dA, x, target):
        return dA.mean(axis=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhyay et al., arXiv:1710.11063), the exponential-score closed form.

    With the score S = exp(Y) and a network that is piecewise linear above A,
    the higher derivatives of S are powers of g = dY/dA, and the per-pixel
    coefficients are (paper, eq. 19)

        a^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)     (0 where the denominator is 0)

    and the channel weight is w_k = sum_ij a^k_ij ReLU(g_ij). The paper's
    weight carries one more factor, exp(Y), equal for every channel of a sample;
    it is left out because it changes no normalised map and would overflow
    float32 for logits above about 88, so ``raw`` maps are those of the paper
    divided by exp(Y).
    """

    def _weights(self, A, dA, x, target):
        xp = self.backend.xp
        g2 = dA * dA
        denom = 2 * g2 + A.sum(axis=(2, 3), keepdims=True) * g2 * dA
        nonzero = denom != 0
        coeff = xp.where(nonzero, g2 / xp.where(nonzero, denom, 1), 0)
        return (coeff * xp.maximum(dA, 0)).sum(axis=(2, 3))
