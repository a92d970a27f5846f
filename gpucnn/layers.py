"""Layers with hand-written gradients.

Every layer follows one contract (DESIGN.md, "Layers and the manual-gradient
contract"):

- ``forward(x, training=True)`` returns y and keeps what ``backward`` needs;
- ``backward(dy)`` returns dx and *accumulates* parameter gradients into
  ``layer.grads`` (same keys as ``layer.params``);
- ``to(backend)`` moves parameters, gradients and buffers and returns the layer.

The array math goes through ``self.backend.xp`` (NumPy or CuPy) and the
backend's kernels, so the same code serves every backend. Each backward is
written next to its forward and reads like the derivative it computes.
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from .arguments import as_float, as_int
from .backend import get_backend
from .backend.base import check_conv_activation
from .backend.counter_rng import CounterRNG
from .backend.geometry import ConvGeometry, PoolGeometry, check_nchw, pair
from .random import as_generator

LAYER_TYPES: dict[str, type] = {}


def register(cls):
    """Record a layer class by name, so a saved architecture can be rebuilt."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


@functools.cache
def _constructor_defaults(cls) -> dict:
    """``{argument: default}`` of ``cls.__init__``, read once per class (``repr`` names layers
    in every shape check, so it must stay cheap)."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _is_default(value, defaults: dict, name: str) -> bool:
    """Whether a config value equals its constructor default (an int default also matches the pair)."""
    if name not in defaults:
        return False
    default = defaults[name]
    return value == default or (isinstance(value, tuple) and value == (default, default))


class FusedInto:
    """A layer's ``_cache`` after ``Sequential`` ran its forward inside ``layer``'s (``gpucnn.fusion``)."""

    def __init__(self, layer):
        self.layer = layer


class Layer:
    """Base class: parameter dictionaries, backend moves, and the shape checks shared by all."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}  # saved state that is not trained (BatchNorm running statistics)
        self.backend = get_backend("cpu")
        self.name = None  # set by Sequential to say where the layer sits
        self._cache = None

    # --- identity and configuration --------------------------------------

    def get_config(self) -> dict:
        """The constructor arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        """``{key: shape}`` of the params and buffers a layer built from ``config`` would hold.

        ``config`` is ``get_config()`` output (missing arguments take their
        defaults). Nothing is built or allocated: a model file is checked against
        its architecture with this before any weight is read.
        """
        return cls._state_shapes({**_constructor_defaults(cls), **config})

    @classmethod
    def _state_shapes(cls, arguments: dict) -> dict:
        return {}  # no parameters, no buffers

    def __repr__(self) -> str:
        """The constructor call, leaving out arguments at their default (as PyTorch prints
        modules), so that ``summary()`` rows stay readable: ``Conv2D(in_channels=1,
        out_channels=32, kernel_size=(3, 3), padding=(1, 1))``."""
        defaults = _constructor_defaults(type(self))
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if not _is_default(v, defaults, k))
        return f"{type(self).__name__}({args})"

    @property
    def where(self) -> str:
        """How error messages name this layer."""
        return self.name or repr(self)

    # --- moving between backends and dtypes -------------------------------

    def to(self, backend=None, dtype=None):
        """Move parameters, gradients and buffers to ``backend`` (and cast to ``dtype``); returns self."""
        old = self.backend
        if backend is not None:
            self.backend = get_backend(backend)
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                host = old.to_numpy(value)
                if dtype is not None:
                    host = host.astype(dtype)
                store[key] = self.backend.asarray(host)
        self._cache = None
        return self

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for g in self.grads.values():
            g[...] = 0

    def _new_params(self, **arrays) -> None:
        """Install freshly initialised host arrays as parameters, with zero gradients."""
        xp = self.backend.xp
        for key, value in arrays.items():
            self.params[key] = self.backend.asarray(value.astype(np.float32))
            self.grads[key] = xp.zeros_like(self.params[key])

    # --- the contract ------------------------------------------------------

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of the output for an input of ``input_shape`` (batch axis included)."""
        return tuple(input_shape)

    def forward(self, x, training: bool = True):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def backward_parameters(self, dy) -> None:
        """Accumulate the parameter gradients from dy, leaving out dx (the bottom layer of a
        training step, whose input gradient nobody reads). This default runs ``backward`` and
        drops dx; layers whose dx costs work of its own skip it."""
        self.backward(dy)

    def mark_fused_into(self, layer) -> None:
        """Record that this layer's forward ran inside ``layer``'s (``gpucnn.fusion``), which keeps
        the state backward needs; this layer's own backward refuses to run until its next forward."""
        self._cache = FusedInto(layer)

    def ran_fused_into(self, layer) -> bool:
        """Whether this layer's last forward ran inside ``layer``'s (see ``mark_fused_into``)."""
        return isinstance(self._cache, FusedInto) and self._cache.layer is layer

    def _saved(self):
        """What forward kept for backward; an error if forward has not run (or ran fused into another layer)."""
        if self._cache is None:
            raise ValueError(f"{self.where}: backward called before forward")
        if isinstance(self._cache, FusedInto):
            raise ValueError(f"{self.where}: the last forward ran fused into {self._cache.layer.where} "
                             f"(Sequential.forward), which keeps this layer's state; run this layer's own "
                             f"forward to backpropagate through it alone")
        return self._cache

    def _check_dy(self, dy, expected_shape) -> None:
        if tuple(dy.shape) != tuple(expected_shape):
            raise ValueError(
                f"{self.where}: gradient of shape {tuple(dy.shape)} does not match the "
                f"output shape {tuple(expected_shape)} of the last forward"
            )


