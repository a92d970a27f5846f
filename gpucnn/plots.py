"""Plots written straight to PNG files: training curves, confusion matrix, filters, feature maps.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so these
functions work on machines without a display and never change the plotting
backend of the program that calls them. Each returns the path it wrote.
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .layers import Conv2D


def save_figure(fig: Figure, path) -> str:
    """Render ``fig`` on an Agg canvas (no display, no pyplot) and write it to ``path``,
    creating the folder; returns the path written, as a string.

    The format follows the extension; a path without one gets ``.png`` appended
    (what matplotlib writes), so the returned path is always the file's real name.
    """
    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        path += ".png"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def _history_dict(history) -> dict:
    """A History, its ``.history`` dict, or a dict read from history.json."""
    return getattr(history, "history", history)


def history_figure(history) -> Figure:
    """The figure ``plot_history`` writes: loss and accuracy per epoch, training and validation."""
    h = _history_dict(history)
    if not h.get("loss"):
        raise ValueError("plot_history: the history holds no epochs")
    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = np.arange(1, len(h["loss"]) + 1)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, label, style in (("", "training", "-o"), ("val_", "validation", "-s")):
            values = np.array([np.nan if v is None else v for v in h.get(prefix + key, [])], dtype=float)
            if len(values) and not np.isnan(values).all():
                ax.plot(epochs[:len(values)], values, style, markersize=3, label=label)
        # min_n_ticks=1: with the default 2, a one-epoch axis falls back to fractional ticks.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("training curves")
    return fig


def plot_history(history, path) -> str:
    """Loss and accuracy per epoch (training and, when present, validation) side by side."""
    return save_figure(history_figure(history), path)


def confusion_figure(counts, class_names=None, title: str = "confusion matrix") -> Figure:
    """The figure ``plot_confusion_matrix`` writes; its size grows with the class count and names."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a square (K, K) matrix, got {counts.shape}")
    k = counts.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {k} classes")
    # Names longer than a cell is wide are written upright (at any slant the long
    # names of neighbouring cells would cross); the figure grows by the room the
    # names take below the x axis and left of the y axis (about 0.08 inch a character).
    label_room = 0.08 * max((len(n) for n in names), default=1)
    rotate = label_room > 0.3
    fig = Figure(figsize=(1.8 + 0.5 * k + label_room, 1.2 + 0.5 * k + (label_room if rotate else 0)),
                 layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if counts[i, j] > threshold else "black")
    ax.set_xticks(range(k), names, rotation=90 if rotate else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def plot_confusion_matrix(counts, path, class_names=None, title: str = "confusion matrix") -> str:
    """counts (K, K) (rows: true class, columns: predicted) as an annotated heat map."""
    return save_figure(confusion_figure(counts, class_names, title), path)


def _grid(images, path, title: str, cmap: str = "viridis") -> str:
    """Draw images (M, h, w) in a near-square grid, each scaled to its own range."""
    m = len(images)
    cols = math.ceil(math.sqrt(m))
    rows = math.ceil(m / cols)
    fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, image in zip(axes, images):
        ax.imshow(image, cmap=cmap, interpolation="nearest")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return save_figure(fig, path)


def _conv_layers(model):
    return [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]


def plot_filters(model, path, layer: int | None = None) -> str:
    """The filters of a Conv2D layer (the first one by default) as a grid.

    A filter W[k] (C, R, S) is shown as its channel mean, an R x S image.
    """
    convs = _conv_layers(model)
    if not convs:
        raise ValueError("plot_filters: the model has no Conv2D layer")
    index = convs[0] if layer is None else layer
    if index not in convs:
        raise ValueError(f"plot_filters: layer {index} is not a Conv2D layer (those are {convs})")
    conv = model.layers[index]
    w = conv.backend.to_numpy(conv.params["W"])
    return _grid(w.mean(axis=1), path, f"filters of layer {index} {tuple(w.shape)}", cmap="RdBu_r")


def plot_feature_maps(model, x, path, layer: int | None = None, max_maps: int = 32) -> str:
    """The activations of one input x (C, H, W) after ``layer`` (by default the first Conv2D).

    Shows up to ``max_maps`` channels of the (K, P, Q) output as a grid.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"plot_feature_maps: expected one image (C, H, W), got shape {x.shape}")
    convs = _conv_layers(model)
    index = (convs[0] if convs else 0) if layer is None else layer
    if not 0 <= index < len(model.layers):
        raise ValueError(f"plot_feature_maps: layer {index} does not exist "
                         f"(the model has {len(model.layers)} layers)")
    a = model.backend.asarray(x[None], dtype=model.dtype)
    for current in model.layers[:index + 1]:
        a = current.forward(a, training=False)
    maps = model.backend.to_numpy(a)[0]
    if maps.ndim != 3:
        raise ValueError(f"plot_feature_maps: layer {index} outputs shape {maps.shape[0:]}, not (K, P, Q) maps")
    return _grid(maps[:max_maps], path, f"feature maps after layer {index} {model.layers[index]!r}")
