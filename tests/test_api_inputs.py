"""Bad arguments to the Python API are clear errors at the call that received them (issue 12, items
12 and 13): each names the function or layer and the argument; NumPy integers count as ints."""

import re

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.arguments import as_float, as_int
from gpucnn.models import build_model
from gpucnn.trainer import Trainer


def _trainer(loss=None, out_features=3):
    model = gc.Sequential([gc.Flatten(), gc.Dense(4, out_features, rng=0)])
    return Trainer(model, loss or gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=0.1),
                   backend="cpu")


def _data(n=6):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, n)


# --- the one helper ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), np.prod((3,))])
def test_as_int_takes_every_integer_type(value):
    out = as_int(value, "n", "f", minimum=1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, "n must be an int"), (3.0, TypeError, "n must be an int"),
    ("3", TypeError, "n must be an int"), (np.float32(3), TypeError, "n must be an int"),
    (0, ValueError, "n must be a positive int, got 0"),
])
def test_as_int_refuses(value, error, message):
    with pytest.raises(error, match=f"^f: {message}"):
        as_int(value, "n", "f", minimum=1)


@pytest.mark.parametrize("value, error, message", [
    (float("nan"), ValueError, r"lr must be a finite number > 0, got nan"),
    (float("inf"), ValueError, r"lr must be a finite number > 0, got inf"),
    (0.0, ValueError, r"lr must be a finite number > 0, got 0.0"),
    (True, TypeError, "lr must be a real number"), ("0.1", TypeError, "lr must be a real number"),
    (1j, TypeError, "lr must be a real number"),
])
def test_as_float_refuses(value, error, message):
    with pytest.raises(error, match=f"^f: {message}"):
        as_float(value, "lr", "f", low=0.0, low_open=True)


# --- item 13: NumPy integers where ints are expected --------------------------------------------

def test_numpy_integers_build_layers_and_models():
    dense = gc.Dense(np.prod((4, 4, 4)), np.int64(10), rng=0)
    conv = gc.Conv2D(np.int64(1), np.int32(8), np.int64(3), stride=np.int8(1), padding=(np.int64(1), 1), rng=0)
    pool = gc.MaxPool2D(np.int64(2), stride=np.int64(2))
    bn = gc.BatchNorm2D(np.int64(8))
    # Stored as Python ints: get_config must stay JSON-serialisable for model files.
    for value in (dense.in_features, dense.out_features, conv.in_channels, conv.out_channels,
                  *conv.kernel_size, *conv.stride, *conv.padding, *pool.kernel_size, bn.num_features):
        assert type(value) is int
    model = gc.Sequential([conv, bn, gc.ReLU(), pool, gc.Flatten(), gc.Dense(8 * 4 * 4, 10, rng=0)])
    assert model.forward(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    built = build_model("small", np.int64(1), np.int64(10), np.int64(8), rng=0)
    assert built.forward(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    assert build_model("lenet", 1, 10, (np.int64(8), np.int64(12)), rng=0) is not None
    assert gc.StepLR(np.int64(3)).step_size == 3 and gc.CosineLR(np.int64(4)).total_epochs == 4
    assert gc.EarlyStopping(patience=np.int64(2)).patience == 2
    assert gc.datasets.RandomShift(np.int64(1)).max_shift == 1


def test_numpy_integers_drive_the_trainer():
    x, y = _data(8)
    trainer = _trainer()
    history = trainer.fit(x, y, epochs=np.int64(2), batch_size=np.int64(4), initial_epoch=np.int64(0),
                          seed=0, verbose=0)
    assert len(history) == 2
    assert trainer.predict(x, batch_size=np.int64(3)).shape == (8, 3)
    assert set(trainer.evaluate(x, y, batch_size=np.int32(5))) == {"loss", "accuracy"}


@pytest.mark.parametrize("make, error, message", [
    (lambda: gc.Dense(4.0, 2), TypeError, r"Dense\(4.0, 2\): in_features must be an int"),
    (lambda: gc.Dense(True, 2), TypeError, "in_features must be an int"),
    (lambda: gc.Conv2D(1, 8, np.float64(3)), TypeError, "kernel_size must be an int"),
    (lambda: gc.BatchNorm2D(0), ValueError, "num_features must be a positive int"),
    (lambda: gc.BatchNorm2D(4, eps=0), ValueError, "eps must be a finite number > 0"),
    (lambda: gc.LeakyReLU(float("nan")), ValueError, "negative_slope must be a finite number"),
    (lambda: gc.Dropout(float("nan")), ValueError, r"p must be a finite number in \[0, 1\)"),
    (lambda: build_model("small", 1, 10, 8.0), TypeError, "image_size must be an int"),
    (lambda: build_model("small", 1.0, 10, 8), TypeError, "in_channels must be an int"),
])
def test_non_integers_and_bad_values_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


# --- item 12: pooling configuration -------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: gc.MaxPool2D(0), r"MaxPool2D\(kernel_size=0\): kernel_size must be a positive int, got 0"),
    (lambda: gc.AvgPool2D(0), r"AvgPool2D\(kernel_size=0\): kernel_size must be a positive int"),
    (lambda: gc.MaxPool2D(2, padding=-1), r"MaxPool2D\(kernel_size=2\): padding must be an int >= 0, got -1"),
    (lambda: gc.MaxPool2D(2, stride=0), "stride must be a positive int"),
    (lambda: gc.MaxPool2D((2, 0)), "kernel_size must be a positive int"),
])
def test_pool_configuration_errors_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "empty input" not in str(info.value)


