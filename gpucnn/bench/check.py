"""``gpucnn bench --check``: every op of the workload run once and compared with NumPy in float64.

Timings are only worth reading for kernels that compute the right thing, and
the fast kernels choose their tiles per shape, so a shape of the real
workload can reach a code path (a ragged last tile, a split-K slice, a
backward-data stride phase) that the unit tests' small shapes do not. This
runs each op of each case on a backend, in float32 on the benchmark's own
inputs, and compares with ``baseline`` (NumPy im2col + matmul, tested
against plain loops) evaluated in float64 on the same inputs.

The error of a result is ``max|ours - reference| / max|reference|``: float32
rounding over a reduction of length L stays near sqrt(L) * 6e-8 of the
largest output, far below ``TOLERANCE``, while a missed tile, tap or slice
shifts some output by a whole term, at least ~1/sqrt(L) of the largest.
Max pooling must match exactly, argmax included. The float64 kernels get
``TOLERANCE_FLOAT64``: their rounding is 1e-9 of float32's, while a float64
kernel that rounds through float32 anywhere shows errors near 1e-7.

A tensor-core convolution (conv precision "tf32" or "bf16", ``gpucnn.backend.precision``)
rounds its inputs to TF32 or BF16 before multiplying: its reference is the float64
baseline on the same inputs rounded likewise (bias excepted, added in float32),
so only the float32 accumulation remains and ``TOLERANCE`` still applies; a
kernel that skipped or botched the rounding, or a missed term, fails it.
"""

from __future__ import annotations

import numpy as np

from ..backend.precision import ROUNDING
from . import baseline, workload

TOLERANCE = 1e-4
TOLERANCE_FLOAT64 = 1e-12


def tolerance(dtype) -> float:
    """The largest relative error a right ``dtype`` result may have."""
    return TOLERANCE_FLOAT64 if np.dtype(dtype) == np.float64 else TOLERANCE


def _relative_error(ours, reference) -> float:
    scale = float(np.abs(reference).max())
    return float(np.abs(ours.astype(np.float64) - reference).max()) / (scale if scale > 0 else 1.0)


def check_op(backend, case, op: str, seed: int = 0, dtype=np.float32) -> dict:
    """Run ``op`` of ``backend`` once on ``case`` in ``dtype`` and compare with the float64 baseline.

    Returns ``{"case", "op", "backend", "algorithm", "precision", "dtype", "error", "ok"}``;
    ``error`` is the relative error above (0.0 or 1.0 for max pooling, which must be exact).
    """
    g = case.geometry
    inputs = workload.make_inputs(case, op, seed, dtype)
    ours_in = {k: backend.asarray(v) for k, v in inputs.items()}
    precision = workload.precision(backend, case, op) if np.dtype(dtype) == np.float32 else "fp64"
    ref_in = {k: (ROUNDING[precision](v) if precision in ROUNDING and k != "b" else v).astype(np.float64)
              for k, v in inputs.items()}
    if op.startswith("max_pool2d"):
        y, ours_argmax = backend.max_pool2d_forward(ours_in["x"], g)
        want_y, want_argmax = baseline.max_pool2d_forward(inputs["x"], g)
    if op == "max_pool2d_forward":
        exact = (np.array_equal(backend.to_numpy(y), want_y)
                 and np.array_equal(backend.to_numpy(ours_argmax), want_argmax))
        error = 0.0 if exact else 1.0
    elif op == "max_pool2d_backward":
        # Each side scatters through its own argmax; the max_pool2d_forward row compares the two.
        dx = backend.to_numpy(backend.max_pool2d_backward(ours_in["dy"], ours_argmax, g))
        error = _relative_error(dx, baseline.max_pool2d_backward(ref_in["dy"], want_argmax, g))
    else:
        ours = backend.to_numpy(workload.bind_op(backend, op, ours_in, g)())
        error = _relative_error(ours, workload.bind_op(baseline, op, ref_in, g)())
    return {"case": case.id, "op": op, "backend": backend.name,
            "algorithm": workload.algorithm(backend, case, op), "precision": precision,
            "dtype": np.dtype(dtype).name,
            "error": error, "ok": error <= tolerance(dtype)}


def check_all(backends, cases, seed: int = 0, progress=None, dtype=np.float32) -> list[dict]:
    """``check_op`` for every backend, case and op in ``dtype``; ``progress(result)`` after each."""
    results = []
    for backend in backends:
        for case in cases:
            for op in case.ops:
                results.append(check_op(backend, case, op, seed, dtype))
                if progress:
                    progress(results[-1])
    return results
