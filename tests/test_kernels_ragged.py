"""Our CUDA kernels on ragged shapes, with guard cells around every buffer.

Runs on the CUDA backends only (``cuda-emu`` everywhere a C++ compiler is,
``cuda`` where a GPU is). The shapes are chosen so that no dimension is a
multiple of any block size (N=1, C=3, K=5, H=W=7/13/31, 1x1 images with
padding, stride 3), and every kernel is checked three ways:

- its result equals the plain loop reference of ``tests/reference.py``;
- every output is a view into the middle of a larger buffer whose guard cells
  hold a sentinel that must be unchanged afterwards (no out-of-bounds write),
  and whose body starts as NaN (or a negative sentinel for argmax), so an
  output element the kernel forgot to write shows up as a mismatch;
- every input is a view into a buffer whose guard cells hold NaN, so a read
  just past either end of an input poisons the result.
"""

import numpy as np
import pytest

from gpucnn.backend import ConvGeometry, PoolGeometry
from gpucnn.backend import cuda as cuda_backend_module
from reference import (avg_pool2d_backward_ref, avg_pool2d_forward_ref, conv2d_backward_data_ref,
                       conv2d_backward_filter_ref, conv2d_forward_ref, max_pool2d_backward_ref,
                       max_pool2d_forward_ref)

# The conftest ``backend`` fixture, restricted to the backends that run our CUDA kernels.
pytestmark = pytest.mark.parametrize("backend", ["cuda-emu", "cuda"], indirect=True)

GUARD = 37  # guard cells on each side of a buffer: more than a warp, a multiple of nothing used
OUTPUT_GUARD = {"f": 1234.5, "i": -777}  # sentinels around outputs, by dtype kind
OUTPUT_UNWRITTEN = {"f": np.nan, "i": -999}  # the body of an output before the kernel runs
INPUT_GUARD = {"f": np.nan, "i": 0}  # what a read past an input's ends would see

TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-11, atol=1e-11)}


class GuardedOutputs:
    """Stands in for ``backend.empty``: each output lives between guard cells, body NaN."""

    def __init__(self, backend):
        self.backend = backend
        self.buffers = []

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        buffer = self.backend.xp.full(size + 2 * GUARD, OUTPUT_GUARD[dtype.kind], dtype)
        buffer[GUARD:GUARD + size] = OUTPUT_UNWRITTEN[dtype.kind]
        self.buffers.append((buffer, size))
        return buffer[GUARD:GUARD + size].reshape(shape)

    def assert_guards_intact(self, op):
        assert self.buffers, f"{op} allocated no output through backend.empty"
        for buffer, size in self.buffers:
            host = self.backend.to_numpy(buffer)
            sentinel = OUTPUT_GUARD[host.dtype.kind]
            assert np.all(host[:GUARD] == sentinel), f"{op} wrote before the start of its output"
            assert np.all(host[GUARD + size:] == sentinel), f"{op} wrote past the end of its output"
        self.buffers.clear()


@pytest.fixture
def guarded(backend, monkeypatch):
    outputs = GuardedOutputs(backend)
    monkeypatch.setattr(backend, "empty", outputs.empty)
    return outputs


def guarded_input(backend, host):
    """``host`` copied to the backend as a contiguous view between guard cells of INPUT_GUARD."""
    size = host.size
    buffer = backend.xp.full(size + 2 * GUARD, INPUT_GUARD[host.dtype.kind], host.dtype)
    buffer[GUARD:GUARD + size] = backend.asarray(host.ravel())
    return buffer[GUARD:GUARD + size].reshape(host.shape)


def assert_matches(backend, op, got, want, dtype):
    got = backend.to_numpy(got)
    assert got.shape == want.shape, f"{op}: shape {got.shape} != reference {want.shape}"
    np.testing.assert_allclose(got, want, err_msg=op, **TOLERANCE[dtype])