def test_pool_geometry_checks_the_window_before_the_input():
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        gc.PoolGeometry.from_shape((1, 1, 0, 0), 0)


# --- item 12: optimizer arguments -------------------------------------------------------------

def _params():
    return gc.Sequential([gc.Dense(3, 2, rng=0)]).parameters()


@pytest.mark.parametrize("make, error, message", [
    (lambda p: gc.Adam(p, lr=float("nan")), ValueError, r"^Adam: lr must be a finite number > 0, got nan"),
    (lambda p: gc.Adam(p, lr=float("inf")), ValueError, r"^Adam: lr must be a finite number > 0, got inf"),
    (lambda p: gc.Adam(p, lr=-1e-3), ValueError, r"^Adam: lr must be a finite number > 0"),
    (lambda p: gc.Adam(p, lr="1e-3"), TypeError, r"^Adam: lr must be a real number"),
    (lambda p: gc.Adam(p, eps=0), ValueError, r"^Adam: eps must be a finite number >= 1.17549e-38, got 0"),
    (lambda p: gc.Adam(p, eps=-1e-8), ValueError, r"^Adam: eps must be"),
    (lambda p: gc.Adam(p, eps=1e-45), ValueError, r"^Adam: eps must be"),
    (lambda p: gc.Adam(p, eps=float("nan")), ValueError, r"^Adam: eps must be"),
    (lambda p: gc.Adam(p, betas=(0.9, 1.0)), ValueError, r"^Adam: betas\[1\] must be a finite number in \[0, 1\)"),
    (lambda p: gc.Adam(p, betas=(float("nan"), 0.999)), ValueError, r"^Adam: betas\[0\] must be"),
    (lambda p: gc.Adam(p, betas=0.9), TypeError, r"^Adam: betas must be a pair"),
    (lambda p: gc.Adam(p, weight_decay=float("inf")), ValueError, r"^Adam: weight_decay must be a finite number >= 0"),
    (lambda p: gc.AdamW(p, lr=float("nan")), ValueError, r"^AdamW: lr must be a finite number > 0"),
    (lambda p: gc.AdamW(p, eps=0.0), ValueError, r"^AdamW: eps must be"),
    (lambda p: gc.AdamW(p, weight_decay=-0.1), ValueError, r"^AdamW: weight_decay must be a finite number >= 0"),
    (lambda p: gc.SGD(p, lr=float("inf")), ValueError, r"^SGD: lr must be a finite number > 0"),
    (lambda p: gc.SGD(p, lr=0.1, momentum=1.0), ValueError, r"^SGD: momentum must be a finite number in \[0, 1\)"),
    (lambda p: gc.SGD(p, lr=0.1, momentum=float("nan")), ValueError, r"^SGD: momentum must be"),
    (lambda p: gc.SGD(p, lr=0.1, momentum=-0.5), ValueError, r"^SGD: momentum must be"),
    (lambda p: gc.SGD(p, lr=0.1, weight_decay=float("nan")), ValueError, r"^SGD: weight_decay must be"),
    (lambda p: gc.StepLR(0), ValueError, r"^StepLR: step_size must be a positive int"),
    (lambda p: gc.StepLR(2.5), TypeError, r"^StepLR: step_size must be an int"),
    (lambda p: gc.CosineLR(10, min_lr=float("nan")), ValueError, r"^CosineLR: min_lr must be"),
])
def test_optimizer_arguments_are_refused_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make(_params())


