"""The backend interface: one array module and the ops that need kernels of ours.

Layers, losses, optimizers, the trainer and Grad-CAM talk only to a ``Backend``:
``backend.xp`` for plain array math (``numpy`` or ``cupy``), and the methods
below for the work that runs in our own kernels. A backend implements the
methods with the exact shapes documented here; geometry objects
(``ConvGeometry``, ``PoolGeometry``) have been checked by the caller.
"""

from __future__ import annotations

import numpy as np

from .geometry import ConvGeometry, PoolGeometry


#: What ``conv2d_forward`` may fuse after the bias: nothing, or max(y, 0).
CONV_ACTIVATIONS = (None, "relu")


def check_conv_activation(activation, where: str = "conv2d_forward") -> None:
    """Raise ValueError, naming ``where``, unless ``activation`` is one of ``CONV_ACTIVATIONS``."""
    if activation not in CONV_ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {CONV_ACTIVATIONS}, got {activation!r}")


def host_array(a) -> np.ndarray:
    """Any array-like as a host NumPy array: what the Trainer and Grad-CAM accept as input.

    NumPy arrays and nested lists as ``np.asarray``; a ``cuda-emu`` device array
    and anything with ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA
    tensors, Numba device arrays) copied to the host (the latter through CuPy).
    """
    from .strict import StrictArray, asnumpy

    if isinstance(a, StrictArray):
        return asnumpy(a)
    if hasattr(a, "__cuda_array_interface__"):
        try:
            import cupy
        except ImportError as error:
            raise TypeError(f"a {type(a).__name__} on a CUDA device needs CuPy to be copied to "
                            f"the host; install it or pass a NumPy array") from error
        return cupy.asnumpy(cupy.asarray(a))
    return np.asarray(a)


