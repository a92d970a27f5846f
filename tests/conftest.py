"""Shared fixtures: the ``backend`` fixture runs a test on every backend this machine has.

``cpu`` always runs; ``cuda-emu`` runs wherever a C++ compiler is present (so
CI executes every kernel source); ``cuda`` runs only where CuPy sees a GPU and
is skipped, never removed, elsewhere.

Every emulated kernel of the suite runs race-checked: a shared-memory race in
any of our kernels (ragged/guard tests, layers, ops, Grad-CAM, ...) fails the
test that launched it, naming both source lines. Export GPUCNN_EMU_RACECHECK=0
to run the suite without the checker.
"""

import os
import shutil

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.backend import cuda_status

ALL_BACKENDS = ("cpu", "cuda-emu", "cuda")

# Set before any test loads a module (load_module reads it); child processes inherit it.
os.environ.setdefault("GPUCNN_EMU_RACECHECK", "1")


def backend_unavailable_reason(name):
    """None when the backend can run here, else why not (the skip message)."""
    if name == "cuda":
        usable, reason = cuda_status()
        if not usable:
            return f"cuda not usable: {reason}"
    if name == "cuda-emu" and shutil.which("g++") is None:
        return "no g++ to build the CUDA emulator"
    return None


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.gpu) if name == "cuda" else name
                        for name in ALL_BACKENDS])
def backend(request):
    """A backend object; the test runs once per backend in ALL_BACKENDS (``-m gpu`` selects the cuda runs)."""
    reason = backend_unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    return gc.get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
