"""The implicit-GEMM convolution kernels, every tile configuration forced in turn.

Runs on ``cuda-emu`` everywhere a C++ compiler is, and on ``cuda`` where a GPU
is. Each forward, backward-data and backward-filter tile configuration runs on
ragged shapes (no dimension a multiple of any tile: M, K, C, the reduction,
strided phases that no filter tap reaches) with the guard-cell harness of
``test_kernels_ragged.py`` (NaN-initialised outputs between sentinels, inputs
between NaNs) and is compared with the loop references of ``reference.py``.
Also here: the fused bias / bias+ReLU epilogue, backward-filter's split-K
(reproducible to the bit), the selection rule and its overrides, autotuning,
and an AddressSanitizer run of every configuration.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gpucnn.backend import ConvGeometry, conv_algorithms
from gpucnn.backend.conv_algorithms import OPS, TILES
from reference import conv2d_backward_filter_ref, conv2d_forward_ref
from test_kernels_ragged import assert_matches, guarded, guarded_input, run_conv_ops  # noqa: F401 (fixture)

CUDA_BACKENDS = pytest.mark.parametrize("backend", ["cuda-emu", "cuda"], indirect=True)

# (N, C, H, W, K, R, S, stride, padding, dilation)
IGEMM_CASES = [
    (2, 5, 9, 11, 37, 3, 3, 1, 1, 1),                 # 198 pixels, 37 channels, 45-long reduction
    (1, 7, 13, 10, 70, 3, 2, (2, 3), (1, 0), (1, 2)),  # per-axis stride and dilation; K > 64
    (3, 6, 7, 7, 19, 5, 5, 2, 2, 1),                  # stride 2: phases with 3 and 2 taps per axis
    (2, 9, 8, 9, 11, 1, 1, 2, 0, 1),                  # 1x1 filter, stride 2: 3 of 4 phases get no tap
    (2, 5, 9, 9, 13, 3, 3, 2, 1, 2),                  # stride = dilation = 2: one parity gets every tap
    (1, 6, 1, 1, 9, 3, 3, 1, 1, 1),                   # 1x1 image, padding: only the centre tap
    (1, 4, 17, 16, 67, 3, 3, 3, 1, 1),                # stride 3
]

# The i-th tile of each op, forced together: every configuration of every op runs.
TILE_SETS = [dict(zip(OPS, names)) for names in zip(*(TILES[op] for op in OPS))]


def geometry(case):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    return ConvGeometry.from_shapes((N, C, H, W), (K, C, R, S), stride, padding, dilation)


def record_launches(backend, monkeypatch):
    """Names of the kernels launched through ``backend.function`` from now on."""
    names = []
    original = backend.function

    def function(source, name):
        names.append(name)
        return original(source, name)

    monkeypatch.setattr(backend, "function", function)
    return names


@CUDA_BACKENDS
@pytest.mark.parametrize("tiles", TILE_SETS, ids=lambda t: "-".join(t.values()))
@pytest.mark.parametrize("case", IGEMM_CASES, ids=str)
def test_every_tile_matches_the_reference_with_guards(backend, guarded, case, tiles, rng, monkeypatch):
    launched = record_launches(backend, monkeypatch)
    with conv_algorithms.force(**{op: f"igemm:{tile}" for op, tile in tiles.items()}):
        run_conv_ops(backend, case, np.float32, rng, guarded)
    # Not vacuous: the forced igemm kernels are the ones that ran.
    for op, tile in tiles.items():
        assert f"conv2d_{op}_igemm_{tile}_f32" in launched, (op, launched)
    assert not any("direct" in name for name in launched), launched


@CUDA_BACKENDS
@pytest.mark.parametrize("splits", [1, 2, 5, 1000])
def test_backward_filter_split_k_is_exact_and_reproducible(backend, guarded, splits, rng, monkeypatch):
    case = IGEMM_CASES[0]
    geom = geometry(case)
    x = rng.standard_normal(geom.x_shape).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)
    launched = record_launches(backend, monkeypatch)
    with conv_algorithms.force(backward_filter="igemm:64x64", splits=splits):
        choice = conv_algorithms.choose("backward_filter", geom)
        dws = [backend.to_numpy(backend.conv2d_backward_filter(guarded_input(backend, dy),
                                                               guarded_input(backend, x), geom))
               for _ in range(2)]
        guarded.assert_guards_intact("conv2d_backward_filter")
    tiles = -(-geom.N * geom.P * geom.Q // conv_algorithms.TILE_K)
    assert choice.splits == min(splits, tiles)  # 1000 slices of 25 tiles: capped, none empty
    assert ("conv2d_backward_filter_reduce_f32" in launched) == (choice.splits > 1)
    np.testing.assert_array_equal(dws[0], dws[1])  # no atomics: bitwise the same twice
    assert_matches(backend, "conv2d_backward_filter", dws[0],
                   conv2d_backward_filter_ref(dy, x, (geom.R, geom.S), stride=1, padding=1), np.float32)


@CUDA_BACKENDS
@pytest.mark.parametrize("tile", list(TILES["forward"]))
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_bias_relu_epilogue(backend, guarded, tile, with_bias, rng):
    case = IGEMM_CASES[1]
    geom = geometry(case)
    hyper = dict(stride=case[7], padding=case[8], dilation=case[9])
    x = rng.standard_normal(geom.x_shape).astype(np.float32)
    w = rng.standard_normal(geom.w_shape).astype(np.float32)
    b = rng.standard_normal(geom.K).astype(np.float32) if with_bias else None
    want = np.maximum(conv2d_forward_ref(x, w, b, **hyper), 0)
    assert (want == 0).mean() > 0.3  # the clamp is exercised
    inputs = [guarded_input(backend, a) for a in (x, w)] + [None if b is None else guarded_input(backend, b)]
    with conv_algorithms.force(forward=f"igemm:{tile}"):
        y = conv_algorithms.conv2d_forward(backend, *inputs, geom, activation="relu")
    guarded.assert_guards_intact("conv2d_forward + relu")
    assert_matches(backend, "conv2d_forward + relu", y, want, np.float32)


@CUDA_BACKENDS
def test_relu_after_the_direct_kernel(backend, rng):
    """Where the rule picks the direct kernel the activation still applies (with xp)."""
    geom = geometry(IGEMM_CASES[0])
    x = rng.standard_normal(geom.x_shape).astype(np.float32)
    w = rng.standard_normal(geom.w_shape).astype(np.float32)
    pre_activation = conv2d_forward_ref(x, w, padding=1).astype(np.float32)

    def direct(y):
        y[...] = backend.asarray(pre_activation)

    with conv_algorithms.force(forward="direct"):
        y = conv_algorithms.conv2d_forward(backend, backend.asarray(x), backend.asarray(w), None, geom,
                                           activation="relu", direct=direct)
    np.testing.assert_array_equal(backend.to_numpy(y), np.maximum(pre_activation, 0))
    with pytest.raises(ValueError, match="activation must be one of"):
        conv_algorithms.conv2d_forward(backend, x, w, None, geom, activation="tanh", direct=direct)
    with conv_algorithms.force(forward="direct"):
        with pytest.raises(ValueError, match="no direct launch was given"):
            conv_algorithms.conv2d_forward(backend, backend.asarray(x), backend.asarray(w), None, geom)


@CUDA_BACKENDS
def test_autotune_times_every_candidate_once_per_shape(backend, rng, monkeypatch):
    geom = geometry(IGEMM_CASES[2])
    x = backend.asarray(rng.standard_normal(geom.x_shape).astype(np.float32))
    w = backend.asarray(rng.standard_normal(geom.w_shape).astype(np.float32))
    monkeypatch.setattr(backend, "name", "cuda")  # autotuning is for GPUs; the timing logic is the same
    launched = record_launches(backend, monkeypatch)
    conv_algorithms.autotune(True)
    try:
        y1 = backend.conv2d_forward(x, w, None, geom)
        timed = list(launched)
        y2 = backend.conv2d_forward(x, w, None, geom)
    finally:
        conv_algorithms.autotune(False)
    # M = 48 pixels, N = 19 channels: one block of any tile. 128x128 and 128x64 contain the
    # 64x64 tile with the same one-block grid (pure padding around it) and are not timed.
    candidates = ["conv2d_forward_direct_f32"] + [f"conv2d_forward_igemm_{t}_f32" for t in ("64x64", "128x32")]
    # Each candidate: a warm-up run and three timed runs; then the winner runs once more.
    assert sorted(set(timed)) == sorted(candidates)
    assert len(timed) == 4 * len(candidates) + 1
    winner = timed[-1]
    assert all(timed.count(name) == (5 if name == winner else 4) for name in candidates)
    assert launched[len(timed):] == [winner]  # the second call reuses the choice, untimed
    want = conv2d_forward_ref(backend.to_numpy(x), backend.to_numpy(w), stride=2, padding=2)
    for y in (y1, y2):
        assert_matches(backend, "conv2d_forward (autotuned)", y, want, np.float32)


def test_forward_kernel_refuses_more_taps_than_its_mask_holds(rng):
    """The host never launches a 7x7 filter on igemm (49 taps > 32); launched anyway, it traps."""
    import gpucnn
    from gpucnn.backend.emulator import EmulatorLaunchError, compiler_available

    if not compiler_available():
        pytest.skip("no C++ compiler for the CUDA emulator")
    backend = gpucnn.get_backend("cuda-emu")  # a trap would poison a real GPU's context
    geom = ConvGeometry.from_shapes((1, 2, 9, 9), (3, 2, 7, 7), padding=3)
    x = rng.standard_normal(geom.x_shape).astype(np.float32)
    w = rng.standard_normal(geom.w_shape).astype(np.float32)
    y = np.zeros(geom.y_shape, np.float32)
    kernel = backend.function("conv2d_igemm_forward.cu", "conv2d_forward_igemm_64x64_f32")
    with pytest.raises(EmulatorLaunchError, match="trap"):
        kernel((2, 1, 1), (64, 1, 1), (x, w, w, y) + conv_algorithms._conv_scalars(geom) + (np.int32(0),))


# --- the selection rule ---------------------------------------------------------------


def test_float64_and_large_filters_run_the_direct_kernel():
    geom = geometry(IGEMM_CASES[0])
    for op in OPS:
        assert conv_algorithms.choose(op, geom, np.float32).algorithm == "igemm"
        choice = conv_algorithms.choose(op, geom, np.float64)
        assert choice.algorithm == "direct" and "float32 only" in choice.reason
        with conv_algorithms.force(**{op: "igemm"}):
            assert "float32 only" in conv_algorithms.choose(op, geom, np.float64).reason
    seven = ConvGeometry.from_shapes((2, 8, 9, 9), (16, 8, 7, 7), padding=3)  # 49 taps > 32
    assert conv_algorithms.choose("forward", seven).algorithm == "direct"
    assert conv_algorithms.choose("backward_filter", seven).algorithm == "igemm"  # no tap mask there
    strided = ConvGeometry.from_shapes((2, 8, 9, 9), (16, 8, 7, 7), stride=2, padding=3)
    assert conv_algorithms.choose("backward_data", strided).algorithm == "igemm"  # 16 taps per phase


def test_direct_for_one_channel_images_and_igemm_elsewhere():
    first = ConvGeometry.from_shapes((64, 1, 28, 28), (32, 1, 3, 3), padding=1)
    assert str(conv_algorithms.choose("forward", first)) == "direct"         # reduction of 9
    assert str(conv_algorithms.choose("backward_data", first)) == "direct"   # C = 1 output channel
    assert str(conv_algorithms.choose("backward_filter", first)).startswith("igemm 64x64 split-K")
    second = ConvGeometry.from_shapes((256, 32, 14, 14), (64, 32, 3, 3), padding=1)
    assert str(conv_algorithms.choose("forward", second)) == "igemm 128x64"
    assert str(conv_algorithms.choose("backward_data", second)) == "igemm 128x32"


@pytest.mark.parametrize("case", IGEMM_CASES + [(256, 64, 10, 10, 128, 3, 3, 1, 1, 1),
                                                (32, 64, 56, 56, 64, 3, 3, 1, 1, 1),
                                                (8, 256, 7, 7, 512, 3, 3, 1, 1, 1)], ids=str)
def test_rule_picks_a_fitting_tile_and_a_split_with_no_empty_slice(case):
    geom = geometry(case)
    for op in OPS:
        choice = conv_algorithms.choose(op, geom)
        if choice.algorithm == "direct":
            continue
        assert choice.tile in TILES[op].values()
        m, n, _ = conv_algorithms.gemm_shape(op, geom)

        def padded(t):
            return -(-m // t.rows) * t.rows * -(-n // t.cols) * t.cols
        assert padded(choice.tile) <= 1.25 * min(padded(t) for t in TILES[op].values())
    choice = conv_algorithms.choose("backward_filter", geom)
    tiles = -(-geom.N * geom.P * geom.Q // conv_algorithms.TILE_K)
    assert (choice.splits - 1) * choice.tiles_per_split < tiles <= choice.splits * choice.tiles_per_split
    assert choice.splits <= conv_algorithms.MAX_SPLITS
    workspace = choice.splits * geom.K * geom.C * geom.R * geom.S * 4
    assert choice.splits == 1 or workspace <= conv_algorithms.MAX_WORKSPACE_BYTES


def test_force_and_environment_overrides(monkeypatch):
    geom = geometry(IGEMM_CASES[0])
    with conv_algorithms.force(forward="igemm:128x32", backward_data="direct", splits=3):
        assert str(conv_algorithms.choose("forward", geom)) == "igemm 128x32"
        assert str(conv_algorithms.choose("backward_data", geom)) == "direct"
        assert conv_algorithms.choose("backward_filter", geom).splits == 3
        with conv_algorithms.force(forward="direct"):  # nested: the inner one wins, the rest stays
            assert str(conv_algorithms.choose("forward", geom)) == "direct"
            assert conv_algorithms.choose("backward_filter", geom).splits == 3
    assert str(conv_algorithms.choose("forward", geom)) == str(conv_algorithms.rule("forward", geom, np.float32))
    for bad in (dict(forward="igemm:99x99"), dict(backward_filter="igemm:128x32"), dict(forward="winograd"),
                dict(splits=0)):
        with pytest.raises(ValueError):
            with conv_algorithms.force(**bad):
                pass
    monkeypatch.setenv("GPUCNN_CONV_ALGO", "igemm:64x128,splits=2")
    assert str(conv_algorithms.choose("backward_filter", geom)) == "igemm 64x128 split-K 2"
    assert conv_algorithms.choose("forward", geom).reason != "forced"  # forward has no 64x128 tile
    monkeypatch.setenv("GPUCNN_CONV_ALGO", "forward=direct")
    assert str(conv_algorithms.choose("forward", geom)) == "direct"
    monkeypatch.setenv("GPUCNN_CONV_ALGO", "sideways=igemm")
    with pytest.raises(ValueError, match="GPUCNN_CONV_ALGO"):
        conv_algorithms.choose("forward", geom)


@CUDA_BACKENDS
def test_backend_names_the_kernel_it_runs(backend):
    geom = geometry(IGEMM_CASES[0])
    for op in OPS:
        assert backend.conv_algorithm(op, geom) == str(conv_algorithms.choose(op, geom, np.float32))


# --- AddressSanitizer ---------------------------------------------------------------

ASAN_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import gpucnn
    from gpucnn.backend import ConvGeometry, conv_algorithms
    backend = gpucnn.get_backend("cuda-emu")
    rng = np.random.default_rng(0)
    cases = [(2, 5, 9, 11, 37, 3, 3, 1, 1, 1), (1, 7, 13, 10, 70, 3, 2, (2, 3), (1, 0), (1, 2)),
             (2, 9, 8, 9, 11, 1, 1, 2, 0, 1)]
    tile_sets = zip(*(conv_algorithms.TILES[op] for op in conv_algorithms.OPS))
    for tiles in tile_sets:
        for N, C, H, W, K, R, S, stride, pad, dil in cases:
            g = ConvGeometry.from_shapes((N, C, H, W), (K, C, R, S), stride, pad, dil)
            # Exact-size arrays (asarray copies into a buffer of its own): any access past
            # an end lands in a redzone.
            x, w, b, dy = (backend.asarray(rng.standard_normal(s).astype(np.float32))
                           for s in (g.x_shape, g.w_shape, (K,), g.y_shape))
            with conv_algorithms.force(*(f"igemm:{t}" for t in tiles), splits=3):
                conv_algorithms.conv2d_forward(backend, x, w, b, g, activation="relu")
                backend.conv2d_backward_data(dy, w, g)
                backend.conv2d_backward_filter(dy, x, g)
    print("every igemm configuration ran clean", flush=True)
""")


def test_every_configuration_is_clean_under_address_sanitizer():
    from gpucnn.backend.emulator import EmulatorError, asan_environment

    try:
        env = dict(os.environ, **asan_environment())
    except (EmulatorError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no AddressSanitizer runtime: {exc}")
    env.pop("GPUCNN_CONV_ALGO", None)
    proc = subprocess.run([sys.executable, "-c", ASAN_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=900)
    assert "AddressSanitizer" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "every igemm configuration ran clean" in proc.stdout