def _fan_in_uniform(rng, shape, fan_in: int, gain: float) -> np.ndarray:
    """Uniform(-b, b) with b = gain * sqrt(3 / fan_in): variance gain^2 / fan_in."""
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


class _Parametric(Layer):
    """A layer with a weight W and an optional bias b, initialised as PyTorch does.

    W is He (Kaiming) uniform for ReLU networks, U(-sqrt(6/fan_in), sqrt(6/fan_in))
    (``torch.nn.init.kaiming_uniform_(W, nonlinearity="relu")``); b is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default bias.
    """

    @classmethod
    def _state_shapes(cls, arguments):
        weight = cls.weight_shape_of(arguments)
        return {"W": weight, "b": weight[:1]} if arguments["bias"] else {"W": weight}

    def reset_parameters(self, rng=None) -> None:
        """Draw fresh weights from ``rng`` (a seed, a Generator, or None for the global stream)."""
        rng = as_generator(rng)
        fan_in = int(np.prod(self.weight_shape[1:]))
        arrays = {"W": _fan_in_uniform(rng, self.weight_shape, fan_in, math.sqrt(2.0))}
        if self.use_bias:
            arrays["b"] = _fan_in_uniform(rng, (self.weight_shape[0],), fan_in, 1.0 / math.sqrt(3.0))
        dtype = self.params["W"].dtype if "W" in self.params else np.float32
        self._new_params(**arrays)
        if dtype != np.float32:
            self.to(dtype=dtype)


