"""Winograd F(2x2, 3x3) on the cpu backend (``cpu_winograd``) against the float64 loop references.

Ragged shapes (odd P and Q, images smaller than a tile), every padding it takes
(0, 1, 2, per axis), one channel and many, float32 and float64, with and without
bias and ReLU; batches cut into several chunks with a short last one, and images
cut into bands of tile rows. Errors are max|a - ref| / max|ref| (``rel_err``).
"""

import numpy as np
import pytest

import gpucnn as gc
import gpucnn.backend.cpu as cpu_module
from gpucnn.backend import cpu_winograd as wino
from gpucnn.backend.geometry import ConvGeometry
from reference import conv2d_backward_data_ref, conv2d_backward_filter_ref, conv2d_forward_ref
from test_ops import rel_err, run_bounds_checked

TOL = {np.float32: 1e-5, np.float64: 1e-12}

# (id, x shape, K, padding): every one a 3x3 stride-1 convolution
WINOGRAD_CASES = [
    ("odd-P-Q-pad1", (2, 3, 7, 5), 17, 1),
    ("C1-K1-pad0", (1, 1, 5, 6), 1, 0),
    ("C17-K3-pad2", (2, 17, 6, 9), 3, 2),
    ("per-axis-pad", (3, 3, 4, 3), 3, (0, 2)),
    ("image-1x1-pad1", (2, 3, 1, 1), 3, 1),
    ("image-1x2-pad2", (1, 2, 1, 2), 3, 2),
    ("batch11-chunks-of-2", (11, 3, 6, 6), 17, 1),
    ("C32-wide-rows-odd-Q", (2, 32, 3, 37), 4, 1),  # channels-last transform; 19 tiles a row: segments, a short last one
]
CASE_IDS = [c[0] for c in WINOGRAD_CASES]


def operands(rng, x_shape, K, padding, dtype):
    geom = ConvGeometry.from_shapes(x_shape, (K, x_shape[1], 3, 3), 1, padding)
    x, w, b, dy = (rng.standard_normal(shape).astype(dtype)
                   for shape in (geom.x_shape, geom.w_shape, (K,), geom.y_shape))
    return geom, x, w, b, dy


def blocking(geom, itemsize):
    """The batch's cut for the forward (Cin + Cout = C + K), as the module computes it."""
    return wino._Blocking(geom.N, *wino._tiles(geom.P, geom.Q), geom.C + geom.K, itemsize)


@pytest.fixture(params=["default-chunks", "bands-of-one-tile-row"])
def chunking(request, monkeypatch):
    """The module's own chunks, or a budget so small that every image is cut into single tile rows."""
    if request.param == "bands-of-one-tile-row":
        monkeypatch.setattr(wino, "CHUNK_BYTES", 1)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=CASE_IDS)
def test_winograd_matches_loop_reference(rng, chunking, case, dtype):
    _, x_shape, K, padding = case
    geom, x, w, b, dy = operands(rng, x_shape, K, padding, dtype)
    cut = blocking(geom, np.dtype(dtype).itemsize)
    if chunking == "bands-of-one-tile-row":
        assert cut.rows == 1
    elif case[0] == "batch11-chunks-of-2":
        assert cut.images == 2 and geom.N % cut.images != 0       # several chunks, the last one short

    y_ref = conv2d_forward_ref(x, w, b, 1, padding)
    for bias, activation, ref in ((b, None, y_ref), (None, None, y_ref - b[None, :, None, None]),
                                  (b, "relu", np.maximum(y_ref, 0))):
        y = wino.winograd_forward(x, w, bias, geom, activation)
        assert y.shape == geom.y_shape and y.dtype == dtype
        assert rel_err(y, ref) < TOL[dtype]

    dx = wino.winograd_backward_data(dy, w, geom)
    assert dx.shape == geom.x_shape and dx.dtype == dtype
    assert rel_err(dx, conv2d_backward_data_ref(dy, w, geom.x_shape, 1, padding)) < TOL[dtype]

    dw, db = wino.winograd_backward_filter(dy, x, geom)
    assert dw.shape == geom.w_shape and dw.dtype == dtype and db.shape == (K,) and db.dtype == dtype
    assert rel_err(dw, conv2d_backward_filter_ref(dy, x, 3, 1, padding)) < TOL[dtype]
    assert rel_err(db, dy.astype(np.float64).sum(axis=(0, 2, 3))) < TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=CASE_IDS)
