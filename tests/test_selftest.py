"""``gpucnn selftest``: the CI form (``--backend cuda-emu``) end to end, and that a wrong result fails it.

The selftest's own checks compare against independent references (NumPy in
float64, the cpu backend); these tests check that every check runs and reports
its figure, that the verdict and exit status follow the figures, and that a
deliberately wrong kernel output is caught and named.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucnn as gc
from gpucnn import environment, selftest
from gpucnn.backend import cuda_is_available

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the CUDA emulator")
ROOT = Path(__file__).resolve().parent.parent


def _run_cli(*args, timeout=600):
    # As a user runs it: without the suite's race checking (tests/conftest.py), which
    # the ragged and implicit-GEMM tests already apply to every kernel, at ~10x the time.
    env = dict(os.environ, GPUCNN_EMU_RACECHECK="0")
    return subprocess.run([sys.executable, "-m", "gpucnn.cli", "selftest", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
@needs_gxx
def test_emulated_selftest_passes_and_lists_every_check_with_its_figure(tmp_path):
    run = _run_cli("--backend", "cuda-emu", "--out", tmp_path / "out")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout
    report = json.loads((tmp_path / "out" / "selftest.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == list(selftest.CHECKS)
    assert report["passed"] and report["failed"] == [] and report["backend"] == "cuda-emu"
    for check in report["checks"]:
        assert check["status"] in ("passed", "skipped"), check
        assert check["figure"]["name"] and check["summary"] and check["seconds"] >= 0
        if check["status"] == "skipped":
            assert check["details"].get("reason") or check["details"].get("skip_reasons"), check
    # The checks that must run on the emulator did, and their figures are within their limits.
    for name in ("kernels", "training", "gradcam"):
        figure = checks[name]["figure"]
        assert checks[name]["status"] == "passed"
        assert 0 <= figure["value"] <= figure["limit"], (name, figure)
    assert checks["environment"]["status"] == "passed"
    assert checks["environment"]["details"]["processor"]
    kernels = checks["kernels"]["details"]
    assert all(r["ok"] for r in kernels["results"])
    # Every op family, both dtypes, the direct kernel and several implicit-GEMM tiles were run.
    assert {r["op"] for r in kernels["results"]} >= {
        "conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter", "max_pool2d_forward",
        "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"}
    assert {r["dtype"] for r in kernels["results"]} == {"float32", "float64"}
    assert "direct" in kernels["kernels"] and sum(k.startswith("igemm") for k in kernels["kernels"]) >= 4
    training = checks["training"]["details"]
    assert len(training["loss"]["cuda-emu"]) == len(training["loss"]["cpu"]) == selftest.TRAINING["epochs"]
    # Without a GPU the benchmark against cuDNN is skipped, saying why.
    for name in ("bench_tf32_off", "bench_tf32_on"):
        assert checks[name]["status"] == "skipped" and "GPU" in checks[name]["summary"]
    markdown = (tmp_path / "out" / "selftest.md").read_text()
    assert markdown.startswith("# gpucnn selftest: PASSED")
    for name in selftest.CHECKS:
        assert f"| {name} |" in markdown


@needs_gxx
def test_a_wrong_kernel_result_exits_1_and_names_the_check(tmp_path, monkeypatch, capsys):
    # A cuda-emu backend of its own, without the suite's race checking (see _run_cli).
    from gpucnn import backend as backends
    from gpucnn.backend.cuda import make_emulated_cuda_backend

    monkeypatch.setenv("GPUCNN_EMU_RACECHECK", "0")
    emu = make_emulated_cuda_backend()
    monkeypatch.setitem(backends._instances, "cuda-emu", emu)
    right = emu.conv2d_backward_filter

    def one_wrong_tap(dy, x, geom):
        dw = right(dy, x, geom)
        flat = dw.reshape(-1)
        flat[0] += 0.01 * float(abs(flat).max())  # one element of many: must still be caught
        return dw

    monkeypatch.setattr(emu, "conv2d_backward_filter", one_wrong_tap)
    status = selftest.main(["--backend", "cuda-emu", "--out", str(tmp_path), "--only", "kernels"])
    assert status == 1
    assert "FAILED: kernels" in capsys.readouterr().out
    report = json.loads((tmp_path / "selftest.json").read_text())
    assert report["failed"] == ["kernels"] and not report["passed"]
    kernels = report["checks"][1]
    assert kernels["figure"]["value"] > kernels["figure"]["limit"]
    wrong = [r for r in kernels["details"]["results"] if not r["ok"]]
    assert wrong and {r["op"] for r in wrong} == {"conv2d_backward_filter"}
    assert "WRONG" in kernels["summary"] and "conv2d_backward_filter" in kernels["summary"]
    assert "| kernels | failed |" in (tmp_path / "selftest.md").read_text()


@pytest.mark.skipif(cuda_is_available(), reason="a usable GPU is here: the cuda selftest would run in full")
def test_without_a_usable_gpu_the_cuda_selftest_says_why_and_exits_1(tmp_path):
    run = _run_cli("--out", tmp_path, "--only", "kernels", timeout=120)  # --backend defaults to cuda
    assert run.returncode == 1
    report = json.loads((tmp_path / "selftest.json").read_text())
    environment, kernels = report["checks"]
    assert environment["status"] == "failed" and "not usable" in environment["summary"]
    assert kernels["status"] == "skipped" and "not usable" in kernels["summary"]
    assert report["failed"] == ["environment"]


def test_unknown_check_is_a_usage_error(tmp_path, capsys):
    assert selftest.main(["--backend", "cuda-emu", "--out", str(tmp_path), "--only", "kernals"]) == 2
    assert "kernals" in capsys.readouterr().err


def test_junit_counts_read_pytest_reports(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2">'
                      '<testcase name="a"><skipped message="no CUDA GPU on this machine"/></testcase>'
                      '<testcase name="b"><skipped message="no CUDA GPU on this machine"/></testcase>'
                      '</testsuite></testsuites>')
    counts, reasons = selftest._junit_counts(report)
    assert counts == {"tests": 5, "failures": 1, "errors": 0, "skipped": 2}
    assert reasons == ["no CUDA GPU on this machine"]


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_is_available(), reason="no CUDA GPU on this machine")
def test_bench_reference_names_its_tf32_setting():
    """The two bench checks differ only in the reference's TF32; its greeting must say which ran."""
    from gpucnn.bench.reference import ReferenceProcess

    usable, reason = selftest.torch_sees_gpu(environment.gather())
    if not usable:
        pytest.skip(reason)
    for tf32, word in ((False, "TF32 off"), (True, "TF32 on")):
        with ReferenceProcess("cuda", "torch", tf32=tf32) as ref:
            assert word in ref.info["reference"]