@register
class Conv2D(_Parametric):
    """2-D convolution (cross-correlation), NCHW.

    x (N, C, H, W) -> y (N, K, P, Q) with W (K, C, R, S) and b (K,);
    ``P = (H + 2*pad - dilation*(R-1) - 1) // stride + 1``.
    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` take an int or a pair.
    ``activation="relu"`` makes the layer ``max(conv(x) + b, 0)`` in one kernel
    (Keras' ``Conv2D(..., activation="relu")``): the GPU kernels apply it in
    their epilogue, saving the separate ReLU layer's pass over y. Like ``ReLU``,
    the fused activation has a ``guided`` mode for guided backpropagation.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, activation=None, rng=None):
        super().__init__()
        where = f"Conv2D({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        self.in_channels = as_int(in_channels, "in_channels", where, minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", where, minimum=1)
        self.kernel_size = pair(kernel_size, "kernel_size", where, minimum=1)
        self.stride = pair(stride, "stride", where, minimum=1)
        self.padding = pair(padding, "padding", where, minimum=0)
        self.dilation = pair(dilation, "dilation", where, minimum=1)
        check_conv_activation(activation, where)
        self.activation = activation
        self.guided = False
        self.use_bias = bool(bias)
        self.weight_shape = self.weight_shape_of(self.get_config())
        self.reset_parameters(rng)

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, bias=self.use_bias, activation=self.activation)

    @staticmethod
    def weight_shape_of(config: dict) -> tuple:
        """The shape (K, C, R, S) of W for a configuration."""
        kernel = pair(config["kernel_size"], "kernel_size", "Conv2D")
        return (config["out_channels"], config["in_channels"]) + kernel

    def geometry(self, input_shape) -> ConvGeometry:
        """The checked geometry of this layer for an input of ``input_shape``."""
        check_nchw(input_shape, self.where, channels=self.in_channels)
        return ConvGeometry.from_shapes(input_shape, self.weight_shape, self.stride,
                                        self.padding, self.dilation, where=self.where)

    def output_shape(self, input_shape):
        return self.geometry(input_shape).y_shape

    def forward(self, x, training=True):
        return self.forward_with_activation(x, self.activation)

    def forward_with_activation(self, x, activation):
        """``forward`` with the fused ``activation`` (None or "relu") given for this call.

        ``Sequential`` runs a Conv2D followed by a ReLU layer as one convolution
        with ``activation="relu"`` (see ``gpucnn.fusion``); backward then
        includes the ReLU's derivative.
        """
        geom = self.geometry(x.shape)
        y = self.backend.conv2d_forward(x, self.params["W"], self.params.get("b"), geom,
                                        activation=activation)
        # With a ReLU, y itself is kept: y > 0 exactly where the pre-activation is, so the
        # backward reads its mask from y (a mask array would cost a pass of its own).
        self._cache = (x, geom, y if activation == "relu" else None)
        return y

    def backward(self, dy):
        return self.backward_with_guidance(dy, guided=self.guided)

    def backward_parameters(self, dy) -> None:
        """Accumulate the gradients of W and b from dy; the input gradient is not computed."""
        self.backward_with_guidance(dy, guided=self.guided, input_grad=False)

    def backward_with_guidance(self, dy, guided: bool, input_grad: bool = True):
        """``backward`` with the fused ReLU's ``guided`` mode given for this call (``Sequential``
        passes that of the ReLU layer it fused); returns dx, or None unless ``input_grad``."""
        x, geom, relu_output = self._saved()
        self._check_dy(dy, geom.y_shape)
        if relu_output is not None and guided:  # guided backprop also drops negative dy
            dy = self.backend.relu_backward(dy, relu_output, guided=True)
            relu_output = None
        dx, dw, db = self.backend.conv2d_backward(dy, x, self.params["W"], geom, need_dx=input_grad,
                                                  with_bias=self.use_bias, relu_output=relu_output)
        self.grads["W"] += dw
        if self.use_bias:
            self.grads["b"] += db
        return dx


@register
class Dense(_Parametric):
    """Fully connected layer: x (N, in_features) -> y = x @ W.T + b, W (out, in), b (out,)."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        where = f"Dense({in_features}, {out_features})"
        self.in_features = as_int(in_features, "in_features", where, minimum=1)
        self.out_features = as_int(out_features, "out_features", where, minimum=1)
        self.use_bias = bool(bias)
        self.weight_shape = self.weight_shape_of(self.get_config())
        self.reset_parameters(rng)

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias)

    @staticmethod
    def weight_shape_of(config: dict) -> tuple:
        """The shape (out_features, in_features) of W for a configuration."""
        return (config["out_features"], config["in_features"])

    def output_shape(self, input_shape):
        self._check_input(input_shape)
        return (input_shape[0], self.out_features)

    def _check_input(self, shape):
        if len(shape) != 2 or shape[1] != self.in_features:
            hint = " (add a Flatten or GlobalAvgPool2D before it)" if len(shape) > 2 else ""
            raise ValueError(f"{self.where}: expected input of shape (N, {self.in_features}), "
                             f"got {tuple(shape)}{hint}")

    def forward(self, x, training=True):
        self._check_input(x.shape)
        self._cache = x
        y = self.backend.matmul(x, self.params["W"].T)
        if self.use_bias:
            y += self.params["b"]
        return y

    def backward(self, dy):
        self.backward_parameters(dy)
        return self.backend.matmul(dy, self.params["W"])

    def backward_parameters(self, dy) -> None:
        x = self._saved()
        self._check_dy(dy, (x.shape[0], self.out_features))
        self.grads["W"] += self.backend.matmul(dy.T, x)
        if self.use_bias:
            self.grads["b"] += dy.sum(axis=0)


