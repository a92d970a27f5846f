"""Data: the embedded digits, IDX/npz MNIST readers on small files written here, augmentation."""

import gzip

import numpy as np
import pytest

from gpucnn import datasets
from gpucnn.datasets import RandomShift, load_digits, load_mnist, read_idx
from gpucnn.datasets.mnist import MNIST_FILES


def test_digits_shapes_range_and_stratified_split():
    (x, y), (xt, yt) = load_digits()
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    counts_train, counts_test = np.bincount(y, minlength=10), np.bincount(yt, minlength=10)
    total = counts_train + counts_test
    # stratified: each class's test share is 20% of its total, up to rounding
    assert np.all(np.abs(counts_test - 0.2 * total) <= 1)
    from sklearn.datasets import load_digits as sk
    ref = sk()
    # every test image is one of scikit-learn's images, scaled by 1/16, with its label
    lookup = {img.tobytes(): lab for img, lab in zip((ref.images / 16.0).astype(np.float32), ref.target)}
    assert all(lookup[img[0].tobytes()] == lab for img, lab in zip(xt, yt))


def test_digits_split_depends_only_on_seed():
    (x1, _), _ = load_digits(seed=3)
    (x2, _), _ = load_digits(seed=3)
    (x3, _), _ = load_digits(seed=4)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    (x4, _), (x5, _) = load_digits(test_fraction=0.5)
    assert abs(len(x4) - len(x5)) <= 1
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def write_idx(path, array, type_byte=0x08, compress=False, magic=None):
    header = bytes([0, 0, type_byte, array.ndim]) if magic is None else magic
    header += np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    path = tmp_path / ("images.idx3-ubyte" + (".gz" if compress else ""))
    write_idx(path, images, compress=compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, images)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    write_idx(tmp_path / "a.idx", values, type_byte=0x0C)
    out = read_idx(tmp_path / "a.idx")
    assert np.array_equal(out, values) and out.dtype == np.int32


def test_read_idx_bad_magic_truncated_and_not_gzip(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "bad", labels, magic=bytes([0x12, 0x34, 0x08, 1]))
    with pytest.raises(ValueError, match="bad magic number 12340801"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", labels)
    raw = (tmp_path / "short").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="holds 15 bytes; its header .* says 18"):
        read_idx(tmp_path / "short")
    (tmp_path / "plain.gz").write_bytes(raw)
    with pytest.raises(ValueError, match="cannot be read"):
        read_idx(tmp_path / "plain.gz")


def fake_mnist(folder, n_train=6, n_test=4, compress=(True, False, True, False)):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test).astype(np.uint8)}
    for (key, (stem, _)), gz in zip(MNIST_FILES.items(), compress):
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key], compress=gz)
    return arrays


def test_load_mnist_from_idx_files_plain_and_gz(tmp_path):
    arrays = fake_mnist(tmp_path)
    (x, y), (xt, yt) = load_mnist(tmp_path)
    assert x.shape == (6, 1, 28, 28) and xt.shape == (4, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, arrays["x_train"], atol=1e-4)
    assert np.array_equal(yt, arrays["y_test"]) and yt.dtype == np.int64


def test_load_mnist_from_npz(tmp_path):
    rng = np.random.default_rng(2)
    data = {"x_train": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_train": np.arange(3),
            "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.arange(2)}
    np.savez(tmp_path / "mnist.npz", **data)
    for where in (tmp_path, tmp_path / "mnist.npz"):
        (x, y), (xt, yt) = load_mnist(where)
        np.testing.assert_allclose(xt[:, 0] * 255, data["x_test"], atol=1e-4)
        assert np.array_equal(y, [0, 1, 2])


def test_load_mnist_missing_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message
    for stem, _ in MNIST_FILES.values():
        assert stem in message
    assert "mnist.npz" in message


def test_random_shift_moves_each_image_by_its_drawn_offset():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2, 5, 6)).astype(np.float32)
    out = RandomShift(2)(x, np.random.default_rng(7))
    offsets = np.random.default_rng(7).integers(-2, 3, size=(20, 2))
    for img, shifted, (dy, dx) in zip(x, out, offsets):
        expected = np.zeros_like(img)
        for c in range(2):
            for h in range(5):
                for w in range(6):
                    if 0 <= h - dy < 5 and 0 <= w - dx < 6:
                        expected[c, h, w] = img[c, h - dy, w - dx]
        assert np.array_equal(shifted, expected)
    assert np.array_equal(RandomShift(0)(x, rng), x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)


def test_make_shapes_is_exported():
    from gpucnn.datasets.shapes import make_shapes
    assert datasets.make_shapes is make_shapes
    images, labels, masks = datasets.make_shapes(8, size=16, seed=0)
    assert images.shape == (8, 1, 16, 16) and labels.shape == (8,) and masks.shape == (8, 16, 16)
