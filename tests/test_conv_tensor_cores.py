"""The tensor-core (TF32 and BF16) convolution kernels and the conv precision setting.

Runs on ``cuda-emu`` everywhere a C++ compiler is (the emulator executes
``mma.sync`` as kernels/mma.cuh documents, and the suite's default build has
the shared-memory race checker on), and on ``cuda`` where a GPU of sm_80 or
later is. Each tensor-core tile runs the ragged shapes of
test_conv_implicit_gemm.py with the guard-cell harness of test_kernels_ragged.py
and is checked twice against float64:

- the accuracy contract of ``gpucnn.backend.precision``: |ours - exact| within
  (2u + u^2) S + (n + 1) 2^-23 (S + |b|), S = sum |x||w|, u = 2^-11 (TF32)
  or 2^-8 (BF16);
- the model: against the exact convolution of the inputs rounded to TF32
  (round to nearest, ties away) or BF16 (ties to even), only float32
  accumulation error remains, (n + 1) 2^-23 (S + |b|) -- 100x (TF32) or 800x
  (BF16) tighter than the format's own error, so an FP32 kernel, a truncating
  one, or one that rounds only one operand fails it.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import gpucnn
from gpucnn.backend import ConvGeometry, conv_algorithms, precision
from gpucnn.backend.conv_algorithms import BF16_TILES, PRECISION_TILES, TENSOR_CORE_SOURCES, TILES
from gpucnn.backend.cuda import CudaBackend
from reference import conv2d_backward_data_ref, conv2d_backward_filter_ref, conv2d_forward_ref
from test_conv_implicit_gemm import ASAN_SCRIPT, IGEMM_CASES, geometry, record_launches
from test_kernels_ragged import guarded, guarded_input  # noqa: F401 (fixture)

CUDA_BACKENDS = pytest.mark.parametrize("backend", ["cuda-emu", "cuda"], indirect=True)


@pytest.fixture
def conv_precision(monkeypatch):
    """``set_conv_precision`` for the test, the setting restored afterwards."""
    monkeypatch.delenv(precision.ENVIRONMENT_VARIABLE, raising=False)
    yield gpucnn.set_conv_precision
    gpucnn.set_conv_precision(None)


def precision_tiles(op):
    """(precision, tile) of every tensor-core kernel of ``op``."""
    return [pytest.param(p, tile, id=f"{p}-{tile}") for p, tiles in PRECISION_TILES.items() for tile in tiles[op]]


def needs_tensor_cores(backend):
    arch = backend.arch()
    if arch is not None and arch < precision.MIN_TENSOR_CORE_ARCH:
        pytest.skip(f"sm_{arch} has no TF32 tensor cores")


def bounds(reference, a, b, n, bias=None, prec="tf32"):
    """``reference(a, b)`` (float64 inputs) of the exact inputs and of their roundings to ``prec``, with the
    contract bound and the accumulation-only bound of outputs that sum ``n`` products (plus ``bias``)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    rounding = precision.ROUNDING[prec]
    exact = reference(a64, b64)
    rounded = reference(rounding(a).astype(np.float64), rounding(b).astype(np.float64))
    abs_sum = reference(np.abs(a64), np.abs(b64))
    abs_bias = 0.0 if bias is None else np.abs(bias.astype(np.float64))[None, :, None, None]
    contract = precision.ERROR_BOUND[prec](abs_sum, n, abs_bias)
    accumulation = (n + 1) * precision.FLOAT32_SUM_ERROR * (abs_sum + abs_bias)
    return exact, rounded, contract, accumulation


def assert_within(got, exact, rounded, contract, accumulation):
    assert not np.isnan(got).any()
    assert np.all(np.abs(got - exact) <= contract), np.abs(got - exact).max()
    assert np.all(np.abs(got - rounded) <= accumulation), (np.abs(got - rounded) / accumulation).max()


def case_data(case, rng):
    geom = geometry(case)
    hyper = dict(zip(("stride", "padding", "dilation"), case[7:]))
    x, w, b, dy = (rng.standard_normal(s).astype(np.float32)
                   for s in (geom.x_shape, geom.w_shape, (geom.K,), geom.y_shape))
    return geom, hyper, x, w, b, dy


