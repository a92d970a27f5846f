"""``gpucnn selftest``: one command that says whether gpucnn computes the right thing on this machine.

Run it first on a new GPU machine (``gpucnn selftest``, or ``python -m
gpucnn.selftest``); it is sized to finish within five minutes on one GPU (not
yet timed on one). Its checks, in order:

- ``environment``: versions, driver, CUDA runtime, NVRTC and devices
  (``gpucnn.environment``); fails when the backend cannot be built.
- ``kernels``: every kernel of ours once against NumPy in float64 on the
  device (``bench/check.py``, what ``gpucnn bench --check`` runs): the standard
  workload with the kernels the rule picks, then the conv ops with the direct
  kernel and with each implicit-GEMM tile forced, average pooling, and the
  float64 kernels.
- ``gpu_tests``: ``pytest -m gpu`` in a subprocess, where the tests folder is
  there (a source checkout); skipped, with the reason, where it is not. Among
  them: a one-rank NCCL job (``tests/test_distributed.py``, where mpi4py and
  CuPy's NCCL are installed).
- ``training``: 3 epochs of the default digits recipe on the backend and on
  ``cpu`` from the same seed; the loss curves must agree to 1e-9 relative
  (the issue asks for 1e-4; see ``TRAINING_TOLERANCE``). It runs in float64:
  in float32 the two summation orders' rounding grows through training
  (measured on cuda-emu against cpu: 1e-3 relative after one epoch, with
  single steps agreeing to 3e-7), so only float64 can show that the two
  backends train the same model; the float32 kernels are checked op by op in
  ``kernels``.
- ``gradcam``: Grad-CAM maps (float32) of the same trained weights on the
  backend and on ``cpu``.
- ``bench_tf32_off`` / ``bench_tf32_on``: ``gpucnn bench --quick`` against
  PyTorch + cuDNN, with TF32 off and with PyTorch's default (TF32 on), when
  PyTorch sees the GPU; skipped with the reason otherwise. Timings, not a
  right-or-wrong result: they fail only when the benchmark cannot run.

Each check yields one record with its ``figure`` (name, value, limit); the
records go to ``DIR/selftest.json`` and ``DIR/selftest.md``. The exit status
is 1 when any check failed. ``--backend cuda-emu`` runs the same checks through
the emulator on the CPU with smaller sizes (stated in each record's
``details``), as CI does.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from . import environment

CHECKS = ("environment", "kernels", "gpu_tests", "training", "gradcam", "bench_tf32_off", "bench_tf32_on")
BACKENDS = ("cuda", "cuda-emu")
REFERENCE_BACKEND = "cpu"

# The emulator runs kernels on the CPU, far slower than a GPU: it checks the standard
# workload's shapes at this batch (the rule may then pick other tiles than at full
# batch; the forced passes still run every tile).
EMULATED_BATCH = 2
TRAINING = {"model": "small", "epochs": 3, "batch_size": 32, "lr": 2e-3, "shift": 1, "seed": 0,
            "dtype": "float64"}
# Relative, per epoch's mean loss. The issue asks for 1e-4; in float64 the backends agree
# to ~1e-16 (measured 1.8e-16 after 3 epochs, cuda-emu against cpu), and a 1% error in one
# element of one weight gradient moves the curve by only ~1e-6 in six steps: 1e-9 catches it.
TRAINING_TOLERANCE = 1e-9
# On the emulator (and the CPU reference, which float64 makes the slower side) the
# training uses the first this many training images, to stay well inside CI's minutes.
EMULATED_TRAIN_SAMPLES = 480
GRADCAM_IMAGES = 64
# Maps lie in [0, 1]; float32 rounding of the forward and backward moves them by ~1e-6.
GRADCAM_TOLERANCE = 1e-4
GPU_TESTS_TIMEOUT_S = 180


def _record(name: str, status: str, figure_name: str, value=None, limit=None, summary: str = "",
            details: dict | None = None) -> dict:
    """One check's record; ``status`` is "passed", "failed" or "skipped"."""
    return {"name": name, "status": status,
            "figure": {"name": figure_name, "value": value, "limit": limit},
            "summary": summary, "details": details or {}}


