"""The cpu backend's kernels for the layers around the convolutions: (Leaky)ReLU, Dropout, max-pooling,
BatchNorm2D, Dense.

Each is checked against an independent reference (a float64 NumPy expression,
the NumPy loop references of ``reference.py``, the Python-integer hash) and
against the ``xp`` default of ``Backend`` that the cuda backends run, with one
thread and with two, on sizes that leave a ragged last work item.
"""

import numpy as np
import pytest

import gpucnn as gc
import gpucnn.backend.cpu as cpu_module
from gpucnn.backend.base import Backend
from gpucnn.backend.counter_rng import CounterRNG
from gpucnn.backend.geometry import PoolGeometry
from reference import max_pool2d_backward_ref, max_pool2d_forward_ref
from test_cpu_threads import pool_threads  # noqa: F401 (a fixture)
from test_device_loop import python_bits
from test_ops import run_bounds_checked

DTYPES = [np.float32, np.float64]
# 1, 7 and 1001 elements: below one item, and ragged against the small items set below
SHAPES = [(1,), (7,), (7, 11, 13), (1001,)]


@pytest.fixture
def cpu():
    return gc.get_backend("cpu")


@pytest.fixture
def small_items(monkeypatch):
    """Elementwise work items of 64 elements, so that the shapes above make many of them."""
    monkeypatch.setattr(cpu_module, "ELEMENTWISE_ITEM", 64)


def with_nans(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::17] = np.nan
    return x


# --- ReLU --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_matches_numpy_reference(cpu, rng, pool_threads, small_items, shape, dtype, threads):
    pool_threads(threads)
    x = with_nans(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)

    y = cpu.relu_forward(x)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(y, np.where(np.isnan(x64) | (x64 > 0), x64, 0.0))  # NaN stays NaN
    for guided in (False, True):
        keep = (x64 > 0) & (dy64 > 0) if guided else x64 > 0
        dx = cpu.relu_backward(dy, y, guided=guided)
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx, np.where(keep, dy64, 0.0))


@pytest.mark.parametrize("guided", [False, True])
def test_relu_layer_on_cpu_equals_the_xp_default(cpu, rng, small_items, guided):
    """The cpu kernels give the bits of ``Backend``'s xp expressions (what the cuda backends run)."""
    x = with_nans(rng, (3, 4, 9, 9), np.float32)
    x.flat[1:4] = [np.inf, -np.inf, -0.0]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = gc.ReLU()
    layer.guided = guided
    y = layer.forward(x)
    default = Backend()
    with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, in the default as in the kernel
        y_ref = default.relu_forward(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(y_ref))
    np.testing.assert_array_equal(layer.backward(dy), default.relu_backward(dy, y_ref, guided))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_leaky_relu_matches_numpy_reference_and_the_xp_default(cpu, rng, pool_threads, small_items, shape, dtype,
                                                               threads):
    pool_threads(threads)
    slope = 0.1
    x = with_nans(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    slopes = np.where(x64 > 0, 1.0, np.float64(dtype(slope)))

    y = cpu.leaky_relu_forward(x, slope)
    dx = cpu.leaky_relu_backward(dy, x, slope)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, x64 * slopes, rtol=1e-6 if dtype == np.float32 else 1e-15)  # NaN == NaN
    np.testing.assert_allclose(dx, dy64 * slopes, rtol=1e-6 if dtype == np.float32 else 1e-15)
    np.testing.assert_array_equal(y, Backend().leaky_relu_forward(x, slope))
    np.testing.assert_array_equal(dx, Backend().leaky_relu_backward(dy, x, slope))


# --- Dropout -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dropout_on_cpu_draws_the_xp_masks(cpu, rng, pool_threads, small_items, shape, p, dtype, threads):
    """Two draws in a row: the same scales and outputs as the xp default, bit for bit."""
    pool_threads(threads)
    x = with_nans(rng, shape, dtype)
    ours, reference = CounterRNG(np.random.default_rng(5)), CounterRNG(np.random.default_rng(5))
    for _ in range(2):
        y, scale = cpu.dropout_forward(x, ours, p)
        y_ref, scale_ref = Backend().dropout_forward(x, reference, p)
        assert y.dtype == scale.dtype == dtype and y.shape == scale.shape == shape
        np.testing.assert_array_equal(scale, scale_ref)
        np.testing.assert_array_equal(y, y_ref)
    assert ours.draws == reference.draws == 2