@CUDA_BACKENDS
@pytest.mark.parametrize("prec, tile", precision_tiles("forward"))
@pytest.mark.parametrize("case", IGEMM_CASES, ids=str)
def test_tensor_core_forward_meets_the_accuracy_contract_with_guards(backend, guarded, conv_precision, case, prec,
                                                                     tile, rng, monkeypatch):
    conv_precision(prec)
    needs_tensor_cores(backend)
    launched = record_launches(backend, monkeypatch)
    geom, hyper, x, w, b, _ = case_data(case, rng)
    xd, wd, bd = (guarded_input(backend, a) for a in (x, w, b))
    n = w[0].size
    with conv_algorithms.force(forward=f"igemm:{tile}"):
        for bias, activation in ((b, None), (b, "relu"), (None, None)):
            exact, rounded, contract, accumulation = bounds(
                lambda x64, w64: conv2d_forward_ref(x64, w64, None, **hyper), x, w, n, bias, prec)
            if bias is not None:  # added in float32 after the sums; ReLU (1-Lipschitz) keeps the bounds
                exact, rounded = (v + bias.astype(np.float64)[None, :, None, None] for v in (exact, rounded))
            if activation == "relu":
                exact, rounded = np.maximum(exact, 0), np.maximum(rounded, 0)
            y = backend.conv2d_forward(xd, wd, None if bias is None else bd, geom, activation=activation)
            guarded.assert_guards_intact(f"{prec} conv2d_forward {tile}")
            assert_within(backend.to_numpy(y), exact, rounded, contract, accumulation)
    assert launched and set(launched) == {f"conv2d_forward_igemm_{tile}_{prec}"}, launched


@CUDA_BACKENDS
@pytest.mark.parametrize("prec, tile", precision_tiles("backward_data"))
@pytest.mark.parametrize("case", IGEMM_CASES, ids=str)
def test_tensor_core_backward_data_meets_the_accuracy_contract_with_guards(backend, guarded, conv_precision, case,
                                                                           prec, tile, rng, monkeypatch):
    conv_precision(prec)
    needs_tensor_cores(backend)
    launched = record_launches(backend, monkeypatch)
    geom, hyper, x, w, _, dy = case_data(case, rng)
    n = geom.K * geom.R * geom.S  # at most this many products reach one dx element
    expected = bounds(lambda dy64, w64: conv2d_backward_data_ref(dy64, w64, x.shape, **hyper), dy, w, n,
                      prec=prec)
    with conv_algorithms.force(backward_data=f"igemm:{tile}"):
        dx = backend.conv2d_backward_data(guarded_input(backend, dy), guarded_input(backend, w), geom)
    guarded.assert_guards_intact(f"{prec} conv2d_backward_data {tile}")
    assert_within(backend.to_numpy(dx), *expected)
    assert launched and set(launched) == {f"conv2d_backward_data_igemm_{tile}_{prec}"}, launched


@CUDA_BACKENDS
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("prec, tile", precision_tiles("backward_filter"))
@pytest.mark.parametrize("case", IGEMM_CASES, ids=str)
def test_tensor_core_backward_filter_meets_the_accuracy_contract_with_guards(backend, guarded, conv_precision, case,
                                                                             prec, tile, splits, rng, monkeypatch):
    conv_precision(prec)
    needs_tensor_cores(backend)
    launched = record_launches(backend, monkeypatch)
    geom, hyper, x, w, _, dy = case_data(case, rng)
    n = geom.N * geom.P * geom.Q  # products per dw element (split-K adds its slices in float32 too)
    expected = bounds(lambda dy64, x64: conv2d_backward_filter_ref(dy64, x64, (geom.R, geom.S), **hyper), dy, x,
                      n + splits, prec=prec)
    with conv_algorithms.force(backward_filter=f"igemm:{tile}", splits=splits):
        dw = backend.conv2d_backward_filter(guarded_input(backend, dy), guarded_input(backend, x), geom)
    guarded.assert_guards_intact(f"{prec} conv2d_backward_filter {tile}")
    assert_within(backend.to_numpy(dw), *expected)
    assert f"conv2d_backward_filter_igemm_{tile}_{prec}" in launched, launched
    assert not any(name.endswith("igemm_" + tile + "_f32") for name in launched), launched


@CUDA_BACKENDS
@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_the_model_check_rejects_fp32_results(backend, prec, rng):
    """Not vacuous: the FP32 kernel's result misses the TF32/BF16 model by far more than the accumulation bound."""
    geom, hyper, x, w, b, _ = case_data(IGEMM_CASES[0], rng)
    _, rounded, _, accumulation = bounds(lambda x64, w64: conv2d_forward_ref(x64, w64, None, **hyper),
                                         x, w, w[0].size, b, prec)
    rounded = rounded + b.astype(np.float64)[None, :, None, None]
    with conv_algorithms.force(forward="igemm"):
        y = backend.to_numpy(backend.conv2d_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b),
                                                    geom))
    assert (np.abs(y - rounded) > accumulation).mean() > 0.5


