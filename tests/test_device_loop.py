"""The device-resident training loop, CuPy-strict arrays on cuda-emu, the device Dropout RNG, and fit's output.

- Strict arrays: NumPy refuses a cuda-emu device array as it refuses a CuPy one.
- The loop: the same bits as a plain per-batch loop written here from the
  public API (forward, float loss, backward, step); host synchronisations
  counted through the backend stay within 2 per epoch plus one per progress
  refresh.
- Dropout: masks from a counter-based hash, the same on every backend, checked
  against a pure-Python evaluation of the hash.
- fit's terminal output: no progress frames into a file, one rate on the bar,
  a "compiling kernels" line when the first step is slow.
"""

import io
import sys
import time

import numpy as np
import pytest

import gpucnn as gc
from conftest import backend_unavailable_reason
from gpucnn import trainer as trainer_module
from gpucnn.backend import cuda_is_available
from gpucnn.backend.counter_rng import CounterRNG, lowbias32
from gpucnn.backend.strict import StrictArray
from gpucnn.trainer import Trainer

HOST_AND_EMU = ("cpu", "cuda-emu")


def backend_or_skip(name):
    reason = backend_unavailable_reason(name)
    if reason:
        pytest.skip(reason)
    return gc.get_backend(name)


def bars(n, seed, size=6, classes=3):
    """Images (n, 1, size, size) whose class is the row band holding a bright bar."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 2, :] += 1.0
    return x, y.astype(np.int64)


def bn_dropout_model():
    return gc.Sequential([gc.Conv2D(1, 4, 3, padding=1, rng=0), gc.BatchNorm2D(4), gc.ReLU(),
                          gc.MaxPool2D(2), gc.Flatten(), gc.Dropout(0.3, rng=1), gc.Dense(36, 3, rng=2)])


def make_trainer(backend, **kwargs):
    model = bn_dropout_model()
    return Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=0.01),
                   backend=backend, **kwargs)


# --- strict arrays ------------------------------------------------------------------------------

def test_numpy_refuses_a_cuda_emu_device_array():
    backend = backend_or_skip("cuda-emu")
    a = backend.asarray(np.arange(6.0).reshape(2, 3))
    assert isinstance(a, StrictArray)
    for stray in (lambda: np.asarray(a), lambda: np.exp(a), lambda: np.sum(a),
                  lambda: np.concatenate([a, a]), lambda: float(a), lambda: np.array([a]),
                  lambda: a.astype(np.float32) + np.ones(3)):
        with pytest.raises(TypeError, match="device array|ufunc"):
            stray()
    # xp computes on it, to_numpy is the way back; reductions stay 0-d device arrays, as CuPy's
    xp = backend.xp
    total = xp.exp(a).sum(axis=1)
    assert isinstance(total, StrictArray) and isinstance(a.max(), StrictArray)
    np.testing.assert_allclose(backend.to_numpy(total), np.exp(np.arange(6.0).reshape(2, 3)).sum(axis=1))
    assert float(a.max()) == 5.0  # one element: allowed, and counted as a synchronisation
    assert isinstance(np.float32(2) * a, StrictArray)  # a NumPy scalar operand gives way
    host = np.arange(3.0)
    device = backend.asarray(host)
    device += 1
    assert host.tolist() == [0.0, 1.0, 2.0]  # an upload copies, as on a GPU


def test_host_syncs_count_every_crossing():
    backend = backend_or_skip("cuda-emu")
    a = backend.asarray(np.ones((2, 2)))
    before = backend.host_syncs()
    backend.to_numpy(a)
    float(a.sum())
    bool(a[0, 0] > 0)
    a.sum().item()
    backend.to_numpy(np.ones(2))  # a host array crosses nothing
    assert backend.host_syncs() - before == 4


# --- the loop against a plain per-batch loop ------------------------------------------------------

def per_batch_reference(backend, x, y, epochs, batch_size, seed, x_val, y_val, augment=None):
    """What fit computes, written as the obvious loop: a float loss and a host accuracy per batch."""
    model = bn_dropout_model().to(backend)
    loss = gc.SoftmaxCrossEntropy().to(backend)
    optimizer = gc.Adam(model.parameters(), lr=0.01)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    host = gc.get_backend(backend).to_numpy
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch, 0]).permutation(len(x))
        model.layers[5].reseed(np.random.default_rng([seed, epoch, 1, 5]))
        augment_rng = np.random.default_rng([seed, epoch, 2])
        total_loss = total_correct = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], augment_rng)
            model.zero_grad()
            out = model.forward(xb, training=True)
            value = loss.forward(out, y[idx])
            model.backward(loss.backward())
            optimizer.step()
            total_loss += value * len(idx)
            total_correct += float((host(out).argmax(axis=1) == y[idx]).sum())
        history["loss"].append(total_loss / len(x))
        history["accuracy"].append(total_correct / len(x))
        val_loss = val_correct = 0.0
        for start in range(0, len(x_val), 256):
            out = model.forward(x_val[start:start + 256], training=False)
            val_loss += loss.forward(out, y_val[start:start + 256]) * len(out)
            val_correct += float((host(out).argmax(axis=1) == y_val[start:start + 256]).sum())
        history["val_loss"].append(val_loss / len(x_val))
        history["val_accuracy"].append(val_correct / len(x_val))
    return history, model.state_arrays()


def jitter(batch, rng):
    return batch + rng.normal(0, 0.05, batch.shape).astype(batch.dtype)


@pytest.mark.parametrize("name", HOST_AND_EMU)
@pytest.mark.parametrize("share, augment", [(0.5, None), (0.0, None), (0.5, jitter)],
                         ids=["resident", "batch-uploads", "host-augment"])
def test_fit_gives_the_bits_of_a_per_batch_loop(name, share, augment):
    backend_or_skip(name)
    x, y = bars(50, 0)
    x_val, y_val = bars(20, 1)
    expected, weights = per_batch_reference(name, x, y, 2, 8, 5, x_val, y_val, augment)
    trainer = make_trainer(name, device_data_share=share)
    history = trainer.fit(x, y, epochs=2, batch_size=8, seed=5, validation_data=(x_val, y_val),
                          augment=augment, verbose=0)
    for key, values in expected.items():
        assert history.history[key] == values, key
    got = trainer.model.state_arrays()
    assert all(np.array_equal(got[k], weights[k]) for k in weights)


def test_resident_training_set_gathers_batches_on_the_device(monkeypatch):
    backend = backend_or_skip("cuda-emu")
    x, y = bars(40, 2)
    seen = []
    for share, free in ((0.5, None), (0.5, 10), (0.0, None)):
        trainer = make_trainer("cuda-emu", device_data_share=share)
        if free is not None:  # a device too small for the data: batches come from the host
            monkeypatch.setattr(backend, "free_memory", lambda: free)
        forward = trainer.model.forward
        inputs = []
        monkeypatch.setattr(trainer.model, "forward",
                            lambda xb, training=True: inputs.append(type(xb)) or forward(xb, training))
        trainer.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
        seen.append(set(inputs))
        monkeypatch.undo()
    assert seen == [{StrictArray}, {np.ndarray}, {np.ndarray}]


# --- synchronisation budget ------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    """A stderr that claims to be a terminal, so fit draws its progress bar into it."""

    def isatty(self):
        return True


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_an_epoch_synchronises_twice_not_per_batch(verbose, monkeypatch):
    backend = backend_or_skip("cuda-emu")
    x, y = bars(96, 3)
    x_val, y_val = bars(30, 4)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    trainer = make_trainer("cuda-emu")
    trainer.progress_interval = 3600.0  # no refresh due within the test
    before = backend.host_syncs()
    trainer.fit(x, y, epochs=3, batch_size=8, seed=0, validation_data=(x_val, y_val), verbose=verbose)
    # 12 batches per epoch; one read of the training results and one of the validation results
    assert backend.host_syncs() - before == 2 * 3


def test_each_progress_refresh_adds_one_synchronisation(monkeypatch):
    backend = backend_or_skip("cuda-emu")
    x, y = bars(96, 3)
    stderr = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    trainer = make_trainer("cuda-emu")
    trainer.progress_interval = 0.0  # a refresh after every batch
    before = backend.host_syncs()
    trainer.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=1)
    assert backend.host_syncs() - before == 2 * (1 + 12)


def test_non_finite_loss_names_the_first_bad_batch_after_the_epoch():
    backend_or_skip("cuda-emu")
    x, y = bars(40, 6)
    x[13, 0, 0, 0] = np.nan  # batch 4 of 10 without shuffling
    model = gc.Sequential([gc.Flatten(), gc.Dense(36, 3, rng=0)])
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=0.1), backend="cuda-emu")
    with pytest.raises(trainer_module.NonFiniteLossError, match=r"epoch 1, batch 4 of 10"):
        trainer.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)


# --- device arrays as input -------------------------------------------------------------------------

def test_trainer_and_gradcam_take_device_arrays():
    backend = backend_or_skip("cuda-emu")
    x, y = bars(32, 7)
    trainer = make_trainer("cpu")
    on_host = trainer.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=0).history["loss"]
    trainer = make_trainer("cpu")
    from_device = trainer.fit(backend.asarray(x), backend.asarray(y), epochs=1, batch_size=8, seed=0,
                              verbose=0).history["loss"]
    assert from_device == on_host
    np.testing.assert_array_equal(trainer.predict(backend.asarray(x[:4])), trainer.predict(x[:4]))
    cam = gc.GradCAM(trainer.model)
    np.testing.assert_array_equal(cam(backend.asarray(x[:4])), cam(x[:4]))


@pytest.mark.gpu
def test_trainer_and_gradcam_take_cupy_arrays():
    if not cuda_is_available():
        pytest.skip("no CUDA GPU on this machine")
    import cupy
    x, y = bars(32, 7)
    for name in ("cpu", "cuda"):
        trainer = make_trainer(name)
        on_host = trainer.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=0).history["loss"]
        trainer = make_trainer(name)
        from_gpu = trainer.fit(cupy.asarray(x), cupy.asarray(y), epochs=1, batch_size=8, seed=0,
                               verbose=0).history["loss"]
        assert from_gpu == on_host
        cam = gc.GradCAM(trainer.model)
        np.testing.assert_array_equal(cam(cupy.asarray(x[:4])), cam(x[:4]))


# --- Dropout's device RNG ----------------------------------------------------------------------------

def python_bits(keys, draw, size):
    """The documented hash, in Python integers: the reference the xp version must reproduce."""
    key0, key1 = keys
    stream = lowbias32(key0 ^ lowbias32(draw ^ key1))
    return [lowbias32(lowbias32((j * 0x9E3779B9 + stream) & 0xFFFFFFFF) ^ key1) for j in range(size)]


def test_counter_rng_bits_follow_the_documented_hash():
    rng = CounterRNG(np.random.default_rng(3))
    first, second = rng.bits(np, 50), rng.bits(np, 50)
    keys = tuple(int(k) for k in np.random.default_rng(3).integers(0, 2**32, size=2, dtype=np.uint64))
    assert first.dtype == np.uint32
    assert first.tolist() == python_bits(keys, 0, 50) and second.tolist() == python_bits(keys, 1, 50)


def test_dropout_masks_are_uniform_and_independent():
    rng = CounterRNG(np.random.default_rng(0))
    masks = [rng.keep_mask(np, (400, 500), 0.3) for _ in range(2)]
    for mask in masks:
        assert abs(mask.mean() - 0.7) < 0.004  # 200k draws: std 0.001
        # neighbours and rows are not correlated
        assert abs((mask[:, 1:] & mask[:, :-1]).mean() - 0.49) < 0.005
        assert abs(mask.mean(axis=1).std() - np.sqrt(0.21 / 500)) < 0.004
    assert abs((masks[0] & masks[1]).mean() - 0.49) < 0.005  # successive draws independent


@pytest.mark.parametrize("name", ["cuda-emu", "cuda"])
def test_dropout_masks_are_the_same_on_every_backend(name):
    backend = backend_or_skip(name)
    x = np.ones((4, 3, 5, 5), np.float32)
    outputs = []
    for backend_name in ("cpu", name):
        layer = gc.Dropout(0.4).to(backend_name)
        layer.reseed(np.random.default_rng([7, 0, 1, 2]))
        on = gc.get_backend(backend_name)
        outputs.append(tuple(on.to_numpy(layer.forward(on.asarray(x))) for _ in range(2)))
    assert not np.array_equal(outputs[0][0], outputs[0][1])  # a new mask per forward
    for host, device in zip(*outputs):
        np.testing.assert_array_equal(host, device)
    assert backend is gc.get_backend(name)


# --- what fit prints (issue 12 item 15) ---------------------------------------------------------------

def test_no_progress_frames_into_a_file(capsys):
    x, y = bars(48, 8)
    make_trainer("cpu").fit(x, y, epochs=2, batch_size=8, seed=0, verbose=1)
    captured = capsys.readouterr()
    assert captured.err == ""  # pytest's capture is not a terminal: no tqdm frames
    lines = captured.out.strip().splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]


def test_the_bar_shows_one_rate(monkeypatch):
    x, y = bars(48, 8)
    stderr = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    trainer = make_trainer("cpu")
    trainer.progress_interval = 0.0
    forward = trainer.model.forward

    def slow_forward(xb, training=True):  # slower than tqdm's 0.1 s between frames
        time.sleep(0.12)
        return forward(xb, training)

    monkeypatch.setattr(trainer.model, "forward", slow_forward)
    trainer.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=1)
    frames = [f for f in stderr.getvalue().split("\r") if "loss" in f]
    assert frames and all(f.count("img/s") == 1 for f in frames), frames


@pytest.mark.parametrize("first_step_seconds, expected", [(1.5, 1), (0.0, 0)])
def test_slow_first_step_says_compiling_kernels(first_step_seconds, expected, monkeypatch, capsys):
    monkeypatch.setattr(trainer_module, "_warm_backends", set())  # as in a fresh process
    monkeypatch.setattr(trainer_module, "COMPILE_NOTICE_AFTER", 1.0)
    x, y = bars(16, 9)
    trainer = make_trainer("cpu")
    forward, calls = trainer.model.forward, []

    def first_forward_compiles(xb, training=True):
        if not calls:
            time.sleep(first_step_seconds)
        calls.append(1)
        return forward(xb, training)

    monkeypatch.setattr(trainer.model, "forward", first_forward_compiles)
    trainer.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=2)
    assert capsys.readouterr().out.count("compiling kernels") == expected
    calls.clear()  # a slow first step again, but the backend is warm now: no notice
    trainer.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=2)
    assert "compiling kernels" not in capsys.readouterr().out
