"""Trainer: history, determinism, evaluate/predict against hand computation, divergence errors, checkpoints."""

import math
import sys

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.trainer import History, NonFiniteLossError, Trainer

from conftest import backend_unavailable_reason

#: The backend make_trainer builds on; ``trainer_backend`` sets it per test.
TRAINER_BACKEND = "cpu"


@pytest.fixture(autouse=True, params=["cpu", "cuda-emu"])
def trainer_backend(request, monkeypatch):
    """Every test here (and in test_callbacks, which imports this fixture) runs on the host
    and on cuda-emu, whose CuPy-strict arrays catch host code that would break on a GPU."""
    reason = backend_unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(sys.modules[__name__], "TRAINER_BACKEND", request.param)
    return request.param


def blobs(n, seed, size=6):
    """Images (n, 1, size, size) whose class (0..2) is the row band holding a bright bar."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 2, :] += 1.0
    return x, y.astype(np.int64)


def small_model(seed=0, dropout=True):
    layers = [gc.Conv2D(1, 4, 3, padding=1, rng=seed), gc.ReLU(), gc.MaxPool2D(2), gc.Flatten()]
    if dropout:
        layers.append(gc.Dropout(0.3, rng=seed))
    layers.append(gc.Dense(36, 3, rng=seed + 1))
    return gc.Sequential(layers)


def make_trainer(seed=0, lr=0.01, dropout=True, model=None):
    model = model or small_model(seed, dropout)
    return Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=lr),
                   backend=TRAINER_BACKEND)


def test_fit_returns_history_per_epoch_and_learns():
    x, y = blobs(120, 0)
    trainer = make_trainer()
    history = trainer.fit(x, y, epochs=4, batch_size=16, validation_split=0.25, seed=3, verbose=0)
    assert isinstance(history, History) and len(history) == 4 and history.epoch == [0, 1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"):
        assert len(history.history[key]) == 4 and all(math.isfinite(v) for v in history.history[key])
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["lr"] == [0.01] * 4
    # The validation numbers are those of evaluate on the held-out last quarter.
    assert trainer.evaluate(x[90:], y[90:]) == pytest.approx(
        {"loss": history.history["val_loss"][-1], "accuracy": history.history["val_accuracy"][-1]})
    assert trainer.epoch == 4


def test_without_validation_the_val_entries_are_nan():
    x, y = blobs(40, 1)
    history = make_trainer().fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    assert all(math.isnan(v) for v in history.history["val_loss"])


def test_same_seed_same_result_other_seed_differs():
    x, y = blobs(64, 2)
    runs = []
    for fit_seed in (5, 5, 6):
        trainer = make_trainer()
        history = trainer.fit(x, y, epochs=2, batch_size=8, seed=fit_seed, verbose=0)
        runs.append((trainer.model.state_arrays(), history.history["loss"]))
    (w1, l1), (w2, l2), (w3, l3) = runs
    assert l1 == l2 and all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert l1 != l3  # the seed drives shuffling and dropout


def test_evaluate_weights_uneven_batches_by_size():
    x, y = blobs(23, 3)
    trainer = make_trainer()
    logits = trainer.backend.to_numpy(trainer.model.forward(x, training=False)).astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    expected_loss = -log_p[np.arange(23), y].mean()
    expected_acc = (logits.argmax(1) == y).mean()
    for batch_size in (1, 5, 100):
        result = trainer.evaluate(x, y, batch_size=batch_size)
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
        assert result["accuracy"] == pytest.approx(expected_acc)


def test_predict_gives_softmax_probabilities():
    x, _ = blobs(10, 4)
    trainer = make_trainer()
    probs = trainer.predict(x, batch_size=3)
    logits = trainer.backend.to_numpy(trainer.model.forward(x, training=False)).astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert probs.shape == (10, 3) and isinstance(probs, np.ndarray)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_single_logit_binary_model_sigmoid_and_accuracy():
    x, y = blobs(60, 5)
    y = (y == 0).astype(np.int64)  # bar in the top band or not
    model = gc.Sequential([gc.Flatten(), gc.Dense(36, 1, rng=0)])
    trainer = Trainer(model, gc.BinaryCrossEntropyWithLogits(), gc.Adam(model.parameters(), lr=0.05),
                      backend="cpu")
    history = trainer.fit(x, y, epochs=5, batch_size=10, seed=0, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    probs = trainer.predict(x)
    z = trainer.backend.to_numpy(model.forward(x, training=False)).astype(np.float64)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert trainer.evaluate(x, y)["accuracy"] == pytest.approx(((z[:, 0] > 0) == (y == 1)).mean())


def test_nan_input_stops_with_epoch_and_batch_named():
    x, y = blobs(40, 6)
    x[10, 0, 0, 0] = np.nan  # sample 10 sits in batch 3 of size 4 without shuffling
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 3 of 10"):
        make_trainer(dropout=False).fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow on the way to inf is the point
def test_diverging_learning_rate_raises_floating_point_error():
    x, y = blobs(40, 7)
    x *= 1e4
    with pytest.raises(FloatingPointError, match=r"epoch \d+, batch \d+"):
        make_trainer(lr=1e30, dropout=False).fit(x, y, epochs=20, batch_size=8, seed=0, verbose=0)


def test_verbose_levels(capsys):
    x, y = blobs(16, 8)
    make_trainer().fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    make_trainer().fit(x, y, epochs=2, batch_size=8, seed=0, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "img/s" in lines[1]


def test_bad_arguments_are_clear_errors():
    x, y = blobs(10, 9)
    trainer = make_trainer()
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        trainer.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        trainer.fit(x, y, validation_split=1.5, verbose=0)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    make_trainer().save_checkpoint(path)
    other = gc.Sequential([gc.Flatten(), gc.Dense(36, 3, rng=0)])
    trainer = Trainer(other, gc.SoftmaxCrossEntropy(), gc.Adam(other.parameters()), backend="cpu")
    with pytest.raises(ValueError, match="another architecture"):
        trainer.load_checkpoint(path)
    small_model().save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="weights only"):
        make_trainer().load_checkpoint(tmp_path / "plain.npz")


def test_history_round_trips_through_json(tmp_path):
    history = History()
    history.append(0, {"loss": 1.0, "accuracy": 0.5, "lr": 0.1, "time": 2.0})
    history.save(tmp_path / "h.json")
    import json
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["val_loss"] == [None] and data["loss"] == [1.0]
    again = History.from_dict(data)
    assert again.epoch == [0] and math.isnan(again.history["val_loss"][0]) and again.history["lr"] == [0.1]


class _RecordSamples(gc.Layer):
    """Identity layer that records, per training forward, which samples the batch holds
    (each test image is filled with its own index)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, training=True):
        if training:
            self.seen.extend(int(round(float(v))) for v in self.backend.to_numpy(x)[:, 0, 0, 0])
        return x

    def backward(self, dy):
        return dy


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_epoch_sees_every_sample_once_in_a_new_order(shuffle):
    """Shuffling draws a fresh order per epoch: the same samples, each once, in different orders
    (a loop that reused epoch 0's order would still pass the resume and same-seed tests)."""
    n, epochs = 40, 3
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, 2, 2)).copy()
    y = np.arange(n) % 3
    recorder = _RecordSamples()
    model = gc.Sequential([recorder, gc.Flatten(), gc.Dense(4, 3, rng=0)])
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=1e-6), backend="cpu")
    trainer.fit(x, y, epochs=epochs, batch_size=7, shuffle=shuffle, seed=0, verbose=0)
    orders = [recorder.seen[e * n:(e + 1) * n] for e in range(epochs)]
    assert len(recorder.seen) == epochs * n
    for order in orders:
        assert sorted(order) == list(range(n))
    if shuffle:
        assert len({tuple(order) for order in orders}) == epochs
        assert orders[0] != list(range(n))
    else:
        assert all(order == list(range(n)) for order in orders)
