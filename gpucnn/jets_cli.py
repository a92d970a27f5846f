"""``gpucnn jets``: generate top-quark and QCD jet images, compare a DNN and CNNs on them, explain.

    gpucnn jets generate --n 10000 --out data/jets/top_qcd_10k.npz   # Pythia 8 + FastJet, every core
    gpucnn jets compare --data data/jets/top_qcd_10k.npz            # DNN, CNN 1 channel, CNN 3 channels
    gpucnn jets explain --out runs/jets                             # mean images and Grad-CAM maps

compare trains on one split with one seed: the DNN on the flattened 1-channel
(total pT) images, the CNN on the 1-channel images and the CNN on the
3-channel ones (charged pT, neutral pT, charged multiplicity), each
standardised per pixel with training statistics. It writes ``roc.png``
(background rejection 1/eps_B against signal efficiency, log scale),
``compare.md`` and ``compare.json``, and the models, to the run folder.
The jet mass alone, through its likelihood ratio estimated on the training
split, is the physicist's baseline beside them.

``gpucnn.cli`` registers this module (``add_arguments``, ``run``).
"""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np

CLASS_NAMES = ["QCD", "top"]  # label 0, label 1
DEFAULT_DATA = os.path.join("data", "jets", "top_qcd_10k.npz")
DEFAULT_N = 10000
# Measured with the default settings on a 2-core Intel Xeon at load ~1, 2 workers (100k jets per
# class: 1243 s); the same machine crowded by other jobs (load 5-11) made 14.6 jets/s.
MEASURED_JETS_PER_SECOND = 161.0
EFFICIENCIES = (0.3, 0.5)
VARIANTS = (  # name, model, channels
    ("DNN", "dnn", 1),
    ("CNN 1 channel", None, 1),
    ("CNN 3 channels", None, 3),
)
MASS_BINS = np.linspace(0.0, 400.0, 81)  # 5 GeV bins for the mass likelihood ratio


def peak_rss_mib() -> dict:
    """Peak resident memory in MiB of this process and of its (finished) child processes."""
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# --- data -----------------------------------------------------------------------------------

def load_or_generate(path: str | None, n_per_class: int = DEFAULT_N, seed: int = 0, workers=None):
    """``(images, labels, info)`` from ``path`` (a jets file of ours or a top-tagging file).

    With no ``path``, the default cache ``data/jets/top_qcd_10k.npz`` is read,
    or generated first with a stated cost.
    """
    from .datasets import jets

    if path is not None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no jets file at {path!r} (make one with: gpucnn jets generate --out {path})")
        if jets.read_cache_header(path) is not None:
            return jets.load_cache(path)
        return jets.load_jets(path)
    path = DEFAULT_DATA
    if not os.path.exists(path):
        minutes = 2 * n_per_class / MEASURED_JETS_PER_SECOND / 60
        print(f"generating {n_per_class} top and {n_per_class} QCD jets into {path} once: about "
              f"{minutes:.0f} minutes on 2 CPU cores ({MEASURED_JETS_PER_SECOND:g} jets/s measured there), "
              f"less with more cores")
    return jets.generate(n_per_class, seed=seed, workers=workers, cache=path)


