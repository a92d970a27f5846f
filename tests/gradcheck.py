"""Finite-difference gradient checks in float64, shared by the layer, loss and Grad-CAM tests."""

import numpy as np


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function f at x (x is perturbed in place and restored)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_gradients_match(analytic, numeric, what: str, rtol: float = 1e-5, atol: float = 1e-7):
    """max|a - n| <= atol + rtol * max|n|, with a message saying which gradient failed."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} != {numeric.shape}"
    err = np.max(np.abs(analytic - numeric)) if analytic.size else 0.0
    scale = np.max(np.abs(numeric)) if numeric.size else 0.0
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3e} vs gradient scale {scale:.3e}"