def test_dropout_on_cpu_follows_the_documented_hash(cpu):
    """Kept where the top 24 bits of the Python-integer hash reach ceil(p * 2**24); scaled by 1/(1-p)."""
    p, size = 0.4, 300
    keys = tuple(int(k) for k in np.random.default_rng(9).integers(0, 2**32, size=2, dtype=np.uint64))
    rng = CounterRNG(np.random.default_rng(9))
    x = np.random.default_rng(0).standard_normal(size)
    for draw in range(2):
        y, scale = cpu.dropout_forward(x, rng, p)
        kept = np.array([b >> 8 >= int(np.ceil(p * 2**24)) for b in python_bits(keys, draw, size)])
        np.testing.assert_array_equal(scale, np.where(kept, 1 / (1 - p), 0.0))
        np.testing.assert_array_equal(y, x * scale)


# --- max-pooling: the unrolled 2x2 path and NaN planes on every path ---------------------------------------

POOL_CASES = [
    ((3, 2, 7, 9), 2, 1, 0),          # 2x2 unrolled, overlapping
    ((3, 2, 8, 9), 2, None, 0),       # 2x2 unrolled, ragged last column
    ((3, 2, 9, 9), 2, 3, 0),          # 2x2 unrolled, gaps between windows
    ((3, 2, 7, 7), 2, 2, 1),          # 2x2 padded: the general loop
    ((3, 2, 9, 8), 3, 2, 1),          # 3x3 overlapping, padded
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fill", ["random", "ties", "nans", "infs"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool2d_paths_match_loop_reference(cpu, rng, pool_threads, case, dtype, fill, threads):
    pool_threads(threads)
    x_shape, kernel, stride, padding = case
    geom = PoolGeometry.from_shape(x_shape, kernel, stride, padding)
    if fill == "ties":
        x = rng.integers(0, 3, size=x_shape).astype(dtype)
    else:
        x = rng.standard_normal(x_shape).astype(dtype)
    if fill == "nans":  # some planes with NaNs, some without
        x[0, 1, 1:3, 2] = np.nan
        x[2, 0, 4, :] = np.nan
    if fill == "infs":  # inf and -inf in one window: the 2x2 path's NaN alarm rings, for nothing
        x[1, 1, 2, 2:4] = [np.inf, -np.inf]
        x[2, 0, 0, 0], x[2, 0, 1, 1] = -np.inf, np.inf
    dy = rng.standard_normal(geom.y_shape).astype(dtype)

    y, argmax = cpu.max_pool2d_forward(x, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    np.testing.assert_array_equal(argmax, argmax_ref)
    dx = cpu.max_pool2d_backward(dy, argmax, geom)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, max_pool2d_backward_ref(dy, argmax_ref, x_shape),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6 if dtype == np.float32 else 0)


# --- BatchNorm2D ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (1, 2, 1, 1), (130, 4, 11, 13)], ids=str)
def test_batchnorm_matches_float64_formulas_and_not_the_thread_count(cpu, rng, pool_threads, small_items,
                                                                      shape, dtype):
    """Training forward and backward against the formulas in float64, the same bits on one and two
    threads; (130, 4, 11, 13) makes several items of planes with a ragged last one."""
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = (rng.random(shape[1]) + 0.5).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    eps = 1e-5
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean64, var64 = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    inv_std64 = 1 / np.sqrt(var64 + eps)
    per_channel = (None, slice(None), None, None)
    x_hat64 = (x64 - mean64[per_channel]) * inv_std64[per_channel]
    dgamma64, dbeta64 = (dy64 * x_hat64).sum(axis=(0, 2, 3)), dy64.sum(axis=(0, 2, 3))
    m = x.size // shape[1]
    dx64 = (gamma * inv_std64)[per_channel] * (dy64 - dbeta64[per_channel] / m - x_hat64 * dgamma64[per_channel] / m)

    results = []
    for threads in (1, 2):
        pool_threads(threads)
        mean, var = cpu.batchnorm2d_moments(x)
        inv_std = (1 / np.sqrt(var + eps)).astype(dtype)
        y, x_hat = cpu.batchnorm2d_normalize(x, mean, inv_std, gamma, beta)
        dx, dgamma, dbeta = cpu.batchnorm2d_backward(dy, x_hat, gamma * inv_std, True)
        results.append((mean, var, y, x_hat, dx, dgamma, dbeta))
    for ours, theirs in zip(*results):
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, theirs)
    mean, var, y, x_hat, dx, dgamma, dbeta = results[0]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, mean64, **tol)
    np.testing.assert_allclose(var, var64, **tol)
    np.testing.assert_allclose(x_hat, x_hat64, **tol)
    np.testing.assert_allclose(y, x_hat64 * gamma[per_channel] + beta[per_channel], **tol)
    np.testing.assert_allclose(dgamma, dgamma64, **tol)
    np.testing.assert_allclose(dbeta, dbeta64, **tol)
    np.testing.assert_allclose(dx, dx64, **tol)


