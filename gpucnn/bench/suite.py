"""Running the benchmark: ours and the reference in turns, and one record per op and case.

For each case and op the two sides alternate ``rounds`` times (A B A B ...),
each taking ``repeats`` samples per round; the record holds the median of
all samples of each side. Only ratios measured this way, in the same
sitting, mean much on a shared machine.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

from ..backend.precision import get_conv_precision
from . import end_to_end, workload
from .timing import Timing, WallClock, cupy_clock, measure


@dataclass
class Settings:
    """How long to measure: samples per side and round, alternation rounds, warm-up calls."""

    repeats: int = 5
    rounds: int = 3
    warmup: int = 2
    min_sample_s: float = 2e-3  # a sample lasts at least this long (more calls per sample otherwise)
    settle_s: float = 0.01      # pause between the sides, for the other side's spinning threads to sleep
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(repeats=3, rounds=2, warmup=1)


def clock_for(backend):
    """CUDA events for the ``cuda`` backend, the wall clock (after ``synchronize``) otherwise."""
    return cupy_clock() if backend.name == "cuda" else WallClock(backend.synchronize)


def alternate(ours_fn, clock, reference_call, settings: Settings):
    """Time ours and the reference in turns; returns (our Timing, reference Timing or None, algorithm).

    ``reference_call(repeats, warmup, calls)`` returns (Timing, algorithm) from
    the reference process, or is None when there is no reference.
    """
    ours = theirs = None
    algorithm = None
    for r in range(settings.rounds):
        warmup = settings.warmup if r == 0 else 0
        t = measure(ours_fn, clock, settings.repeats, warmup, settings.min_sample_s,
                    None if ours is None else ours.calls)
        ours = t if ours is None else ours.merge(t)
        if reference_call is None:
            continue
        time.sleep(settings.settle_s)
        t, algorithm = reference_call(settings.repeats, warmup, None if theirs is None else theirs.calls)
        theirs = t if theirs is None else theirs.merge(t)
        time.sleep(settings.settle_s)
    return ours, theirs, algorithm


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def kernel_record(backend, case, op: str, ours: Timing, theirs: Timing | None, reference: dict | None,
                  reference_algorithm: str | None, peak) -> dict:
    """One JSON record: timings, rates, fraction of peak and the comparison."""
    flops = workload.flops(case, op)
    nbytes = workload.bytes_moved(case, op)
    median = ours.median_s
    ref_median = None if theirs is None else theirs.median_s
    compute_bound = case.family == "conv"
    limit = peak.flops if compute_bound else peak.bandwidth
    work = flops if compute_bound else nbytes
    return {
        "op": op, "case": case.id, "title": case.title, "shape": case.shape_text, "family": case.family,
        "backend": backend.name, "algorithm": workload.algorithm(backend, case, op), "dtype": "float32",
        "precision": workload.precision(backend, case, op),
        "median_s": median, "min_s": ours.min_s, "samples": len(ours.samples), "calls_per_sample": ours.calls,
        "flops": flops, "bytes": nbytes,
        "gflops": flops / median / 1e9 if compute_bound else None,
        "gbps": nbytes / median / 1e9,
        "peak_fraction": work / median / limit,
        "peak_metric": "FP32 FLOP/s" if compute_bound else "memory bandwidth",
        "reference": None if reference is None else reference["reference"],
        "reference_algorithm": reference_algorithm,
        "reference_median_s": ref_median,
        "reference_min_s": None if theirs is None else theirs.min_s,
        "reference_peak_fraction": None if ref_median is None else work / ref_median / limit,
        "speedup": _ratio(ref_median, median),
    }


def training_record(backend, spec: dict, ours: Timing, theirs: Timing | None, reference: dict | None,
                    reference_algorithm: str | None, peak) -> dict:
    """One JSON record of a training step: images/s on both sides and the step's GFLOP/s."""
    flops = end_to_end.training_flops(spec)
    median = ours.median_s
    ref_median = None if theirs is None else theirs.median_s
    batch = spec["batch"]
    return {
        "op": "train_step", "case": spec["model"], "title": spec["title"],
        "shape": f"{batch}," + ",".join(str(d) for d in spec["input_shape"]) + f" -> {spec['num_classes']}",
        "family": "train", "backend": backend.name, "algorithm": "gpucnn Sequential + Adam",
        "dtype": "float32",
        # The setting; each convolution still falls back to FP32 where it has no tensor-core kernel.
        "precision": "fp32" if backend.name == "cpu" else get_conv_precision(),
        "median_s": median, "min_s": ours.min_s, "samples": len(ours.samples),
        "calls_per_sample": ours.calls, "flops": flops, "bytes": None,
        "gflops": flops / median / 1e9, "gbps": None, "peak_fraction": flops / median / peak.flops,
        "peak_metric": "FP32 FLOP/s", "batch": batch, "images_per_s": batch / median,
        "reference": None if reference is None else reference["reference"],
        "reference_algorithm": reference_algorithm, "reference_median_s": ref_median,
        "reference_min_s": None if theirs is None else theirs.min_s,
        "reference_peak_fraction": None if ref_median is None else flops / ref_median / peak.flops,
        "reference_images_per_s": None if ref_median is None else batch / ref_median,
        "speedup": _ratio(ref_median, median),
    }