def _skipped(name: str, figure_name: str, reason: str) -> dict:
    return _record(name, "skipped", figure_name, summary=reason, details={"reason": reason})


# --- environment ----------------------------------------------------------------------------

def check_environment(backend_name: str, env: dict):
    """(record, backend or None): the machine's facts and whether ``backend_name`` can be built."""
    from .backend import get_backend

    if backend_name == "cuda-emu":
        device = f"CUDA emulator on {env['processor']}"
    else:
        devices = env["cuda"].get("devices", [])
        device = "; ".join(f"{d['name']} (compute capability {d['compute_capability']}, {d['memory_gib']} GiB)"
                           for d in devices) or "no CUDA device"
    try:
        backend = get_backend(backend_name)
    except Exception as err:  # the reason the backend cannot run is the result
        reason = f"backend {backend_name!r} is not usable: {type(err).__name__}: {err}"
        return _record("environment", "failed", "device", device, summary=reason, details=env), None
    return _record("environment", "passed", "device", device,
                   summary=f"backend {backend.name} built; {env['cuda_reason']}", details=env), backend


# --- kernels --------------------------------------------------------------------------------

def _kernel_passes(backend):
    """The passes of the kernel check: (label, cases, dtype, forced conv algorithms).

    On a GPU the rule's pass runs the full standard workload (as ``bench --check``)
    and the other passes its ``--quick`` batches, which reach the same code paths.
    """
    from .backend import conv_algorithms
    from .bench import workload

    if backend.name == "cuda-emu":
        full = quick = workload.with_batch(workload.STANDARD_WORKLOAD, EMULATED_BATCH)
    else:
        full, quick = workload.STANDARD_WORKLOAD, workload.quick(workload.STANDARD_WORKLOAD)
    conv = workload.select(quick, ("conv",))
    # The standard workload pools only with max; average pooling gets the same shapes.
    avg = tuple(dataclasses.replace(c, id=f"{c.id}avg", title=f"avg pool {c.R}x{c.R}/{c.stride}", kind="avg")
                for c in workload.select(quick, ("pool",)))
    passes = [("rule", full, np.float32, {}),
              ("direct", conv, np.float32, {op: "direct" for op in conv_algorithms.OPS})]
    tiles = sorted({t for op in conv_algorithms.OPS for t in conv_algorithms.TILES[op]})
    for tile in tiles:
        passes.append((f"igemm:{tile}", conv, np.float32,
                       {op: f"igemm:{tile}" for op in conv_algorithms.OPS if tile in conv_algorithms.TILES[op]}))
    passes.append(("avg_pool", avg, np.float32, {}))
    passes.append(("float64", quick + avg, np.float64, {}))
    return passes


def check_kernels(backend) -> dict:
    """Every kernel against NumPy in float64 (``bench.check``); figure: the largest float32 relative error.

    The float64 kernels' largest error is in the details and the summary, against
    their own, much tighter tolerance.
    """
    from .backend import conv_algorithms
    from .bench import check

    rows = []
    for label, cases, dtype, forced in _kernel_passes(backend):
        with conv_algorithms.force(**forced):
            for row in check.check_all([backend], cases, dtype=dtype):
                if dtype != np.float32 and row["op"].startswith("conv2d_"):
                    # bench names the float32 choice; report the kernel this dtype ran.
                    case = next(c for c in cases if c.id == row["case"])
                    row["algorithm"] = str(conv_algorithms.choose(row["op"][len("conv2d_"):], case.geometry, dtype))
                rows.append({"pass": label, **row})
    wrong = [r for r in rows if not r["ok"]]
    worst = {dtype: max(r["error"] for r in rows if r["dtype"] == dtype) for dtype in ("float32", "float64")}
    kernels = sorted({r["algorithm"] for r in rows})
    summary = (f"{len(rows) - len(wrong)} of {len(rows)} results right over {len(kernels)} kernel choices "
               f"(error = max|ours - float64 NumPy| / max|NumPy|; max pooling exact); float64 kernels: "
               f"max error {worst['float64']:.1e} (limit {check.TOLERANCE_FLOAT64:g})")
    if wrong:
        summary += "; WRONG: " + ", ".join(f"{r['pass']} {r['case']} {r['op']} ({r['algorithm']}, "
                                            f"error {r['error']:.1e})" for r in wrong)
    batch = EMULATED_BATCH if backend.name == "cuda-emu" else "standard (rule), quick (forced kernels)"
    return _record("kernels", "failed" if wrong else "passed", "max relative error (float32)", worst["float32"],
                   check.TOLERANCE, summary,
                   {"batch": batch, "float64_max_error": worst["float64"],
                    "float64_tolerance": check.TOLERANCE_FLOAT64, "kernels": kernels, "results": rows})


