"""Layers: finite-difference gradient checks in float64 for dx and every parameter, on every backend.

The loss used for the checks is L = sum(y * G) with a fixed random G, so
dL/dy = G and the analytic backward(G) must equal the numerical dL/dx.
"""

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.backend import conv_algorithms

from gradcheck import assert_gradients_match, numerical_gradient

# (layer factory, input shape): stride 2 and 3, padding 0/1/2, 1x1, 5x5 and
# non-square kernels, dilation 2, odd and non-square images, batch 1.
CASES = {
    "conv3x3_pad1": (lambda: gc.Conv2D(2, 3, 3, padding=1, rng=0), (2, 2, 5, 6)),
    "conv1x1": (lambda: gc.Conv2D(3, 2, 1, rng=1), (2, 3, 4, 3)),
    "conv5x5_pad2": (lambda: gc.Conv2D(1, 2, 5, padding=2, rng=2), (1, 1, 7, 5)),
    "conv_stride2_pad1": (lambda: gc.Conv2D(2, 2, 3, stride=2, padding=1, rng=3), (2, 2, 7, 6)),
    "conv_stride3": (lambda: gc.Conv2D(2, 3, 2, stride=3, rng=4), (1, 2, 8, 9)),
    "conv_nonsquare": (lambda: gc.Conv2D(2, 2, (3, 1), padding=(1, 0), rng=5), (2, 2, 5, 4)),
    "conv_dilation2": (lambda: gc.Conv2D(2, 2, 3, dilation=2, padding=2, rng=6), (1, 2, 7, 6)),
    "conv_per_axis": (lambda: gc.Conv2D(1, 2, (2, 3), stride=(1, 2), padding=(0, 2), rng=7),
                      (2, 1, 5, 5)),
    "conv_no_bias": (lambda: gc.Conv2D(2, 2, 3, bias=False, rng=8), (1, 2, 4, 4)),
    "conv_fused_relu": (lambda: gc.Conv2D(2, 3, 3, padding=1, activation="relu", rng=11), (2, 2, 5, 6)),
    "maxpool2": (lambda: gc.MaxPool2D(2), (2, 2, 6, 5)),
    "maxpool3_s2_p1": (lambda: gc.MaxPool2D(3, stride=2, padding=1), (1, 2, 7, 7)),
    "avgpool2": (lambda: gc.AvgPool2D(2), (2, 2, 4, 6)),
    "avgpool3_s3_p1": (lambda: gc.AvgPool2D(3, stride=3, padding=1), (1, 2, 7, 5)),
    "global_avg": (lambda: gc.GlobalAvgPool2D(), (2, 3, 3, 5)),
    "dense": (lambda: gc.Dense(6, 4, rng=9), (3, 6)),
    "dense_no_bias": (lambda: gc.Dense(5, 2, bias=False, rng=10), (1, 5)),
    "flatten": (lambda: gc.Flatten(), (2, 2, 3, 2)),
    "relu": (lambda: gc.ReLU(), (2, 3, 4, 4)),
    "leaky_relu": (lambda: gc.LeakyReLU(0.1), (2, 3, 4)),
    "sigmoid": (lambda: gc.Sigmoid(), (3, 5)),
    "tanh": (lambda: gc.Tanh(), (3, 5)),
    "batchnorm_train": (lambda: gc.BatchNorm2D(3), (4, 3, 3, 2)),
    "batchnorm_batch1": (lambda: gc.BatchNorm2D(2), (1, 2, 3, 3)),
}


def _input(shape, rng):
    x = rng.standard_normal(shape)
    # Keep inputs away from the kinks of ReLU/max so central differences are exact.
    x[np.abs(x) < 1e-3] += 0.1
    return x