# Inputs halfway between two values of the format that round up by half an ulp (u): TF32 rounds
# ties away from zero; BF16 ties to even, so the tie must lie below an even pattern (1 + 2^-6).
HALFWAY_UP = {"tf32": 1 + 2.0**-11, "bf16": 1 + 3 * 2.0**-8}


@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_the_contract_bound_is_tight_to_a_small_factor(prec):
    """The bound is not slack by orders of magnitude: inputs halfway between values of the format,
    all of one sign, reach a good part of it (so a kernel off by a few ulps would exceed it)."""
    n = 64
    x = np.full(n, HALFWAY_UP[prec], np.float32)
    w = np.full(n, HALFWAY_UP[prec], np.float32)
    rounding = precision.ROUNDING[prec]
    error = float(np.dot(rounding(x).astype(np.float64), rounding(w)) - np.dot(x.astype(np.float64), w))
    bound = float(precision.ERROR_BOUND[prec](np.dot(np.abs(x.astype(np.float64)), np.abs(w)), n))
    assert 0.5 * bound < error <= bound


def test_round_to_bf16_matches_torch(rng):
    """``round_to_bf16`` against PyTorch's float32 -> bfloat16 conversion (round to nearest even),
    ties, values near the largest finite, and the specials included."""
    torch = pytest.importorskip("torch")
    ties = (np.arange(1, 2**10, dtype=np.uint32) << 15 | np.uint32(0x3F800000)).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.3895e38, -3.3895e38, 1e-40, -1e-45], np.float32)
    a = np.concatenate([rng.standard_normal(4096).astype(np.float32) * 1e3, ties, -ties, special])
    expected = torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(precision.round_to_bf16(a), expected)
    assert np.isnan(precision.round_to_bf16(np.array([np.nan], np.float32))).all()


# --- the setting ------------------------------------------------------------------------


def test_precision_setting_and_environment(monkeypatch):
    monkeypatch.delenv(precision.ENVIRONMENT_VARIABLE, raising=False)
    gpucnn.set_conv_precision(None)
    assert gpucnn.get_conv_precision() == "fp32"
    monkeypatch.setenv(precision.ENVIRONMENT_VARIABLE, "tf32")
    assert gpucnn.get_conv_precision() == "tf32"
    gpucnn.set_conv_precision("bf16")
    try:
        assert gpucnn.get_conv_precision() == "bf16"  # the call wins over the environment
    finally:
        gpucnn.set_conv_precision(None)
    monkeypatch.setenv(precision.ENVIRONMENT_VARIABLE, "fp16")
    with pytest.raises(ValueError, match="GPUCNN_CONV_PRECISION.*'fp16'"):
        gpucnn.get_conv_precision()
    with pytest.raises(ValueError, match="set_conv_precision.*'half'"):
        gpucnn.set_conv_precision("half")


@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_choice_names_the_precision_and_falls_back_on_sm75(conv_precision, prec):
    conv_precision(prec)
    g = geometry(IGEMM_CASES[0])
    assert conv_algorithms.choose("forward", g, np.float32).precision == prec
    assert str(conv_algorithms.choose("forward", g, np.float32, arch=90)).endswith(f" {prec}")
    on_t4 = conv_algorithms.choose("forward", g, np.float32, arch=75)
    assert on_t4.precision == "fp32" and "sm_75" in str(on_t4)
    assert conv_algorithms.choose("forward", g, np.float64).precision == "fp32"
    assert set(TENSOR_CORE_SOURCES[prec]) == set(conv_algorithms.OPS)
    for op in conv_algorithms.OPS:
        chosen = conv_algorithms.choose(op, g, np.float32)
        assert chosen.precision == prec and chosen.tile.name in PRECISION_TILES[prec][op]
    thin = ConvGeometry.from_shapes((2, 1, 9, 9), (3, 1, 3, 3), 1, 1, 1)  # the rule's direct kernel
    direct = conv_algorithms.choose("forward", thin, np.float32)
    assert direct.algorithm == "direct" and "the direct kernel is FP32" in str(direct)


