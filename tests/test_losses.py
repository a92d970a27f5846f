"""Losses: values against plain NumPy formulas, gradients against finite differences (float64)."""

import numpy as np
import pytest

import gpucnn as gc

from gradcheck import assert_gradients_match, numerical_gradient


def _softmax_ce_ref(z, labels):
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def _loss_and_target(name, rng, shape):
    if name == "softmax_ce":
        return gc.SoftmaxCrossEntropy(), rng.integers(0, shape[1], size=shape[0])
    if name == "bce":
        return gc.BinaryCrossEntropyWithLogits(), rng.uniform(0, 1, size=shape)
    return gc.MSELoss(), rng.standard_normal(shape)


@pytest.mark.parametrize("name", ["softmax_ce", "bce", "mse"])
@pytest.mark.parametrize("shape", [(1, 3), (5, 4)])
def test_loss_gradient_matches_finite_differences(name, shape, backend, rng):
    if not backend.supports_float64:
        pytest.skip(f"{backend.name} computes in float32 only")
    loss, target = _loss_and_target(name, rng, shape)
    loss.to(backend)
    z = rng.standard_normal(shape) * 3
    loss.forward(backend.asarray(z), target)
    analytic = backend.to_numpy(loss.backward())
    numeric = numerical_gradient(lambda: loss.forward(backend.asarray(z), target), z)
    assert_gradients_match(analytic, numeric, f"{name} dlogits")


def test_loss_values_match_formulas(rng):
    z = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    assert gc.SoftmaxCrossEntropy().forward(z, labels) == pytest.approx(_softmax_ce_ref(z, labels), rel=1e-12)
    t = rng.uniform(0, 1, (6, 4))
    s = 1 / (1 + np.exp(-z))
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean()
    assert gc.BinaryCrossEntropyWithLogits().forward(z, t) == pytest.approx(bce, rel=1e-10)
    assert gc.MSELoss().forward(z, t) == pytest.approx(((z - t) ** 2).mean(), rel=1e-12)


def test_losses_are_stable_for_huge_logits():
    z = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    assert gc.SoftmaxCrossEntropy().forward(z, np.array([0])) == pytest.approx(0.0, abs=1e-6)
    assert gc.SoftmaxCrossEntropy().forward(z, np.array([1])) == pytest.approx(2000.0, rel=1e-6)
    bce = gc.BinaryCrossEntropyWithLogits()
    assert np.isfinite(bce.forward(np.array([1e4, -1e4], np.float32), np.array([0.0, 1.0])))
    assert np.isfinite(bce.backward()).all()


def test_losses_agree_with_pytorch(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((7, 5))
    labels = rng.integers(0, 5, 7)
    zt = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(zt, torch.tensor(labels)).backward()
    ours = gc.SoftmaxCrossEntropy()
    ours.forward(z, labels)
    np.testing.assert_allclose(ours.backward(), zt.grad.numpy(), rtol=1e-10)
    t = rng.uniform(0, 1, (7, 5))
    zt.grad = None
    ref = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(t))
    ref.backward()
    bce = gc.BinaryCrossEntropyWithLogits()
    assert bce.forward(z, t) == pytest.approx(ref.item(), rel=1e-10)
    np.testing.assert_allclose(bce.backward(), zt.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("logits, labels, error, message", [
    (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"\[0, 4\)"),
    (np.zeros((3, 4)), np.array([0, -1, 2]), ValueError, r"\[0, 4\)"),
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, "integers"),
    (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"\(3,\)"),
    (np.zeros((3, 4, 1)), np.array([0, 1, 2]), ValueError, r"\(3, 4, 1\)"),
])
def test_bad_labels_are_refused(logits, labels, error, message):
    with pytest.raises(error, match=message):
        gc.SoftmaxCrossEntropy().forward(logits, labels)


def test_target_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        gc.MSELoss().forward(np.zeros((3,)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="backward called before forward"):
        gc.BinaryCrossEntropyWithLogits().backward()
