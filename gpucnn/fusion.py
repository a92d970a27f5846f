"""How ``Sequential`` runs its layers: an execution plan with the fusions that save passes over memory.

The plan is a list of steps built from the layer list at every forward
(a few type checks). A step is one layer, or a fused pair:

- ``Conv2D`` (no activation of its own) directly followed by a plain ``ReLU``
  runs as one convolution with ``activation="relu"``: the backend clamps each
  image's output while it is in cache, and the ReLU's forward pass over the
  output is gone. Backward hands the stored output to the convolution's
  combined backward (``Backend.conv2d_backward(relu_output=...)``), which masks
  dy on its way into the GEMMs instead of in a pass of the ReLU's own. The
  results are those of the two layers run one after the other: y = max(z, 0)
  takes the value of ReLU's z * [z > 0] (the sign of a zero aside), and the
  masked dy is the same product dy * [y > 0] with [y > 0] = [z > 0]. The
  ReLU's ``guided`` flag (guided backpropagation) is read when backward runs,
  as the ReLU's own backward reads it.

Only ``Sequential.forward``/``backward`` run the plan. Explanations, feature
map plots and anything else that calls layers one by one run each layer's own
forward, so they see every layer's output exactly as without fusion. After a
fused forward the ReLU keeps no state of its own (``Layer.mark_fused_into``):
its backward alone refuses to run, since the convolution holds the mask.
"""

from __future__ import annotations

from .layers import Conv2D, ReLU


class LayerStep:
    """One layer run as it is."""

    def __init__(self, layer):
        self.layer = layer
        self.has_parameters = bool(layer.params)

    def forward(self, x, training: bool):
        return self.layer.forward(x, training=training)

    def backward(self, dy):
        return self.layer.backward(dy)

    def backward_parameters(self, dy) -> None:
        self.layer.backward_parameters(dy)


class ConvReLUStep:
    """A ``Conv2D`` without activation and the plain ``ReLU`` after it, run as one convolution with a ReLU."""

    def __init__(self, conv: Conv2D, relu: ReLU):
        self.conv, self.relu = conv, relu
        self.has_parameters = True

    def forward(self, x, training: bool):
        y = self.conv.forward_with_activation(x, "relu")
        self.relu.mark_fused_into(self.conv)
        return y

    def _ran_fused(self) -> bool:
        """Whether the two layers' state is that of this step's forward; a layer-by-layer forward
        since (an explanation's) left the state of the unfused layers, and backward follows it."""
        return self.relu.ran_fused_into(self.conv)

    def backward(self, dy):
        if not self._ran_fused():
            return self.conv.backward(self.relu.backward(dy))
        return self.conv.backward_with_guidance(dy, guided=self.relu.guided)

    def backward_parameters(self, dy) -> None:
        if not self._ran_fused():
            self.conv.backward_parameters(self.relu.backward(dy))
            return
        self.conv.backward_with_guidance(dy, guided=self.relu.guided, input_grad=False)


def _fusable(layer, following) -> bool:
    """Whether ``layer`` and the next layer ``following`` make a ``ConvReLUStep``.

    Exact types only: a subclass may change what forward or backward computes.
    """
    return (type(layer) is Conv2D and layer.activation is None
            and type(following) is ReLU)


def plan(layers) -> list:
    """The steps that run ``layers`` (a list of layers) in order, fusing what ``_fusable`` allows."""
    steps = []
    i = 0
    while i < len(layers):
        if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]):
            steps.append(ConvReLUStep(layers[i], layers[i + 1]))
            i += 2
        else:
            steps.append(LayerStep(layers[i]))
            i += 1
    return steps