def test_batchnorm_layer_on_cpu_follows_the_xp_default(cpu, rng):
    """Training and evaluation, forward and backward, within float32 rounding of the xp expressions."""
    x = (rng.standard_normal((6, 3, 5, 5)) * 2 - 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    outputs = []
    for use_default in (False, True):
        layer = gc.BatchNorm2D(3)
        layer.params["gamma"][...] = [0.5, 1.5, 2.0]
        layer.params["beta"][...] = [0.1, -0.2, 0.3]
        if use_default:
            layer.backend = Backend()  # the xp expressions, on NumPy arrays
        run = [layer.forward(x), layer.backward(dy), layer.forward(x, training=False), layer.backward(dy)]
        outputs.append(run + [layer.grads["gamma"], layer.grads["beta"], layer.buffers["running_var"]])
    for ours, default in zip(*outputs):
        np.testing.assert_allclose(ours, default, rtol=1e-5, atol=1e-6)


# --- Dense's matmul ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_blocks_match_numpy_and_do_not_depend_on_threads(cpu, rng, pool_threads, monkeypatch, dtype):
    """Blocks of 64 rows (a ragged last one) on one and on two threads: the same bits, and the
    float64 product; operands may be transposed views, as Dense passes them."""
    monkeypatch.setattr(cpu_module, "MATMUL_ITEM_MACS", 1)
    a = rng.standard_normal((200, 30)).astype(dtype)
    w = rng.standard_normal((17, 30)).astype(dtype)
    results = []
    for threads in (1, 2):
        pool_threads(threads)
        results.append(cpu.matmul(a, w.T))
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[0], a.astype(np.float64) @ w.T.astype(np.float64), rtol=tol, atol=tol)
    np.testing.assert_allclose(cpu.matmul(a.T, a), a.T.astype(np.float64) @ a, rtol=tol, atol=tol)


def test_matmul_names_operands_that_do_not_chain(cpu):
    with pytest.raises(ValueError, match=r"matmul: a \(3, 4\) and b \(5, 2\)"):
        cpu.matmul(np.zeros((3, 4), np.float32), np.zeros((5, 2), np.float32))


BOUNDS_SCRIPT = """
import numpy as np
import gpucnn as gc
import gpucnn.backend.cpu as cpu_module
from gpucnn.backend.counter_rng import CounterRNG
from gpucnn.backend.geometry import PoolGeometry
from test_cpu_layer_kernels import POOL_CASES, SHAPES

cpu = gc.get_backend("cpu")
rng = np.random.default_rng(0)
cpu_module.ELEMENTWISE_ITEM = 64
for shape in SHAPES:
    x, dy = rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)
    y = cpu.relu_forward(x)
    cpu.relu_backward(dy, y, guided=False)
    cpu.relu_backward(dy, y, guided=True)
    cpu.leaky_relu_backward(dy, cpu.leaky_relu_forward(x, 0.1), 0.1)
for shape in [(5, 3, 7, 9), (130, 4, 11, 13)]:
    x, dy = rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)
    scale = np.ones(shape[1], np.float32)
    mean, var = cpu.batchnorm2d_moments(x)
    y, x_hat = cpu.batchnorm2d_normalize(x, mean, scale, scale, scale)
    cpu.batchnorm2d_backward(dy, x_hat, scale, True)
    cpu.dropout_forward(x, CounterRNG(rng), 0.5)
for x_shape, kernel, stride, padding in POOL_CASES:
    g = PoolGeometry.from_shape(x_shape, kernel, stride, padding)
    x, dy = rng.standard_normal(x_shape, np.float32), rng.standard_normal(g.y_shape, np.float32)
    x[0, 0, 0, 0] = np.nan  # the NaN rerun too
    y, argmax = cpu.max_pool2d_forward(x, g)
    cpu.max_pool2d_backward(dy, argmax, g)
print("in bounds")
"""


def test_cpu_layer_kernels_stay_in_bounds(tmp_path):
    """The kernels above compiled with Numba's bounds checking (see ``test_cpu_kernels_stay_in_bounds``)."""
    run_bounds_checked(BOUNDS_SCRIPT, tmp_path)
