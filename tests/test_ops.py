"""The seven backend ops against the plain NumPy loop references (and PyTorch where importable).

Every test taking the ``backend`` fixture runs on each backend this machine has
(cpu, cuda-emu, cuda). Errors are measured as max|a - ref| / max|ref|.
"""

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.backend.geometry import ConvGeometry, PoolGeometry
from reference import (avg_pool2d_backward_ref, avg_pool2d_forward_ref, conv2d_backward_data_ref,
                       conv2d_backward_filter_ref, conv2d_forward_ref, max_pool2d_backward_ref,
                       max_pool2d_forward_ref)

TOL = {np.float32: 1e-5, np.float64: 1e-12}

# (id, x shape, w shape, stride, padding, dilation)
CONV_CASES = [
    ("1x1", (2, 3, 5, 5), (4, 3, 1, 1), 1, 0, 1),
    ("1x1-stride2", (2, 3, 6, 5), (4, 3, 1, 1), 2, 0, 1),
    ("3x3-pad1", (2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1),
    ("3x3-stride2-pad1", (2, 3, 9, 9), (5, 3, 3, 3), 2, 1, 1),
    ("3x3-stride3-pad2", (2, 2, 11, 10), (3, 2, 3, 3), 3, 2, 1),
    ("5x5-pad2", (2, 3, 9, 9), (4, 3, 5, 5), 1, 2, 1),
    ("5x5-stride2-odd", (2, 2, 13, 11), (3, 2, 5, 5), 2, 0, 1),
    ("3x5-nonsquare", (2, 3, 8, 9), (4, 3, 3, 5), 1, (1, 2), 1),
    ("2x1", (2, 3, 7, 6), (4, 3, 2, 1), (2, 1), 0, 1),
    ("per-axis-stride-pad", (2, 3, 9, 7), (4, 3, 3, 3), (1, 2), (2, 0), 1),
    ("dilation2", (2, 3, 11, 9), (4, 3, 3, 3), 1, 2, 2),
    ("dilation-per-axis", (2, 2, 12, 10), (3, 2, 3, 2), (2, 1), (1, 0), (2, 3)),
    ("batch1", (1, 4, 6, 6), (2, 4, 3, 3), 1, 1, 1),
    ("1x1-image-pad1", (2, 3, 1, 1), (4, 3, 3, 3), 1, 1, 1),
    ("1x1-image-1x1-kernel", (1, 2, 1, 1), (3, 2, 1, 1), 1, 0, 1),
    ("C1-K1-ragged", (3, 1, 7, 5), (1, 1, 3, 3), 1, 1, 1),
    ("pad-beyond-reach", (2, 2, 5, 5), (3, 2, 2, 2), 3, 2, 1),
]

# (id, x shape, kernel_size, stride, padding)
POOL_CASES = [
    ("2x2-stride2", (2, 3, 8, 8), 2, None, 0),
    ("2x2-odd-ragged", (2, 2, 7, 5), 2, 2, 0),
    ("3x3-stride2-pad1", (2, 3, 9, 9), 3, 2, 1),
    ("3x3-stride1-overlap", (2, 2, 7, 6), 3, 1, 1),
    ("3x2-per-axis", (2, 3, 9, 7), (3, 2), (2, 1), (1, 1)),
    ("5x5-stride3-pad2", (1, 2, 13, 11), 5, 3, 2),
    ("2x2-stride3-gaps", (2, 2, 8, 8), 2, 3, 0),
    ("1x1-image-pad1", (2, 3, 1, 1), 3, 1, 1),
    ("global", (2, 3, 5, 4), (5, 4), None, 0),
    ("batch1", (1, 1, 4, 4), 2, None, 0),
]

DTYPES = [np.float32, np.float64]


def conv_ids(cases):
    return [c[0] for c in cases]


def rel_err(a, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return np.abs(np.asarray(a, dtype=np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)


def need_dtype(backend, dtype):
    if dtype == np.float64 and not backend.supports_float64:
        pytest.skip(f"{backend.name} backend has no float64")


def run(backend, op, *args):
    """Call ``backend.op`` on host arrays (None passes through) and bring the results back."""
    args = [backend.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    out = getattr(backend, op)(*args)
    if isinstance(out, tuple):
        return tuple(backend.to_numpy(o) for o in out)
    return backend.to_numpy(out)


def conv_operands(rng, x_shape, w_shape, stride, padding, dilation, dtype):
    geom = ConvGeometry.from_shapes(x_shape, w_shape, stride, padding, dilation)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    dy = rng.standard_normal(geom.y_shape).astype(dtype)
    return geom, x, w, b, dy


# --- convolution ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_ids(CONV_CASES))
def test_conv2d_matches_loop_reference(backend, rng, case, dtype):
    need_dtype(backend, dtype)
    _, x_shape, w_shape, stride, padding, dilation = case
    geom, x, w, b, dy = conv_operands(rng, x_shape, w_shape, stride, padding, dilation, dtype)

    y = run(backend, "conv2d_forward", x, w, b, geom)
    assert y.shape == geom.y_shape and y.dtype == dtype
    assert rel_err(y, conv2d_forward_ref(x, w, b, stride, padding, dilation)) < TOL[dtype]

    y_nobias = run(backend, "conv2d_forward", x, w, None, geom)
    assert rel_err(y_nobias, conv2d_forward_ref(x, w, None, stride, padding, dilation)) < TOL[dtype]

    dx = run(backend, "conv2d_backward_data", dy, w, geom)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert rel_err(dx, conv2d_backward_data_ref(dy, w, x.shape, stride, padding, dilation)) < TOL[dtype]

    dw = run(backend, "conv2d_backward_filter", dy, x, geom)
    assert dw.shape == w.shape and dw.dtype == dtype
    ref = conv2d_backward_filter_ref(dy, x, w.shape[2:], stride, padding, dilation)
    assert rel_err(dw, ref) < TOL[dtype]


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_ids(CONV_CASES))
def test_conv2d_matches_pytorch(backend, rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    _, x_shape, w_shape, stride, padding, dilation = case
    geom, x, w, b, dy = conv_operands(rng, x_shape, w_shape, stride, padding, dilation, np.float32)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = F.conv2d(xt, wt, torch.tensor(b), stride=stride, padding=padding, dilation=dilation)
    yt.backward(torch.tensor(dy))

    assert rel_err(run(backend, "conv2d_forward", x, w, b, geom), yt.detach().numpy()) < 1e-5
    assert rel_err(run(backend, "conv2d_backward_data", dy, w, geom), xt.grad.numpy()) < 1e-5
    assert rel_err(run(backend, "conv2d_backward_filter", dy, x, geom), wt.grad.numpy()) < 1e-5


# --- pooling ----------------------------------------------------------------------

def pool_geometry(case):
    _, x_shape, kernel, stride, padding = case
    return PoolGeometry.from_shape(x_shape, kernel, stride, padding)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_max_pool2d_matches_loop_reference(backend, rng, case, dtype):
    need_dtype(backend, dtype)
    _, x_shape, kernel, stride, padding = case
    geom = pool_geometry(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    dy = rng.standard_normal(geom.y_shape).astype(dtype)

    y, argmax = run(backend, "max_pool2d_forward", x, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, kernel, stride, padding)
    assert y.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref.astype(dtype))      # a max is one of the inputs: exact
    np.testing.assert_array_equal(argmax, argmax_ref)

    dx = run(backend, "max_pool2d_backward", dy, argmax, geom)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert rel_err(dx, max_pool2d_backward_ref(dy, argmax_ref, x.shape)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_avg_pool2d_matches_loop_reference(backend, rng, case, dtype):
    need_dtype(backend, dtype)
    _, x_shape, kernel, stride, padding = case
    geom = pool_geometry(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    dy = rng.standard_normal(geom.y_shape).astype(dtype)

    y = run(backend, "avg_pool2d_forward", x, geom)
    assert y.shape == geom.y_shape and y.dtype == dtype
    assert rel_err(y, avg_pool2d_forward_ref(x, kernel, stride, padding)) < TOL[dtype]

    dx = run(backend, "avg_pool2d_backward", dy, geom)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert rel_err(dx, avg_pool2d_backward_ref(dy, x.shape, kernel, stride, padding)) < TOL[dtype]


@pytest.mark.parametrize("fill", ["constant", "few-levels"])
@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_max_pool2d_ties_go_to_first_maximum(backend, rng, case, fill):
    """With ties everywhere, argmax and the gradient go to the first maximum of each window."""
    _, x_shape, kernel, stride, padding = case
    geom = pool_geometry(case)
    if fill == "constant":                     # every cell ties; padding (zero) must still never win
        x = np.full(x_shape, -1.0, np.float32)
    else:
        x = rng.integers(0, 3, size=x_shape).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)

    y, argmax = run(backend, "max_pool2d_forward", x, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    np.testing.assert_array_equal(argmax, argmax_ref)
    dx = run(backend, "max_pool2d_backward", dy, argmax, geom)
    assert rel_err(dx, max_pool2d_backward_ref(dy, argmax_ref, x.shape)) < 1e-5


@pytest.mark.parametrize("fill", ["random", "ties"])
@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_max_pool2d_matches_pytorch(backend, rng, case, fill):
    torch = pytest.importorskip("torch")
    _, x_shape, kernel, stride, padding = case
    geom = pool_geometry(case)
    if fill == "random":
        x = rng.standard_normal(x_shape).astype(np.float32)
    else:
        x = rng.integers(0, 3, size=x_shape).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)

    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, kernel, stride, padding, return_indices=True)
    yt.backward(torch.tensor(dy))

    y, argmax = run(backend, "max_pool2d_forward", x, geom)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(argmax, it.numpy())
    assert rel_err(run(backend, "max_pool2d_backward", dy, argmax, geom), xt.grad.numpy()) < 1e-5


@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_avg_pool2d_matches_pytorch(backend, rng, case):
    torch = pytest.importorskip("torch")
    _, x_shape, kernel, stride, padding = case
    geom = pool_geometry(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)

    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, kernel, stride, padding)    # count_include_pad=True
    yt.backward(torch.tensor(dy))

    assert rel_err(run(backend, "avg_pool2d_forward", x, geom), yt.detach().numpy()) < 1e-5
    assert rel_err(run(backend, "avg_pool2d_backward", dy, geom), xt.grad.numpy()) < 1e-5


# --- the cpu backend's own paths and checks ----------------------------------------

@pytest.fixture
def cpu():
    return gc.get_backend("cpu")


@pytest.mark.parametrize("col_bytes", [1, 3000])
def test_cpu_conv2d_in_batch_chunks(cpu, rng, monkeypatch, col_bytes):
    """A column-matrix budget of one image, or of a few with a ragged last chunk, gives the same result."""
    import gpucnn.backend.cpu as cpu_module
    monkeypatch.setattr(cpu_module, "COL_BYTES", col_bytes)
    stride, padding, dilation = (2, 1), 1, 1
    geom, x, w, b, dy = conv_operands(rng, (7, 2, 6, 5), (3, 2, 3, 2), stride, padding, dilation, np.float64)
    assert cpu_module._chunk_size(geom, 8) < geom.N
    assert rel_err(cpu.conv2d_forward(x, w, b, geom), conv2d_forward_ref(x, w, b, stride, padding, dilation)) < 1e-12
    assert rel_err(cpu.conv2d_backward_data(dy, w, geom),
                   conv2d_backward_data_ref(dy, w, x.shape, stride, padding, dilation)) < 1e-12
    assert rel_err(cpu.conv2d_backward_filter(dy, x, geom),
                   conv2d_backward_filter_ref(dy, x, w.shape[2:], stride, padding, dilation)) < 1e-12


def test_cpu_max_pool2d_propagates_nan(cpu):
    """A NaN in a window is the window's max (the first NaN), as in PyTorch: divergence stays visible.

    Channels 0 and 1 of image 0 hold NaNs, the other planes none (the kernel treats the two kinds apart).
    """
    x = np.random.default_rng(5).standard_normal((2, 4, 4, 4)).astype(np.float32)
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 3, 3] = np.nan
    geom = PoolGeometry.from_shape(x.shape, 2)
    y, argmax = cpu.max_pool2d_forward(x, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, 2)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))         # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 4 and np.isnan(y[0, 1, 1, 1])


