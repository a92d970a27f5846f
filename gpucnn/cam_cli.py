"""``gpucnn gradcam``: heatmaps of a trained model on test images, written as PNG grids.

    gpucnn gradcam --model runs/digits/model.npz                    # Grad-CAM, 16 test digits
    gpucnn gradcam --model runs/shapes --dataset shapes --method gradcam++ --indices 0 5 9
    gpucnn gradcam --model runs/digits --average digits_average.png --faithfulness

``gpucnn.cli`` registers this module (``add_arguments``, ``run``) and turns
a ``CommandError`` into a one-line message and exit status 1.
"""

from __future__ import annotations

import os

import numpy as np

METHODS = ("gradcam", "gradcam++", "scorecam", "guided")


def add_arguments(p) -> None:
    """The options of ``gpucnn gradcam`` on the argparse (sub)parser ``p``."""
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model file, or a run folder holding model.npz (from gpucnn train)")
    p.add_argument("--dataset", default="digits", help="digits (default), mnist, shapes")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder (default data/mnist)")
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
    p.add_argument("--out", default="cam.png", metavar="PNG", help="the grid to write (default cam.png)")
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
    from .cli import CommandError, check_model_fits, load_dataset, set_threads

    set_threads(args.threads)
    path = os.path.join(args.model, "model.npz") if os.path.isdir(args.model) else args.model
    model = gc.load_model(path, backend=args.backend)
    _, (x_test, y_test), class_names = load_dataset(args.dataset, args.data)
    check_model_fits(model, x_test.shape[1:], len(class_names), f"model {path!r}")
    indices = list(range(min(16, len(x_test)))) if args.indices is None else args.indices
    bad = [i for i in indices if not 0 <= i < len(x_test)]
    if bad:
        raise CommandError(f"--indices {bad} outside the test set of {len(x_test)} images")
    if args.class_idx is not None and not 0 <= args.class_idx < len(class_names):
        raise CommandError(f"--class-idx {args.class_idx} is not a class of {args.dataset} "
                           f"(0..{len(class_names) - 1})")
    cam = _explainer(args.method, model, args.layer)

    x, y = x_test[indices], y_test[indices]
    predicted = model.forward(x, training=False)
    predicted = model.backend.to_numpy(predicted).argmax(axis=1)
    maps = cam(x, class_idx=args.class_idx)
    explained = "predicted class" if args.class_idx is None else f"class {class_names[args.class_idx]}"
    plot_cam_grid(x, maps, args.out, labels=y, predictions=predicted, class_names=class_names,
                  channels=args.channels,
                  title=f"{args.method} of layer {cam.layer_index} ({type(cam.layer).__name__}), {explained}")
    print(f"wrote {args.out}: {args.method} heatmaps of {len(indices)} {args.dataset} test images "
          f"({int((predicted == y).sum())} correctly classified), layer {cam.layer_index} {cam.layer!r}")

    if args.faithfulness:
        f = faithfulness(model, x, maps, class_idx=args.class_idx)
        for frac, drop, rnd in zip(f.fractions, f.drop, f.random_drop):
            print(f"  removing {frac:4.0%} of the pixels: confidence drops {drop:.3f} "
                  f"(top-ranked) vs {rnd:.3f} (random)")
        print(f"  faithfulness gain over random pixels: {f.gain:+.3f}")
    if args.dataset == "shapes":
        masks = _shapes_masks(x_test)
        if masks is not None:
            hits = pointing_game(maps, masks[indices])
            print(f"  pointing game: the heatmap's peak lies on the object in {hits.mean():.0%} of the images")
    if args.average:
        all_maps = np.concatenate([cam(x_test[i:i + 256], class_idx=args.class_idx)
                                   for i in range(0, len(x_test), 256)])
        plot_class_averages(x_test, all_maps, y_test, args.average, class_names=class_names,
                            title=f"{args.method}: mean heatmap per true class ({len(x_test)} test images)")
        print(f"wrote {args.average}: class-averaged heatmaps over {len(x_test)} test images")
    return 0