def test_smallest_allowed_eps_keeps_zero_gradient_updates_finite():
    """A parameter whose gradient is exactly zero (a dead unit) must not turn into 0/0 = NaN:
    with the smallest eps Adam accepts, the update stays finite for float32 weights."""
    from gpucnn.optim import MIN_ADAM_EPS
    model = gc.Sequential([gc.Dense(3, 2, rng=0)])
    for betas in ((0.9, 0.999), (0.0, 0.0), (0.5, 0.9999)):
        model.zero_grad()
        before = model.layers[0].params["W"].copy()
        opt = gc.Adam(model.parameters(), lr=1e-3, betas=betas, eps=MIN_ADAM_EPS)
        for _ in range(3):
            opt.step()
        assert np.array_equal(model.layers[0].params["W"], before)


# --- item 12: trainer arguments -----------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda t, x, y: t.predict(x, batch_size=0), ValueError, r"Trainer.predict: batch_size must be a positive int, got 0"),
    (lambda t, x, y: t.predict(x, batch_size=2.0), TypeError, r"Trainer.predict: batch_size must be an int"),
    (lambda t, x, y: t.predict(x[:0]), ValueError, r"Trainer.predict: x is empty \(shape \(0, 1, 2, 2\)\)"),
    (lambda t, x, y: t.predict(x.astype(str)), TypeError, r"Trainer.predict: x must hold real numbers, got dtype <U"),
    (lambda t, x, y: t.predict(np.float32(1)), ValueError, r"Trainer.predict: x must have one entry per sample"),
    (lambda t, x, y: t.evaluate(x, y, batch_size=0), ValueError, r"Trainer.evaluate: batch_size must be a positive int"),
    (lambda t, x, y: t.evaluate(x, 3), ValueError, r"Trainer.evaluate: y must have one entry per sample .* got a scalar 3"),
    (lambda t, x, y: t.fit(x, 3, verbose=0), ValueError, r"Trainer.fit: y must have one entry per sample"),
    (lambda t, x, y: t.fit(x.astype(str), y, verbose=0), TypeError, r"Trainer.fit: x must hold real numbers, got dtype <U"),
    (lambda t, x, y: t.fit(x.astype(object), y, verbose=0), TypeError, r"Trainer.fit: x must hold real numbers, got dtype object"),
    (lambda t, x, y: t.fit(x.astype(np.complex64), y, verbose=0), TypeError, r"Trainer.fit: x must hold real numbers, got dtype complex64"),
    (lambda t, x, y: t.fit(x, y.astype(str), verbose=0), TypeError, r"Trainer.fit: y must hold real numbers"),
    (lambda t, x, y: t.fit(x[:0], y[:0], verbose=0), ValueError, r"Trainer.fit: x is empty"),
    (lambda t, x, y: t.fit(x, y, epochs=2.0, verbose=0), TypeError, r"Trainer.fit: epochs must be an int"),
    (lambda t, x, y: t.fit(x, y, batch_size=True, verbose=0), TypeError, r"Trainer.fit: batch_size must be an int"),
    (lambda t, x, y: t.fit(x, y, validation_data=(x, y.astype(complex)), verbose=0), TypeError,
     r"Trainer.fit \(validation_data\): y must hold real numbers"),
])
@pytest.mark.filterwarnings("error")  # complex data used to pass with only a ComplexWarning
def test_trainer_arguments_are_refused_naming_them(call, error, message):
    x, y = _data()
    trainer = _trainer()
    before = [p.value.copy() for p in trainer.optimizer.params]
    with pytest.raises(error, match=message):
        call(trainer, x, y)
    # Refused before any training step.
    assert all(np.array_equal(p.value, b) for p, b in zip(trainer.optimizer.params, before))


