"""Shapes of convolution and pooling, computed and checked in one place.

Every backend and every layer takes its output sizes from here, so the formula
``P = (H + 2*pad - dilation*(R-1) - 1) // stride + 1`` is written once, and a
bad configuration is refused before any kernel runs, with a message that names
the layer and the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arguments import as_int


def pair(value, name: str, where: str, minimum: int | None = None) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; any integer type counts (``np.int64(3)``).

    A non-integer is a TypeError, a pair of the wrong length or a value below
    ``minimum`` a ValueError; the messages name ``where`` and ``name``.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{where}: {name} must be an int or a pair, got {value!r}")
        a, b = value
    else:
        a = b = value
    return as_int(a, name, where, minimum), as_int(b, name, where, minimum)


def output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """``(size + 2*pad - dilation*(kernel-1) - 1) // stride + 1``: one output axis."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def check_nchw(shape, where: str, channels: int | None = None) -> None:
    """Refuse anything but a 4-D NCHW shape (with ``channels`` channels if given)."""
    if len(shape) != 4:
        raise ValueError(f"{where}: expected a 4-D input (N, C, H, W), got shape {tuple(shape)}")
    if channels is not None and shape[1] != channels:
        raise ValueError(
            f"{where}: expected {channels} input channels, got shape {tuple(shape)} "
            f"with {shape[1]} channels"
        )
    if min(shape) < 1:
        raise ValueError(f"{where}: empty input of shape {tuple(shape)}")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution kernel needs to know about its shapes.

    Input x is (N, C, H, W), filter w is (K, C, R, S), output y is (N, K, P, Q).
    ``stride``, ``pad`` and ``dilation`` are (vertical, horizontal) pairs.
    """

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def P(self) -> int:
        return output_size(self.H, self.R, self.stride[0], self.pad[0], self.dilation[0])

    @property
    def Q(self) -> int:
        return output_size(self.W, self.S, self.stride[1], self.pad[1], self.dilation[1])

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.K, self.C, self.R, self.S)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.K, self.P, self.Q)

    @property
    def flops(self) -> int:
        """Multiply-adds times two of one forward pass (backward-data and -filter cost the same)."""
        return 2 * self.N * self.K * self.P * self.Q * self.C * self.R * self.S

    @classmethod
    def from_shapes(cls, x_shape, w_shape, stride=1, padding=0, dilation=1,
                    where: str = "conv2d") -> "ConvGeometry":
        """Check shapes and hyper-parameters, and return the geometry; errors name ``where``."""
        check_nchw(x_shape, where)
        if len(w_shape) != 4:
            raise ValueError(f"{where}: expected a 4-D filter (K, C, R, S), got shape {tuple(w_shape)}")
        N, C, H, W = (int(v) for v in x_shape)
        K, Cw, R, S = (int(v) for v in w_shape)
        if Cw != C:
            raise ValueError(
                f"{where}: input of shape {tuple(x_shape)} has {C} channels but the filter "
                f"of shape {tuple(w_shape)} expects {Cw}"
            )
        stride, pad, dil = (pair(stride, "stride", where), pair(padding, "padding", where),
                            pair(dilation, "dilation", where))
        if min(stride) < 1 or min(dil) < 1:
            raise ValueError(f"{where}: stride {stride} and dilation {dil} must be positive")
        if min(pad) < 0:
            raise ValueError(f"{where}: padding {pad} must not be negative")
        geom = cls(N, C, H, W, K, R, S, stride, pad, dil)
        if geom.P < 1 or geom.Q < 1:
            raise ValueError(
                f"{where}: input of shape {tuple(x_shape)} (padded by {pad}) is smaller than the "
                f"dilated kernel {((R - 1) * dil[0] + 1, (S - 1) * dil[1] + 1)}"
            )
        return geom


@dataclass(frozen=True)
class PoolGeometry:
    """Shapes of a 2-D pooling: x (N, C, H, W) -> y (N, C, P, Q), window (R, S)."""

    N: int
    C: int
    H: int
    W: int
    R: int
    S: int
    stride: tuple[int, int]
    pad: tuple[int, int] = (0, 0)

    @property
    def P(self) -> int:
        return output_size(self.H, self.R, self.stride[0], self.pad[0])

    @property
    def Q(self) -> int:
        return output_size(self.W, self.S, self.stride[1], self.pad[1])

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.P, self.Q)

    @classmethod
    def from_shape(cls, x_shape, kernel_size, stride=None, padding=0,
                   where: str = "pool2d") -> "PoolGeometry":
        """Check the window, then the input shape; padding may be at most half the window (as PyTorch).

        The window comes first so that a bad kernel_size, stride or padding is
        reported as such, not as the empty input it would make.
        """
        R, S = pair(kernel_size, "kernel_size", where, minimum=1)
        stride = (R, S) if stride is None else pair(stride, "stride", where, minimum=1)
        pad = pair(padding, "padding", where)
        if min(pad) < 0 or pad[0] > R // 2 or pad[1] > S // 2:
            raise ValueError(
                f"{where}: padding {pad} must be between 0 and half the window {(R, S)}"
            )
        check_nchw(x_shape, where)
        N, C, H, W = (int(v) for v in x_shape)
        geom = cls(N, C, H, W, R, S, stride, pad)
        if geom.P < 1 or geom.Q < 1:
            raise ValueError(
                f"{where}: input of shape {tuple(x_shape)} (padded by {pad}) is smaller than the "
                f"pooling window {(R, S)}"
            )
        return geom
