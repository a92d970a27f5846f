"""Optimizers against PyTorch's (when importable) and against their update formulas; schedules."""

import math

import numpy as np
import pytest

import gpucnn as gc


def _model(seed=0, backend="cpu"):
    return gc.Sequential([gc.Dense(4, 3, rng=seed), gc.Tanh(), gc.Dense(3, 2, rng=seed + 1)]).to(backend)


def _run(model, optimizer, steps, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 2, 8)
    loss = gc.SoftmaxCrossEntropy().to(model.backend)
    for _ in range(steps):
        model.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        optimizer.step()


OPTIMIZERS = {
    "sgd": (lambda p: gc.SGD(p, lr=0.1), lambda p, torch: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": (lambda p: gc.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
                        lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
    "sgd_nesterov": (lambda p: gc.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
                     lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda p: gc.Adam(p, lr=0.01), lambda p, torch: torch.optim.Adam(p, lr=0.01)),
    "adam_wd": (lambda p: gc.Adam(p, lr=0.01, weight_decay=0.1),
                lambda p, torch: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    "adamw": (lambda p: gc.AdamW(p, lr=0.01, weight_decay=0.1),
              lambda p, torch: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    # A large eps: at the default 1e-8 the eps term (and a bug in its bias correction)
    # is invisible next to sqrt(v_hat); at 1e-2 it is a good part of the denominator.
    "adam_large_eps": (lambda p: gc.Adam(p, lr=0.01, eps=1e-2),
                       lambda p, torch: torch.optim.Adam(p, lr=0.01, eps=1e-2)),
    "adamw_large_eps": (lambda p: gc.AdamW(p, lr=0.01, eps=1e-2, weight_decay=0.1),
                        lambda p, torch: torch.optim.AdamW(p, lr=0.01, eps=1e-2, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_pytorch(name, backend):
    torch = pytest.importorskip("torch")
    ours_factory, torch_factory = OPTIMIZERS[name]
    model = _model(backend=backend)
    host = backend.to_numpy
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        for tl, ol in zip((tmodel[0], tmodel[2]), (model.layers[0], model.layers[2])):
            tl.weight.copy_(torch.tensor(host(ol.params["W"])))
            tl.bias.copy_(torch.tensor(host(ol.params["b"])))
    _run(model, ours_factory(model.parameters()), steps=5)
    topt = torch_factory(tmodel.parameters(), torch)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((8, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 8))
    for _ in range(5):
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(x), y).backward()
        topt.step()
    np.testing.assert_allclose(host(model.layers[0].params["W"]), tmodel[0].weight.detach().numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(host(model.layers[2].params["b"]), tmodel[2].bias.detach().numpy(),
                               rtol=1e-4, atol=1e-6)


def test_sgd_step_is_w_minus_lr_grad(backend):
    model = _model(backend=backend)
    host = backend.to_numpy
    before = host(model.layers[0].params["W"]).copy()
    opt = gc.SGD(model.parameters(), lr=0.5)
    _run(model, opt, steps=0)
    model.zero_grad()
    loss = gc.SoftmaxCrossEntropy().to(model.backend)
    x = np.ones((2, 4), np.float32)
    loss.forward(model.forward(x), np.array([0, 1]))
    model.backward(loss.backward())
    grad = host(model.layers[0].grads["W"]).copy()
    opt.step()
    np.testing.assert_allclose(host(model.layers[0].params["W"]), before - 0.5 * grad, rtol=1e-6)


def _published_adam_step(w, g, m, v, t, lr, betas, eps, weight_decay, decoupled):
    """One step of Adam as Kingma & Ba write it (Algorithm 1), in float64, with L2 weight decay
    added to the gradient, or decoupled (AdamW, Loshchilov & Hutter: w <- w - lr * wd * w first).
    Returns the new (w, m, v)."""
    b1, b2 = betas
    if weight_decay and not decoupled:
        g = g + weight_decay * w
    if weight_decay and decoupled:
        w = w - lr * weight_decay * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.parametrize("cls, eps, weight_decay", [
    (gc.Adam, 1e-8, 0.0), (gc.Adam, 1e-2, 0.0), (gc.Adam, 0.3, 0.05),
    (gc.AdamW, 1e-2, 0.1), (gc.AdamW, 1e-8, 0.0), (gc.AdamW, 0.3, 0.5),
])
def test_adam_follows_the_published_update(cls, eps, weight_decay):
    """Several steps of our Adam/AdamW against a plain NumPy loop of the published formula (no PyTorch
    needed), on the gradients the model really produces; float64 so that only a wrong formula shows."""
    model = _model().to(dtype=np.float64)
    betas, lr = (0.8, 0.95), 0.05
    opt = cls(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    rng = np.random.default_rng(1)
    loss = gc.SoftmaxCrossEntropy()
    moments = [(np.zeros_like(p.value), np.zeros_like(p.value)) for p in opt.params]
    for t in range(1, 7):
        model.zero_grad()
        loss.forward(model.forward(rng.standard_normal((8, 4))), rng.integers(0, 2, 8))
        model.backward(loss.backward())
        expected = []
        for p, (m, v) in zip(opt.params, moments):
            expected.append(_published_adam_step(p.value.copy(), p.grad.copy(), m, v, t, lr, betas, eps,
                                                 weight_decay, decoupled=cls is gc.AdamW))
        before = [p.value.copy() for p in opt.params]
        opt.step()
        for i, (p, (w, m, v)) in enumerate(zip(opt.params, expected)):
            # Compare the steps, not the weights: the step is what a formula error changes.
            np.testing.assert_allclose(p.value - before[i], w - before[i], rtol=1e-9, atol=1e-15,
                                       err_msg=f"step {t}, parameter {p}")
            moments[i] = (m, v)


def test_state_dict_round_trip_continues_identically(backend):
    a, b = _model(backend=backend), _model(backend=backend)
    opt_a = gc.Adam(a.parameters(), lr=0.01)
    _run(a, opt_a, steps=3)
    b.load_state_arrays(a.state_arrays())
    opt_b = gc.Adam(b.parameters(), lr=0.01)
    opt_b.load_state_dict(opt_a.state_dict())
    _run(a, opt_a, steps=2, rng_seed=5)
    _run(b, opt_b, steps=2, rng_seed=5)
    for key, value in a.state_arrays().items():
        np.testing.assert_array_equal(value, b.state_arrays()[key])


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="lr"):
        gc.SGD(_model().parameters(), lr=0)
    with pytest.raises(ValueError, match="empty"):
        gc.Adam([])
    with pytest.raises(TypeError, match="model.parameters"):
        gc.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="Nesterov"):
        gc.SGD(_model().parameters(), lr=0.1, nesterov=True)


def test_schedules():
    step = gc.StepLR(step_size=3, gamma=0.5)
    assert [step(e, 1.0) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cos = gc.CosineLR(total_epochs=10, min_lr=0.1)
    assert cos(0, 1.0) == pytest.approx(1.0)
    assert cos(5, 1.0) == pytest.approx(0.55)
    assert cos(10, 1.0) == pytest.approx(0.1) and cos(20, 1.0) == pytest.approx(0.1)
    assert cos(3, 1.0) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.3)))
