"""Grad-CAM and its family, checked against independent references and on a trained model.

- Grad-CAM's weights alpha_k equal, in float64, the finite-difference
  derivative of the explained score with respect to the layer's activations,
  averaged over space; raw maps equal a plain NumPy evaluation of each
  method's formula (Grad-CAM, Grad-CAM++, Score-CAM with a loop-written
  bilinear resize); guided backpropagation equals a NumPy backward written
  from tests/reference.py.
- On a CNN trained on the synthetic shapes: the pointing game, the
  faithfulness (deletion) metric against random pixels, and the
  model-randomisation sanity check of Adebayo et al. (arXiv:1810.03292).
- Cost: a Grad-CAM call on 256 images runs each layer forward once and
  backward only above the chosen layer (layer calls are counted).
"""

import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.stats import spearmanr

import gpucnn as gc
import reference as ref
from gpucnn.cam import (GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, ScoreCAM,
                        faithfulness, pointing_game, resolve_layer)
from gpucnn.cam.imageops import bilinear_matrix, gaussian_blur_matrix
from gpucnn.datasets.shapes import make_shapes
from gpucnn.trainer import Trainer
from gradcheck import assert_gradients_match, numerical_gradient

METHODS = (GradCAM, GradCAMPlusPlus, ScoreCAM, GuidedGradCAM)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's CPU kernels and BLAS on one thread, restoring the setting afterwards.

    The images here are tiny: waking threads costs more than the work, and on
    a shared 2-core machine one thread trains the shapes model several times
    faster than two (gpucnn's default; this holds it whatever GPUCNN_THREADS says).
    """
    with gc.threads(1):
        yield


# --- a small float64 model with a non-linear head -------------------------------------------

TAP = 5  # the ReLU after the last Conv2D and its BatchNorm: the default layer


def small_model(backend, seed=0):
    """Conv-ReLU-Pool-Conv-BN-ReLU | Flatten-Dense-ReLU-Dropout-Dense, float64, on ``backend``.

    Input (N, 2, 6, 6); A = output of layer TAP is (N, 4, 3, 3); 3 logits. The
    BatchNorm has non-trivial running statistics and the Dropout would change
    the output in training mode, so any explanation not run in inference mode
    disagrees with the references below.
    """
    rng = np.random.default_rng(seed)
    layers = [gc.Conv2D(2, 3, 3, padding=1, rng=rng), gc.ReLU(), gc.MaxPool2D(2),
              gc.Conv2D(3, 4, 3, padding=1, rng=rng), gc.BatchNorm2D(4), gc.ReLU(),
              gc.Flatten(), gc.Dense(36, 6, rng=rng), gc.ReLU(), gc.Dropout(0.5, rng=rng),
              gc.Dense(6, 3, rng=rng)]
    model = gc.Sequential(layers).to(backend, np.float64)
    bn = layers[4]
    bn.params["gamma"] = model.backend.asarray(rng.uniform(0.5, 1.5, 4))
    bn.params["beta"] = model.backend.asarray(rng.normal(0, 0.3, 4))
    bn.buffers["running_mean"] = model.backend.asarray(rng.normal(0, 0.3, 4))
    bn.buffers["running_var"] = model.backend.asarray(rng.uniform(0.5, 2.0, 4))
    return model


def small_input(seed=1):
    x = np.random.default_rng(seed).standard_normal((2, 2, 6, 6))
    x[np.abs(x) < 1e-3] += 0.1  # away from the ReLU kinks
    return x


def run_layers(model, x, layers):
    """Inference-mode forward of host array x through ``layers``; returns a host float64 array."""
    z = model.backend.asarray(x)
    for layer in layers:
        z = layer.forward(z, training=False)
    return model.backend.to_numpy(z).astype(np.float64)


def fd_score_gradient(model, A, score):
    """Central differences of sum_n score(logits)[n] with respect to A, run through the head only."""
    head = model.layers[TAP + 1:]
    probe = A.copy()  # numerical_gradient perturbs this array in place
    return numerical_gradient(lambda: float(np.sum(score(run_layers(model, probe, head)))), probe)


class Contrast:
    """A target with its own derivative: logit 2 minus logit 0."""

    def __call__(self, z):
        return z[:, 2] - z[:, 0]

    def gradient(self, z):
        g = np.zeros(z.shape)
        g[:, 2], g[:, 0] = 1.0, -1.0
        return g


TARGETS = {
    "predicted": None,
    "int": 2,
    "per_sample": [0, 2],
    "callable_nonlinear": lambda z: z[:, 1] - 0.5 * z[:, 0] ** 2,
    "callable_with_gradient": Contrast(),
}


def score_function(name, logits_of_x):
    """The explained score as a function of logits, with the classes of None fixed from x's logits."""
    target = TARGETS[name]
    if callable(target):
        return lambda z: np.asarray(target(z))
    if target is None:
        classes = logits_of_x.argmax(axis=1)
    else:
        classes = np.broadcast_to(np.asarray(target), (len(logits_of_x),))
    return lambda z: z[np.arange(len(z)), classes]


# --- weights and raw maps against finite differences and NumPy formulas -----------------------

@pytest.mark.parametrize("target", sorted(TARGETS))
def test_gradcam_alpha_is_the_space_averaged_finite_difference(backend, target):
    model, x = small_model(backend), small_input()
    assert resolve_layer(model, None) == TAP
    A = run_layers(model, x, model.layers[:TAP + 1])
    score = score_function(target, run_layers(model, x, model.layers))
    grad = fd_score_gradient(model, A, score)
    alpha = grad.mean(axis=(2, 3))

    explanation = GradCAM(model).explain(x, class_idx=TARGETS[target])
    assert_gradients_match(explanation.gradients, grad, f"dScore/dA ({target})")
    assert_gradients_match(explanation.weights, alpha, f"alpha ({target})")
    np.testing.assert_allclose(explanation.activations, A, rtol=1e-12, atol=1e-12)

    raw = GradCAM(model)(x, class_idx=TARGETS[target], raw=True)
    expected = np.maximum(np.einsum("nk,nkhw->nhw", alpha, A), 0)
    assert raw.shape == (2, 3, 3)
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-9)