class _Pool2D(Layer):
    """Shared arguments and checks of the max and average pooling layers."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        where = f"{type(self).__name__}(kernel_size={kernel_size!r})"
        self.kernel_size = pair(kernel_size, "kernel_size", where, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", where, minimum=1)
        self.padding = pair(padding, "padding", where, minimum=0)
        # The padding's upper bound (half the window) is PoolGeometry's rule; asking it
        # for a window-sized input reports a configuration error now, not at the first batch.
        PoolGeometry.from_shape((1, 1) + tuple(k + 2 * p for k, p in zip(self.kernel_size, self.padding)),
                                self.kernel_size, self.stride, self.padding, where=where)

    def get_config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def geometry(self, input_shape) -> PoolGeometry:
        return PoolGeometry.from_shape(input_shape, self.kernel_size, self.stride, self.padding,
                                       where=self.where)

    def output_shape(self, input_shape):
        return self.geometry(input_shape).y_shape


@register
class MaxPool2D(_Pool2D):
    """Max pooling: x (N, C, H, W) -> y (N, C, P, Q); a window's gradient goes to its first maximum."""

    def forward(self, x, training=True):
        geom = self.geometry(x.shape)
        y, argmax = self.backend.max_pool2d_forward(x, geom)
        self._cache = (argmax, geom)
        return y

    def backward(self, dy):
        argmax, geom = self._saved()
        self._check_dy(dy, geom.y_shape)
        return self.backend.max_pool2d_backward(dy, argmax, geom)


@register
class AvgPool2D(_Pool2D):
    """Average pooling: x (N, C, H, W) -> y (N, C, P, Q); padding counts in the divisor R*S."""

    def forward(self, x, training=True):
        geom = self.geometry(x.shape)
        self._cache = geom
        return self.backend.avg_pool2d_forward(x, geom)

    def backward(self, dy):
        geom = self._saved()
        self._check_dy(dy, geom.y_shape)
        return self.backend.avg_pool2d_backward(dy, geom)


@register
class GlobalAvgPool2D(Layer):
    """Mean over space: x (N, C, H, W) -> y (N, C)."""

    def output_shape(self, input_shape):
        check_nchw(input_shape, self.where)
        return tuple(input_shape[:2])

    def forward(self, x, training=True):
        check_nchw(x.shape, self.where)
        self._cache = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy):
        N, C, H, W = self._saved()
        self._check_dy(dy, (N, C))
        # Each of the H*W inputs contributed 1/(H*W) of the mean.
        dx = self.backend.xp.empty((N, C, H, W), dtype=dy.dtype)
        dx[...] = (dy / (H * W))[:, :, None, None]
        return dx


@register
class Flatten(Layer):
    """x (N, d1, d2, ...) -> y (N, d1*d2*...)."""

    def output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:])))

    def forward(self, x, training=True):
        if x.ndim < 2:
            raise ValueError(f"{self.where}: expected an input with a batch axis, got shape {x.shape}")
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        shape = self._saved()
        self._check_dy(dy, self.output_shape(shape))
        return dy.reshape(shape)


@register
class ReLU(Layer):
    """max(x, 0). In ``guided`` mode (guided backpropagation) backward also drops negative dy."""

    def __init__(self):
        super().__init__()
        self.guided = False

    def forward(self, x, training=True):
        y = self.backend.relu_forward(x)
        self._cache = y  # y > 0 exactly where x > 0: the output is the mask, no array of its own
        return y

    def backward(self, dy):
        y = self._saved()
        self._check_dy(dy, y.shape)
        return self.backend.relu_backward(dy, y, guided=self.guided)


@register
class LeakyReLU(Layer):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = as_float(negative_slope, "negative_slope", "LeakyReLU")

    def get_config(self):
        return dict(negative_slope=self.negative_slope)

    def forward(self, x, training=True):
        self._cache = x  # the slopes follow from x's signs: x takes the place an array of slopes took
        return self.backend.leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy):
        x = self._saved()
        self._check_dy(dy, x.shape)
        return self.backend.leaky_relu_backward(dy, x, self.negative_slope)