# --- the gpu-marked tests -------------------------------------------------------------------

def tests_folder() -> Path | None:
    """The ``tests`` folder beside the package in a source checkout, else None (an installed wheel)."""
    folder = Path(__file__).resolve().parent.parent / "tests"
    return folder if (folder / "conftest.py").is_file() else None


def _junit_counts(path: Path) -> tuple[dict, list[str]]:
    """(counts of tests, failures, errors, skipped; the distinct skip messages) of a JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    reasons = sorted({s.get("message", "") for s in root.iter("skipped")})
    return counts, reasons


def check_gpu_tests(backend, out: Path) -> dict:
    """``pytest -m gpu`` in a subprocess; figure: the number of failed tests."""
    name, figure = "gpu_tests", "failed tests"
    folder = tests_folder()
    if folder is None:
        return _skipped(name, figure, "no tests folder beside the package (not a source checkout)")
    report = out / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
               f"--junitxml={report}", str(folder)]
    started = time.perf_counter()
    try:
        run = subprocess.run(command, cwd=folder.parent, capture_output=True, text=True,
                             timeout=GPU_TESTS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return _record(name, "failed", figure, summary=f"pytest -m gpu ran past {GPU_TESTS_TIMEOUT_S} s")
    details = {"command": " ".join(command[1:]), "exit_status": run.returncode,
               "seconds": round(time.perf_counter() - started, 1),
               "output_tail": run.stdout[-3000:] + run.stderr[-1000:]}
    if run.returncode == 5:  # pytest: no test collected
        return _skipped(name, figure, "no test is marked gpu")
    if not report.is_file():
        return _record(name, "failed", figure, summary=f"pytest exited {run.returncode} without a report",
                       details=details)
    counts, reasons = _junit_counts(report)
    details.update(counts, skip_reasons=reasons)
    failed = counts["failures"] + counts["errors"]
    ran = counts["tests"] - counts["skipped"]
    summary = f"{ran - failed} passed, {failed} failed, {counts['skipped']} skipped of {counts['tests']}"
    if failed or run.returncode != 0:
        return _record(name, "failed", figure, failed, 0, summary, details)
    if ran == 0:
        reason = f"all {counts['tests']} gpu tests skipped: {'; '.join(reasons)}"
        return _record(name, "skipped", figure, 0, 0, reason, details)
    return _record(name, "passed", figure, 0, 0, summary, details)


# --- training and Grad-CAM -----------------------------------------------------------------

def _train(backend_name: str, data) -> tuple[list[float], dict, dict, float]:
    """3 epochs of ``TRAINING`` on a backend: (epoch losses, test result, trained weights, seconds)."""
    import gpucnn as gc
    from .datasets import RandomShift
    from .models import build_model

    (x, y), (xt, yt) = data
    dtype = np.dtype(TRAINING["dtype"])
    model = build_model(TRAINING["model"], x.shape[1], 10, x.shape[2:], rng=TRAINING["seed"]).to(dtype=dtype)
    trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=TRAINING["lr"]),
                         backend=backend_name)
    started = time.perf_counter()
    history = trainer.fit(x.astype(dtype), y, epochs=TRAINING["epochs"], batch_size=TRAINING["batch_size"],
                          seed=TRAINING["seed"], verbose=0, augment=RandomShift(TRAINING["shift"]),
                          callbacks=[gc.LearningRateScheduler(gc.CosineLR(TRAINING["epochs"]))])
    seconds = time.perf_counter() - started
    return history.history["loss"], trainer.evaluate(xt.astype(dtype), yt), model.state_arrays(), seconds


def check_training(backend, data) -> tuple[dict, dict]:
    """(record, the cpu-trained weights): the loss curves on ``backend`` and ``cpu``, same seed."""
    if backend.name == "cuda-emu":
        (x, y), test = data
        data = (x[:EMULATED_TRAIN_SAMPLES], y[:EMULATED_TRAIN_SAMPLES]), test
    ours, ours_test, _, ours_s = _train(backend.name, data)
    theirs, theirs_test, weights, theirs_s = _train(REFERENCE_BACKEND, data)
    differences = [abs(a - b) / abs(b) for a, b in zip(ours, theirs)]
    worst = max(differences)
    ok = worst <= TRAINING_TOLERANCE and len(ours) == len(theirs) == TRAINING["epochs"]
    details = {**TRAINING, "dataset": "digits", "train_samples": len(data[0][0]),
               "loss": {backend.name: ours, REFERENCE_BACKEND: theirs}, "relative_difference": differences,
               "test": {backend.name: ours_test, REFERENCE_BACKEND: theirs_test},
               "seconds": {backend.name: round(ours_s, 2), REFERENCE_BACKEND: round(theirs_s, 2)},
               "why_float64": "float32 runs diverge through rounding (1e-3 after one epoch), see the module doc"}
    summary = (f"{TRAINING['epochs']}-epoch losses {', '.join(f'{v:.6f}' for v in ours)} on {backend.name}, "
               f"test accuracy {ours_test['accuracy']:.4f} ({REFERENCE_BACKEND}: {theirs_test['accuracy']:.4f})")
    return _record("training", "passed" if ok else "failed", "max relative loss difference", worst,
                   TRAINING_TOLERANCE, summary, details), weights


def gradcam_maps(backend_name: str, weights: dict, images, classes) -> np.ndarray:
    """Grad-CAM maps (N, H, W) of the ``TRAINING`` model in float32 with ``weights`` on a backend."""
    from .cam import GradCAM
    from .models import build_model

    model = build_model(TRAINING["model"], images.shape[1], 10, images.shape[2:], rng=0)
    model.load_state_arrays(weights, source="selftest weights")
    return GradCAM(model.to(backend_name))(images, class_idx=classes)


def check_gradcam(backend, data, weights: dict | None = None) -> dict:
    """Grad-CAM of the same weights on ``backend`` and ``cpu``; figure: the largest map difference.

    ``weights``: the cpu model of the training check; trained here when None (maps
    of untrained weights would compare near-noise).
    """
    if weights is None:
        weights = _train(REFERENCE_BACKEND, data)[2]
    _, (xt, yt) = data
    images, classes = xt[:GRADCAM_IMAGES], yt[:GRADCAM_IMAGES]
    ours = gradcam_maps(backend.name, weights, images, classes)
    theirs = gradcam_maps(REFERENCE_BACKEND, weights, images, classes)
    worst = float(np.abs(ours - theirs).max())
    ok = ours.shape == theirs.shape and worst <= GRADCAM_TOLERANCE
    summary = (f"{len(images)} test images, maps of the true class in [0, 1] at the last convolution, "
               f"max |{backend.name} - {REFERENCE_BACKEND}| {worst:.1e}")
    return _record("gradcam", "passed" if ok else "failed", "max absolute map difference", worst,
                   GRADCAM_TOLERANCE, summary, {"images": len(images), "dtype": "float32",
                                                "weights": "the cpu model of the training check"})


# --- bench against PyTorch ------------------------------------------------------------------

def torch_sees_gpu(env: dict) -> tuple[bool, str]:
    """(yes, why not): asked in a subprocess, so PyTorch's threads never start in ours."""
    if env["torch"] is None:
        return False, "PyTorch is not installed"
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if run.returncode == 0:
        return True, ""
    return False, "PyTorch sees no CUDA device" if run.returncode == 3 else f"PyTorch failed: {run.stderr[-300:]}"