def test_gradcam_plus_plus_raw_map_is_the_closed_form(backend):
    model, x = small_model(backend), small_input()
    A = run_layers(model, x, model.layers[:TAP + 1])
    g = fd_score_gradient(model, A, lambda z: z[:, 2])
    expected = np.zeros(A.shape[:2])
    for n in range(A.shape[0]):
        for k in range(A.shape[1]):
            total = A[n, k].sum()
            for i in range(A.shape[2]):
                for j in range(A.shape[3]):
                    gij = g[n, k, i, j]
                    denom = 2 * gij ** 2 + total * gij ** 3
                    a = gij ** 2 / denom if denom != 0 else 0.0
                    expected[n, k] += a * max(gij, 0.0)
    raw_expected = np.maximum(np.einsum("nk,nkhw->nhw", expected, A), 0)
    cam = GradCAMPlusPlus(model)
    np.testing.assert_allclose(cam.explain(x, class_idx=2).weights, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(cam(x, class_idx=2, raw=True), raw_expected, rtol=1e-5, atol=1e-9)


def bilinear_loop(m, H, W):
    """Resize one (h, w) map to (H, W): half-pixel centres, clamped, as in PyTorch align_corners=False."""
    h, w = m.shape
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            y = min(max((i + 0.5) * h / H - 0.5, 0), h - 1)
            x = min(max((j + 0.5) * w / W - 0.5, 0), w - 1)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * m[y0, x0] + (1 - fy) * fx * m[y0, x1]
                         + fy * (1 - fx) * m[y1, x0] + fy * fx * m[y1, x1])
    return out