def test_winograd_backward_masks_dy_as_it_reads(rng, chunking, case, dtype):
    """With relu_output, both backward ops give the gradients of dy * (relu_output > 0): the same
    bits as masking dy first (NumPy, relu_backward's formula), and the float64 loop references."""
    _, x_shape, K, padding = case
    geom, x, w, _, dy = operands(rng, x_shape, K, padding, dtype)
    relu_output = np.maximum(rng.standard_normal(geom.y_shape), 0).astype(dtype)  # about half zero
    masked = dy * (relu_output > 0)
    dx = wino.winograd_backward_data(dy, w, geom, relu_output)
    np.testing.assert_array_equal(dx, wino.winograd_backward_data(masked, w, geom))
    assert rel_err(dx, conv2d_backward_data_ref(masked, w, geom.x_shape, 1, padding)) < TOL[dtype]
    dw, db = wino.winograd_backward_filter(dy, x, geom, relu_output)
    dw_first, db_first = wino.winograd_backward_filter(masked, x, geom)
    np.testing.assert_array_equal(dw, dw_first)
    np.testing.assert_array_equal(db, db_first)
    assert rel_err(dw, conv2d_backward_filter_ref(masked, x, 3, 1, padding)) < TOL[dtype]
    assert rel_err(db, masked.astype(np.float64).sum(axis=(0, 2, 3))) < TOL[dtype]