def _geometric_mean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def check_bench(backend, out: Path, tf32: bool, torch_gpu: tuple[bool, str]) -> dict:
    """``gpucnn bench --quick`` against PyTorch + cuDNN; figure: the geometric-mean speedup."""
    from .bench import cli as bench_cli

    name = "bench_tf32_on" if tf32 else "bench_tf32_off"
    figure = f"geometric-mean speedup over cuDNN (TF32 {'on' if tf32 else 'off'}; >1: ours faster)"
    if backend.name != "cuda":
        return _skipped(name, figure, f"compares against PyTorch + cuDNN on a GPU; backend {backend.name} has none")
    usable, reason = torch_gpu
    if not usable:
        return _skipped(name, figure, reason)
    path = out / f"{name}.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    argv = ["--quick", "--backend", "cuda", "--reference", "torch", "--json", str(path)]
    status = bench_cli.run(parser.parse_args(argv + (["--reference-tf32"] if tf32 else [])))
    if status != 0 or not path.is_file():
        return _record(name, "failed", figure, summary=f"gpucnn bench exited with status {status}")
    records = json.loads(path.read_text())["records"]
    kernels = _geometric_mean(r["speedup"] for r in records if r["family"] != "train")
    training = _geometric_mean(r["speedup"] for r in records if r["family"] == "train")
    summary = (f"kernels {kernels:.2f}x" if kernels else "kernels: no reference timing") + (
        f", training steps {training:.2f}x" if training else "")
    return _record(name, "passed", figure, kernels, None, summary,
                   {"json": path.name, "training_speedup": training, "records": len(records),
                    "reference": records[0]["reference"] if records else None})


