"""The standard benchmark workload: which shapes, which ops, and the inputs they run on.

Every convolution case runs as three ops (forward, backward-data,
backward-filter) and every pooling case as two (forward, backward); an op is
named after the backend method that runs it, so a record says exactly which
kernel was timed. ``--quick`` divides every batch by ``QUICK_BATCH_DIVISOR``
(the CPU run then takes under a minute); tests pin the batch to a tiny
number with ``with_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..backend.geometry import ConvGeometry, PoolGeometry

CONV_OPS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter")
MAX_POOL_OPS = ("max_pool2d_forward", "max_pool2d_backward")
AVG_POOL_OPS = ("avg_pool2d_forward", "avg_pool2d_backward")

# The op families ``--ops`` selects from.
FAMILIES = ("conv", "pool")

QUICK_BATCH_DIVISOR = 8


@dataclass(frozen=True)
class ConvCase:
    """One convolution shape of the workload: x (N, C, H, W) * w (K, C, R, R), stride, pad."""

    id: str
    title: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    stride: int = 1
    pad: int = 0

    family = "conv"
    ops = CONV_OPS

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry.from_shapes((self.N, self.C, self.H, self.W), (self.K, self.C, self.R, self.R),
                                        self.stride, self.pad, where=f"bench case {self.id}")

    @property
    def shape_text(self) -> str:
        return (f"{self.N},{self.C},{self.H},{self.W} -> {self.K},{self.R}x{self.R},"
                f" s{self.stride} p{self.pad}")


@dataclass(frozen=True)
class PoolCase:
    """One pooling shape: x (N, C, H, W), an R x R window, stride, pad; ``kind`` "max" or "avg"."""

    id: str
    title: str
    N: int
    C: int
    H: int
    W: int
    R: int
    stride: int
    pad: int = 0
    kind: str = "max"

    family = "pool"

    @property
    def ops(self) -> tuple[str, ...]:
        return MAX_POOL_OPS if self.kind == "max" else AVG_POOL_OPS

    @property
    def geometry(self) -> PoolGeometry:
        return PoolGeometry.from_shape((self.N, self.C, self.H, self.W), self.R, self.stride, self.pad,
                                       where=f"bench case {self.id}")

    @property
    def shape_text(self) -> str:
        return f"{self.N},{self.C},{self.H},{self.W} {self.kind} {self.R}x{self.R} s{self.stride} p{self.pad}"


# The table of issue 6 (FP32, NCHW).
STANDARD_WORKLOAD = (
    ConvCase("D1", "digit conv1", 256, 1, 28, 28, 32, 3, 1, 1),
    ConvCase("D2", "digit conv2", 256, 32, 14, 14, 64, 3, 1, 1),
    ConvCase("L2", "LeNet conv2", 128, 20, 12, 12, 50, 5, 1, 0),
    ConvCase("J1", "jet conv1", 256, 1, 40, 40, 32, 5, 1, 2),
    ConvCase("J1c3", "jet conv1, 3 channels", 256, 3, 40, 40, 32, 5, 1, 2),
    ConvCase("J2", "jet conv2", 256, 32, 20, 20, 64, 3, 1, 1),
    ConvCase("J3", "jet conv3", 256, 64, 10, 10, 128, 3, 1, 1),
    ConvCase("R1", "ResNet conv2_x", 32, 64, 56, 56, 64, 3, 1, 1),
    ConvCase("R2", "ResNet strided", 32, 128, 28, 28, 256, 3, 2, 1),
    PoolCase("P1", "max pool 2x2/2", 256, 32, 28, 28, 2, 2),
    PoolCase("P2", "max pool 2x2/2", 256, 32, 40, 40, 2, 2),
    PoolCase("P3", "max pool 3x3/2 pad 1", 32, 64, 112, 112, 3, 2, 1),
)


def with_batch(cases, batch: int):
    """The same cases with every batch size set to ``batch`` (tests use a tiny one)."""
    if batch < 1:
        raise ValueError(f"bench workload: batch must be positive, got {batch}")
    return tuple(replace(case, N=batch) for case in cases)


def quick(cases, divisor: int = QUICK_BATCH_DIVISOR):
    """The cases with each batch divided by ``divisor`` (at least one image)."""
    return tuple(replace(case, N=max(1, case.N // divisor)) for case in cases)


def select(cases=STANDARD_WORKLOAD, families=FAMILIES, ids=None):
    """The cases of the given op families (``"conv"``, ``"pool"``), optionally only those in ``ids``.

    Raises ValueError naming an unknown family or case id.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"bench: unknown op families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    chosen = [c for c in cases if c.family in families]
    if ids is not None:
        known = {c.id for c in cases}
        missing = set(ids) - known
        if missing:
            raise ValueError(f"bench: unknown cases {sorted(missing)}; known: {', '.join(sorted(known))}")
        chosen = [c for c in chosen if c.id in ids]
    return tuple(chosen)


