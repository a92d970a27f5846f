"""gpucnn.bench: the JSON schema of a tiny run, the NumPy baseline, the timers and the workload table.

No timing is asserted (speed is measured in benchmarks/); the tests check that
every op of the workload gets one well-formed record, that the baseline the
benchmarks fall back to computes the right thing, and that the PyTorch copy
of a zoo model is the same network.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpucnn.backend.geometry import ConvGeometry, PoolGeometry
from gpucnn.bench import baseline, end_to_end, timing, workload
from gpucnn.bench.__main__ import main as bench_main
from gpucnn.bench.peak import cpu_peak

sys.path.insert(0, str(Path(__file__).parent))
import reference as loop_ref  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None

RECORD_TYPES = {
    "op": str, "case": str, "backend": str, "algorithm": str, "median_s": float, "min_s": float,
    "peak_fraction": float, "samples": int, "flops": int,
}
OPTIONAL_FLOATS = ("gflops", "gbps", "reference_median_s", "speedup", "reference_peak_fraction")


def _expected_pairs(cases, models):
    return {(op, c.id) for c in cases for op in c.ops} | {("train_step", m) for m in models}


def _check_records(data, expect_reference):
    records = data["records"]
    assert isinstance(records, list) and records
    for r in records:
        for key, kind in RECORD_TYPES.items():
            assert isinstance(r[key], kind), (key, r[key])
        for key in OPTIONAL_FLOATS + ("reference", "reference_algorithm"):
            assert key in r
        assert r["median_s"] > 0 and r["min_s"] > 0 and r["min_s"] <= r["median_s"]
        assert r["peak_fraction"] > 0
        if r["family"] == "pool":
            assert r["gflops"] is None and r["gbps"] > 0
        else:
            assert r["gflops"] > 0
        if r["family"] == "train" and expect_reference == "numpy":
            # The NumPy baseline has no training step: ours is timed alone.
            assert r["reference"] is None and r["speedup"] is None
        elif expect_reference:
            assert r["reference"].startswith(expect_reference), r["reference"]
            assert r["reference_median_s"] > 0
            assert r["speedup"] == pytest.approx(r["reference_median_s"] / r["median_s"])
    pairs = [(r["op"], r["case"]) for r in records]
    assert len(pairs) == len(set(pairs)), "one record per op x case"
    return set(pairs)


def test_tiny_run_writes_one_record_per_op_and_case(tmp_path):
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    status = bench_main(["--backend", "cpu", "--batch", "1", "--repeats", "1", "--rounds", "1",
                         "--min-sample-ms", "0", "--json", str(out), "--plot", str(png)])
    assert status == 0
    data = json.loads(out.read_text())
    pairs = _check_records(data, "torch" if HAS_TORCH else "numpy")
    assert pairs == _expected_pairs(workload.STANDARD_WORKLOAD, end_to_end.MODELS)
    assert {r["backend"] for r in data["records"]} == {"cpu"}
    meta = data["meta"]
    assert meta["backends"][0]["peak"]["flops"] > 0 and meta["backends"][0]["peak"]["bandwidth"] > 0
    assert all(case["N"] == 1 for case in meta["workload"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_numpy_reference_filters_and_one_thread(tmp_path):
    import numba
    threads_before = numba.get_num_threads()
    out = tmp_path / "out.json"
    status = bench_main(["--backend", "cpu", "--batch", "2", "--repeats", "1", "--rounds", "2",
                         "--min-sample-ms", "0", "--reference", "numpy", "--ops", "conv,pool", "--cases", "L2,P3",
                         "--threads", "1", "--json", str(out)])
    assert status == 0
    data = json.loads(out.read_text())
    pairs = _check_records(data, "numpy")
    assert "numba 1" in data["meta"]["threads"]
    assert "BLAS/OpenMP 1" in data["meta"]["backends"][0]["reference_threads"]
    assert data["meta"]["backends"][0]["peak"]["device"].endswith(", 1 core")
    assert numba.get_num_threads() == threads_before  # the limit ends with the run
    assert pairs == _expected_pairs(workload.select(ids={"L2", "P3"}), ())
    assert all(r["samples"] == 2 for r in data["records"])  # one sample per round


@pytest.mark.parametrize("argv", [["--ops", "conv,gemm"], ["--cases", "D9"], ["--backend", "tpu"],
                                  ["--repeats", "0"]])
def test_bad_options_exit_with_status_2(argv, capsys):
    assert bench_main(argv + ["--reference", "none"]) == 2
    assert "gpucnn bench:" in capsys.readouterr().err


def test_kernels_lists_every_op_without_timing(capsys):
    assert bench_main(["--backend", "cpu", "--kernels", "--ops", "conv", "--cases", "D1,R2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 2 * len(workload.CONV_OPS)


def test_check_runs_the_whole_workload_on_the_emulated_kernels(capsys):
    """Every case and op of the workload (batch 2) on cpu and cuda-emu, fast kernels where the rule
    picks them: right, and the kernel named per row."""
    assert bench_main(["--backend", "cpu,cuda-emu", "--check", "--batch", "2", "--ops", "conv,pool"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:-1]]
    expected = _expected_pairs(workload.STANDARD_WORKLOAD, ())
    for name in ("cpu", "cuda-emu"):
        assert {(r[2], r[1]) for r in rows if r[0] == name} == expected
    assert all(r[-1] == "ok" for r in rows)
    assert any(r[0] == "cuda-emu" and r[3] == "igemm" for r in rows)


def test_check_reports_a_wrong_result(monkeypatch, capsys):
    from gpucnn.backend import get_backend
    cpu = get_backend("cpu")
    right = cpu.conv2d_backward_filter

    def off_by_one_tap(dy, x, geom):
        dw = right(dy, x, geom)
        dw[0, 0, 0, 0] += 0.01 * np.abs(dw).max()  # one wrong element of many: still caught
        return dw

    monkeypatch.setattr(cpu, "conv2d_backward_filter", off_by_one_tap)
    assert bench_main(["--backend", "cpu", "--check", "--batch", "2", "--cases", "J2"]) == 1
    out = capsys.readouterr().out
    assert "WRONG" in out and "2 of 3 results right" in out


# --- the NumPy baseline against the plain loop references -----------------------------------

CONV_SHAPES = [  # (N, C, H, W), (K, R, S), stride, pad, dilation
    ((2, 3, 9, 8), (4, 3, 2), (2, 1), (1, 2), (1, 2)),
    ((1, 2, 7, 7), (3, 3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 1, 6, 5), (2, 5, 5), (1, 1), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("x_shape, wk, stride, pad, dil", CONV_SHAPES)
def test_baseline_convolution_matches_loops(x_shape, wk, stride, pad, dil, rng):
    K, R, S = wk
    g = ConvGeometry.from_shapes(x_shape, (K, x_shape[1], R, S), stride, pad, dil)
    x, w = rng.standard_normal(g.x_shape), rng.standard_normal(g.w_shape)
    b, dy = rng.standard_normal(K), rng.standard_normal(g.y_shape)
    np.testing.assert_allclose(baseline.conv2d_forward(x, w, b, g),
                               loop_ref.conv2d_forward_ref(x, w, b, stride, pad, dil), atol=1e-12)
    np.testing.assert_allclose(baseline.conv2d_backward_data(dy, w, g),
                               loop_ref.conv2d_backward_data_ref(dy, w, g.x_shape, stride, pad, dil), atol=1e-12)
    np.testing.assert_allclose(baseline.conv2d_backward_filter(dy, x, g),
                               loop_ref.conv2d_backward_filter_ref(dy, x, (R, S), stride, pad, dil), atol=1e-12)


@pytest.mark.parametrize("x_shape, k, stride, pad", [((2, 3, 9, 8), 3, 2, 1), ((1, 2, 8, 8), 2, 2, 0),
                                                     ((2, 1, 7, 6), (3, 2), (1, 2), (1, 0))])
def test_baseline_pooling_matches_loops(x_shape, k, stride, pad, rng):
    g = PoolGeometry.from_shape(x_shape, k, stride, pad)
    x = rng.standard_normal(g.x_shape)
    x[:, :, 1, :] = x[:, :, 0, :]  # ties: the first maximum must win
    dy = rng.standard_normal(g.y_shape)
    y, argmax = baseline.max_pool2d_forward(x, g)
    y_ref, argmax_ref = loop_ref.max_pool2d_forward_ref(x, k, stride, pad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_allclose(baseline.max_pool2d_backward(dy, argmax, g),
                               loop_ref.max_pool2d_backward_ref(dy, argmax_ref, g.x_shape), atol=1e-12)
    np.testing.assert_allclose(baseline.avg_pool2d_forward(x, g),
                               loop_ref.avg_pool2d_forward_ref(x, k, stride, pad), atol=1e-12)
    np.testing.assert_allclose(baseline.avg_pool2d_backward(dy, g),
                               loop_ref.avg_pool2d_backward_ref(dy, g.x_shape, k, stride, pad), atol=1e-12)


# --- timers, workload, peak ------------------------------------------------------------------

class FakeClock:
    """Every call of fn "takes" ``per_call`` seconds; counts the calls."""

    def __init__(self, per_call):
        self.per_call, self.calls = per_call, 0

    def interval(self, fn, calls):
        self.calls += calls
        return calls * self.per_call


def test_calibrate_and_measure_reach_the_minimum_sample_length():
    clock = FakeClock(3e-5)
    calls = timing.calibrate(lambda: None, clock, min_sample_s=1e-3)
    assert calls * 3e-5 >= 1e-3 * 0.99 and (calls - 1) * 3e-5 < 1e-3
    clock.calls = 0
    t = timing.measure(lambda: None, clock, repeats=4, warmup=2, calls=calls)
    assert len(t.samples) == 4 and t.median_s == pytest.approx(3e-5) and t.calls == calls
    assert clock.calls == 2 + 4 * calls


def test_wall_clock_counts_every_call():
    seen = []
    t = timing.measure(lambda: seen.append(1), timing.WallClock(), repeats=3, warmup=1, calls=5)
    assert len(seen) == 1 + 15 and len(t.samples) == 3 and min(t.samples) > 0


def test_workload_matches_the_issue_table():
    by_id = {c.id: c for c in workload.STANDARD_WORKLOAD}
    # Output sizes from P = (H + 2*pad - R) // stride + 1, written out for the table's cases.
    expected_pq = {"D1": 28, "D2": 14, "L2": 8, "J1": 40, "J1c3": 40, "J2": 20, "J3": 10, "R1": 56, "R2": 14,
                   "P1": 14, "P2": 20, "P3": 56}
    for cid, pq in expected_pq.items():
        g = by_id[cid].geometry
        assert (g.P, g.Q) == (pq, pq), cid
    r2 = by_id["R2"].geometry
    assert workload.flops(by_id["R2"], "conv2d_forward") == 2 * 32 * 256 * 14 * 14 * 128 * 9 == r2.flops
    assert all(c.N >= 1 for c in workload.quick(workload.STANDARD_WORKLOAD))
    with pytest.raises(ValueError, match="unknown cases"):
        workload.select(ids={"D1", "X7"})


def test_cpu_peak_is_plausible():
    peak = cpu_peak(measure_bandwidth=False)
    cores = int(peak.device.rsplit(",", 1)[1].split()[0])  # "<model>, <n> cores"
    assert 1 <= cores <= (__import__("os").cpu_count() or 1)
    # 0.5-6 GHz x 2-64 FLOP/cycle per core.
    assert cores * 0.5e9 * 2 <= peak.flops <= cores * 6e9 * 64


# --- the PyTorch copy of a zoo model ---------------------------------------------------------

@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")
@pytest.mark.parametrize("name", list(end_to_end.MODELS))
def test_torch_model_is_the_same_network(name):
    import torch

    from gpucnn.models import build_model
    m = end_to_end.MODELS[name]
    ours = build_model(name, m["in_channels"], m["num_classes"], 16, rng=3)
    theirs = end_to_end.torch_model(ours.get_config()["layers"], torch).double().eval()
    # Copy our weights in (both use PyTorch's layouts), then both must compute the same logits.
    params = [p for layer in ours.layers for p in (layer.params.get("W"), layer.params.get("b")) if p is not None]
    assert len(params) == len(list(theirs.parameters()))
    with torch.no_grad():
        for mine, t in zip(params, theirs.parameters()):
            t.copy_(torch.from_numpy(np.asarray(mine, np.float64)))
    x = np.random.default_rng(0).standard_normal((3, m["in_channels"], 16, 16))
    ours.to(dtype=np.float64)
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours.forward(x, training=False), expected, rtol=1e-10, atol=1e-12)


def test_training_flops_count_conv_and_dense_three_times():
    spec = end_to_end.training_spec("jet", batch=4)
    # jet at 40x40: 5x5 1->32 at 40x40, 3x3 32->64 at 20x20, 3x3 64->128 at 10x10, dense 128->2.
    forward = 2 * 4 * (32 * 40 * 40 * 1 * 25 + 64 * 20 * 20 * 32 * 9 + 128 * 10 * 10 * 64 * 9 + 128 * 2)
    assert end_to_end.training_flops(spec) == 3 * forward


def test_a_dead_reference_leaves_our_timings_without_comparison(capsys):
    import gpucnn
    from gpucnn.bench.peak import cpu_peak
    from gpucnn.bench.reference import ReferenceProcess
    from gpucnn.bench.suite import Settings, run_backend

    cases = workload.with_batch(workload.select(ids={"P1"}), 1)
    with ReferenceProcess("cpu", "numpy") as ref:
        assert ref.info["library"] == "numpy"
        ref._proc.kill()
        ref._proc.wait()
        records = run_backend(gpucnn.get_backend("cpu"), cases, [], ref, cpu_peak(False),
                              Settings(repeats=1, rounds=2, warmup=0, min_sample_s=0.0, settle_s=0.0), 1)
    assert [r["op"] for r in records] == list(workload.MAX_POOL_OPS)
    for r in records:
        assert r["median_s"] > 0 and r["samples"] == 2
        assert r["reference"] is None and r["reference_median_s"] is None and r["speedup"] is None
    assert "reference failed" in capsys.readouterr().err
