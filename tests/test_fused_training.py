"""The fused training step: one combined convolution backward, Conv+ReLU fusion in Sequential,
and no input gradient for the bottom layer of a training step.

References: the three separate convolution ops plus ``dy.sum`` (the backend
default), the plain NumPy loops of ``reference.py``, the same layers run one
by one (no plan), and float64 finite differences.
"""

import numpy as np
import pytest

import gpucnn as gc
from gpucnn import fusion
from gpucnn.backend.geometry import ConvGeometry
from gpucnn.cam import GradCAM, GuidedBackprop
from gpucnn.cam.guided import guided_relus

from conftest import backend_unavailable_reason
from gradcheck import assert_gradients_match, numerical_gradient
from reference import conv2d_backward_data_ref, conv2d_backward_filter_ref

# (x shape, (K, R, S), stride, padding, dilation): both backward-filter strategies of the cpu
# backend (per image from 256 output positions, per chunk below), strides, dilation, no padding,
# a batch that leaves a short last chunk, and the channel counts where the cpu backend runs
# backward-filter alone, or both backward ops, by Winograd (``cpu.WINOGRAD_MIN_CHANNELS``).
GEOMETRIES = {
    "per_image_3x3": ((3, 2, 16, 17), (4, 3, 3), 1, 1, 1),
    "per_chunk_3x3": ((11, 3, 6, 7), (5, 3, 3), 1, 1, 1),
    "winograd_filter": ((2, 8, 6, 7), (8, 3, 3), 1, 1, 1),
    "winograd_both": ((3, 16, 7, 6), (8, 3, 3), 1, 1, 1),
    "stride2_5x5": ((2, 3, 9, 8), (2, 5, 5), 2, 2, 1),
    "dilated_nopad": ((2, 2, 8, 9), (3, 3, 2), 1, 0, 2),
}

TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}


def _operands(backend, name, dtype, rng):
    """(geometry, x, w, dy, y) on ``backend``: y a stand-in ReLU output, about half of it zero."""
    x_shape, (K, R, S), stride, pad, dilation = GEOMETRIES[name]
    geom = ConvGeometry.from_shapes(x_shape, (K, x_shape[1], R, S), (stride, stride), (pad, pad),
                                    (dilation, dilation))
    x, w, dy = (rng.standard_normal(shape) for shape in (geom.x_shape, geom.w_shape, geom.y_shape))
    y = np.maximum(rng.standard_normal(geom.y_shape), 0)
    return geom, *(backend.asarray(a.astype(dtype)) for a in (x, w, dy, y))


def _scaled_error(got, want):
    """max|got - want| / max|want|."""
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "relu"])
def test_combined_backward_equals_the_separate_ops(backend, name, dtype, masked, rng):
    """conv2d_backward == backward-data, backward-filter and dy.sum on dy * [y > 0]."""
    geom, x, w, dy, y = _operands(backend, name, dtype, rng)
    relu_output = y if masked else None
    dx, dw, db = (backend.to_numpy(a) for a in backend.conv2d_backward(dy, x, w, geom, relu_output=relu_output))
    d = dy * (y > 0) if masked else dy
    host = backend.to_numpy
    want = {"dx": host(backend.conv2d_backward_data(d, w, geom)),
            "dw": host(backend.conv2d_backward_filter(d, x, geom)),
            "db": host(d.sum(axis=(0, 2, 3)))}
    for key, got in zip(("dx", "dw", "db"), (dx, dw, db)):
        assert got.dtype == dtype and got.shape == want[key].shape, key
        np.testing.assert_allclose(got, want[key], **TOLERANCE[dtype], err_msg=key)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_combined_backward_against_the_numpy_loops(backend, name, rng):
    """The same gradients from the plain loop references (independent of every backend op), float64."""
    geom, x, w, dy, y = _operands(backend, name, np.float64, rng)
    host = backend.to_numpy
    d = host(dy) * (host(y) > 0)
    _, (K, R, S), stride, pad, dilation = GEOMETRIES[name]
    want_dx = conv2d_backward_data_ref(d, host(w), geom.x_shape, stride, pad, dilation)
    want_dw = conv2d_backward_filter_ref(d, host(x), (R, S), stride, pad, dilation)
    dx, dw, db = backend.conv2d_backward(dy, x, w, geom, relu_output=y)
    assert _scaled_error(host(dx), want_dx) < 1e-12
    assert _scaled_error(host(dw), want_dw) < 1e-12
    assert _scaled_error(host(db), d.sum(axis=(0, 2, 3))) < 1e-12


