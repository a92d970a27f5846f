"""Guided backpropagation and Guided Grad-CAM: input-resolution detail on top of the class maps.

Guided backpropagation (Springenberg et al., arXiv:1412.6806) is the gradient
of the score with respect to the input, where every ReLU's backward also
drops negative incoming gradients. The ReLU layers have that mode as a flag
(``ReLU.guided``, and ``Conv2D.guided`` for a convolution with a fused ReLU);
``guided_relus`` switches it on for one call and restores it afterwards, also
when the call raises.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..layers import Conv2D, ReLU
from .base import Explainer
from .gradcam import GradCAM
from .imageops import scale_to_unit, upsample_bilinear
from .targets import resolve_target


def has_relu(layer) -> bool:
    """Whether ``layer`` ends in a ReLU with a guided mode: a ``ReLU``, or a ``Conv2D`` with it fused."""
    return isinstance(layer, ReLU) or (isinstance(layer, Conv2D) and layer.activation == "relu")


@contextmanager
def guided_relus(model):
    """Put every ReLU of ``model`` (layers and fused ones) in guided mode inside the block;
    restore each flag on exit."""
    relus = [layer for layer in model.layers if has_relu(layer)]
    before = [relu.guided for relu in relus]
    try:
        for relu in relus:
            relu.guided = True
        yield
    finally:
        for relu, flag in zip(relus, before):
            relu.guided = flag


class GuidedBackprop(Explainer):
    """``GuidedBackprop(model)(x, class_idx=None)`` -> guided input gradients (N, C, H, W), NumPy.

    ``class_idx`` as for Grad-CAM (None, int, one per sample, or a callable
    target). Cost: one forward and one full backward pass. (LeakyReLU layers
    have no guided mode and pass gradients as usual.)
    """

    def __call__(self, x, class_idx=None):
        def gradient_of(xb, batch_class_idx):
            logits, _ = self.forward(xb)
            target = resolve_target(batch_class_idx, logits, self.backend)
            with guided_relus(self.model):
                grad = self.backward(target.gradient(logits), len(self.model.layers) - 1, -1)
            return self.backend.to_numpy(grad)

        return self.map_batches(gradient_of, x, class_idx)


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al., arXiv:1610.02391, section 3.1).

    ``attribution(x)`` is the paper's product, per channel: guided
    backpropagation (N, C, H, W) times the upsampled Grad-CAM map scaled to
    [0, 1]. ``cam(x)`` reduces it to one map per image, (N, H, W): the
    largest magnitude over the channels, scaled to [0, 1] per image (or
    unscaled with ``raw=True``; it is always at input resolution).
    ``explain`` returns the Grad-CAM part, as for ``GradCAM``.

    Cost: one forward pass, the backward of Grad-CAM, and one guided backward
    to the input. When no ReLU lies above the chosen layer, the guided
    backward starts from Grad-CAM's gradient at that layer instead of
    repeating the head.
    """

    def attribution(self, x, class_idx=None):
        """Guided backprop times upsampled Grad-CAM: (N, C, H, W) NumPy array."""
        return self.map_batches(lambda xb, c: self.backend.to_numpy(self._attribution(xb, c)), x, class_idx)

    def _attribution(self, x, class_idx):
        """The attribution of one batch x (on the backend), on the backend."""
        x, logits, A, dA, weights, raw, target = self._run(x, class_idx)
        layers = self.model.layers
        top = len(layers) - 1
        with guided_relus(self.model):
            if any(has_relu(layer) for layer in layers[self.layer_index + 1:]):
                guided = self.backward(target.gradient(logits), top, -1)
            else:  # the head has no ReLU: its guided gradient is Grad-CAM's dA
                guided = self.backward(dA, self.layer_index, -1)
        cam = scale_to_unit(upsample_bilinear(raw, x.shape[2:], self.backend), self.backend.xp)
        return guided * cam[:, None]

    def __call__(self, x, class_idx=None, raw: bool = False):
        """(N, H, W): max over channels of |guided backprop x Grad-CAM|, in [0, 1] unless ``raw``."""
        def saliency_of(xb, batch_class_idx):
            saliency = self.backend.xp.abs(self._attribution(xb, batch_class_idx)).max(axis=1)
            if not raw:
                saliency = scale_to_unit(saliency, self.backend.xp)
            return self.backend.to_numpy(saliency)

        return self.map_batches(saliency_of, x, class_idx)