@pytest.mark.parametrize("target", ["per_sample", "callable_with_gradient"])
def test_scorecam_raw_map_matches_a_plain_loop(backend, target):
    model, x = small_model(backend), small_input()
    A = run_layers(model, x, model.layers[:TAP + 1])
    class_idx = {"per_sample": [1, 0], "callable_with_gradient": Contrast()}[target]
    # the score of masked copy of sample n, from its logits (1, K)
    score = {"per_sample": lambda z, n: z[0, [1, 0][n]],
             "callable_with_gradient": lambda z, n: z[0, 2] - z[0, 0]}[target]
    weights = np.zeros(A.shape[:2])
    for n in range(A.shape[0]):
        for k in range(A.shape[1]):
            up = bilinear_loop(A[n, k], 6, 6)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            logits = run_layers(model, x[n:n + 1] * mask, model.layers)
            weights[n, k] = score(logits, n)
        e = np.exp(weights[n] - weights[n].max())
        weights[n] = e / e.sum()
    expected = np.maximum(np.einsum("nk,nkhw->nhw", weights, A), 0)
    # batch_size 3 with 4 channels: the batches cut across samples
    cam = ScoreCAM(model, batch_size=3)
    np.testing.assert_allclose(cam.explain(x, class_idx=class_idx).weights, weights, rtol=1e-10)
    np.testing.assert_allclose(cam(x, class_idx=class_idx, raw=True), expected, rtol=1e-10, atol=1e-12)