def _check_layer(layer, x, backend, training=True, rng=None):
    """Compare backward with finite differences of sum(forward(x) * G) for dx and every parameter."""
    layer.to(backend, np.float64)
    if hasattr(layer, "params") and "gamma" in layer.params:
        # Non-trivial affine parameters make the BatchNorm check meaningful.
        layer.params["gamma"] = backend.asarray(rng.uniform(0.5, 1.5, layer.params["gamma"].shape))
        layer.params["beta"] = backend.asarray(rng.standard_normal(layer.params["beta"].shape))
    xb = backend.asarray(x)
    y = layer.forward(xb, training=training)
    G = rng.standard_normal(tuple(y.shape))
    layer.zero_grad()
    dx = backend.to_numpy(layer.backward(backend.asarray(G)))

    def loss():
        # Fresh forward for every probe; BatchNorm's running statistics do not enter the output.
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x), training=training)) * G))

    assert_gradients_match(dx, numerical_gradient(loss, x), f"{layer!r} dx")
    for key in layer.params:
        value = backend.to_numpy(layer.params[key]).copy()
        analytic = backend.to_numpy(layer.grads[key])

        def loss_p(key=key, value=value):
            layer.params[key] = backend.asarray(value)
            return loss()

        numeric = numerical_gradient(loss_p, value)
        layer.params[key] = backend.asarray(value)
        assert_gradients_match(analytic, numeric, f"{layer!r} d{key}")


def _skip_without_float64(backend):
    if not backend.supports_float64:
        pytest.skip(f"{backend.name} computes in float32 only")


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_gradients_match_finite_differences(case, backend, rng):
    _skip_without_float64(backend)
    factory, shape = CASES[case]
    _check_layer(factory(), _input(shape, rng), backend, rng=rng)


def test_batchnorm_eval_gradient_uses_running_statistics(backend, rng):
    _skip_without_float64(backend)
    layer = gc.BatchNorm2D(3).to(backend, np.float64)
    for _ in range(3):  # give the running statistics non-trivial values
        layer.forward(backend.asarray(rng.standard_normal((4, 3, 2, 2)) * 2 + 1))
    _check_layer(layer, _input((2, 3, 3, 2), rng), backend, training=False, rng=rng)


@pytest.mark.parametrize("guided", [False, True])
def test_fused_relu_equals_conv_then_relu(backend, guided, rng):
    """Conv2D(activation="relu") is Conv2D followed by ReLU, forward and backward, also in
    guided mode. The CUDA backends are checked with each forward kernel forced in turn: the
    igemm kernel's fused epilogue, and the direct kernel with the clamp applied after it."""
    x = backend.asarray(rng.standard_normal((3, 5, 9, 7)).astype(np.float32))
    dy = backend.asarray(rng.standard_normal((3, 6, 9, 7)).astype(np.float32))
    forced = ({"forward": "direct"}, {"forward": "igemm"}) if backend.name.startswith("cuda") else ({},)
    for algorithm in forced:
        fused = gc.Conv2D(5, 6, 3, padding=1, activation="relu", rng=3).to(backend)
        conv, relu = gc.Conv2D(5, 6, 3, padding=1, rng=3).to(backend), gc.ReLU()
        fused.guided = relu.guided = guided
        with conv_algorithms.force(**algorithm):
            y = fused.forward(x)
        want = relu.forward(conv.forward(x))
        np.testing.assert_allclose(backend.to_numpy(y), backend.to_numpy(want), rtol=1e-5, atol=1e-5,
                                   err_msg=f"forward, {algorithm}")
        assert 0.2 < float((backend.to_numpy(want) == 0).mean()) < 0.8  # the clamp is exercised
        np.testing.assert_allclose(backend.to_numpy(fused.backward(dy)),
                                   backend.to_numpy(conv.backward(relu.backward(dy))), rtol=1e-5, atol=1e-5,
                                   err_msg=f"dx, {algorithm}")
        for key in ("W", "b"):
            np.testing.assert_allclose(backend.to_numpy(fused.grads[key]), backend.to_numpy(conv.grads[key]),
                                       rtol=1e-5, atol=1e-5, err_msg=f"d{key}, {algorithm}")


def test_unknown_fused_activation_is_refused():
    with pytest.raises(ValueError, match=r"Conv2D\(2, 3, kernel_size=3\): activation must be one of"):
        gc.Conv2D(2, 3, 3, activation="tanh")