CONV_GEOM = ConvGeometry.from_shapes((2, 3, 6, 6), (4, 3, 3, 3), 1, 1)
POOL_GEOM = PoolGeometry.from_shape((2, 3, 6, 6), 2)


def f32(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("op, args, error, words", [
    ("conv2d_forward", (f32(2, 3, 6, 5), f32(4, 3, 3, 3), None, CONV_GEOM), ValueError, ["x", "(2, 3, 6, 5)", "(2, 3, 6, 6)"]),
    ("conv2d_forward", (f32(2, 3, 6, 6), f32(4, 3, 3, 2), None, CONV_GEOM), ValueError, ["w", "(4, 3, 3, 2)"]),
    ("conv2d_forward", (f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(5), CONV_GEOM), ValueError, ["b", "(5,)", "(4,)"]),
    ("conv2d_forward", (f32(2, 3, 6, 6), f32(4, 3, 3, 3).astype(np.float64), None, CONV_GEOM), TypeError,
     ["w", "float64", "float32"]),
    ("conv2d_forward", (f32(2, 3, 6, 6).astype(np.int64), f32(4, 3, 3, 3), None, CONV_GEOM), TypeError, ["x", "int64"]),
    ("conv2d_forward", (f32(2, 3, 6, 6).tolist(), f32(4, 3, 3, 3), None, CONV_GEOM), TypeError, ["x", "list"]),
    ("conv2d_backward_data", (f32(2, 4, 6, 7), f32(4, 3, 3, 3), CONV_GEOM), ValueError, ["dy", "(2, 4, 6, 7)"]),
    ("conv2d_backward_filter", (f32(2, 4, 6, 6), f32(2, 3, 6), CONV_GEOM), ValueError, ["x", "(2, 3, 6)"]),
    ("max_pool2d_forward", (f32(2, 3, 5, 6), POOL_GEOM), ValueError, ["x", "(2, 3, 5, 6)"]),
    ("max_pool2d_backward", (f32(2, 3, 3, 3), np.zeros((2, 3, 3, 3), np.int64), POOL_GEOM), TypeError,
     ["argmax", "int32"]),
    ("max_pool2d_backward", (f32(2, 3, 3, 3), np.full((2, 3, 3, 3), 36, np.int32), POOL_GEOM), ValueError,
     ["argmax", "outside"]),
    ("max_pool2d_backward", (f32(2, 3, 3, 3), np.full((2, 3, 3, 3), -1, np.int32), POOL_GEOM), ValueError,
     ["argmax", "outside"]),
    ("avg_pool2d_forward", (f32(2, 3, 6), POOL_GEOM), ValueError, ["x", "(2, 3, 6)"]),
    ("avg_pool2d_backward", (f32(2, 3, 3, 4), POOL_GEOM), ValueError, ["dy", "(2, 3, 3, 4)", "(2, 3, 3, 3)"]),
])
def test_cpu_ops_refuse_arrays_that_do_not_fit_the_geometry(cpu, op, args, error, words):
    with pytest.raises(error) as info:
        getattr(cpu, op)(*args)
    message = str(info.value)
    for word in [op] + words:
        assert word in message, message


BOUNDS_SCRIPT = """
import numpy as np
import gpucnn as gc
import gpucnn.backend.cpu as cpu_module
from gpucnn.backend.geometry import ConvGeometry, PoolGeometry
from test_ops import CONV_CASES, POOL_CASES

cpu = gc.get_backend("cpu")
rng = np.random.default_rng(0)
for col_bytes, filter_depth in ((cpu_module.COL_BYTES, 0), (cpu_module.COL_BYTES, 10**9), (1, 10**9)):
    cpu_module.COL_BYTES = col_bytes                  # whole batch, and one image per chunk
    cpu_module.MIN_FILTER_GEMM_DEPTH = filter_depth   # backward-filter per image, per chunk
    for _, x_shape, w_shape, stride, padding, dilation in CONV_CASES:
        g = ConvGeometry.from_shapes(x_shape, w_shape, stride, padding, dilation)
        x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
        dy = rng.standard_normal(g.y_shape, np.float32)
        cpu.conv2d_forward(x, w, np.ones(g.K, np.float32), g)
        cpu.conv2d_forward(x, w, None, g, activation="relu")
        cpu.conv2d_backward_data(dy, w, g)
        cpu.conv2d_backward_filter(dy, x, g)
        cpu.conv2d_backward(dy, x, w, g, relu_output=dy)
        cpu.conv2d_backward(dy, x, w, g, need_dx=False, with_bias=False)
for _, x_shape, kernel, stride, padding in POOL_CASES:
    g = PoolGeometry.from_shape(x_shape, kernel, stride, padding)
    x, dy = rng.standard_normal(x_shape, np.float32), rng.standard_normal(g.y_shape, np.float32)
    y, argmax = cpu.max_pool2d_forward(x, g)
    cpu.max_pool2d_backward(dy, argmax, g)
    cpu.avg_pool2d_forward(x, g)
    cpu.avg_pool2d_backward(dy, g)
print("in bounds")
"""


def test_cpu_kernels_stay_in_bounds(tmp_path):
    """Every cpu kernel, compiled with Numba's bounds checking, on every shape of the tables.

    The kernels index flat arrays with unchecked unsigned indices for speed; with
    NUMBA_BOUNDSCHECK=1 any index past an array's end raises IndexError instead.
    (An index into the wrong plane of the right array gives a wrong answer,
    which the reference comparisons above catch.) One Numba thread: an
    IndexError raised on a worker thread of a parallel loop is lost, on the
    calling thread it is not. A fresh cache directory keeps the checked build
    apart from the normal one.
    """
    run_bounds_checked(BOUNDS_SCRIPT, tmp_path)


def run_bounds_checked(script: str, tmp_path) -> None:
    """Run ``script`` (which prints "in bounds" at its end) in a fresh Python with NUMBA_BOUNDSCHECK=1."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_NUM_THREADS="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"),
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "in bounds" in done.stdout, done.stderr[-3000:]