class Backend:
    """Base class of the ``cpu``, ``cuda`` and ``cuda-emu`` backends.

    Subclasses set ``name`` and ``xp`` and implement the seven ops
    (``conv2d_backward``, all of a convolution's gradients at once, has a
    default built from them); the elementwise ops (ReLU, Dropout) have
    defaults written in ``xp`` that a backend may override with kernels of
    its own. Arrays given to the ops are C-contiguous, of one floating dtype
    (float32, or float64 on the backends that support it), and live where
    ``xp`` puts them.
    """

    name: str = "abstract"
    xp = np
    supports_float64 = True
    float_dtypes = (np.dtype(np.float32), np.dtype(np.float64))

    # --- moving data -----------------------------------------------------

    def asarray(self, a, dtype=None):
        """Return ``a`` as a C-contiguous array of this backend (a copy only when needed)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a) -> np.ndarray:
        """Return ``a`` as a NumPy array on the host."""
        return np.asarray(a)

    def free_memory(self) -> int | None:
        """Bytes free on the device for data, or None where arrays live in host memory anyway."""
        return None

    def host_syncs(self) -> int:
        """How many device-to-host synchronisations this backend has seen (0: the host is the device)."""
        return 0

    def synchronize(self) -> None:
        """Wait until all queued device work has finished (a no-op on the CPU)."""

    def __repr__(self) -> str:
        return f"<gpucnn backend {self.name!r}>"

    def check_operands(self, op: str, arrays: dict, dtype=None) -> np.dtype:
        """Check ``{name: (array, expected_shape)}``; return their common float dtype.

        Every array must be an ``xp`` array of float32 or float64, all of one
        dtype (or of ``dtype`` when given), of the expected shape. Raises
        TypeError/ValueError naming ``op``, the array and the shapes -- the
        ops' guard against a caller that bypassed the layers' own checks.
        """
        common = None if dtype is None else np.dtype(dtype)
        for name, (a, shape) in arrays.items():
            if not isinstance(a, self.xp.ndarray):
                raise TypeError(f"{op}: {name} must be a {self.xp.__name__} array on the "
                                f"{self.name} backend, got {type(a).__name__}")
            if common is None:
                if a.dtype not in self.float_dtypes:
                    raise TypeError(f"{op}: {name} has dtype {a.dtype}, expected float32 or float64")
                common = a.dtype
            elif a.dtype != common:
                raise TypeError(f"{op}: {name} has dtype {a.dtype}, expected {common} "
                                f"like the other operands")
            if a.shape != tuple(shape):
                raise ValueError(f"{op}: {name} has shape {a.shape}, expected {tuple(shape)} "
                                 f"from the geometry")
        return common

    # --- convolution ------------------------------------------------------

    def conv_algorithm(self, op: str, geom: ConvGeometry) -> str:
        """Name of the kernel this backend runs for ``op`` ("forward", "backward_data",
        "backward_filter") on ``geom`` -- what benchmarks log beside their timings."""
        return "default"

    def conv_precision(self, op: str, geom: ConvGeometry) -> str:
        """The arithmetic of that kernel: "fp32" here; the cuda backends may run "tf32"
        (``gpucnn.backend.precision``)."""
        return "fp32"

    def conv2d_forward(self, x, w, b, geom: ConvGeometry, activation=None):
        """y[n,k,p,q] = act(b[k] + sum_{c,r,s} x[n,c,p*sh-ph+r*dh, q*sw-pw+s*dw] * w[k,c,r,s]).

        x (N, C, H, W), w (K, C, R, S), b (K,) or None -> y (N, K, P, Q);
        positions outside x read as zero (padding). ``activation``: None or
        "relu" (``CONV_ACTIVATIONS``); the GPU kernels fuse it into the
        epilogue, saving a pass over y.
        """
        raise NotImplementedError(f"{self.name} backend does not implement conv2d_forward")

    def conv2d_backward_data(self, dy, w, geom: ConvGeometry):
        """dx = d(sum y*dy)/dx: dy (N, K, P, Q), w (K, C, R, S) -> dx (N, C, H, W)."""
        raise NotImplementedError(f"{self.name} backend does not implement conv2d_backward_data")

    def conv2d_backward_filter(self, dy, x, geom: ConvGeometry):
        """dw = d(sum y*dy)/dw: dy (N, K, P, Q), x (N, C, H, W) -> dw (K, C, R, S).

        The bias gradient is ``dy.sum(axis=(0, 2, 3))`` and needs no kernel.
        """
        raise NotImplementedError(f"{self.name} backend does not implement conv2d_backward_filter")

    def conv2d_backward(self, dy, x, w, geom: ConvGeometry, need_dx: bool = True, with_bias: bool = True,
                        relu_output=None):
        """All gradients of one convolution in one call: -> (dx or None, dw, db or None).

        dy (N, K, P, Q) is the gradient of the convolution's output; x (N, C, H, W)
        and w (K, C, R, S) are its input and weights. ``relu_output`` (N, K, P, Q):
        when the forward ended in a ReLU (``conv2d_forward(..., activation="relu")``
        or a ReLU layer fused after it), its output y; dy is then first multiplied
        by [y > 0], the ReLU's derivative (y > 0 exactly where the pre-activation
        is). Returns dx (N, C, H, W), or None when ``need_dx`` is false (the
        bottom layer of a training step); dw (K, C, R, S); db (K,), the sum of the
        masked dy over (N, P, Q), or None when ``with_bias`` is false.

        This default composes the three separate ops (and a mask pass and a
        reduction over dy); a backend overrides it where one pass over the
        images does it all (``cpu``).
        """
        if relu_output is not None:
            self.check_operands("conv2d_backward", {"dy": (dy, geom.y_shape),
                                                    "relu_output": (relu_output, geom.y_shape)})
            dy = self.relu_backward(dy, relu_output)
        dw = self.conv2d_backward_filter(dy, x, geom)
        db = dy.sum(axis=(0, 2, 3)) if with_bias else None
        dx = self.conv2d_backward_data(dy, w, geom) if need_dx else None
        return dx, dw, db

    # --- pooling ----------------------------------------------------------

    def max_pool2d_forward(self, x, geom: PoolGeometry):
        """x (N, C, H, W) -> (y (N, C, P, Q), argmax (N, C, P, Q) int32).

        ``argmax`` holds the flat index ``h*W + w`` inside the input plane of the
        first maximum of each window (padding never wins), as PyTorch does.
        """
        raise NotImplementedError(f"{self.name} backend does not implement max_pool2d_forward")

    def max_pool2d_backward(self, dy, argmax, geom: PoolGeometry):
        """dy (N, C, P, Q), argmax from the forward -> dx (N, C, H, W)."""
        raise NotImplementedError(f"{self.name} backend does not implement max_pool2d_backward")

    def avg_pool2d_forward(self, x, geom: PoolGeometry):
        """x (N, C, H, W) -> y (N, C, P, Q); padding counts in the divisor R*S (PyTorch's default)."""
        raise NotImplementedError(f"{self.name} backend does not implement avg_pool2d_forward")

    def avg_pool2d_backward(self, dy, geom: PoolGeometry):
        """dy (N, C, P, Q) -> dx (N, C, H, W): each window spreads dy/(R*S) over its cells."""
        raise NotImplementedError(f"{self.name} backend does not implement avg_pool2d_backward")

    # --- dense ------------------------------------------------------------

    def matmul(self, a, b):
        """a (M, K) @ b (K, N) -> (M, N): the Dense layer's GEMMs (``xp.matmul`` here; either
        operand may be a transposed view)."""
        return a @ b

    # --- batch normalisation (per channel of NCHW) ------------------------

    def batchnorm2d_moments(self, x):
        """x (N, C, H, W) -> (mean (C,), var (C,)) over N, H and W, the variance biased; x's dtype."""
        return x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))

    def batchnorm2d_normalize(self, x, mean, inv_std, gamma, beta):
        """x (N, C, H, W) -> (y, x_hat), both (N, C, H, W): x_hat = (x - mean) * inv_std and
        y = x_hat * gamma + beta, per channel (mean, inv_std, gamma, beta (C,))."""
        x_hat = (x - mean[None, :, None, None].astype(x.dtype)) * inv_std[None, :, None, None]
        return x_hat * gamma[None, :, None, None] + beta[None, :, None, None], x_hat

    def batchnorm2d_backward(self, dy, x_hat, scale, training: bool):
        """dy, x_hat (N, C, H, W), scale = gamma * inv_std (C,) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,)).

        With ``training`` the batch statistics depend on x too:
        dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means per channel;
        without, they are constants and dx = scale * dy.
        """
        dgamma = (dy * x_hat).sum(axis=(0, 2, 3))
        dbeta = dy.sum(axis=(0, 2, 3))
        scale = scale[None, :, None, None]
        if not training:
            return dy * scale, dgamma, dbeta
        mean_dy = dy.mean(axis=(0, 2, 3), keepdims=True)
        mean_dy_xhat = (dy * x_hat).mean(axis=(0, 2, 3), keepdims=True)
        return scale * (dy - mean_dy - x_hat * mean_dy_xhat), dgamma, dbeta

    # --- elementwise ------------------------------------------------------
    # Written in ``xp``: the cuda backends run these as they are, the cpu backend
    # overrides them with threaded kernels that compute the same values.

    def relu_forward(self, x):
        """y = x * (x > 0) (max(x, 0), NaN kept): x (any shape) -> y (same shape and dtype).

        ``y > 0`` exactly where ``x > 0``, so ``y`` is all that ``relu_backward`` needs.
        """
        return x * (x > 0)

    def relu_backward(self, dy, y, guided: bool = False):
        """dx = dy * (y > 0), with ``guided`` also * (dy > 0): dy, y (same shape) -> dx (dy's shape).

        ``y`` is ``relu_forward``'s output; guided backpropagation drops negative gradients too.
        """
        positive = y > 0
        if guided:
            positive &= dy > 0
        return dy * positive

    def leaky_relu_forward(self, x, negative_slope: float):
        """y = x * (1 if x > 0 else negative_slope): x (any shape) -> y (same shape and dtype)."""
        return x * self._leaky_slopes(x, negative_slope)

    def leaky_relu_backward(self, dy, x, negative_slope: float):
        """dx = dy * (1 if x > 0 else negative_slope): dy, x (the forward's input, same shape) -> dx."""
        return dy * self._leaky_slopes(x, negative_slope)

    def _leaky_slopes(self, x, negative_slope: float):
        """The slope of LeakyReLU at each element of x, in x's dtype."""
        return self.xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))

    def dropout_forward(self, x, rng, p: float):
        """Inverted dropout: x (any shape) -> (y, scale), both of x's shape and dtype.

        ``scale`` is 1/(1-p) where ``rng.keep_mask`` (a ``CounterRNG``, whose next
        draw this takes) keeps the element, else 0; y = x * scale, and the
        backward is dy * scale. Every backend draws the same mask for the same
        stream, so the same seed gives the same training on all of them.
        """
        keep = rng.keep_mask(self.xp, x.shape, p)
        scale = (keep / (1.0 - p)).astype(x.dtype)
        return x * scale, scale