def one_channel(images: np.ndarray) -> np.ndarray:
    """The total-pT image (N, 1, H, W) of 1- or 3-channel jet images (charged + neutral pT)."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ValueError(f"one_channel: expected 1 or 3 channels, got images of shape {images.shape}")
    return images[:, :1] + images[:, 1:2]


def split(images, labels, channels: int, seed: int, test_fraction: float = 0.2):
    """Standardised ``(x_train, y_train), (x_test, y_test)`` and the index arrays of the split."""
    from .datasets import jets

    if channels == 3 and images.shape[1] != 3:
        raise ValueError(f"the data has {images.shape[1]} channel(s); the 3-channel CNN needs charged "
                         f"and neutral pT (generated jets; the public top-tagging files have no charges)")
    train, test = jets.train_test_split(len(labels), labels, test_fraction, seed)
    x = one_channel(images) if channels == 1 else images
    x_train, x_test = jets.standardize(x[train], x[test])
    return (x_train, labels[train]), (x_test, labels[test]), (train, test)


def load_jets_dataset(path: str | None, seed: int = 0):
    """For ``gpucnn train --dataset jets``: ``(train, test, class_names)``, 3 channels where the data has them."""
    images, labels, _ = load_or_generate(path)
    train, test, _ = split(images, labels, images.shape[1], seed)
    return train, test, list(CLASS_NAMES)


# --- scores -----------------------------------------------------------------------------------

def scores_summary(y_true, scores) -> dict:
    """AUC, accuracy (score > 0.5) and background rejection 1/eps_B at the signal efficiencies."""
    from . import metrics

    out = {"auc": metrics.roc_auc(y_true, scores), "accuracy": float(np.mean((scores > 0.5) == (y_true == 1)))}
    for eff in EFFICIENCIES:
        out[f"rejection_{int(eff * 100)}"] = metrics.background_rejection(y_true, scores, eff)
    return out


def mass_likelihood_ratio(mass_train, y_train, mass_test) -> np.ndarray:
    """P(top | mass) for the test jets from the training split's mass histograms (5 GeV bins).

    The likelihood ratio is the best discriminant a single variable allows, so
    this is the fairest "jet mass alone" baseline.
    """
    top, _ = np.histogram(mass_train[y_train == 1], MASS_BINS, density=True)
    qcd, _ = np.histogram(mass_train[y_train == 0], MASS_BINS, density=True)
    bins = np.clip(np.digitize(mass_test, MASS_BINS) - 1, 0, len(top) - 1)
    total = top[bins] + qcd[bins]
    return np.where(total > 0, top[bins] / np.where(total > 0, total, 1.0), 0.5)


def train_variant(model_name, train, test, epochs: int = 4, batch_size: int = 64, lr: float = 1e-3,
                  seed: int = 0, backend="auto", verbose: int = 2):
    """Train zoo model ``model_name`` on ``train`` = (x (N, C, H, W), y (N,)) with Adam and a cosine
    schedule, score ``test``; returns (model, summary dict, P(top) of the test jets (M,))."""
    import gpucnn as gc

    from .models import build_model
    from .trainer import Trainer

    x_train, y_train = train
    x_test, y_test = test
    c, h, w = x_train.shape[1:]
    model = build_model(model_name, c, 2, (h, w), rng=seed)
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=lr), backend=backend)
    start = time.perf_counter()
    trainer.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, seed=seed,
                callbacks=[gc.LearningRateScheduler(gc.CosineLR(epochs))], verbose=verbose)
    seconds = time.perf_counter() - start
    scores = trainer.predict(x_test)[:, 1]
    summary = scores_summary(y_test, scores)
    summary.update(model=model_name, parameters=int(sum(np.prod(p.value.shape) for p in model.parameters())),
                   seconds=round(seconds, 1), backend=trainer.backend.name, epochs=epochs)
    return model, summary, scores


# --- plots ------------------------------------------------------------------------------------

def plot_rocs(curves: dict, path) -> str:
    """Background rejection 1/eps_B (log) against signal efficiency, one curve per entry of ``curves``.

    curves: name -> (y_true, scores).
    """
    from matplotlib.figure import Figure

    from . import metrics
    from .plots import save_figure

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, (y_true, scores) in curves.items():
        fpr, tpr, _ = metrics.roc_curve(y_true, scores)
        keep = (fpr > 0) & (tpr > 0)
        ax.plot(tpr[keep], 1.0 / fpr[keep], label=f"{name} (AUC {metrics.roc_auc(y_true, scores):.3f})")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("signal efficiency $\\epsilon_S$ (top)")
    ax.set_ylabel("background rejection $1/\\epsilon_B$ (QCD)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title("top tagging on truth-level jet images")
    return save_figure(fig, path)


def _log_image(ax, image, title: str) -> None:
    shown = np.log10(np.maximum(image, 1e-5))
    ax.imshow(shown, cmap="viridis", vmin=-5, vmax=max(-4.0, float(shown.max())))
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_explanation(mean_images, mean_maps, channel_names, path) -> str:
    """Per class (rows): the mean image of every channel (log scale), then the mean Grad-CAM map,
    and the map's contours over the mean total-pT image."""
    from matplotlib.figure import Figure

    from .plots import save_figure

    n_channels = mean_images.shape[1]
    fig = Figure(figsize=(2.2 * (n_channels + 2), 2.4 * len(CLASS_NAMES)), layout="constrained")
    axes = fig.subplots(len(CLASS_NAMES), n_channels + 2, squeeze=False)
    for k, name in enumerate(CLASS_NAMES):
        for c in range(n_channels):
            _log_image(axes[k, c], mean_images[k, c], f"{name}: mean {channel_names[c]}")
        axes[k, n_channels].imshow(mean_maps[k], cmap="inferno", vmin=0)
        axes[k, n_channels].set_title(f"{name}: mean Grad-CAM", fontsize=8)
        axes[k, n_channels].set_xticks([])
        axes[k, n_channels].set_yticks([])
        _log_image(axes[k, n_channels + 1], one_channel(mean_images[k][None])[0, 0], f"{name}: map over pT")
        axes[k, n_channels + 1].contour(mean_maps[k], levels=4, colors="white", linewidths=0.8)
    fig.suptitle("mean jet images (log10 of the pT fraction; multiplicity per jet) and class-averaged Grad-CAM")
    return save_figure(fig, path)