def case_to_dict(case) -> dict:
    """The case as plain data (what goes to the reference process and into the JSON)."""
    return {"family": case.family, **{k: getattr(case, k) for k in case.__dataclass_fields__}}


def case_from_dict(d: dict):
    """Inverse of ``case_to_dict``."""
    d = dict(d)
    family = d.pop("family")
    return (ConvCase if family == "conv" else PoolCase)(**d)


def flops(case, op: str) -> int:
    """Floating-point operations of ``op`` on ``case`` (0 for pooling, which is memory-bound).

    A convolution's backward-data and backward-filter each do as many
    multiply-adds as its forward (``ConvGeometry.flops``).
    """
    return case.geometry.flops if case.family == "conv" else 0


def bytes_moved(case, op: str, itemsize: int = 4) -> int:
    """Bytes an ideal kernel reads and writes once each for ``op`` on ``case``.

    Convolution: its two inputs and its output. Max pooling forward reads x
    and writes y and the int32 argmax; backward reads dy and argmax and writes
    dx. Average pooling moves x and y (dy and dx).
    """
    g = case.geometry
    x, y = int(np.prod(g.x_shape)), int(np.prod(g.y_shape))
    if case.family == "conv":
        w = int(np.prod(g.w_shape))
        return itemsize * (x + w + y)
    argmax = 4 * y if op.startswith("max_pool") else 0
    return itemsize * (x + y) + argmax


def make_inputs(case, op: str, seed: int = 0, dtype=np.float32) -> dict:
    """Host NumPy inputs of ``op`` on ``case``, drawn from ``seed`` (both sides of a comparison use it).

    Returns the op's keyword arguments: ``x``, ``w``, ``b``, ``dy`` as needed.
    Max-pool backward also needs the forward's argmax, which each side
    computes with its own forward (see ``prepare``).
    """
    rng = np.random.default_rng(seed)
    g = case.geometry
    draw = lambda shape: rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)  # noqa: E731
    if op == "conv2d_forward":
        return {"x": draw(g.x_shape), "w": draw(g.w_shape), "b": draw((g.K,))}
    if op == "conv2d_backward_data":
        return {"dy": draw(g.y_shape), "w": draw(g.w_shape)}
    if op == "conv2d_backward_filter":
        return {"dy": draw(g.y_shape), "x": draw(g.x_shape)}
    if op in ("max_pool2d_forward", "avg_pool2d_forward"):
        return {"x": draw(g.x_shape)}
    if op == "max_pool2d_backward":
        return {"x": draw(g.x_shape), "dy": draw(g.y_shape)}
    if op == "avg_pool2d_backward":
        return {"dy": draw(g.y_shape)}
    raise ValueError(f"bench: unknown op {op!r} for case {case.id}")


def bind_op(ops, op: str, a: dict, g):
    """A zero-argument callable running ``op`` on the inputs ``a`` of ``make_inputs`` with ``ops``:
    a backend, or the ``baseline`` module (same signatures). Max-pool backward takes
    ``a["argmax"]``. The dispatch happens here, once, not inside the timed call."""
    if op == "conv2d_forward":
        return lambda: ops.conv2d_forward(a["x"], a["w"], a["b"], g)
    if op == "conv2d_backward_data":
        return lambda: ops.conv2d_backward_data(a["dy"], a["w"], g)
    if op == "conv2d_backward_filter":
        return lambda: ops.conv2d_backward_filter(a["dy"], a["x"], g)
    if op == "max_pool2d_forward":
        return lambda: ops.max_pool2d_forward(a["x"], g)
    if op == "max_pool2d_backward":
        return lambda: ops.max_pool2d_backward(a["dy"], a["argmax"], g)
    if op == "avg_pool2d_forward":
        return lambda: ops.avg_pool2d_forward(a["x"], g)
    if op == "avg_pool2d_backward":
        return lambda: ops.avg_pool2d_backward(a["dy"], g)
    raise ValueError(f"bench: unknown op {op!r}")


def prepare(backend, case, op: str, seed: int = 0):
    """A zero-argument callable that runs ``op`` of ``backend`` once on ``case``'s inputs.

    Inputs are made and moved to the backend here, outside the timed call; max-pool
    backward gets the argmax of the backend's own forward.
    """
    g = case.geometry
    a = {k: backend.asarray(v) for k, v in make_inputs(case, op, seed).items()}
    if op == "max_pool2d_backward":
        a["argmax"] = backend.max_pool2d_forward(a["x"], g)[1]
    return bind_op(backend, op, a, g)


def precision(backend, case, op: str) -> str:
    """The arithmetic of that kernel: "fp32", or "tf32" for a tensor-core convolution (``Backend.conv_precision``)."""
    if case.family == "conv":
        return backend.conv_precision(op.replace("conv2d_", ""), case.geometry)
    return "fp32"


def algorithm(backend, case, op: str) -> str:
    """The kernel ``backend`` runs for ``op`` on ``case`` (``Backend.conv_algorithm`` for convolutions)."""
    if case.family == "conv":
        return backend.conv_algorithm(op.replace("conv2d_", ""), case.geometry)
    return op
