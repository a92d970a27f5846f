"""Pictures of explanations: heatmaps over their images, sample grids, class-averaged maps.

Like ``gpucnn.plots``, every function draws on matplotlib's Agg canvas (no
pyplot, no display needed, the caller's backend untouched), writes a PNG to
``path`` and returns the path.

Images are (C, H, W) and heatmaps (H, W) in [0, 1] (what ``GradCAM(model)(x)``
returns). How an image with several channels is shown is chosen by
``channels``:

- ``"combined"``: one picture -- grey for one channel, RGB for three, and
  the sum of the channels in grey otherwise;
- ``"separate"``: one panel per channel, side by side, each with the same
  heatmap on top (for jet images: tracks, ECAL and HCAL next to each other).
"""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .plots import save_figure

CHANNEL_MODES = ("combined", "separate")
HEAT_CMAP = "jet"


def _unit(a: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (a constant array becomes zeros)."""
    a = np.asarray(a, dtype=np.float64)
    span = a.max() - a.min() if a.size else 0.0
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def display_panels(image, channels: str = "combined") -> list[np.ndarray]:
    """The picture(s) of one image (C, H, W): a list of (H, W) grey or (H, W, 3) RGB arrays in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected one image of shape (C, H, W), got shape {image.shape}")
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
    if channels == "separate":
        return [_unit(c) for c in image]
    if image.shape[0] == 3:
        return [_unit(np.moveaxis(image, 0, -1))]
    return [_unit(image.sum(axis=0))]


def draw_picture(ax, picture) -> None:
    """Draw a grey (H, W) or RGB (H, W, 3) picture in [0, 1] on axes ``ax``, without ticks."""
    if picture.ndim == 2:
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_overlay(ax, picture, heatmap, alpha: float = 0.5, cmap: str = HEAT_CMAP) -> None:
    """Draw ``picture`` with ``heatmap`` (H, W, values in [0, 1]) over it, ``alpha`` opaque."""
    draw_picture(ax, picture)
    ax.imshow(heatmap, cmap=cmap, vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")


def add_heat_colorbar(fig, axes, label: str = "heat") -> None:
    """One colour bar beside ``axes`` for the heat-map scale [0, 1] that ``draw_overlay`` uses."""
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=HEAT_CMAP), ax=axes, shrink=0.8, aspect=30)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _check_maps(images, heatmaps):
    images, heatmaps = np.asarray(images), np.asarray(heatmaps)
    if images.ndim != 4 or heatmaps.shape != (images.shape[0],) + images.shape[2:]:
        raise ValueError(f"expected images (N, C, H, W) and heatmaps (N, H, W) of the same N, H, W; "
                         f"got {images.shape} and {heatmaps.shape}")
    return images, heatmaps


def plot_overlay(image, heatmap, path, channels: str = "combined", channel_names=None,
                 title: str | None = None) -> str:
    """One image (C, H, W): the picture(s) alone on top, with the heatmap (H, W) below."""
    panels = display_panels(image, channels)
    fig = Figure(figsize=(2.2 * len(panels) + 0.8, 4.6), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, picture in enumerate(panels):
        draw_picture(axes[0, j], picture)
        draw_overlay(axes[1, j], picture, heatmap)
        if channels == "separate":
            axes[0, j].set_title(channel_names[j] if channel_names else f"channel {j}", fontsize=9)
    add_heat_colorbar(fig, axes[1, :])
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def cam_grid_figure(images, heatmaps, labels=None, predictions=None, class_names=None,
                    ncols: int = 8, channels: str = "combined", title: str | None = None) -> Figure:
    """The figure ``plot_cam_grid`` writes (same arguments, without the path)."""
    images, heatmaps = _check_maps(images, heatmaps)
    n = len(images)
    per = images.shape[1] if channels == "separate" else 1
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    # 0.8 inch for the colour bar; each row has room for a two-line title above its panels.
    fig = Figure(figsize=(1.6 * ncols * per + 0.8, 2.0 * nrows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols * per, squeeze=False)
    name = (lambda c: class_names[c]) if class_names is not None else str
    for i in range(nrows * ncols):
        row, col = divmod(i, ncols)
        cells = axes[row, col * per:(col + 1) * per]
        if i >= n:
            for ax in cells:
                ax.axis("off")
            continue
        for ax, picture in zip(cells, display_panels(images[i], channels)):
            draw_overlay(ax, picture, heatmaps[i])
        parts = []
        if labels is not None:
            parts.append(f"true {name(int(labels[i]))}")
        if predictions is not None:
            parts.append(f"pred {name(int(predictions[i]))}")
        wrong = labels is not None and predictions is not None and labels[i] != predictions[i]
        # One line each: "true triangle / pred square" on one line is wider than a panel.
        cells[0].set_title("\n".join(parts), fontsize=8, color="red" if wrong else "black")
    add_heat_colorbar(fig, axes)
    if title:
        fig.suptitle(title)
    return fig


def plot_cam_grid(images, heatmaps, path, labels=None, predictions=None, class_names=None,
                  ncols: int = 8, channels: str = "combined", title: str | None = None) -> str:
    """A grid of heatmaps over their images (N, C, H, W) / (N, H, W), titled "true" over "predicted".

    A wrong prediction's title is red; a colour bar gives the heat scale. With
    ``channels="separate"`` each sample takes one panel per channel, side by side.
    """
    return save_figure(cam_grid_figure(images, heatmaps, labels, predictions, class_names, ncols, channels,
                                       title), path)


def class_means(values, labels, n_classes: int):
    """Mean of ``values`` (N, ...) per class: labels (N,) -> (means (K, ...), counts (K,)).

    A class with no sample has an all-zero mean and count 0.
    """
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(labels)
    if labels.shape != (len(values),):
        raise ValueError(f"expected one label per sample, got labels {labels.shape} for {len(values)} samples")
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    sums = np.zeros((n_classes,) + values.shape[1:])
    np.add.at(sums, labels, values)
    return sums / np.maximum(counts, 1).reshape((-1,) + (1,) * (values.ndim - 1)), counts


def plot_class_averages(images, heatmaps, labels, path, class_names=None, title: str | None = None) -> str:
    """Per class: the mean image (top row) and the mean heatmap over it (bottom row).

    Averaging over many samples shows where the model looks for a class in
    general, not on one example. Each class's mean heatmap is rescaled to
    [0, 1] so its pattern uses the full colour range; images with several
    channels are shown combined.
    """
    images, heatmaps = _check_maps(images, heatmaps)
    k = len(class_names) if class_names is not None else int(np.max(labels)) + 1
    mean_maps, counts = class_means(heatmaps, labels, k)
    mean_images, _ = class_means(images, labels, k)
    fig = Figure(figsize=(1.5 * k + 0.8, 3.4 + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    for c in range(k):
        picture = display_panels(mean_images[c])[0]
        draw_picture(axes[0, c], picture)
        draw_overlay(axes[1, c], picture, _unit(mean_maps[c]))
        label = class_names[c] if class_names is not None else str(c)
        axes[0, c].set_title(f"{label} (n={counts[c]})", fontsize=8)
    axes[0, 0].set_ylabel("mean image", fontsize=8)
    axes[1, 0].set_ylabel("mean heatmap", fontsize=8)
    add_heat_colorbar(fig, axes[1, :], label="heat, scaled")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