def plot_single_jets(images, maps, labels, scores, path) -> str:
    """A grid of single jets: total pT (log) with the Grad-CAM contours, title true class and P(top)."""
    from matplotlib.figure import Figure

    from .plots import save_figure

    n = len(images)
    cols = min(n, 6)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    total = one_channel(images)[:, 0]
    for i, ax in enumerate(axes):
        if i >= n:
            ax.axis("off")
            continue
        _log_image(ax, total[i], f"{CLASS_NAMES[labels[i]]}, P(top) {scores[i]:.2f}")
        ax.contour(maps[i], levels=[0.25, 0.5, 0.75], colors="white", linewidths=0.7)
    fig.suptitle("single test jets: total pT (log) and Grad-CAM of their true class (contours 0.25, 0.5, 0.75)")
    return save_figure(fig, path)


# --- the subcommands --------------------------------------------------------------------------

def add_arguments(p) -> None:
    """The subcommands of ``gpucnn jets`` on the argparse (sub)parser ``p``."""
    sub = p.add_subparsers(dest="jets_command", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="simulate top and QCD jets with Pythia 8 and FastJet into a .npz")
    g.add_argument("--n", type=int, default=DEFAULT_N, help=f"jets per class (default {DEFAULT_N})")
    g.add_argument("--out", default=DEFAULT_DATA, metavar="NPZ", help=f"the file to write (default {DEFAULT_DATA})")
    g.add_argument("--channels", type=int, default=3, choices=(1, 3))
    g.add_argument("--size", type=int, default=40, help="pixels per side (default 40)")
    g.add_argument("--pt-range", type=float, nargs=2, default=(550.0, 650.0), metavar=("LOW", "HIGH"))
    g.add_argument("--mpi", action="store_true", help="with multiple parton interactions (slower)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    g.add_argument("--chunk", type=int, default=500, help="jets per block and per seed (default 500)")
    g.set_defaults(jets_run=run_generate)

    for name, help_text, func in (("compare", "train the DNN and the 1- and 3-channel CNNs; ROC curves, table",
                                   run_compare),
                                  ("explain", "mean images and class-averaged Grad-CAM of the 3-channel CNN",
                                   run_explain)):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--data", default=None, metavar="NPZ",
                       help=f"a jets file (default {DEFAULT_DATA}, generated on first use)")
        c.add_argument("--out", default=os.path.join("runs", "jets"), metavar="DIR",
                       help="the folder of models, tables and plots (default runs/jets)")
        c.add_argument("--backend", default="auto", help="auto (default), cpu, cuda, cuda-emu")
        c.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 = all cores)")
        c.set_defaults(jets_run=func)
    c = sub.choices["compare"]
    c.add_argument("--model", default="jet-small", help="the CNN of the zoo (default jet-small; jet on a GPU)")
    c.add_argument("--epochs", type=int, default=4)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-annealed (default 1e-3)")
    c.add_argument("--seed", type=int, default=0, help="the split, the weights and the shuffling")
    c.add_argument("--quiet", action="store_true")
    e = sub.choices["explain"]
    e.add_argument("--jets", type=int, default=12, help="single jets in the grid (default 12)")


def run(args) -> int:
    """Run ``gpucnn jets ACTION`` with parsed ``args``; returns the exit status."""
    return args.jets_run(args)