class _ReferenceFailed(Exception):
    """The reference process could not time an op (reported, then timed without it)."""


def _guarded(call, what: str):
    """``call`` with a reference failure reported on stderr and raised as ``_ReferenceFailed``."""
    def run(*args):
        try:
            return call(*args)
        except RuntimeError as err:
            print(f"bench: reference failed on {what}: {err}", file=sys.stderr)
            raise _ReferenceFailed from err
    return run


def compare(fn, clock, call, settings: Settings):
    """``alternate``, falling back to timing ours alone when the reference fails."""
    try:
        return alternate(fn, clock, call, settings)
    except _ReferenceFailed:
        return alternate(fn, clock, None, settings)


def run_backend(backend, cases, models, ref, peak, settings: Settings, train_batch: int,
                progress=None) -> list[dict]:
    """Every op of every case, then every end-to-end model, on ``backend``; the records in order.

    ``ref`` is a ``ReferenceProcess`` (or None); ``progress(record)`` is called after each record.
    """
    records = []
    reference = None if ref is None else ref.info
    clock = clock_for(backend)
    for case in cases:
        case_dict = workload.case_to_dict(case)
        for op in case.ops:
            fn = workload.prepare(backend, case, op, settings.seed)
            call = None if ref is None else _guarded(
                lambda repeats, warmup, calls, op=op: ref.time_kernel(
                    case_dict, op, repeats, warmup, calls, settings.min_sample_s, settings.seed),
                f"{case.id} {op}")
            ours, theirs, algorithm = compare(fn, clock, call, settings)
            records.append(kernel_record(backend, case, op, ours, theirs,
                                         reference if theirs else None, algorithm, peak))
            if progress:
                progress(records[-1])
    # A training step is long: one step per sample. Only PyTorch has a training step to compare with.
    step_settings = replace(settings, min_sample_s=0.0)
    train_ref = ref if reference is not None and reference["library"] == "torch" else None
    for name in models:
        spec = end_to_end.training_spec(name, train_batch, settings.seed)
        fn = end_to_end.gpucnn_training_step(backend, spec)
        call = None if train_ref is None else _guarded(
            lambda repeats, warmup, calls: train_ref.time_training(spec, repeats, warmup, calls),
            f"train {name}")
        ours, theirs, algorithm = compare(fn, clock, call, step_settings)
        records.append(training_record(backend, spec, ours, theirs, reference if theirs else None,
                                       algorithm, peak))
        if progress:
            progress(records[-1])
    return records