@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_an_sm75_device_runs_the_fp32_kernels(conv_precision, prec, rng, monkeypatch):
    from gpucnn.backend.emulator import load_module

    conv_precision(prec)
    t4 = CudaBackend("cuda-emu", np, load_module, device_arch=lambda: 75)
    launched = record_launches(t4, monkeypatch)
    g = geometry(IGEMM_CASES[0])
    x, w = (rng.standard_normal(s).astype(np.float32) for s in (g.x_shape, g.w_shape))
    y = t4.conv2d_forward(x, w, None, g)
    assert launched and all(name.endswith("_f32") for name in launched), launched
    np.testing.assert_allclose(y, conv2d_forward_ref(x, w, None, stride=1, padding=1, dilation=1),
                               rtol=1e-4, atol=1e-4)
    assert t4.conv_precision("forward", g) == "fp32"


@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_bench_check_and_kernel_list_name_the_precision(conv_precision, prec):
    from gpucnn.bench import check, workload

    conv_precision(prec)
    backend = gpucnn.get_backend("cuda-emu")
    (case,) = workload.with_batch(workload.select(workload.STANDARD_WORKLOAD, ["conv"], {"D2"}), 1)
    result = check.check_op(backend, case, "conv2d_forward")
    assert result["precision"] == prec and result["algorithm"].endswith(f" {prec}")
    assert result["ok"], result
    gpucnn.set_conv_precision("fp32")
    assert workload.precision(backend, case, "conv2d_backward_filter") == "fp32"


# --- AddressSanitizer ---------------------------------------------------------------


@pytest.mark.parametrize("prec", list(PRECISION_TILES))
def test_tensor_core_kernels_are_clean_under_address_sanitizer(prec):
    from gpucnn.backend.emulator import EmulatorError, asan_environment

    try:
        env = dict(os.environ, **asan_environment())
    except (EmulatorError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no AddressSanitizer runtime: {exc}")
    env.pop("GPUCNN_CONV_ALGO", None)
    env[precision.ENVIRONMENT_VARIABLE] = prec
    # Every tensor-core tile of every op, and not vacuous: the calls run tensor-core kernels.
    forward = 'conv_algorithms.conv2d_forward(backend, x, w, b, g, activation="relu")'
    checked = (f'assert all(conv_algorithms.choose(op, g).precision == "{prec}" for op in conv_algorithms.OPS); '
               + forward)
    tiles = f'conv_algorithms.PRECISION_TILES["{prec}"][op]'
    script = ASAN_SCRIPT.replace("conv_algorithms.TILES[op]", tiles).replace(forward, checked)
    assert tiles in script and checked in script
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert "AddressSanitizer" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0 and "every igemm configuration ran clean" in proc.stdout, proc.stderr[-4000:]


def test_a_tensor_core_only_tile_forced_at_fp32_runs_an_fp32_tile(monkeypatch):
    monkeypatch.delenv(precision.ENVIRONMENT_VARIABLE, raising=False)
    g = geometry(IGEMM_CASES[0])
    with conv_algorithms.force(forward="igemm:128x256"):
        fp32 = conv_algorithms.choose("forward", g, np.float32)
        assert fp32.precision == "fp32" and fp32.tile.name in TILES["forward"]
        assert "tensor-core only" in fp32.reason
        on_t4 = conv_algorithms.with_precision(conv_algorithms._choose_algorithm("forward", g, np.float32), g,
                                               np.float32, arch=75, requested="tf32")
        assert on_t4.tile.name in TILES["forward"] and "sm_75" in str(on_t4)
        bf16 = conv_algorithms.with_precision(conv_algorithms._choose_algorithm("forward", g, np.float32), g,
                                              np.float32, arch=90, requested="bf16")
        assert bf16.precision == "bf16" and bf16.tile.name in BF16_TILES["forward"]
        assert "128x256 has no bf16 kernel" in bf16.reason


def test_bf16_split_k_counts_its_own_tiles():
    """Backward-filter's tiles_per_split is in the kernel's BK: 16 pixels per tile at bf16, 8 at fp32/tf32,
    so the slices cover N*P*Q pixels exactly once either way."""
    g = geometry(IGEMM_CASES[0])
    pixels = g.N * g.P * g.Q
    for prec in ("fp32", "tf32", "bf16"):
        with conv_algorithms.force(backward_filter="igemm:64x64", splits=3):
            chosen = conv_algorithms.with_precision(
                conv_algorithms._choose_algorithm("backward_filter", g, np.float32), g, np.float32, arch=90,
                requested=prec)
        k = chosen.tile.k
        assert k == (16 if prec == "bf16" else 8)
        assert (chosen.splits - 1) * chosen.tiles_per_split * k < pixels <= chosen.splits * chosen.tiles_per_split * k
