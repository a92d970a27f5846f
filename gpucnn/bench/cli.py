"""``gpucnn bench``: time every kernel of the standard workload, and training steps, against PyTorch.

``add_arguments(parser)`` adds the options to an ``argparse`` parser and
``run(args)`` runs the benchmark and returns the exit status; ``gpucnn.cli``
mounts them as the ``bench`` sub-command and ``python -m gpucnn.bench`` runs
them alone.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import sys
import time
from dataclasses import asdict

from . import check, end_to_end, report, workload
from .peak import peak_for
from .reference import LIBRARIES, ReferenceProcess
from .suite import Settings, run_backend
from ..cpu_threads import available_cores
from .timing import limit_threads

OP_FAMILIES = workload.FAMILIES + ("train",)


def add_arguments(parser) -> None:
    """The options of ``gpucnn bench``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"batches divided by {workload.QUICK_BATCH_DIVISOR}, fewer repeats: "
                             f"under a minute on a 2-core CPU")
    parser.add_argument("--backend", default="auto",
                        help="comma-separated backends to time: cpu, cuda, cuda-emu, auto (default: auto)")
    parser.add_argument("--ops", default=",".join(OP_FAMILIES),
                        help=f"comma-separated op families: {', '.join(OP_FAMILIES)} (default: all)")
    parser.add_argument("--cases", default=None,
                        help="comma-separated case ids (D1, J2, P3, ...) or end-to-end models "
                             f"({', '.join(end_to_end.MODELS)}); default: all")
    parser.add_argument("--reference", choices=LIBRARIES + ("none",), default="auto",
                        help="what to compare against: PyTorch (auto: when importable), the NumPy "
                             "im2col+matmul baseline, or nothing")
    parser.add_argument("--reference-tf32", action="store_true",
                        help="on a GPU, leave PyTorch's default TF32 convolutions on (default: off, "
                             "FP32 against our FP32 kernels)")
    parser.add_argument("--repeats", type=int, default=None, help="samples per side and round")
    parser.add_argument("--rounds", type=int, default=None, help="alternations ours/reference")
    parser.add_argument("--min-sample-ms", type=float, default=None,
                        help="shortest sample; shorter ops are called repeatedly within one (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per side (ours and the reference); the peak counts as many "
                             "cores. On a busy machine --threads 1 gives steadier ratios (default: all)")
    parser.add_argument("--batch", type=int, default=None,
                        help="set every batch size to this (a tiny workload for tests)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the records as JSON")
    parser.add_argument("--plot", metavar="PATH", default=None, help="write a bar chart (PNG)")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default=None,
                        help="conv precision of the cuda backends (gpucnn.set_conv_precision; default: "
                             "GPUCNN_CONV_PRECISION, else fp32): tf32 runs the tensor-core kernels on sm_80+")
    parser.add_argument("--kernels", action="store_true",
                        help="list the kernel each backend runs per case and op, and exit without timing")
    parser.add_argument("--check", action="store_true",
                        help="run every op once, compare with NumPy in float64, print the kernel and "
                             "the error per case and op, and exit (status 1 on a wrong result) without timing")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _plan(args):
    """(cases, models, settings, train batch) from the options; ValueError for unknown names."""
    families = _split(args.ops)
    unknown = set(families) - set(OP_FAMILIES)
    if unknown:
        raise ValueError(f"--ops: unknown families {sorted(unknown)}; known: {', '.join(OP_FAMILIES)}")
    ids = None if args.cases is None else set(_split(args.cases))
    case_ids = None if ids is None else ids - set(end_to_end.MODELS)
    all_cases = workload.STANDARD_WORKLOAD
    if case_ids is not None:
        workload.select(all_cases, workload.FAMILIES, case_ids)  # names an unknown id
    cases = workload.select(all_cases, [f for f in families if f in workload.FAMILIES], case_ids)
    models = [m for m in end_to_end.MODELS if "train" in families and (ids is None or m in ids)]
    settings = Settings.quick() if args.quick else Settings()
    if args.repeats is not None:
        settings.repeats = args.repeats
    if args.rounds is not None:
        settings.rounds = args.rounds
    if args.min_sample_ms is not None:
        settings.min_sample_s = args.min_sample_ms / 1e3
    if settings.repeats < 1 or settings.rounds < 1 or settings.min_sample_s < 0:
        raise ValueError("--repeats and --rounds must be positive, --min-sample-ms not negative")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be positive")
    train_batch = end_to_end.QUICK_BATCH if args.quick else end_to_end.BATCH
    if args.batch is not None:
        cases, train_batch = workload.with_batch(cases, args.batch), args.batch
    elif args.quick:
        cases = workload.quick(cases)
    return cases, models, settings, train_batch


def _warm_up(backend, cases) -> None:
    """Run each distinct kernel once on a one-image case: JIT compilation and module loading happen here.

    Compilation depends on the kernel, not on the shape, so one case per (op, kernel) suffices.
    """
    seen = set()
    for case in workload.with_batch(cases, 1):
        for op in case.ops:
            kernel = (op, workload.algorithm(backend, case, op))
            if kernel not in seen:
                seen.add(kernel)
                workload.prepare(backend, case, op)()
    backend.synchronize()


