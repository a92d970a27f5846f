"""``gpucnn gradcam``: heatmaps of a trained model on test images, written as PNG grids.

    gpucnn gradcam --model runs/digits                  # Grad-CAM of 16 test digits -> runs/digits/cam.png
    gpucnn gradcam --model runs/shapes --method gradcam++ --indices 0 5 9 --out shapes_cam.png
    gpucnn gradcam --model runs/digits --average digits_average.png --faithfulness

The data set defaults to the one the run was trained on (its metrics.json).

``gpucnn.cli`` registers this module (``add_arguments``, ``run``) and turns
a ``CommandError`` into a one-line message and exit status 1.
"""

from __future__ import annotations

import os

import numpy as np

METHODS = ("gradcam", "gradcam++", "scorecam", "guided")


def add_arguments(p) -> None:
    """The options of ``gpucnn gradcam`` on the argparse (sub)parser ``p``."""
    from .cli import add_saved_model_arguments

    add_saved_model_arguments(p)
    p.add_argument("--method", default="gradcam", choices=METHODS,
                   help="gradcam (default), gradcam++, scorecam, or guided (Guided Grad-CAM)")
    p.add_argument("--layer", type=int, default=None, metavar="I",
                   help="index into the model's layers (default: the last convolution block)")
    p.add_argument("--indices", type=int, nargs="+", default=None, metavar="I",
                   help="test-set images to show (default: the first 16)")
    p.add_argument("--class-idx", type=int, default=None, metavar="K",
                   help="explain class K for every image (default: each image's predicted class)")
    p.add_argument("--channels", default="combined", choices=("combined", "separate"),
                   help="multi-channel images: one picture, or one panel per channel")
    p.add_argument("--out", default=None, metavar="PNG",
                   help="the grid to write (default: cam.png in the model's folder; .png is added to a name "
                        "without extension)")
    p.add_argument("--average", default=None, metavar="PNG",
                   help="also write the class-averaged heatmaps over the whole test set")
    p.add_argument("--faithfulness", action="store_true",
                   help="print the confidence drop when the top-ranked pixels are removed, against random ones")
    p.add_argument("--backend", default="auto", help="cpu, cuda, cuda-emu or auto (default)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for Numba and BLAS (default 1; 0 = all cores)")


def _explainer(method: str, model, layer):
    from .cam import GradCAM, GradCAMPlusPlus, GuidedGradCAM, ScoreCAM
    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM,
            "guided": GuidedGradCAM}[method](model, layer=layer)


def _shapes_masks(x_test):
    """The object masks of the shapes test set, or None if the images are not the ones regenerated here."""
    from .cli import SHAPES_SIZE, SHAPES_TEST
    from .datasets.shapes import make_shapes
    x, _, masks = make_shapes(SHAPES_TEST, size=SHAPES_SIZE, seed=1)
    return masks if x.shape == x_test.shape and np.array_equal(x, x_test) else None


def run(args) -> int:
    """Run ``gpucnn gradcam`` with parsed ``args``; returns the exit status (0)."""
    import gpucnn as gc

    from .cam import faithfulness, pointing_game
    from .cam_plots import plot_cam_grid, plot_class_averages
    from .cli import DATASETS, CommandError, check_model_fits, load_dataset, set_threads
    from .run_folder import find_run

    path, dataset, data, source = find_run(args.model, args.dataset, args.data)
    if dataset not in DATASETS:
        raise CommandError(f"unknown dataset {dataset!r} (from {source}); known datasets: {', '.join(DATASETS)}")
    out = os.path.join(os.path.dirname(path), "cam.png") if args.out is None else args.out
    set_threads(args.threads)
    model = gc.load_model(path, backend=args.backend)
    _, (x_test, y_test), class_names = load_dataset(dataset, data)
    check_model_fits(model, x_test.shape[1:], len(class_names), f"model {path!r}")
    indices = list(range(min(16, len(x_test)))) if args.indices is None else args.indices
    bad = [i for i in indices if not 0 <= i < len(x_test)]
    if bad:
        raise CommandError(f"--indices {bad} outside the test set of {len(x_test)} images")
    if args.class_idx is not None and not 0 <= args.class_idx < len(class_names):
        raise CommandError(f"--class-idx {args.class_idx} is not a class of {dataset} "
                           f"(0..{len(class_names) - 1})")
    cam = _explainer(args.method, model, args.layer)

    x, y = x_test[indices], y_test[indices]
    predicted = model.forward(x, training=False)
    predicted = model.backend.to_numpy(predicted).argmax(axis=1)
    maps = cam(x, class_idx=args.class_idx)
    explained = "predicted class" if args.class_idx is None else f"class {class_names[args.class_idx]}"
    written = plot_cam_grid(x, maps, out, labels=y, predictions=predicted, class_names=class_names,
                  channels=args.channels,
                  title=f"{args.method} of layer {cam.layer_index} ({type(cam.layer).__name__}), {explained}")
    print(f"wrote {written}: {args.method} heatmaps of {len(indices)} {dataset} test images "
          f"({int((predicted == y).sum())} correctly classified), layer {cam.layer_index} {cam.layer!r}")

    if args.faithfulness:
        f = faithfulness(model, x, maps, class_idx=args.class_idx)
        for frac, drop, rnd in zip(f.fractions, f.drop, f.random_drop):
            print(f"  removing {frac:4.0%} of the pixels: confidence drops {drop:.3f} "
                  f"(top-ranked) vs {rnd:.3f} (random)")
        print(f"  faithfulness gain over random pixels: {f.gain:+.3f}")
    if dataset == "shapes":
        masks = _shapes_masks(x_test)
        if masks is not None:
            hits = pointing_game(maps, masks[indices])
            print(f"  pointing game: the heatmap's peak lies on the object in {hits.mean():.0%} of the images")
    if args.average:
        all_maps = np.concatenate([cam(x_test[i:i + 256], class_idx=args.class_idx)
                                   for i in range(0, len(x_test), 256)])
        written = plot_class_averages(x_test, all_maps, y_test, args.average, class_names=class_names,
                                      title=f"{args.method}: mean heatmap per true class ({len(x_test)} test images)")
        print(f"wrote {written}: class-averaged heatmaps over {len(x_test)} test images")
    return 0
