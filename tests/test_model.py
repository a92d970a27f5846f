"""Sequential: chaining, summary, and checkpoints (bit-identical round trip, refusal of bad files)."""

import json
import zipfile

import numpy as np
import pytest

import gpucnn as gc
import gpucnn.npz


def _cnn(seed=0):
    gc.seed(seed)
    return gc.Sequential([
        gc.Conv2D(1, 4, 3, padding=1), gc.BatchNorm2D(4), gc.ReLU(), gc.MaxPool2D(2),
        gc.Conv2D(4, 6, (3, 2), stride=(1, 2), activation="relu"), gc.LeakyReLU(0.2), gc.AvgPool2D(2, padding=1),
        gc.Flatten(), gc.Dropout(0.3), gc.Dense(6 * 2 * 2, 3),
    ])


def test_save_load_gives_bit_identical_outputs(tmp_path, rng):
    model = _cnn()
    x = rng.standard_normal((5, 1, 10, 10)).astype(np.float32)
    model.forward(x, training=True)  # moves BatchNorm's running statistics off their defaults
    expected = model.forward(x, training=False)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = gc.load_model(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    np.testing.assert_array_equal(loaded.forward(x, training=False), expected)
    assert repr(loaded) == repr(model)


def test_save_keeps_float64(tmp_path, rng):
    model = _cnn().to(dtype=np.float64)
    path = tmp_path / "m64.npz"
    model.save(path)
    loaded = gc.load_model(path)
    assert loaded.dtype == np.float64
    x = rng.standard_normal((2, 1, 10, 10))
    np.testing.assert_array_equal(loaded.forward(x, training=False), model.forward(x, training=False))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    _cnn().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        gc.load_model(path)


def test_pickled_checkpoint_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.npz"
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # Under a member name model files may hold, so that only the pickle is wrong with it.
    np.savez(path, config=np.array(json.dumps(_cnn().get_config())), format_version=np.array(1),
             **{"extra.payload": np.array([Payload()], dtype=object)})
    with pytest.raises(ValueError, match="'extra.payload' carries pickled objects"):
        gc.load_model(path)
    assert not marker.exists()


def test_mismatched_checkpoint_names_the_array(tmp_path):
    path = tmp_path / "model.npz"
    model = _cnn()
    model.save(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["weights.0.W"] = np.zeros((4, 1, 5, 5), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"'0.W'.*\(4, 1, 5, 5\)"):
        gc.load_model(path)
    del arrays["weights.0.W"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="missing"):
        gc.load_model(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        gc.load_model(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a gpucnn model"):
        gc.load_model(tmp_path / "other.npz")
    bad = dict(config=np.array('{"layers": [{"class": "Nope", "config": {}}]}'), format_version=np.array(1))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="unknown layer type 'Nope'"):
        gc.load_model(tmp_path / "bad.npz")


def test_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = _cnn()
    model.save(path)
    good = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(gpucnn.npz.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        _cnn(seed=1).save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind
    assert zipfile.is_zipfile(path)


def test_summary_lists_shapes_and_parameter_counts():
    model = _cnn()
    text = model.summary(input_shape=(1, 10, 10))
    assert "(N, 4, 10, 10)" in text and "(N, 4, 5, 5)" in text and "(N, 3)" in text
    total = sum(v.size for layer in model.layers for v in layer.params.values())
    assert f"Total parameters: {total:,}" in text
    assert "40" in text.splitlines()[2]  # conv 4*1*3*3 + 4


def test_summary_rows_name_only_non_default_arguments():
    text = _cnn().summary(input_shape=(1, 10, 10))
    assert "0: Conv2D(in_channels=1, out_channels=4, kernel_size=(3, 3), padding=(1, 1))" in text
    assert "Conv2D(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), activation='relu')" in text
    assert "dilation" not in text and "bias" not in text


def test_state_arrays_is_a_snapshot(rng):
    model = _cnn()
    before = model.state_arrays()
    kept = {k: v.copy() for k, v in before.items()}
    x = rng.standard_normal((4, 1, 10, 10)).astype(np.float32)
    model.forward(x)  # BatchNorm's running statistics move
    model.zero_grad()
    model.backward(np.ones((4, 3), np.float32))
    gc.SGD(model.parameters(), lr=0.1).step()
    for key, value in before.items():
        np.testing.assert_array_equal(value, kept[key])
    assert any(not np.array_equal(v, model.state_arrays()[k]) for k, v in before.items())


def test_forward_backward_chain_equals_layer_by_layer(rng):
    model = _cnn()
    x = rng.standard_normal((2, 1, 10, 10)).astype(np.float32)
    y = model.forward(x, training=False)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = model.backward(dy)
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=False)
    np.testing.assert_array_equal(h, y)
    g = dy
    for layer in reversed(model.layers):
        g = layer.backward(g)
    np.testing.assert_array_equal(g, dx)


def test_sequential_refuses_non_layers():
    with pytest.raises(TypeError, match="item 1"):
        gc.Sequential([gc.ReLU(), lambda x: x])


def test_error_names_position_in_model():
    model = gc.Sequential([gc.Conv2D(1, 2, 3), gc.Flatten(), gc.Dense(5, 2)])
    with pytest.raises(ValueError, match=r"layer 2 Dense.*\(N, 5\).*\(1, 18\)"):
        model.forward(np.zeros((1, 1, 5, 5), np.float32))