# (N, C, H, W, K, R, S, stride, padding, dilation)
CONV_CASES = [
    (1, 3, 7, 7, 5, 3, 3, 1, 0, 1),
    (1, 3, 13, 13, 5, 3, 3, 2, 1, 1),
    (1, 3, 31, 31, 5, 3, 3, 1, 1, 1),         # 4805 outputs: ragged over many blocks
    (1, 3, 31, 31, 5, 5, 5, 3, 2, 2),         # stride 3, dilation 2
    (1, 3, 7, 13, 5, 2, 3, (3, 1), (1, 0), 1),  # per-axis stride and padding
    (2, 3, 13, 7, 5, 3, 2, 1, (2, 1), (2, 3)),  # per-axis dilation
    (3, 3, 7, 7, 5, 7, 7, 1, 3, 1),           # filter as large as the image
    (1, 3, 1, 1, 5, 3, 3, 1, 1, 1),           # 1x1 image, padding
    (1, 3, 1, 1, 5, 1, 1, 3, 0, 1),           # 1x1 image, 1x1 filter, stride 3
]


def run_conv_ops(backend, case, dtype, rng, guarded):
    """Run forward (with and without bias), backward-data and backward-filter on guarded
    buffers; check each against the reference and its guards."""
    N, C, H, W, K, R, S, stride, padding, dilation = case
    geom = ConvGeometry.from_shapes((N, C, H, W), (K, C, R, S), stride, padding, dilation)
    hyper = dict(stride=stride, padding=padding, dilation=dilation)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal(geom.y_shape).astype(dtype)
    xd, wd, bd, dyd = (guarded_input(backend, a) for a in (x, w, b, dy))

    y = backend.conv2d_forward(xd, wd, bd, geom)
    guarded.assert_guards_intact("conv2d_forward")
    assert_matches(backend, "conv2d_forward", y, conv2d_forward_ref(x, w, b, **hyper), dtype)

    y = backend.conv2d_forward(xd, wd, None, geom)
    guarded.assert_guards_intact("conv2d_forward without bias")
    assert_matches(backend, "conv2d_forward without bias", y, conv2d_forward_ref(x, w, None, **hyper),
                   dtype)

    dx = backend.conv2d_backward_data(dyd, wd, geom)
    guarded.assert_guards_intact("conv2d_backward_data")
    assert_matches(backend, "conv2d_backward_data", dx,
                   conv2d_backward_data_ref(dy, w, x.shape, **hyper), dtype)

    dw = backend.conv2d_backward_filter(dyd, xd, geom)
    guarded.assert_guards_intact("conv2d_backward_filter")
    assert_matches(backend, "conv2d_backward_filter", dw,
                   conv2d_backward_filter_ref(dy, x, (R, S), **hyper), dtype)


# (N, C, H, W, kernel_size, stride, padding)
POOL_CASES = [
    (1, 3, 7, 7, 2, None, 0),
    (1, 3, 13, 13, 3, 2, 1),
    (1, 3, 31, 31, 3, 3, 1),                  # stride 3
    (2, 3, 31, 13, (3, 2), (1, 3), (1, 0)),   # overlapping windows along H
    (1, 5, 7, 13, 5, 3, 2),
    (1, 3, 1, 1, 3, 1, 1),                    # 1x1 image, padding
    (1, 3, 1, 1, 2, 2, 1),
]