def _perturbed(monkeypatch, backend, method, change):
    """Make ``backend.method`` return its right result changed in place by ``change(result)``."""
    right = getattr(backend, method)

    def wrong(*args, **kwargs):
        result = right(*args, **kwargs)
        change(result)
        return result

    monkeypatch.setattr(backend, method, wrong)


@needs_gxx
def test_the_training_check_fails_when_a_gradient_is_wrong(monkeypatch):
    from gpucnn.datasets import load_digits

    emu = gc.get_backend("cuda-emu")
    data = load_digits()
    monkeypatch.setattr(selftest, "EMULATED_TRAIN_SAMPLES", 64)  # 2 batches per epoch: seconds, not minutes
    record, _ = selftest.check_training(emu, data)
    assert record["status"] == "passed", record["summary"]

    def one_wrong_tap(dw):
        dw.reshape(-1)[0] += 0.01 * float(abs(dw).max())  # abs(): dw may be a device array

    _perturbed(monkeypatch, emu, "conv2d_backward_filter", one_wrong_tap)
    record, _ = selftest.check_training(emu, data)
    assert record["status"] == "failed"
    assert record["figure"]["value"] > record["figure"]["limit"]


@needs_gxx
def test_the_gradcam_check_fails_when_a_feature_map_is_wrong(monkeypatch):
    from gpucnn.datasets import load_digits
    from gpucnn.models import build_model

    emu = gc.get_backend("cuda-emu")
    data = load_digits()
    weights = build_model(selftest.TRAINING["model"], 1, 10, (8, 8), rng=3).state_arrays()
    assert selftest.check_gradcam(emu, data, weights)["status"] == "passed"

    def one_channel_off(y):
        y[:, 0] *= 1.5

    _perturbed(monkeypatch, emu, "conv2d_forward", one_channel_off)
    record = selftest.check_gradcam(emu, data, weights)
    assert record["status"] == "failed"
    assert record["figure"]["value"] > record["figure"]["limit"]