def test_integer_and_bool_images_are_still_accepted():
    x, y = _data()
    trainer = _trainer()
    assert trainer.predict((x > 0).astype(np.uint8)).shape == (6, 3)
    assert trainer.predict(x > 0).shape == (6, 3)


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan")])
def test_bce_targets_outside_unit_interval_are_refused(bad):
    loss = gc.BinaryCrossEntropyWithLogits()
    target = np.array([[0.0], [1.0], [bad]], np.float32)
    with pytest.raises(ValueError, match=r"BinaryCrossEntropyWithLogits\(\): target values must lie in \[0, 1\]"):
        loss.forward(np.zeros((3, 1), np.float32), target)
    # Inside [0, 1] (soft labels too) the loss is accepted and non-negative.
    assert loss.forward(np.full((3, 1), 2.0, np.float32), np.array([[0.0], [0.3], [1.0]], np.float32)) >= 0


def test_bce_targets_are_checked_by_fit():
    x, _ = _data()
    trainer = _trainer(gc.BinaryCrossEntropyWithLogits(), out_features=1)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        trainer.fit(x, np.array([0, 1, 2, 0, 1, 0], np.float32), verbose=0)


# --- item 19: summary() remembers the input shape ------------------------------------------------

def _shapes_column(text):
    """The output-shape column of a summary table (rows between the two rules)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    return [re.search(r"  (\(N[^)]*\)|\?)  ", line).group(1) for line in lines[rules[0] + 1:rules[1]]]


def test_summary_of_a_built_model_shows_shapes():
    model = build_model("small", 1, 10, 8, rng=0)
    shapes = _shapes_column(model.summary())
    assert "?" not in shapes and shapes[0] == "(N, 32, 8, 8)" and shapes[-1] == "(N, 10)"


def test_summary_remembers_the_shape_it_was_given_and_the_last_run():
    model = gc.Sequential([gc.Conv2D(1, 2, 3, rng=0), gc.ReLU(), gc.Flatten(), gc.Dense(2 * 4 * 4, 3, rng=0)])
    assert set(_shapes_column(model.summary())) == {"?"}
    assert "pass summary(input_shape=(C, H, W)) or run the model once" in model.summary()
    with pytest.raises(ValueError):
        model.summary((1, 9, 9))  # refused shapes are not remembered
    assert set(_shapes_column(model.summary())) == {"?"}
    model.summary((1, 6, 6))
    assert _shapes_column(model.summary())[0] == "(N, 2, 4, 4)"
    gc.GradCAM(model, layer=0)(np.zeros((2, 1, 6, 6), np.float32))  # runs the layers itself
    assert _shapes_column(model.summary())[0] == "(N, 2, 4, 4)"


def test_summary_after_an_explanation_shows_its_shapes():
    model = gc.Sequential([gc.Conv2D(1, 2, 3, padding=1, rng=0), gc.ReLU(), gc.GlobalAvgPool2D(),
                           gc.Dense(2, 3, rng=0)])
    gc.GradCAM(model)(np.zeros((1, 1, 7, 5), np.float32))
    assert _shapes_column(model.summary())[:2] == ["(N, 2, 7, 5)", "(N, 2, 7, 5)"]


def test_summary_of_a_dense_model_needs_no_shape():
    model = gc.Sequential([gc.Dense(5, 4, rng=0), gc.ReLU(), gc.Dense(4, 2, rng=0)])
    assert _shapes_column(model.summary()) == ["(N, 4)", "(N, 4)", "(N, 2)"]
