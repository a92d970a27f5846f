"""Plots write PNG files that read back as images with something drawn on them."""

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
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


def drawn(fig):
    """Lay out and render ``fig`` (so text extents are final); returns its renderer."""
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def text_boxes_overlap(texts, renderer):
    """Whether any two of the non-empty matplotlib Text objects overlap on the canvas."""
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("epochs", [1, 2, 7, 40])
def test_curves_have_integer_epoch_ticks_and_validation_lines(epochs):
    history = History()
    for epoch in range(epochs):
        history.append(epoch, {"loss": 1 / (epoch + 1), "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.4,
                               "lr": 0.1, "time": 1.0})
    fig = plots.history_figure(history)
    drawn(fig)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert sorted(line.get_label() for line in ax.get_lines()) == ["training", "validation"]
    # Without validation data only the training curve is drawn.
    no_val = History()
    no_val.append(0, {"loss": 1.0, "accuracy": 0.5, "lr": 0.1, "time": 1.0})
    assert [line.get_label() for line in plots.history_figure(no_val).axes[0].get_lines()] == ["training"]


@pytest.mark.parametrize("names", [["square", "circle", "cross", "triangle"], [str(d) for d in range(10)],
                                   [f"class number {k}" for k in range(12)]])
def test_confusion_labels_do_not_touch_and_fit_the_figure(names):
    k = len(names)
    fig = plots.confusion_figure(np.arange(k * k).reshape(k, k), names)
    renderer = drawn(fig)
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert not text_boxes_overlap(labels, renderer)
        for label in labels:
            box = label.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    # The cells stay readable: at least 0.3 inch each, however many classes.
    assert ax.get_window_extent(renderer).width / fig.dpi / k >= 0.3


def test_cam_grid_titles_do_not_touch_and_it_has_a_colour_bar():
    from gpucnn.cam_plots import cam_grid_figure
    from gpucnn.datasets.shapes import SHAPE_NAMES

    rng = np.random.default_rng(0)
    x, maps = rng.random((10, 1, 16, 16)), rng.random((10, 16, 16))
    labels = np.arange(10) % 4
    fig = cam_grid_figure(x, maps, labels=labels, predictions=(labels + 3) % 4, class_names=SHAPE_NAMES)
    renderer = drawn(fig)
    titles = [ax.title for ax in fig.axes]
    assert sum(bool(t.get_text()) for t in titles) == 10
    assert not text_boxes_overlap(titles, renderer)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)  # the heat scale of draw_overlay