def run_pool_ops(backend, case, dtype, rng, guarded):
    """Run max and average pooling forward and backward on guarded buffers; check each
    against the reference and its guards."""
    N, C, H, W, kernel_size, stride, padding = case
    geom = PoolGeometry.from_shape((N, C, H, W), kernel_size, stride, padding)
    hyper = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    # Small integers make ties, which test the first-maximum rule; channel 0 is all
    # negative, so a padding cell that counted as 0 would win its windows.
    x = rng.integers(-3, 4, size=(N, C, H, W)).astype(dtype)
    x[:, 0] = -np.abs(x[:, 0]) - 1
    dy = rng.standard_normal(geom.y_shape).astype(dtype)
    xd, dyd = guarded_input(backend, x), guarded_input(backend, dy)

    y, argmax = backend.max_pool2d_forward(xd, geom)
    guarded.assert_guards_intact("max_pool2d_forward")
    y_ref, argmax_ref = max_pool2d_forward_ref(x, **hyper)
    assert_matches(backend, "max_pool2d_forward", y, y_ref, dtype)
    np.testing.assert_array_equal(backend.to_numpy(argmax), argmax_ref, err_msg="argmax")

    dx = backend.max_pool2d_backward(dyd, guarded_input(backend, argmax_ref), geom)
    guarded.assert_guards_intact("max_pool2d_backward")
    assert_matches(backend, "max_pool2d_backward", dx,
                   max_pool2d_backward_ref(dy, argmax_ref, x.shape), dtype)

    y = backend.avg_pool2d_forward(xd, geom)
    guarded.assert_guards_intact("avg_pool2d_forward")
    assert_matches(backend, "avg_pool2d_forward", y, avg_pool2d_forward_ref(x, **hyper), dtype)

    dx = backend.avg_pool2d_backward(dyd, geom)
    guarded.assert_guards_intact("avg_pool2d_backward")
    assert_matches(backend, "avg_pool2d_backward", dx,
                   avg_pool2d_backward_ref(dy, x.shape, **hyper), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_kernels_on_ragged_shapes(backend, guarded, case, dtype, rng):
    run_conv_ops(backend, case, dtype, rng, guarded)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_kernels_on_ragged_shapes(backend, guarded, case, dtype, rng):
    run_pool_ops(backend, case, dtype, rng, guarded)


# Launch sizes other than the helper's: a grid far smaller than the work (each
# thread loops, grid-stride) and one far larger (most threads have no element).
FORCED_LAUNCHES = {
    "one block of 32": ((1, 1, 1), (32, 1, 1)),
    "3 blocks of 96": ((3, 1, 1), (96, 1, 1)),
    "64 blocks of 256": ((64, 1, 1), (256, 1, 1)),
}


@pytest.mark.parametrize("launch", FORCED_LAUNCHES, ids=str)
def test_kernels_are_correct_for_any_launch_size(backend, guarded, launch, monkeypatch, rng):
    monkeypatch.setattr(cuda_backend_module, "elementwise_launch",
                        lambda total: FORCED_LAUNCHES[launch])
    run_conv_ops(backend, CONV_CASES[3], np.float32, rng, guarded)
    run_pool_ops(backend, POOL_CASES[3], np.float32, rng, guarded)


def test_noncontiguous_inputs_give_the_same_result(backend, rng):
    geom = ConvGeometry.from_shapes((2, 3, 7, 13), (5, 3, 3, 3), 2, 1)
    x = rng.standard_normal((2, 3, 13, 7)).astype(np.float32).transpose(0, 1, 3, 2)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y = backend.conv2d_forward(backend.xp.asarray(x), backend.asarray(w), None, geom)
    assert_matches(backend, "conv2d_forward", y,
                   conv2d_forward_ref(x, w, None, stride=2, padding=1), np.float32)


def test_bad_operands_are_refused_before_any_launch(backend):
    xp = backend.xp
    geom = ConvGeometry.from_shapes((1, 3, 7, 7), (5, 3, 3, 3))
    x, w = xp.zeros((1, 3, 7, 7), np.float32), xp.zeros((5, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: x has shape \(1, 3, 7, 8\)"):
        backend.conv2d_forward(xp.zeros((1, 3, 7, 8), np.float32), w, None, geom)
    with pytest.raises(ValueError, match="conv2d_forward: b has shape"):
        backend.conv2d_forward(x, w, xp.zeros(4, np.float32), geom)
    with pytest.raises(TypeError, match="conv2d_backward_filter: x has dtype float64"):
        backend.conv2d_backward_filter(xp.zeros(geom.y_shape, np.float32),
                                       xp.zeros(geom.x_shape, np.float64), geom)
    with pytest.raises(TypeError, match="conv2d_backward_data: dy has dtype float16"):
        backend.conv2d_backward_data(xp.zeros(geom.y_shape, np.float16), w, geom)
    with pytest.raises(TypeError, match="must be a"):
        backend.conv2d_forward(x.tolist(), w, None, geom)

    pool = PoolGeometry.from_shape((1, 3, 7, 7), 2)
    with pytest.raises(TypeError, match="max_pool2d_backward: argmax has dtype int64"):
        backend.max_pool2d_backward(xp.zeros(pool.y_shape, np.float32),
                                    xp.zeros(pool.y_shape, np.int64), pool)
    with pytest.raises(ValueError, match="avg_pool2d_backward: dy has shape"):
        backend.avg_pool2d_backward(xp.zeros((1, 3, 7, 7), np.float32), pool)
