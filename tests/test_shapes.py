"""The synthetic shapes: shapes, dtypes, seeds, and masks that really are the drawn objects."""

import numpy as np
import pytest

from gpucnn.datasets.shapes import SHAPE_NAMES, class_colours, make_shapes


def test_arrays_and_dtypes():
    x, y, m = make_shapes(40, size=24, channels=3, seed=0)
    assert x.shape == (40, 3, 24, 24) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.int64
    assert m.shape == (40, 24, 24) and m.dtype == bool
    assert np.array_equal(np.bincount(y, minlength=4), [10] * 4)  # balanced
    assert set(np.unique(y)) == set(range(len(SHAPE_NAMES)))


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_shapes(8, seed=3), make_shapes(8, seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], make_shapes(8, seed=4)[0])
    rng_result = make_shapes(8, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(rng_result[0], a[0])


def test_masks_mark_the_bright_object_inside_the_image():
    x, y, m = make_shapes(200, size=20, seed=1, noise=0.1)
    for img, mask in zip(x[:, 0], m):
        assert mask.sum() >= 9
        # objects never touch the border, so no part is cut off
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        # every object pixel got at least 0.6 added to noise of std 0.1
        assert img[mask].mean() > 0.5 and abs(img[~mask].mean()) < 0.05
    noiseless, _, masks = make_shapes(20, size=20, seed=1, noise=0.0)
    assert np.all(noiseless[:, 0][~masks] == 0) and np.all(noiseless[:, 0][masks] >= 0.6)


def _bbox(mask):
    rows, cols = np.where(mask)
    return mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def test_each_class_has_its_geometry():
    x, y, m = make_shapes(400, size=32, seed=2)
    fill = {c: [] for c in range(4)}
    for label, mask in zip(y, m):
        box = _bbox(mask)
        fill[label].append(box.mean())
        if SHAPE_NAMES[label] == "square":
            assert box.all()
        if SHAPE_NAMES[label] == "cross":
            # a full bar each way, empty corners
            assert box.all(axis=1).any() and box.all(axis=0).any()
            assert not (box[0, 0] or box[0, -1] or box[-1, 0] or box[-1, -1])
        if SHAPE_NAMES[label] == "triangle":
            widths = box.sum(axis=1)
            assert np.all(np.diff(widths) >= 0) and widths[-1] > 2 * widths[0]  # apex up, base down
    assert np.mean(fill[SHAPE_NAMES.index("circle")]) == pytest.approx(np.pi / 4, abs=0.06)
    assert np.mean(fill[SHAPE_NAMES.index("triangle")]) == pytest.approx(0.5, abs=0.08)


def test_colour_images_carry_the_class_colour():
    x, y, m = make_shapes(400, size=20, channels=3, seed=5, colour_jitter=0.1)
    palette = class_colours(4, 3)
    for c in range(4):
        pixels = np.stack([x[i][:, m[i]].mean(axis=1) for i in np.where(y == c)[0]])  # (n_c, 3)
        mean_colour = pixels.mean(axis=0)
        # the brightness (0.6-1.0, mean 0.8) scales the class colour
        np.testing.assert_allclose(mean_colour / mean_colour.max(), palette[c] / palette[c].max(), atol=0.1)
    x5, _, _ = make_shapes(4, size=16, channels=5, seed=0)
    assert x5.shape == (4, 5, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=-1), "n must"), (dict(n=4, size=4), "size must"), (dict(n=4, channels=0), "channels must"),
    (dict(n=4, noise=-0.1), "must be >= 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_shapes(**kwargs)