def run_generate(args) -> int:
    from .datasets import jets

    start = time.perf_counter()
    header = jets.generate_to_file(args.out, args.n, pt_range=tuple(args.pt_range), size=args.size,
                                   channels=args.channels, mpi=args.mpi, seed=args.seed, workers=args.workers,
                                   chunk=args.chunk)
    stats = header["stats"]
    fractions = ", ".join(f"{p} {f:.0%}" for p, f in stats["pass_fraction"].items())
    print(f"wrote {args.out}: {2 * args.n} jets in {time.perf_counter() - start:.0f} s with {stats['workers']} "
          f"workers ({stats['jets_per_second']:.1f} jets/s); events passing: {fractions}")
    rss = peak_rss_mib()
    print(f"peak RSS: {rss['self']:.0f} MiB (this process), {rss['workers']:.0f} MiB (largest worker)")
    return 0


def _physics_sanity(info, labels) -> str:
    medians = {name: float(np.median(info["mass"][labels == k])) for k, name in enumerate(CLASS_NAMES)}
    return f"jet mass medians: top {medians['top']:.0f} GeV, QCD {medians['QCD']:.0f} GeV"


def run_compare(args) -> int:
    from .cli import CommandError, set_threads
    from .models import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        raise CommandError(f"unknown model {args.model!r}; known models: {', '.join(MODEL_NAMES)}")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise CommandError("--epochs, --batch-size and --lr must be positive")
    set_threads(args.threads)
    images, labels, info = load_or_generate(args.data)
    compare(images, labels, info, args.out, cnn=args.model, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, backend=args.backend, verbose=0 if args.quiet else 2)
    return 0


def compare(images, labels, info, out: str, cnn: str = "jet-small", epochs: int = 4, batch_size: int = 64,
            lr: float = 1e-3, seed: int = 0, backend="auto", verbose: int = 2) -> dict:
    """Train the DNN, the CNN on 1 channel and on 3 channels on one split; returns the rows of the table.

    images (N, 3, H, W), labels (N,), info with ``mass`` (from ``generate``).
    Writes to ``out``: roc.png, compare.md, compare.json and the models
    dnn1.npz, cnn1.npz, cnn3.npz; prints the table.
    """
    print(f"{len(labels)} jets ({int(labels.sum())} top), {images.shape[1]} channels of "
          f"{images.shape[2]}x{images.shape[3]}; {_physics_sanity(info, labels)}")
    os.makedirs(out, exist_ok=True)
    rows, curves = {}, {}
    for name, model_name, channels in VARIANTS:
        train, test, (train_idx, test_idx) = split(images, labels, channels, seed)
        model, summary, scores = train_variant(model_name or cnn, train, test, epochs, batch_size, lr, seed,
                                               backend, verbose)
        model.save(os.path.join(out, f"{model_name or 'cnn'}{channels}.npz"))
        rows[name], curves[name] = summary, (test[1], scores)
        print(f"{name}: AUC {summary['auc']:.4f}, accuracy {summary['accuracy']:.4f}, "
              f"1/eps_B {summary['rejection_30']:.0f} at 30%, {summary['rejection_50']:.0f} at 50%, "
              f"{summary['seconds']:.0f} s")
    mass_scores = mass_likelihood_ratio(info["mass"][train_idx], labels[train_idx], info["mass"][test_idx])
    rows["jet mass alone"] = scores_summary(labels[test_idx], mass_scores)
    curves["jet mass alone"] = (labels[test_idx], mass_scores)
    print(f"jet mass alone (likelihood ratio): AUC {rows['jet mass alone']['auc']:.4f}")

    plot_rocs(curves, os.path.join(out, "roc.png"))
    table = markdown_table(rows, len(train_idx), len(test_idx))
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"rows": rows, "seed": seed, "cnn": cnn, "sanity": _physics_sanity(info, labels)}, f, indent=1)
    print(table)
    print(f"wrote {out}/: roc.png, compare.md, compare.json, dnn1.npz, cnn1.npz, cnn3.npz")
    return rows