def test_combined_backward_leaves_out_what_is_not_asked_for(backend, rng):
    geom, x, w, dy, y = _operands(backend, "per_chunk_3x3", np.float64, rng)
    dx, dw, db = backend.conv2d_backward(dy, x, w, geom, need_dx=False, with_bias=False)
    assert dx is None and db is None
    _, full_dw, _ = backend.conv2d_backward(dy, x, w, geom)
    np.testing.assert_allclose(backend.to_numpy(dw), backend.to_numpy(full_dw), rtol=1e-12, atol=1e-12)


def test_combined_backward_refuses_a_mask_of_the_wrong_shape(backend, rng):
    geom, x, w, dy, y = _operands(backend, "per_chunk_3x3", np.float32, rng)
    with pytest.raises(ValueError, match=r"conv2d_backward: relu_output has shape \(11, 5, 5, 7\)"):
        backend.conv2d_backward(dy, x, w, geom, relu_output=y[:, :, 1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_forward_has_the_bits_of_the_relu_op(backend, dtype, rng):
    """conv2d_forward(activation="relu") == relu_forward(conv2d_forward(...)) with NaNs kept, for
    the im2col and the Winograd forward; on cpu equal values, and for im2col the same bits (the
    sign of a zero too: both compute y * [y > 0])."""
    for name in ("per_chunk_3x3", "winograd_both"):
        geom, x, w, _, _ = _operands(backend, name, dtype, rng)
        host_x = backend.to_numpy(x).copy()
        host_x[0, 0, 2, 3] = np.nan  # poisons the outputs whose window holds it
        x = backend.asarray(host_x)
        fused = backend.to_numpy(backend.conv2d_forward(x, w, None, geom, activation="relu"))
        want = backend.to_numpy(backend.relu_forward(backend.conv2d_forward(x, w, None, geom)))
        assert np.isnan(want).any() and (want == 0).mean() > 0.2
        if backend.name != "cpu":
            np.testing.assert_allclose(fused, want, rtol=1e-6, atol=1e-6)
            continue
        np.testing.assert_array_equal(fused, want)  # NaN where NaN, +0 == -0
        if backend.conv_algorithm("forward", geom).startswith("im2col"):
            np.testing.assert_array_equal(fused.view(f"u{fused.itemsize}"), want.view(f"u{want.itemsize}"))


# --- Conv+ReLU fusion in Sequential --------------------------------------------------------------

def _digits_like(seed=0, width=4):
    """Three Conv+ReLU pairs (the first one at the bottom), pooling, dropout and a dense head;
    ``width`` channels in the hidden layers (16: the upper convolutions run by Winograd on cpu)."""
    return gc.Sequential([
        gc.Conv2D(1, width, 3, padding=1, rng=seed), gc.ReLU(),
        gc.Conv2D(width, width, 3, padding=1, rng=seed + 1), gc.ReLU(), gc.MaxPool2D(2),
        gc.Conv2D(width, 6, 3, padding=1, rng=seed + 2), gc.ReLU(), gc.MaxPool2D(2),
        gc.Flatten(), gc.Dropout(0.25, rng=seed), gc.Dense(6 * 4 * 4, 3, rng=seed + 3),
    ])


def test_the_plan_fuses_exactly_conv_then_plain_relu():
    class MyReLU(gc.ReLU):
        pass

    layers = [gc.Conv2D(1, 2, 3), gc.ReLU(),                          # fused
              gc.Conv2D(2, 2, 3, activation="relu"), gc.ReLU(),       # has its own ReLU
              gc.Conv2D(2, 2, 3), gc.LeakyReLU(),                     # not a ReLU
              gc.Conv2D(2, 2, 3), MyReLU(),                           # a subclass may differ
              gc.Conv2D(2, 2, 3), gc.BatchNorm2D(2), gc.ReLU(),       # not adjacent
              gc.Conv2D(2, 2, 3), gc.ReLU()]                          # fused, at the end
    steps = fusion.plan(layers)
    fused = [(layers.index(s.conv), layers.index(s.relu)) for s in steps if isinstance(s, fusion.ConvReLUStep)]
    assert fused == [(0, 1), (11, 12)]
    covered = [layer for s in steps for layer in ((s.conv, s.relu) if isinstance(s, fusion.ConvReLUStep) else (s.layer,))]
    assert covered == layers  # every layer once, in order


def _layer_by_layer(model, x, dy, training):
    """Forward and backward through each layer's own methods (no plan): output, dx."""
    h = model.backend.asarray(x, dtype=model.dtype)
    for layer in model.layers:
        h = layer.forward(h, training=training)
    g = model.backend.asarray(dy, dtype=model.dtype)
    for layer in reversed(model.layers):
        g = layer.backward(g)
    return h, g


def _run_both(backend, dtype, rng, guided=False, training=True, width=4):
    """(fused, unfused) results of one forward and backward of two identical models:
    each a dict of the output, dx and every gradient, on the host."""
    x = rng.standard_normal((5, 1, 16, 16)).astype(dtype)
    dy = rng.standard_normal((5, 3)).astype(dtype)
    results = []
    for fused in (True, False):
        model = _digits_like(width=width).to(backend, dtype=dtype)
        with guided_relus(model) if guided else _nothing():
            if fused:
                out = model.forward(x, training=training)
                dx = model.backward(dy)
            else:
                out, dx = _layer_by_layer(model, x, dy, training)
        arrays = {"out": out, "dx": dx}
        arrays.update({f"{i}.{k}": g for i, layer in enumerate(model.layers) for k, g in layer.grads.items()})
        results.append({k: backend.to_numpy(v) for k, v in arrays.items()})
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("width", [4, 16], ids=["im2col", "winograd"])
@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_model_equals_the_layers_run_one_by_one(backend, dtype, guided, width, rng):
    """Same output, dx and parameter gradients with and without the plan.

    On the cpu backend they are equal exactly: the fused forward clamps each
    output inside the convolution, the ReLU layer in a pass of its own (equal
    values; only the sign of a zero may differ), and backward feeds the same
    products dy * [y > 0], [y > 0] = [z > 0], into the same convolution
    backward. Other backends may pick another kernel for the fused forward:
    1e-6 there.
    """
    fused, unfused = _run_both(backend, dtype, rng, guided=guided, width=width)
    assert fused.keys() == unfused.keys()
    for key in fused:
        if backend.name == "cpu":
            np.testing.assert_array_equal(fused[key], unfused[key], err_msg=key)
        else:
            np.testing.assert_allclose(fused[key], unfused[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_fused_model_gradients_match_finite_differences(rng):
    """L = sum(model(x) * G) in float64 through the plan: dL/dx and dL/dW of every convolution."""
    model = _digits_like(seed=4).to(dtype=np.float64)
    model.layers[9].p = 0.0  # dropout off: L must be a fixed function of x and the weights
    x = rng.standard_normal((2, 1, 16, 16))
    G = rng.standard_normal((2, 3))
    assert any(isinstance(s, fusion.ConvReLUStep) for s in fusion.plan(model.layers))

    def loss():
        return float((model.forward(x) * G).sum())

    model.zero_grad()
    model.forward(x)
    dx = model.backward(G)
    assert_gradients_match(dx, numerical_gradient(loss, x), "dx")
    for i in (0, 2, 5):
        conv = model.layers[i]
        for key in ("W", "b"):
            analytic = conv.grads[key].copy()
            assert_gradients_match(analytic, numerical_gradient(loss, conv.params[key]), f"layer {i} d{key}")


def test_a_fused_relu_refuses_a_backward_of_its_own(rng):
    model = _digits_like()
    model.forward(rng.standard_normal((2, 1, 16, 16)).astype(np.float32))
    with pytest.raises(ValueError, match=r"layer 1 ReLU\(\): the last forward ran fused into layer 0 Conv2D"):
        model.layers[1].backward(np.ones((2, 4, 16, 16), np.float32))


def test_backward_after_a_layer_by_layer_forward_follows_the_layers(rng):
    """An explanation's forward (layer by layer) between the model's forward and backward: the
    model's backward then uses the unfused layers' state, and gets the unfused gradients."""
    x = rng.standard_normal((3, 1, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((3, 3)).astype(np.float32)
    model, reference = _digits_like(), _digits_like()
    model.forward(x, training=False)
    h = model.backend.asarray(x)
    for layer in model.layers:
        h = layer.forward(h, training=False)
    _, want = _layer_by_layer(reference, x, dy, training=False)
    np.testing.assert_array_equal(model.backward(dy), want)


def test_gradcam_sees_the_same_activations_after_a_fused_training_step(rng):
    """Grad-CAM runs the layers itself: a fused forward before it changes nothing it returns."""
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    before = GradCAM(_digits_like()).explain(x)
    model = _digits_like()
    model.forward(x)
    model.backward(np.ones((4, 3), np.float32), input_grad=False)
    model.zero_grad()
    after = GradCAM(model).explain(x)
    for field in ("activations", "gradients", "weights", "raw", "scores"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field), err_msg=field)


# --- no input gradient in a training step ----------------------------------------------------------

@pytest.fixture
def data_gradients(monkeypatch):
    """Counts, per input-channel count C of the convolution, how often its input gradient is computed
    (a combined backward with need_dx, or a separate backward-data call) on the cpu and cuda-emu backends."""
    counts = {}
    for name in ("cpu", "cuda-emu"):
        if backend_unavailable_reason(name):
            continue
        backend = gc.get_backend(name)
        combined, data = backend.conv2d_backward, backend.conv2d_backward_data
        inside = []  # a combined backward of the default composes the separate ops: count it once

        def counted_combined(dy, x, w, geom, need_dx=True, _combined=combined, **kwargs):
            if need_dx:
                counts[geom.C] = counts.get(geom.C, 0) + 1
            inside.append(True)
            try:
                return _combined(dy, x, w, geom, need_dx=need_dx, **kwargs)
            finally:
                inside.pop()

        def counted_data(dy, w, geom, _data=data):
            if not inside:
                counts[geom.C] = counts.get(geom.C, 0) + 1
            return _data(dy, w, geom)

        monkeypatch.setattr(backend, "conv2d_backward", counted_combined)
        monkeypatch.setattr(backend, "conv2d_backward_data", counted_data)
    return counts


def _training_step(model, x, labels):
    loss = gc.SoftmaxCrossEntropy().to(model.backend)
    model.zero_grad()
    loss.forward(model.forward(x), labels)
    return model.backward(loss.backward(), input_grad=False)


@pytest.mark.parametrize("name", ["cpu", "cuda-emu"])
def test_a_training_step_computes_no_input_gradient_for_the_bottom_layer(name, data_gradients, rng):
    if backend_unavailable_reason(name):
        pytest.skip(backend_unavailable_reason(name))
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 3, 4)
    model = _digits_like().to(name)
    model.layers[9].reseed(0)
    assert _training_step(model, x, labels) is None
    assert data_gradients == {4: 2}  # the two upper convolutions (4 input channels), never the bottom one
    grads = {f"{i}.{k}": np.array(model.backend.to_numpy(g)) for i, layer in enumerate(model.layers)
             for k, g in layer.grads.items()}
    model.zero_grad()
    model.layers[9].reseed(0)  # the same dropout mask as in the first step
    loss = gc.SoftmaxCrossEntropy().to(model.backend)
    loss.forward(model.forward(x), labels)
    assert model.backward(loss.backward()).shape == x.shape
    assert data_gradients == {4: 4, 1: 1}
    for i, layer in enumerate(model.layers):  # the same parameter gradients either way
        for k, g in layer.grads.items():
            np.testing.assert_array_equal(model.backend.to_numpy(g), grads[f"{i}.{k}"])


def test_trainer_skips_the_input_gradient_and_explanations_get_it(data_gradients, rng):
    x = rng.standard_normal((8, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = _digits_like()
    trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-3), backend="cpu")
    trainer.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert data_gradients.get(1, 0) == 0 and data_gradients[4] == 2 * 2
    saliency = GuidedBackprop(model)(x[:2])
    assert saliency.shape == (2, 1, 16, 16) and np.abs(saliency).max() > 0
    assert data_gradients[1] == 1


def test_input_grad_false_stops_at_the_lowest_layer_with_parameters(rng):
    """Layers below it are not run backward at all; a Dense there computes no dx."""
    calls = []

    class Recorded(gc.Flatten):
        def backward(self, dy):
            calls.append("backward")
            return super().backward(dy)

    model = gc.Sequential([Recorded(), gc.Dense(12, 5, rng=0), gc.ReLU(), gc.Dense(5, 2, rng=1)])
    x = rng.standard_normal((3, 1, 3, 4)).astype(np.float32)
    dy = rng.standard_normal((3, 2)).astype(np.float32)
    model.forward(x)
    assert model.backward(dy, input_grad=False) is None and calls == []
    grads = [g.copy() for layer in model.layers for g in layer.grads.values()]
    model.zero_grad()
    model.forward(x)
    assert model.backward(dy).shape == x.shape and calls == ["backward"]
    for got, want in zip((g for layer in model.layers for g in layer.grads.values()), grads):
        np.testing.assert_array_equal(got, want)