# --- the run --------------------------------------------------------------------------------

def run_checks(backend_name: str, out: Path, only=CHECKS, progress=None) -> list[dict]:
    """Every check in ``only`` (``environment`` always runs), each record with its ``seconds``.

    A check that raises is recorded as failed with the error; the others still run.
    ``progress(record)`` is called after each check.
    """
    from .datasets import load_digits

    records = []

    def timed(name, fn, *args):
        started = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as err:  # a check that cannot run has failed
            result = _record(name, "failed", "error", summary=f"{type(err).__name__}: {err}")
        record = result[0] if isinstance(result, tuple) else result
        record["seconds"] = round(time.perf_counter() - started, 2)
        records.append(record)
        if progress:
            progress(record)
        return result

    env = environment.gather()
    _, backend = timed("environment", check_environment, backend_name, env)
    wanted = [c for c in CHECKS[1:] if c in only]
    if backend is None:
        for name in wanted:
            timed(name, _skipped, name, "-", "the backend is not usable (see environment)")
        return records
    data = load_digits() if {"training", "gradcam"} & set(wanted) else None
    bench_wanted = backend.name == "cuda" and any(name.startswith("bench") for name in wanted)
    torch_gpu = torch_sees_gpu(env) if bench_wanted else (False, "")
    weights = None
    for name in wanted:
        if name == "kernels":
            timed(name, check_kernels, backend)
        elif name == "gpu_tests":
            timed(name, check_gpu_tests, backend, out)
        elif name == "training":
            result = timed(name, check_training, backend, data)
            weights = result[1] if isinstance(result, tuple) else None
        elif name == "gradcam":
            timed(name, check_gradcam, backend, data, weights)
        else:
            timed(name, check_bench, backend, out, name == "bench_tf32_on", torch_gpu)
    return records