def test_bilinear_resize_matches_a_loop_and_pytorch():
    m = np.random.default_rng(0).standard_normal((5, 7))
    for H, W in ((11, 13), (5, 7), (20, 3)):
        mine = bilinear_matrix(H, 5) @ m @ bilinear_matrix(W, 7).T
        np.testing.assert_allclose(mine, bilinear_loop(m, H, W), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(bilinear_matrix(6, 6), np.eye(6))
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.interpolate(torch.tensor(m)[None, None], size=(11, 13), mode="bilinear",
                                        align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(bilinear_matrix(11, 5) @ m @ bilinear_matrix(13, 7).T, t, rtol=1e-12)


def test_gaussian_blur_matrix_matches_scipy():
    v = np.random.default_rng(0).standard_normal(9)
    for n, sigma in ((9, 1.3), (3, 2.0), (9, 0.5)):
        mine = gaussian_blur_matrix(n, sigma) @ v[:n]
        expected = gaussian_filter1d(v[:n], sigma, mode="reflect", radius=max(1, int(np.ceil(3 * sigma))))
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


# --- guided backpropagation ------------------------------------------------------------------------

def guided_model(backend, seed=3):
    rng = np.random.default_rng(seed)
    layers = [gc.Conv2D(2, 3, 3, padding=1, rng=rng), gc.ReLU(), gc.MaxPool2D(2),
              gc.Conv2D(3, 4, 3, padding=1, rng=rng), gc.ReLU(), gc.Flatten(), gc.Dense(36, 3, rng=rng)]
    return gc.Sequential(layers).to(backend, np.float64)


def guided_reference(model, x, classes):
    """Guided backprop written out in NumPy from tests/reference.py's loops."""
    conv1, _, _, conv2, _, _, dense = model.layers
    p = {k: model.backend.to_numpy(v) for k, v in (("W1", conv1.params["W"]), ("b1", conv1.params["b"]),
                                                   ("W2", conv2.params["W"]), ("b2", conv2.params["b"]),
                                                   ("Wd", dense.params["W"]))}
    h1 = ref.conv2d_forward_ref(x, p["W1"], p["b1"], padding=1)
    pooled, argmax = ref.max_pool2d_forward_ref(np.maximum(h1, 0), 2)
    h2 = ref.conv2d_forward_ref(pooled, p["W2"], p["b2"], padding=1)
    d = p["Wd"][classes].reshape(h2.shape)
    d = d * (h2 > 0) * (d > 0)
    d = ref.conv2d_backward_data_ref(d, p["W2"], pooled.shape, padding=1)
    d = ref.max_pool2d_backward_ref(d, argmax, h1.shape)
    d = d * (h1 > 0) * (d > 0)
    return ref.conv2d_backward_data_ref(d, p["W1"], x.shape, padding=1)


def test_guided_backprop_matches_numpy_reference(backend):
    model, x = guided_model(backend), small_input()
    classes = np.array([2, 1])
    expected = guided_reference(model, x, classes)
    np.testing.assert_allclose(GuidedBackprop(model)(x, classes), expected, rtol=1e-10, atol=1e-12)
    assert not any(getattr(layer, "guided", False) for layer in model.layers)

    # Guided Grad-CAM = guided backprop x the [0, 1] Grad-CAM map (no ReLU above the layer here).
    cam = GradCAM(model)(x, classes)
    np.testing.assert_allclose(GuidedGradCAM(model).attribution(x, classes), expected * cam[:, None],
                               rtol=1e-10, atol=1e-12)


def test_guided_backprop_through_fused_conv_relu(backend):
    """Conv2D(activation="relu") has the guided mode of the ReLU it replaces."""
    rng = np.random.default_rng(3)  # the weights of guided_model(seed=3)
    fused = gc.Sequential([gc.Conv2D(2, 3, 3, padding=1, activation="relu", rng=rng), gc.MaxPool2D(2),
                           gc.Conv2D(3, 4, 3, padding=1, activation="relu", rng=rng), gc.Flatten(),
                           gc.Dense(36, 3, rng=rng)]).to(backend, np.float64)
    x, classes = small_input(), np.array([2, 1])
    expected = guided_reference(guided_model(backend), x, classes)
    np.testing.assert_allclose(GuidedBackprop(fused)(x, classes), expected, rtol=1e-10, atol=1e-12)
    assert not any(layer.guided for layer in fused.layers if isinstance(layer, gc.Conv2D))


def test_guided_gradcam_with_a_relu_in_the_head(backend):
    """The head's ReLU is guided too, so the guided pass restarts at the logits."""
    model, x = small_model(backend), small_input()
    guided = GuidedBackprop(model)(x, 2)
    cam = GradCAM(model)(x, 2)
    attribution = GuidedGradCAM(model).attribution(x, 2)
    assert np.all(np.abs(attribution).reshape(2, -1).max(axis=1) > 0)  # a case with something to compare
    np.testing.assert_allclose(attribution, guided * cam[:, None], rtol=1e-10, atol=1e-13)
    saliency = GuidedGradCAM(model)(x, 2)
    expected = np.abs(attribution).max(axis=1)
    np.testing.assert_allclose(saliency, expected / expected.reshape(2, -1).max(axis=1)[:, None, None],
                               rtol=1e-10)


def test_guided_mode_is_restored_after_an_error():
    model, x = small_model("cpu"), small_input()
    model.layers[8].guided = True  # a flag set by the user survives the call

    class Broken:
        def __call__(self, z):
            return z[:, 0]

        def gradient(self, z):
            raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        GuidedBackprop(model)(x, Broken())
    assert [layer.guided for layer in model.layers if isinstance(layer, gc.ReLU)] == [False, False, True]


# --- conventions, state and errors ---------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_maps_are_scaled_per_image_and_model_state_is_untouched(method):
    model, x = small_model("cpu"), small_input()
    rng = np.random.default_rng(5)
    for layer in model.layers:
        for key in layer.grads:
            layer.grads[key] = rng.standard_normal(layer.grads[key].shape)
    before = [{k: v.copy() for k, v in {**layer.grads, **layer.buffers}.items()} for layer in model.layers]
    maps = method(model)(x)
    assert maps.shape == (2, 6, 6) and isinstance(maps, np.ndarray)
    assert np.all(np.isfinite(maps)) and maps.min() >= 0
    for m in maps:
        assert m.max() == 0 or m.max() == pytest.approx(1.0)
    for layer, saved in zip(model.layers, before):
        for key, value in saved.items():
            current = layer.grads.get(key, layer.buffers.get(key))
            np.testing.assert_array_equal(current, value, err_msg=f"{layer.where}.{key} changed")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_all_zero_activations_give_zero_maps_not_nan(method):
    model = small_model("cpu")
    model.layers[4].params["beta"][...] = -1e3  # the ReLU after the BatchNorm outputs only zeros
    maps = method(model)(small_input())
    assert np.all(maps == 0)


def test_layer_choice():
    model = small_model("cpu")
    assert GradCAM(model, layer=3).layer_index == 3
    assert GradCAM(model, layer=model.layers[1]).layer_index == 1
    assert GradCAM(model, layer=-6).layer_index == TAP
    plain = gc.Sequential([gc.Conv2D(1, 2, 3), gc.GlobalAvgPool2D(), gc.Dense(2, 2)])
    assert GradCAM(plain).layer_index == 0  # no activation after the conv: its own output


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x: GradCAM(gc.Sequential([gc.Flatten(), gc.Dense(72, 3)])), ValueError, "no Conv2D"),
    (lambda m, x: GradCAM(m, layer=11), ValueError, "out of range"),
    (lambda m, x: GradCAM(m, layer=gc.ReLU()), ValueError, "not one of"),
    (lambda m, x: GradCAM(m, layer="conv"), TypeError, "layer must be"),
    (lambda m, x: GradCAM(m, layer=7)(x), ValueError, "4-D"),
    (lambda m, x: GradCAM(m)(x, class_idx=3), ValueError, r"\[0, 3\)"),
    (lambda m, x: GradCAM(m)(x, class_idx=[0, 1, 2]), ValueError, "one class per sample"),
    (lambda m, x: GradCAM(m)(x, class_idx=[0.5, 1.0]), TypeError, "integers"),
    (lambda m, x: GradCAM(m)(x, class_idx=True), TypeError, "bool"),
    (lambda m, x: GradCAM(m)(x, class_idx=lambda z: z), ValueError, "one score per sample"),
    (lambda m, x: GradCAM(m)(x[0]), ValueError, r"\(N, C, H, W\)"),
    (lambda m, x: ScoreCAM(m, batch_size=0), ValueError, "batch_size"),
])
def test_bad_input_is_reported(call, error, match):
    with pytest.raises(error, match=match):
        call(small_model("cpu"), small_input())