def markdown_table(rows: dict, n_train: int, n_test: int) -> str:
    """The comparison as a Markdown table (one row per classifier)."""
    lines = [f"Top tagging on truth-level jet images: {n_train} training, {n_test} test jets.", "",
             "| classifier | test AUC | accuracy | 1/eps_B at eps_S=30% | 1/eps_B at eps_S=50% | parameters "
             "| training time | backend |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        trained = "parameters" in r
        lines.append(f"| {name}{' (' + r['model'] + ')' if trained else ''} | {r['auc']:.4f} | {r['accuracy']:.4f} "
                     f"| {r['rejection_30']:.0f} | {r['rejection_50']:.0f} "
                     f"| {r['parameters']:,} | {r['seconds']:.0f} s ({r['epochs']} epochs) | {r['backend']} |"
                     if trained else
                     f"| {name} | {r['auc']:.4f} | {r['accuracy']:.4f} | {r['rejection_30']:.0f} "
                     f"| {r['rejection_50']:.0f} | 80 mass bins | - | - |")
    return "\n".join(lines) + "\n"


def run_explain(args) -> int:
    from .cli import CommandError, set_threads

    set_threads(args.threads)
    for name in ("compare.json", "cnn3.npz"):
        if not os.path.exists(os.path.join(args.out, name)):
            raise CommandError(f"no {name} in {args.out!r}: run 'gpucnn jets compare --out {args.out}' first")
    images, labels, info = load_or_generate(args.data)
    explain(images, labels, info, args.out, backend=args.backend, n_jets=args.jets)
    return 0


def explain(images, labels, info, out: str, backend="auto", n_jets: int = 12) -> dict:
    """Mean images and class-averaged Grad-CAM of ``out``/cnn3.npz on the test split of ``compare``.

    Each test jet is explained for its true class (where the model finds
    "top" in top jets, "QCD" in QCD jets). Writes ``out``/explain.png and
    single_jets.png, prints where the maps lie; returns the mean maps
    (2, H, W) and mean images (2, 3, H, W) per class (QCD, top).
    """
    import gpucnn as gc

    from .cam_plots import class_means
    from .datasets.jets import CHANNEL_NAMES
    from .trainer import Trainer

    with open(os.path.join(out, "compare.json")) as f:
        seed = json.load(f)["seed"]
    _, (x_test, y_test), (_, test_idx) = split(images, labels, 3, seed)
    model = gc.load_model(os.path.join(out, "cnn3.npz"), backend=backend)
    cam = gc.GradCAM(model)
    maps = np.concatenate([cam(x_test[i:i + 256], class_idx=y_test[i:i + 256])
                           for i in range(0, len(x_test), 256)])
    raw = images[test_idx]
    mean_images, counts = class_means(raw, y_test, 2)
    mean_maps, _ = class_means(maps, y_test, 2)
    plot_explanation(mean_images, mean_maps, CHANNEL_NAMES[3], os.path.join(out, "explain.png"))

    scores = Trainer(model, gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=1.0),
                     backend=model.backend).predict(x_test)[:, 1]
    pick = np.concatenate([np.flatnonzero(y_test == k)[:(n_jets + 1 - k) // 2] for k in (1, 0)])
    plot_single_jets(raw[pick], maps[pick], y_test[pick], scores[pick], os.path.join(out, "single_jets.png"))

    print(f"Grad-CAM of layer {cam.layer_index} ({cam.layer!r}) over {len(x_test)} test jets")
    size = images.shape[-1]
    centre = (size - 1) / 2
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - centre, cols - centre)
    for k, name in enumerate(CLASS_NAMES):
        m = mean_maps[k]
        total = one_channel(mean_images[k][None])[0, 0]
        peak = np.unravel_index(np.argmax(m), m.shape)
        corr = np.corrcoef(m.ravel(), total.ravel())[0, 1]
        print(f"  {name} ({counts[k]} jets): map peak at row {peak[0]}, column {peak[1]} (centre {centre:.1f}); "
              f"map-weighted mean distance from the centre {np.sum(m * radius) / np.sum(m):.1f} pixels "
              f"(pT-weighted: {np.sum(total * radius) / np.sum(total):.1f}); correlation with the mean pT image "
              f"{corr:.2f}")
    print(f"  {_physics_sanity(info, labels)}")
    print(f"wrote {out}/explain.png, {out}/single_jets.png")
    return {"mean_maps": mean_maps, "mean_images": mean_images}