def _format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_markdown(report: dict) -> str:
    """The Markdown summary: the verdict, the machine, one table row per check (a failed
    check's summary names what was wrong)."""
    env = report["environment"]
    lines = [f"# gpucnn selftest: {'PASSED' if report['passed'] else 'FAILED'}", "",
             f"- backend `{report['backend']}` against `{REFERENCE_BACKEND}`, {report['date']}, "
             f"{report['seconds']:.0f} s", f"- device: {report['device']}",
             f"- processor: {env['processor']}",
             f"- gpucnn {env['gpucnn']}, Python {env['python']}, NumPy {env['numpy']}, Numba {env['numba']}, "
             f"CuPy {env['cuda'].get('cupy') or 'not installed'}, PyTorch {env['torch'] or 'not installed'}",
             f"- CUDA driver {env['cuda'].get('driver', '-')}, runtime {env['cuda'].get('runtime', '-')}, "
             f"NVRTC {env['cuda'].get('nvrtc', '-')}; cuda usable: {env['cuda_usable']} ({env['cuda_reason']})",
             "", "| check | result | figure | value | limit | s | summary |", "|---|---|---|---:|---:|---:|---|"]
    for r in report["checks"]:
        f = r["figure"]
        summary = r["summary"].replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| {r['name']} | {r['status']} | {f['name']} | {_format_value(f['value'])} "
                     f"| {_format_value(f['limit'])} | {r['seconds']:.1f} | {summary} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def add_arguments(parser) -> None:
    """The options of ``gpucnn selftest``."""
    parser.add_argument("--backend", default="cuda", choices=BACKENDS,
                        help="the backend to test against cpu: cuda (default) or cuda-emu (CPU emulator)")
    parser.add_argument("--out", default=os.path.join("runs", "selftest"), metavar="DIR",
                        help="folder for selftest.json and selftest.md (default runs/selftest)")
    parser.add_argument("--only", default=None, metavar="CHECKS",
                        help=f"comma-separated checks to run ({', '.join(CHECKS[1:])}); default: all. "
                             f"environment always runs")


def _progress(record: dict) -> None:
    print(f"  {record['name']:<15} {record['status']:<8} {record['figure']['name']} "
          f"{_format_value(record['figure']['value'])} ({record['seconds']:.1f} s)  {record['summary'][:200]}",
          file=sys.stderr, flush=True)


def run(args) -> int:
    """Run ``gpucnn selftest`` with parsed ``args``: 0 when no check failed, else 1 (2: bad options)."""
    only = CHECKS if args.only is None else tuple(c.strip() for c in args.only.split(",") if c.strip())
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        print(f"gpucnn selftest: unknown checks {unknown}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"gpucnn selftest: backend {args.backend} against {REFERENCE_BACKEND}, writing {out}/",
          file=sys.stderr, flush=True)
    checks = run_checks(args.backend, out, only, _progress)
    failed = [r["name"] for r in checks if r["status"] == "failed"]
    report = {"passed": not failed, "failed": failed, "backend": args.backend,
              "device": checks[0]["figure"]["value"],
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "seconds": round(time.perf_counter() - started, 1),
              "environment": checks[0]["details"], "checks": checks}
    _write_atomic(out / "selftest.json", json.dumps(report, indent=1, default=float) + "\n")
    _write_atomic(out / "selftest.md", format_markdown(report))
    verdict = "PASSED" if not failed else f"FAILED: {', '.join(failed)}"
    print(f"gpucnn selftest {verdict} in {report['seconds']:.0f} s; wrote {out / 'selftest.json'} and "
          f"{out / 'selftest.md'}")
    return 1 if failed else 0


def main(argv=None) -> int:
    """``python -m gpucnn.selftest``: parse ``argv`` (default ``sys.argv[1:]``) and run."""
    parser = argparse.ArgumentParser(prog="python -m gpucnn.selftest", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