def test_pointing_game_counts_peaks_on_the_mask():
    maps = np.zeros((3, 5, 5))
    maps[0, 1, 1] = 1
    maps[1, 4, 4] = 1
    masks = np.zeros((3, 5, 5), bool)
    masks[:, 1:3, 1:3] = True
    np.testing.assert_array_equal(pointing_game(maps, masks), [True, False, False])  # zero map: miss
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=2.9), [True, True, False])
    with pytest.raises(ValueError, match="must both be"):
        pointing_game(maps, masks[:2])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_backends_agree(backend, method):
    x = small_input()
    expected = method(small_model("cpu"))(x, class_idx=[1, 2])
    np.testing.assert_allclose(method(small_model(backend))(x, class_idx=[1, 2]), expected,
                               rtol=1e-9, atol=1e-12)


# --- a trained model: pointing game, faithfulness, sanity check, cost ---------------------------------

SIZE, SEED = 20, 1


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small CNN trained once on 3000 shapes (20x20), saved; 400 test images with masks."""
    x, y, _ = make_shapes(3000, size=SIZE, seed=0)
    rng = np.random.default_rng(SEED)
    model = gc.Sequential([
        gc.Conv2D(1, 8, 3, padding=1, rng=rng), gc.BatchNorm2D(8), gc.ReLU(), gc.MaxPool2D(2),
        gc.Conv2D(8, 16, 3, padding=1, rng=rng), gc.BatchNorm2D(16), gc.ReLU(), gc.MaxPool2D(2),
        gc.Conv2D(16, 32, 3, padding=1, rng=rng), gc.BatchNorm2D(32), gc.ReLU(),
        gc.GlobalAvgPool2D(), gc.Dense(32, 4, rng=rng)])
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=3e-3), backend="cpu")
    trainer.fit(x, y, epochs=3, batch_size=64, seed=SEED, verbose=0)
    path = tmp_path_factory.mktemp("shapes") / "model.npz"
    model.save(path)
    xt, yt, masks = make_shapes(400, size=SIZE, seed=1)
    correct = model.forward(xt, training=False).argmax(axis=1) == yt
    print(f"\nshapes model: test accuracy {correct.mean():.3f}")
    assert correct.mean() > 0.9, "the shapes model did not learn; the tests below would mean nothing"
    return path, xt[correct], yt[correct], masks[correct]


def test_pointing_game_on_shapes(shapes):
    path, x, y, masks = shapes
    model = gc.load_model(path)
    scores = {}
    for method in METHODS:
        maps = method(model)(x)
        scores[method.__name__] = (pointing_game(maps, masks).mean(),
                                   pointing_game(maps, masks, tolerance=1).mean())
    for name, (exact, near) in scores.items():
        print(f"pointing game {name:15s}: {exact:.3f} on the object, {near:.3f} within 1 px "
              f"({len(x)} correctly classified images)")
    # The bar is Grad-CAM's; Grad-CAM++ and Score-CAM clear it too. Guided Grad-CAM's
    # pixel-level maps peak on edges, sometimes just outside the mask, so it is only printed.
    for name in ("GradCAM", "GradCAMPlusPlus", "ScoreCAM"):
        assert scores[name][0] >= 0.9, (name, scores[name])


def test_faithfulness_ranks_gradcam_above_random_pixels(shapes):
    path, x, y, masks = shapes
    x, masks = x[:200], masks[:200]
    model = gc.load_model(path)
    for method in METHODS:
        f = faithfulness(model, x, method(model)(x))
        print(f"faithfulness {method.__name__:15s}: drop {np.round(f.drop, 3)} vs random "
              f"{np.round(f.random_drop, 3)}, gain {f.gain:.3f}")
        if method is GradCAM:
            assert np.all(f.drop > f.random_drop) and f.gain > 0.05
    # The metric itself: the object's own mask beats random pixels; its complement does worse.
    oracle = faithfulness(model, x, masks.astype(float))
    anti = faithfulness(model, x, (~masks).astype(float))
    assert np.all(oracle.drop > oracle.random_drop)
    assert anti.gain < 0 < oracle.gain


def test_sanity_check_randomised_weights_change_the_maps(shapes):
    """Adebayo et al.: re-initialising every weight must change the explanation."""
    path, x, y, masks = shapes
    x, y = x[:100], y[:100]
    results = {}
    for method in METHODS:
        model = gc.load_model(path)
        cam = method(model)
        before = cam(x, class_idx=y)
        model.reset_parameters(rng=123)
        after = cam(x, class_idx=y)
        # A map that is constant (e.g. all zero) after randomisation has no ranking to compare.
        both = [i for i in range(len(x)) if np.ptp(before[i]) > 0 and np.ptp(after[i]) > 0]
        rho = np.mean([spearmanr(before[i].ravel(), after[i].ravel())[0] for i in both])
        results[method.__name__] = rho
        print(f"sanity check {method.__name__:15s}: mean Spearman rho {rho:.3f} "
              f"({len(x) - len(both)} of {len(x)} maps constant, left out)")
    assert results["GradCAM"] < 0.5


def test_gradcam_costs_one_forward_and_a_partial_backward(shapes):
    path, x, _, _ = shapes
    model = gc.load_model(path)
    x = np.concatenate([x, x])[:256]
    counts = {"forward": [0] * len(model.layers), "backward": [0] * len(model.layers)}

    def counted(i, kind, fn):
        def wrapper(*args, **kwargs):
            counts[kind][i] += 1
            return fn(*args, **kwargs)
        return wrapper

    for i, layer in enumerate(model.layers):
        layer.forward = counted(i, "forward", layer.forward)
        layer.backward = counted(i, "backward", layer.backward)
    cam = GradCAM(model)
    maps = cam(x)
    assert maps.shape == (256, SIZE, SIZE)
    top = len(model.layers) - 1
    assert counts["forward"] == [1] * len(model.layers)  # one forward pass (budget: two)
    assert counts["backward"] == [0] * (cam.layer_index + 1) + [1] * (top - cam.layer_index)

    def median_time(fn, repeats=5):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def forward_backward():
        logits = model.forward(x, training=False)
        model.backward(np.ones(logits.shape))

    t_forward = median_time(lambda: model.forward(x, training=False))
    t_both = median_time(forward_backward)
    t_cam = median_time(lambda: cam(x))
    print(f"Grad-CAM on 256 images: {t_cam * 1e3:.1f} ms; forward {t_forward * 1e3:.1f} ms, "
          f"forward+full backward {t_both * 1e3:.1f} ms (cpu, one thread)")


# --- pictures and the command line ---------------------------------------------------------------------

def test_class_means_and_display_panels():
    from gpucnn.cam_plots import class_means, display_panels
    rng = np.random.default_rng(0)
    maps, labels = rng.random((9, 4, 5)), np.array([0, 2, 2, 0, 1, 2, 0, 0, 2])
    means, counts = class_means(maps, labels, 4)
    for c in range(3):
        np.testing.assert_allclose(means[c], maps[labels == c].mean(axis=0))
    assert counts.tolist() == [4, 1, 4, 0] and np.all(means[3] == 0)
    image = rng.random((3, 4, 5))
    assert display_panels(image)[0].shape == (4, 5, 3)                       # RGB
    assert [p.shape for p in display_panels(image, "separate")] == [(4, 5)] * 3
    two = display_panels(image[:2])[0]
    np.testing.assert_allclose(two, (image[:2].sum(0) - image[:2].sum(0).min()) / np.ptp(image[:2].sum(0)))


def test_plots_write_pngs(tmp_path):
    from matplotlib.image import imread

    from gpucnn.cam_plots import plot_cam_grid, plot_class_averages, plot_overlay
    x, y, _ = make_shapes(6, size=12, channels=3, seed=0)
    maps = np.random.default_rng(0).random((6, 12, 12))
    written = [plot_cam_grid(x, maps, tmp_path / "grid.png", labels=y, predictions=(y + 1) % 4, ncols=4),
               plot_cam_grid(x, maps, tmp_path / "sep.png", channels="separate", ncols=3),
               plot_overlay(x[0], maps[0], tmp_path / "one.png", channels="separate",
                            channel_names=["tracks", "ECAL", "HCAL"]),
               plot_class_averages(x, maps, y, tmp_path / "avg.png", class_names=["a", "b", "c", "d"])]
    for path in written:
        assert imread(path).shape[0] > 50
    wide, narrow = imread(tmp_path / "sep.png"), imread(tmp_path / "grid.png")
    assert wide.shape[1] > narrow.shape[1]  # 3 samples x 3 channel panels vs 4 samples
    with pytest.raises(ValueError, match="same N, H, W"):
        plot_cam_grid(x, maps[:, :5], tmp_path / "bad.png")


def test_command_line(tmp_path, capsys):
    from gpucnn.cli import main
    model = gc.Sequential([gc.Conv2D(1, 4, 3, padding=1, rng=0), gc.ReLU(), gc.MaxPool2D(2),
                           gc.Conv2D(4, 4, 3, padding=1, rng=1), gc.ReLU(), gc.GlobalAvgPool2D(),
                           gc.Dense(4, 4, rng=2)])
    model.save(tmp_path / "model.npz")
    args = ["gradcam", "--model", str(tmp_path), "--dataset", "shapes", "--method", "gradcam++",
            "--indices", "0", "3", "7", "--out", str(tmp_path / "cam.png"), "--faithfulness",
            "--average", str(tmp_path / "avg.png"), "--backend", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gradcam++ heatmaps of 3 shapes test images" in out
    assert "pointing game" in out and "faithfulness gain" in out
    assert (tmp_path / "cam.png").exists() and (tmp_path / "avg.png").exists()
    assert main(["gradcam", "--model", str(tmp_path), "--dataset", "digits", "--backend", "cpu"]) == 1
    assert "the data has 10 classes" in capsys.readouterr().err


# --- batches: the same result for any batch_size, memory independent of N ---------------------------

EXPLAINERS = {
    "GradCAM": lambda m, b: GradCAM(m, batch_size=b),
    "GradCAMPlusPlus": lambda m, b: GradCAMPlusPlus(m, batch_size=b),
    "ScoreCAM": lambda m, b: ScoreCAM(m, batch_size=b),
    "GuidedGradCAM": lambda m, b: GuidedGradCAM(m, batch_size=b),
    "GuidedGradCAM.attribution": lambda m, b: GuidedGradCAM(m, batch_size=b).attribution,
    "GuidedBackprop": lambda m, b: GuidedBackprop(m, batch_size=b),
    "GradCAM.explain": lambda m, b: (lambda x, class_idx=None: GradCAM(m, batch_size=b).explain(x, class_idx).weights),
}


@pytest.mark.parametrize("class_idx", [None, "per-sample", "callable"])
@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_batched_explanations_equal_unbatched(name, class_idx):
    x = np.random.default_rng(3).standard_normal((7, 2, 6, 6))
    class_idx = {None: None, "per-sample": [0, 1, 2, 2, 1, 0, 1],
                 "callable": lambda z: z[:, 0] - z[:, 2]}[class_idx]
    model = small_model("cpu")
    whole = EXPLAINERS[name](model, 256)(x, class_idx=class_idx)
    # Equal up to rounding: BLAS may round a one-row product differently from a seven-row one, and a
    # callable target's central differences (step 1e-5) magnify that to about 1e-11.
    for batch_size in (1, 3):  # 3 does not divide 7: the last batch is short
        np.testing.assert_allclose(EXPLAINERS[name](model, batch_size)(x, class_idx=class_idx), whole,
                                   rtol=1e-9, atol=1e-13, err_msg=f"batch_size={batch_size}")


def test_batched_explain_keeps_every_field():
    x = np.random.default_rng(4).standard_normal((5, 2, 6, 6))
    model = small_model("cpu")
    whole, batched = GradCAM(model).explain(x), GradCAM(model, batch_size=2).explain(x)
    for field in ("activations", "gradients", "weights", "raw", "scores", "classes"):
        np.testing.assert_allclose(getattr(batched, field), getattr(whole, field), rtol=1e-12, atol=1e-15)
    assert ScoreCAM(model, batch_size=2).explain(x).gradients is None


def test_faithfulness_is_the_same_for_any_batch_size():
    x = np.random.default_rng(5).standard_normal((7, 2, 6, 6))
    model = small_model("cpu")
    maps = GradCAM(model)(x)
    maps[:, :2] = 0  # ties, broken at random
    for kwargs in ({}, {"class_idx": [0, 1, 2, 0, 1, 2, 0], "fill": "mean"}):
        whole = faithfulness(model, x, maps, **kwargs)
        for batch_size in (1, 3):
            part = faithfulness(model, x, maps, batch_size=batch_size, **kwargs)
            np.testing.assert_allclose(part.confidence, whole.confidence, rtol=1e-12)
            np.testing.assert_allclose(part.drop, whole.drop, rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(part.random_drop, whole.random_drop, rtol=1e-10, atol=1e-14)


def test_class_idx_of_the_wrong_length_names_the_whole_batch():
    x = np.random.default_rng(6).standard_normal((5, 2, 6, 6))
    with pytest.raises(ValueError, match=r"class_idx has 4 entries.*for a batch of 5"):
        GradCAM(small_model("cpu"), batch_size=2)(x, class_idx=[0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"N >= 1"):
        GradCAM(small_model("cpu"))(x[:0])


def _peak_extra_bytes(explain, n):
    """Peak bytes NumPy allocated (tracemalloc) while explaining n images, less the input and result."""
    import tracemalloc
    x = np.random.default_rng(0).standard_normal((n, 1, 16, 16)).astype(np.float32)
    explain(x[:2])  # compile kernels and fill caches outside the measurement
    tracemalloc.start()
    try:
        out = explain(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = sum(np.asarray(v).nbytes for v in (out if isinstance(out, tuple) else (out,)))
    return peak - result


@pytest.mark.parametrize("method", ["GradCAM", "ScoreCAM", "GuidedBackprop", "faithfulness"])
def test_peak_memory_does_not_grow_with_the_number_of_images(method):
    """Issue 12 item 18: 10k images took 5.1 GiB for 39 MiB of input. With batches of 100, four
    times the images may cost at most a little more than the larger result itself."""
    rng = np.random.default_rng(0)
    model = gc.Sequential([gc.Conv2D(1, 16, 3, padding=1, rng=rng), gc.ReLU(), gc.MaxPool2D(2),
                           gc.Conv2D(16, 16, 3, padding=1, rng=rng), gc.ReLU(), gc.GlobalAvgPool2D(),
                           gc.Dense(16, 4, rng=rng)])
    explain = {
        "GradCAM": GradCAM(model, batch_size=100),
        "ScoreCAM": ScoreCAM(model, batch_size=100),
        "GuidedBackprop": GuidedBackprop(model, batch_size=100),
        "faithfulness": lambda x: faithfulness(model, x, x[:, 0], n_random=1, batch_size=100).drop,
    }[method]
    small, large = _peak_extra_bytes(explain, 500), _peak_extra_bytes(explain, 2000)
    print(f"{method}: peak beyond input and result {small / 2**20:.1f} MiB for 500 images, "
          f"{large / 2**20:.1f} MiB for 2000")
    assert large < 1.3 * small