def test_gradients_accumulate_until_zero_grad(rng):
    layer = gc.Dense(3, 2, rng=0)
    x, dy = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)
    layer.forward(x)
    layer.backward(dy)
    once = layer.grads["W"].copy()
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads["W"], 2 * once, rtol=1e-6)
    layer.zero_grad()
    assert not layer.grads["W"].any()


def test_dropout_masks_and_scales(rng):
    layer = gc.Dropout(0.25, rng=0)
    x = np.ones((200, 50), np.float32)
    y = layer.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, y)  # the same mask and scale flow back
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


def test_batchnorm_running_statistics_follow_pytorch_update(rng):
    layer = gc.BatchNorm2D(2, momentum=0.1)
    x = (rng.standard_normal((5, 2, 3, 3)) * 3 + 2).astype(np.float32)
    layer.forward(x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * var, rtol=1e-5)


def test_initialisation_is_seedable_and_he_uniform():
    a, b = gc.Conv2D(16, 32, 3, rng=42), gc.Conv2D(16, 32, 3, rng=42)
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    bound = np.sqrt(6 / (16 * 9))
    w = a.params["W"]
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound  # the whole range is used
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.abs(a.params["b"]).max() <= 1 / np.sqrt(16 * 9)
    gc.seed(3)
    c = gc.Dense(4, 4)
    gc.seed(3)
    np.testing.assert_array_equal(c.params["W"], gc.Dense(4, 4).params["W"])


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape, message", [
    (lambda: gc.Conv2D(3, 4, 3), (2, 3, 8), "4-D"),
    (lambda: gc.Conv2D(3, 4, 3), (2, 1, 8, 8), "3 input channels"),
    (lambda: gc.Conv2D(1, 4, 5), (2, 1, 3, 3), "smaller than the dilated kernel"),
    (lambda: gc.Conv2D(1, 4, 3, dilation=3), (2, 1, 6, 6), "smaller than the dilated kernel"),
    (lambda: gc.MaxPool2D(4), (1, 1, 3, 3), "smaller than the pooling window"),
    (lambda: gc.Dense(10, 2), (4, 9), r"\(N, 10\)"),
    (lambda: gc.Dense(10, 2), (4, 10, 1, 1), "Flatten"),
    (lambda: gc.BatchNorm2D(3), (4, 2, 5, 5), "3 input channels"),
])
def test_bad_input_names_layer_and_shapes(layer, shape, message):
    layer = layer()
    with pytest.raises(ValueError, match=message) as info:
        layer.forward(np.zeros(shape, np.float32))
    assert type(layer).__name__ in str(info.value)
    assert str(tuple(shape)) in str(info.value) or str(shape[1]) in str(info.value)


@pytest.mark.parametrize("make", [
    lambda: gc.Conv2D(1, 2, 3, stride=0),
    lambda: gc.Conv2D(1, 2, 3, padding=-1),
    lambda: gc.Conv2D(0, 2, 3),
    lambda: gc.MaxPool2D(2, padding=2),
    lambda: gc.AvgPool2D(3, stride=-1),
    lambda: gc.Dropout(1.0),
])
def test_bad_configuration_is_refused_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_bad_argument_types_are_type_errors():
    with pytest.raises(TypeError, match="kernel_size"):
        gc.Conv2D(1, 2, 2.5)
    with pytest.raises(TypeError, match="rng"):
        gc.Dense(2, 2, rng="seed")


def test_backward_before_forward_is_an_error():
    for layer in (gc.Conv2D(1, 1, 1), gc.MaxPool2D(2), gc.Dense(2, 2), gc.ReLU(), gc.BatchNorm2D(1)):
        with pytest.raises(ValueError, match="backward called before forward"):
            layer.backward(np.zeros((1, 1, 1, 1), np.float32))


def test_gradient_of_wrong_shape_is_refused():
    layer = gc.Conv2D(1, 2, 3, padding=1)
    layer.forward(np.zeros((2, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 2, 5, 5\)"):
        layer.backward(np.zeros((2, 2, 4, 4), np.float32))
