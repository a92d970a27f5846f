"""Autotuning times only the convolution kernels that can be the fastest, and its first step is bounded.

``conv_algorithms.candidates`` leaves out the direct backward-filter wherever
an implicit-GEMM tile can run, and every tile that has the same grid as a
smaller tile inside it (its extra rows and columns are padding). The cost of
a first autotuned step is bounded by counting the candidates timed and the
kernel runs spent on timing, never by wall time.
"""

import numpy as np
import pytest

from gpucnn.backend import ConvGeometry, conv_algorithms
from gpucnn.backend.conv_algorithms import OPS, TILES, gemm_shape, igemm_unsupported
from reference import conv2d_backward_filter_ref

# (N, C, H, W, K, R, S, stride, padding): thin and wide GEMMs, strides, 1x1 filters.
SHAPES = [
    (1, 1, 8, 8, 4, 3, 3, 1, 1), (2, 3, 16, 16, 16, 3, 3, 1, 1), (4, 3, 32, 32, 32, 3, 3, 1, 1),
    (8, 32, 14, 14, 64, 3, 3, 1, 1), (2, 64, 8, 8, 128, 1, 1, 2, 0), (16, 128, 7, 7, 256, 3, 3, 1, 1),
    (1, 6, 7, 7, 19, 5, 5, 2, 2), (32, 256, 4, 4, 512, 3, 3, 1, 1),
]


def geometry(shape):
    N, C, H, W, K, R, S, stride, padding = shape
    return ConvGeometry.from_shapes((N, C, H, W), (K, C, R, S), stride, padding)


def blocks(tile, op, g):
    """Blocks of ``tile`` along the GEMM's M and N for ``op`` on ``g``, computed from the GEMM shape."""
    m, n, _ = gemm_shape(op, g)
    return -(-m // tile.rows), -(-n // tile.cols)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_candidates_leave_out_only_what_cannot_win(op, shape):
    g = geometry(shape)
    chosen = conv_algorithms.candidates(op, g, np.float32)
    names = [str(c) for c in chosen]
    assert len(set(names)) == len(names)
    assert ("direct" in names) == (op != "backward_filter")
    tiles = {c.tile.name: c.tile for c in chosen if c.algorithm == "igemm"}
    for name, tile in TILES[op].items():
        inside_same_grid = [o for o in TILES[op].values() if o is not tile and o.rows <= tile.rows
                            and o.cols <= tile.cols and blocks(o, op, g) == blocks(tile, op, g)]
        # Left out exactly when a smaller tile covers the GEMM with the same blocks.
        assert (name not in tiles) == bool(inside_same_grid), (name, names)
    # The rule never picks a tile autotuning would leave out.
    assert str(conv_algorithms.rule(op, g, np.float32)) in names


@pytest.mark.parametrize("op", OPS)
def test_only_direct_where_igemm_cannot_run(op):
    g = geometry(SHAPES[3])
    assert igemm_unsupported(op, g, np.float64)
    assert [str(c) for c in conv_algorithms.candidates(op, g, np.float64)] == ["direct"]


def test_first_autotuned_step_times_few_candidates(monkeypatch):
    """Forward, backward-data and backward-filter of a first layer (3 -> 16 channels, 3x3) with
    autotuning on, the kernels run by the emulator on a backend autotuning takes for a GPU.

    Before the pruning this timed 15 candidates (the direct kernel and 4 tiles per op) in 60
    runs; the direct backward-filter is the one that stalls a GPU on a large first layer.
    """
    from gpucnn.backend.cuda import CudaBackend
    from gpucnn.backend.emulator import compiler_available, load_module

    if not compiler_available():
        pytest.skip("no C++ compiler for the CUDA emulator")
    backend = CudaBackend("cuda", np, load_module)  # autotuning runs only on "cuda"
    timed, runs = {}, []
    original = conv_algorithms._time_candidates

    def counting(backend, choices, run):
        timed[choices[0].op] = [str(c) for c in choices]

        def counted_run(choice):
            runs.append(str(choice))
            run(choice)

        return original(backend, choices, counted_run)

    monkeypatch.setattr(conv_algorithms, "_time_candidates", counting)
    rng = np.random.default_rng(0)
    g = geometry((2, 3, 16, 16, 16, 3, 3, 1, 1))
    x = rng.standard_normal(g.x_shape).astype(np.float32)
    w = rng.standard_normal(g.w_shape).astype(np.float32)
    dy = rng.standard_normal(g.y_shape).astype(np.float32)
    conv_algorithms.autotune(True)
    try:
        backend.conv2d_forward(x, w, None, g)
        backend.conv2d_backward_data(dy, w, g)
        dw = backend.conv2d_backward_filter(dy, x, g)
    finally:
        conv_algorithms.autotune(False)
    # Forward (M = 512 pixels, N = 16) and backward-data (N = 3): the 128-row tiles share one
    # grid, so 128x32 stands for them; backward-filter (M = 16, N = 27): every tile is one
    # block, 64x64 alone remains and needs no timing.
    assert sorted(timed) == sorted(OPS)
    for op in ("forward", "backward_data"):
        assert sorted(timed[op]) == ["direct", "igemm 128x32", "igemm 64x64"]
    assert len(timed["backward_filter"]) == 1 and timed["backward_filter"][0].startswith("igemm 64x64")
    assert len(runs) == 4 * 6  # a warm-up and three timed runs per timed candidate
    assert not any(r.startswith(timed["backward_filter"][0]) for r in runs)
    # The untimed choice still computes the right gradient.
    want = conv2d_backward_filter_ref(dy.astype(np.float64), x.astype(np.float64), (3, 3), padding=1)
    np.testing.assert_allclose(dw, want, rtol=1e-4, atol=1e-4)