def _progress(record: dict) -> None:
    ref = "" if record["speedup"] is None else (
        f"  ref {record['reference_median_s'] * 1e3:9.3f} ms  speedup {record['speedup']:.2f}x")
    print(f"  {record['case']:>5} {report.SHORT_OP.get(record['op'], record['op']):<10} "
          f"{record['median_s'] * 1e3:9.3f} ms{ref}", file=sys.stderr, flush=True)


def _git_commit() -> str | None:
    """``git describe --always --dirty`` of the source tree gpucnn runs from, if it is a git checkout."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict:
    import numba
    import numpy

    from .. import __version__
    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__,
                "gpucnn": __version__}
    commit = _git_commit()
    if commit:
        versions["gpucnn_commit"] = commit
    try:
        versions["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        pass
    from threadpoolctl import threadpool_info
    versions["blas"] = ", ".join(f"{i['internal_api']} {i['version']}" for i in threadpool_info()
                                 if i["user_api"] == "blas")
    try:
        import cupy
        versions["cupy"] = cupy.__version__
    except ImportError:
        pass
    return versions


def _list_kernels(backends, cases) -> None:
    rows = [("backend", "case", "shape", "op", "kernel")]
    for backend in backends:
        for case in cases:
            for op in case.ops:
                rows.append((backend.name, case.id, case.shape_text, op, workload.algorithm(backend, case, op)))
    print(report.format_columns(rows))


def _check(backends, cases) -> int:
    """``--check``: the table of ``check.check_all``; 0 when every result is right, else 1."""
    def progress(result):
        print(f"  checked {result['backend']} {result['case']} {result['op']}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    results = check.check_all(backends, cases, progress=progress)
    rows = [("backend", "case", "op", "kernel", "error", "")]
    rows += [(r["backend"], r["case"], r["op"], r["algorithm"], f"{r['error']:.1e}", "ok" if r["ok"] else "WRONG")
             for r in results]
    print(report.format_columns(rows))
    wrong = sum(not r["ok"] for r in results)
    print(f"{len(results) - wrong} of {len(results)} results right (error = max|ours - float64 NumPy| / "
          f"max|NumPy|, tolerance {check.TOLERANCE:g}; max pooling exact; tf32 and bf16 kernels against NumPy on "
          f"inputs rounded likewise) in {time.perf_counter() - started:.1f} s")
    return 1 if wrong else 0


def _run_backends(args, backends, cases, models, settings, train_batch):
    """(records, per-backend metadata) of every backend, each with its own reference process.

    Returns (None, None) after reporting a failure of our side or of starting the reference.
    """
    records, backend_meta = [], []
    for backend in backends:
        # Before the reference starts: the bandwidth test wants quiet cores.
        peak = peak_for(backend.name, threads=args.threads)
        device = "cuda" if backend.name == "cuda" else "cpu"
        ref = None if args.reference == "none" else ReferenceProcess(device, args.reference, args.threads,
                                                                     args.reference_tf32)
        try:
            _warm_up(backend, cases)  # overlaps the reference's imports
            info = None if ref is None else ref.info
            print(f"gpucnn bench: {backend.name} on {peak.device}, reference "
                  f"{info['reference'] if info else 'none'}", file=sys.stderr, flush=True)
            records += run_backend(backend, cases, models, ref, peak, settings, train_batch, _progress)
        except RuntimeError as err:
            print(f"gpucnn bench: {err}", file=sys.stderr)
            return None, None
        finally:
            if ref is not None:
                ref.close()
        backend_meta.append({"backend": backend.name, "peak": peak.to_dict(),
                             "reference": None if info is None else info["reference"],
                             "reference_threads": None if info is None else info.get("threads"),
                             "reference_versions": None if info is None else info.get("versions")})
    return records, backend_meta


def run(args) -> int:
    """Run ``gpucnn bench`` with parsed ``args``; returns the exit status (2 for bad options)."""
    from ..backend import get_backend
    from ..backend.precision import set_conv_precision

    started = time.perf_counter()
    if args.precision is not None:
        set_conv_precision(args.precision)
    try:
        cases, models, settings, train_batch = _plan(args)
        backends = [get_backend(name) for name in _split(args.backend)]
    except (ValueError, RuntimeError) as err:
        print(f"gpucnn bench: {err}", file=sys.stderr)
        return 2
    if args.kernels:
        _list_kernels(backends, cases)
        return 0
    if args.check:
        return _check(backends, cases)

    with contextlib.ExitStack() as stack:
        # Without --threads every core: gpucnn's import-time default of one thread is for training.
        threads = stack.enter_context(limit_threads(args.threads or available_cores()))
        records, backend_meta = _run_backends(args, backends, cases, models, settings, train_batch)
    if records is None:
        return 1
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "quick": bool(args.quick), "settings": asdict(settings), "train_batch": train_batch,
        "threads": threads,
        "workload": [workload.case_to_dict(c) for c in cases], "models": models,
        "backends": backend_meta, "versions": _versions(),
        "platform": platform.platform(), "total_s": time.perf_counter() - started,
    }
    print(report.format_header(meta))
    print(report.format_table(records))
    print(f"total {meta['total_s']:.1f} s")
    if args.json:
        report.write_json(args.json, meta, records)
    if args.plot and records:
        report.plot(args.plot, records, f"gpucnn bench {meta['date']} ({', '.join(b.name for b in backends)})")
    return 0
