"""Plots write PNG files that read back as images with something drawn on them."""

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

import gpucnn as gc
from gpucnn import plots
from gpucnn.trainer import History


def read_png(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 50
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image


def model():
    return gc.Sequential([gc.Conv2D(1, 6, 3, padding=1, rng=0), gc.ReLU(), gc.MaxPool2D(2),
                          gc.Flatten(), gc.Dense(6 * 4 * 4, 3, rng=1)])


def test_history_curves(tmp_path):
    history = History()
    for epoch in range(4):
        history.append(epoch, {"loss": 1 / (epoch + 1), "accuracy": 0.5 + 0.1 * epoch,
                               "val_loss": 1.2 / (epoch + 1), "val_accuracy": 0.4 + 0.1 * epoch,
                               "lr": 0.1, "time": 1.0})
    backend_before = matplotlib.get_backend()
    path = plots.plot_history(history, tmp_path / "sub" / "curves.png")
    read_png(path)
    assert matplotlib.get_backend() == backend_before  # drawing never switches the caller's backend
    read_png(plots.plot_history(history.to_dict(), tmp_path / "from_json.png"))  # history.json form
    with pytest.raises(ValueError, match="no epochs"):
        plots.plot_history(History(), tmp_path / "empty.png")


def test_confusion_matrix_plot(tmp_path):
    counts = np.array([[5, 1, 0], [0, 7, 2], [1, 0, 9]])
    read_png(plots.plot_confusion_matrix(counts, tmp_path / "cm.png", ["a", "b", "c"]))
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")


def test_filters_and_feature_maps(tmp_path):
    m = model()
    read_png(plots.plot_filters(m, tmp_path / "filters.png"))
    x = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    read_png(plots.plot_feature_maps(m, x, tmp_path / "maps.png"))
    read_png(plots.plot_feature_maps(m, x, tmp_path / "pooled.png", layer=2))
    with pytest.raises(ValueError, match="not a Conv2D"):
        plots.plot_filters(m, tmp_path / "x.png", layer=1)
    with pytest.raises(ValueError, match="one image"):
        plots.plot_feature_maps(m, x[None], tmp_path / "x.png")