@register
class Sigmoid(Layer):
    """1 / (1 + exp(-x)); d/dx = y (1 - y)."""

    def forward(self, x, training=True):
        xp = self.backend.xp
        # Split by sign so exp never overflows.
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self._cache = y
        return y

    def backward(self, dy):
        y = self._saved()
        self._check_dy(dy, y.shape)
        return dy * y * (1 - y)


@register
class Tanh(Layer):
    """tanh(x); d/dx = 1 - y^2."""

    def forward(self, x, training=True):
        y = self.backend.xp.tanh(x)
        self._cache = y
        return y

    def backward(self, dy):
        y = self._saved()
        self._check_dy(dy, y.shape)
        return dy * (1 - y * y)


@register
class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability p and scale the rest by 1/(1-p).

    The masks are drawn on the device from a counter-based hash
    (``backend.counter_rng.CounterRNG``) keyed by the layer's Generator, so a
    mask costs no host-to-device copy and the same seed gives the same masks on
    every backend. ``rng``: an int seed, a Generator or None (the package-wide
    one); the keys are drawn from it at the first training forward, or at
    ``reseed``, which the Trainer calls at the start of every epoch.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = as_float(p, "p", f"Dropout(p={p!r})", low=0.0, high=1.0, high_open=True)
        self.reseed(rng)

    def reseed(self, rng) -> None:
        """Start a new mask stream keyed from ``rng`` (an int seed, a Generator or None)."""
        self.rng = CounterRNG(as_generator(rng))

    def get_config(self):
        return dict(p=self.p)

    def forward(self, x, training=True):
        if not training or self.p == 0.0:
            self._cache = (None, x.shape)  # the identity
            return x
        y, scale = self.backend.dropout_forward(x, self.rng, self.p)
        self._cache = (scale, x.shape)
        return y

    def backward(self, dy):
        scale, shape = self._saved()
        self._check_dy(dy, shape)
        return dy if scale is None else dy * scale


@register
class BatchNorm2D(Layer):
    """Batch normalisation over (N, H, W) per channel: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    Training uses the batch statistics and updates the running ones
    (``running = (1 - momentum) * running + momentum * batch``, unbiased variance,
    as PyTorch); ``training=False`` uses the running statistics.
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        where = f"BatchNorm2D({num_features!r})"
        num_features = as_int(num_features, "num_features", where, minimum=1)
        self.num_features = num_features
        self.momentum = as_float(momentum, "momentum", where, low=0.0, high=1.0)
        self.eps = as_float(eps, "eps", where, low=0.0, low_open=True)
        self._new_params(gamma=np.ones(num_features), beta=np.zeros(num_features))
        self.buffers = {"running_mean": self.backend.asarray(np.zeros(num_features, np.float32)),
                        "running_var": self.backend.asarray(np.ones(num_features, np.float32))}

    def get_config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps)

    @classmethod
    def _state_shapes(cls, arguments):
        shape = (arguments["num_features"],)
        return {key: shape for key in ("gamma", "beta", "running_mean", "running_var")}

    def output_shape(self, input_shape):
        check_nchw(input_shape, self.where, channels=self.num_features)
        return tuple(input_shape)

    def forward(self, x, training=True):
        check_nchw(x.shape, self.where, channels=self.num_features)
        xp = self.backend.xp
        if training:
            m = x.shape[0] * x.shape[2] * x.shape[3]
            mean, var = self.backend.batchnorm2d_moments(x)
            mom = self.momentum
            self.buffers["running_mean"] *= 1 - mom
            self.buffers["running_mean"] += mom * mean
            self.buffers["running_var"] *= 1 - mom
            self.buffers["running_var"] += mom * var * (m / max(m - 1, 1))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)
        y, x_hat = self.backend.batchnorm2d_normalize(x, mean, inv_std, self.params["gamma"], self.params["beta"])
        self._cache = (x_hat, inv_std, training)
        return y

    def backward(self, dy):
        x_hat, inv_std, training = self._saved()
        self._check_dy(dy, x_hat.shape)
        # With ``training`` the batch mean and variance depend on x too (see the backend's docstring).
        dx, dgamma, dbeta = self.backend.batchnorm2d_backward(dy, x_hat, self.params["gamma"] * inv_std, training)
        self.grads["gamma"] += dgamma
        self.grads["beta"] += dbeta
        return dx