def test_winograd_backward_mask_keeps_nan_and_sign(rng):
    """A NaN gradient under a zero output stays NaN and a negative one becomes -0, as in relu_backward."""
    geom, x, w, _, dy = operands(rng, (1, 2, 4, 4), 3, 1, np.float32)
    relu_output = np.zeros(geom.y_shape, np.float32)
    dy[0, 0, 1, 1] = np.nan
    masked = gc.get_backend("cpu").relu_backward(dy, relu_output)
    assert np.isnan(masked[0, 0, 1, 1]) and np.signbit(masked[dy < 0]).all()
    np.testing.assert_array_equal(wino.winograd_backward_data(dy, w, geom, relu_output),
                                  wino.winograd_backward_data(masked, w, geom))
    for got, want in zip(wino.winograd_backward_filter(dy, x, geom, relu_output),
                         wino.winograd_backward_filter(masked, x, geom)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("x_shape, padding", [((2, 32, 3, 37), 1), ((1, 3, 6, 9), 2), ((3, 5, 4, 3), (0, 2))],
                         ids=["C32-19-tiles-a-row", "C3-pad2", "per-axis-pad"])
def test_tile_major_transforms_agree(rng, x_shape, padding):
    """Backward-filter's two tile-major input transforms (vectorised over the channels, and the
    scalar one per tile) give the same bits for any channel count: they sum in the same order."""
    N, C, H, W = x_shape
    geom = ConvGeometry.from_shapes(x_shape, (1, C, 3, 3), 1, padding)
    x = rng.standard_normal(x_shape).astype(np.float32)
    TH, TW = wino._tiles(geom.P, geom.Q)
    T = N * TH * TW
    vectorised, scalar = np.full((2, 16, T * C), np.nan, np.float32)
    wino.input_transform_tile_major(x, 0, 0, *geom.pad, TH, TW, np.empty((2 * TH + 2) * (2 * TW + 2) * C, np.float32),
                                    np.empty(4 * (2 * wino.TILE_SEGMENT + 2) * C, np.float32), T, vectorised)
    wino.input_transform_tile_major_per_plane(x, 0, 0, *geom.pad, TW, np.empty((C, 2 * TH + 2, 2 * TW + 2), np.float32),
                                              T, scalar)
    assert not np.isnan(vectorised).any()
    np.testing.assert_array_equal(vectorised, scalar)


def test_winograd_relu_keeps_nan(rng):
    """ReLU after Winograd lets a NaN through, as np.maximum does in the im2col path."""
    geom, x, w, b, _ = operands(rng, (1, 2, 4, 4), 3, 1, np.float32)
    x[0, 0, 1, 1] = np.nan
    y = wino.winograd_forward(x, w, b, geom, "relu")
    assert np.isnan(y[0, :, :3, :3]).all() and (np.nan_to_num(y) >= 0).all()


@pytest.mark.parametrize("shape", [(3, 32, 14, 14, 64), (2, 32, 20, 20, 64), (2, 64, 9, 11, 16)],
                         ids=["D2", "J2", "odd-9x11"])
def test_winograd_agrees_with_im2col_in_float32(rng, monkeypatch, shape):
    """The cpu backend with Winograd agrees with its im2col path within 1e-5 (issue 13's bound)."""
    N, C, H, W, K = shape
    geom, x, w, b, dy = operands(rng, (N, C, H, W), K, 1, np.float32)
    cpu = gc.get_backend("cpu")
    results = []
    for rule in (cpu_module.WINOGRAD_MIN_CHANNELS, dict.fromkeys(cpu_module.WINOGRAD_MIN_CHANNELS, (10**9, 0))):
        monkeypatch.setattr(cpu_module, "WINOGRAD_MIN_CHANNELS", rule)
        results.append((cpu.conv2d_forward(x, w, b, geom, activation="relu"), cpu.conv2d_backward_data(dy, w, geom),
                        cpu.conv2d_backward_filter(dy, x, geom)))
        assert (cpu.conv_algorithm("forward", geom) == "winograd F(2x2,3x3)") == (len(results) == 1)
    for winograd, im2col in zip(*results):
        assert rel_err(winograd, im2col) < 1e-5


@pytest.mark.parametrize("w_shape, stride, padding, dilation, expected", [
    ((64, 32, 3, 3), 1, 1, 1, True),
    ((64, 32, 3, 3), 1, 0, 1, True),
    ((64, 32, 3, 3), 1, (2, 0), 1, True),
    ((64, 32, 3, 3), 2, 1, 1, False),
    ((64, 32, 3, 3), (1, 2), 1, 1, False),
    ((64, 32, 3, 3), 1, 2, 2, False),
    ((64, 32, 3, 3), 1, 3, 1, False),
    ((64, 32, 5, 5), 1, 2, 1, False),
    ((64, 32, 3, 5), 1, 1, 1, False),
    ((64, 32, 1, 1), 1, 0, 1, False),
])
def test_cpu_picks_winograd_only_for_3x3_stride1_dilation1(rng, monkeypatch, w_shape, stride, padding, dilation,
                                                           expected):
    geom = ConvGeometry.from_shapes((2, 32, 9, 9), w_shape, stride, padding, dilation)
    assert wino.applies(geom) == expected
    cpu = gc.get_backend("cpu")
    for op in ("forward", "backward_data", "backward_filter"):
        assert (cpu.conv_algorithm(op, geom) == "winograd F(2x2,3x3)") == expected
    # and what runs is what conv_algorithm names
    calls = []
    for name in ("winograd_forward", "winograd_backward_data", "winograd_backward_filter"):
        real = getattr(wino, name)
        monkeypatch.setattr(wino, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    x, w = rng.standard_normal(geom.x_shape, np.float32), rng.standard_normal(geom.w_shape, np.float32)
    dy = rng.standard_normal(geom.y_shape, np.float32)
    cpu.conv2d_forward(x, w, None, geom)
    cpu.conv2d_backward_data(dy, w, geom)
    cpu.conv2d_backward_filter(dy, x, geom)
    assert len(calls) == (3 if expected else 0)


def test_cpu_keeps_im2col_where_winograd_was_measured_slower():
    """One input channel (a first layer): the transforms cost more than the GEMMs save."""
    geom = ConvGeometry.from_shapes((64, 1, 28, 28), (32, 1, 3, 3), 1, 1)
    cpu = gc.get_backend("cpu")
    for op in ("forward", "backward_data", "backward_filter"):
        assert "winograd" not in cpu.conv_algorithm(op, geom)


@pytest.mark.parametrize("function, args", [
    ("winograd_forward", ("x", "w", None)),
    ("winograd_backward_data", ("dy", "w")),
    ("winograd_backward_filter", ("dy", "x")),
])
def test_winograd_refuses_geometries_it_does_not_compute(rng, function, args):
    geom = ConvGeometry.from_shapes((1, 2, 8, 8), (3, 2, 3, 3), 2, 1)
    arrays = {"x": np.zeros(geom.x_shape), "w": np.zeros(geom.w_shape), "dy": np.zeros(geom.y_shape), None: None}
    with pytest.raises(ValueError, match=f"{function}: .*stride \\(2, 2\\)"):
        getattr(wino, function)(*(arrays[a] for a in args), geom)


def test_winograd_forward_refuses_an_unknown_activation(rng):
    geom, x, w, b, _ = operands(rng, (1, 2, 4, 4), 3, 1, np.float32)
    with pytest.raises(ValueError, match="winograd_forward: activation"):
        wino.winograd_forward(x, w, b, geom, "tanh")


BOUNDS_SCRIPT = """
import numpy as np
from gpucnn.backend import cpu_winograd as wino
from gpucnn.backend.geometry import ConvGeometry
from test_cpu_winograd import WINOGRAD_CASES

rng = np.random.default_rng(0)
for chunk_bytes in (wino.CHUNK_BYTES, 1):               # whole images, and bands of one tile row
    wino.CHUNK_BYTES = chunk_bytes
    for _, x_shape, K, padding in WINOGRAD_CASES:
        g = ConvGeometry.from_shapes(x_shape, (K, x_shape[1], 3, 3), 1, padding)
        x, w = rng.standard_normal(g.x_shape, np.float32), rng.standard_normal(g.w_shape, np.float32)
        dy = rng.standard_normal(g.y_shape, np.float32)
        wino.winograd_forward(x, w, np.ones(K, np.float32), g, "relu")
        relu_output = np.maximum(rng.standard_normal(g.y_shape, np.float32), 0)
        for mask in (None, relu_output):
            wino.winograd_backward_data(dy, w, g, mask)
            wino.winograd_backward_filter(dy, x, g, mask)
print("in bounds")
"""


def test_winograd_kernels_stay_in_bounds(tmp_path):
    """The transforms, compiled with Numba's bounds checking, on every shape above (see
    test_ops.test_cpu_kernels_stay_in_bounds: they index flat arrays with unchecked unsigned indices)."""
    run_bounds_checked(BOUNDS_SCRIPT, tmp_path)
