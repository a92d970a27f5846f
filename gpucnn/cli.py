"""The ``gpucnn`` command line: train, evaluate, info, and the gradcam and bench tools.

``gpucnn train`` with no arguments trains the default CNN ("small") on the
embedded 8x8 digits and writes the model, its history, its test metrics and
plots to ``runs/digits``. Errors in the input (a missing file, an unknown
data set, a model that does not fit the data) print one line to stderr and
exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np

DATASETS = ("digits", "mnist", "shapes")

# Settings per data set that the command-line defaults take (each can be overridden).
DATASET_DEFAULTS = {
    "digits": {"epochs": 20, "shift": 1},
    "mnist": {"epochs": 5, "shift": 0},
    "shapes": {"epochs": 10, "shift": 0},
}
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SIZE = 2000, 500, 32

# Subcommands that live in other modules, each with add_arguments(parser) and run(args) -> int.
# They are imported only when asked for, so a missing optional dependency of one
# of them never breaks `gpucnn train`.
EXTERNAL_COMMANDS = {
    "gradcam": ("gpucnn.cam_cli", "Grad-CAM heat maps of a trained model"),
    "bench": ("gpucnn.bench.cli", "time kernels and training against references"),
}


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# --- data -----------------------------------------------------------------------------------

def load_dataset(name: str, data_path: str | None, limit: int | None = None):
    """``(x_train, y_train), (x_test, y_test), class_names`` for a data set of the command line.

    ``limit`` keeps at most that many training and that many test samples.
    """
    from . import datasets

    if name == "digits":
        train, test = datasets.load_digits()
        class_names = [str(d) for d in range(10)]
    elif name == "mnist":
        train, test = datasets.load_mnist(data_path or os.path.join("data", "mnist"))
        class_names = [str(d) for d in range(10)]
    elif name == "shapes":
        from .datasets.shapes import SHAPE_NAMES
        # Fixed seeds: the data set is the same whatever --seed the model gets.
        x, y, _ = datasets.make_shapes(SHAPES_TRAIN, size=SHAPES_SIZE, seed=0)
        xt, yt, _ = datasets.make_shapes(SHAPES_TEST, size=SHAPES_SIZE, seed=1)
        train, test, class_names = (x, y), (xt, yt), list(SHAPE_NAMES)
    else:
        raise CommandError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if limit is not None:
        if limit < 1:
            raise CommandError(f"--limit must be a positive number of samples, got {limit}")
        train, test = (train[0][:limit], train[1][:limit]), (test[0][:limit], test[1][:limit])
    return train, test, class_names


def check_model_fits(model, input_shape, num_classes: int, source: str) -> None:
    """Raise CommandError unless ``model`` maps (N, *input_shape) to (N, num_classes)."""
    shape = (1,) + tuple(input_shape)
    try:
        for layer in model.layers:
            shape = layer.output_shape(shape)
    except ValueError as err:
        raise CommandError(f"{source} does not match the data of shape {tuple(input_shape)}: {err}") from None
    if tuple(shape) != (1, num_classes):
        raise CommandError(f"{source} outputs {shape[1:]} per image, the data has {num_classes} classes")


def set_threads(threads: int) -> None:
    """``--threads``: ``gpucnn.set_threads`` (0 = all cores), a one-line error when negative."""
    if threads < 0:
        raise CommandError(f"--threads must be >= 0, got {threads}")
    from .cpu_threads import set_threads as set_library_threads
    set_library_threads(threads)


# --- train ------------------------------------------------------------------------------------

def add_train_arguments(p) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default, embedded), mnist, shapes")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST folder with the four IDX files or mnist.npz (default data/mnist)")
    p.add_argument("--model", default="small", help="small (default), lenet, jet")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: digits 20, mnist 5, shapes 10)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-annealed (default 2e-3)")
    p.add_argument("--shift", type=int, default=None, metavar="PIXELS",
                   help="random-shift augmentation of up to PIXELS (default: 1 for digits, else 0)")
    p.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the training set held out for validation (default 0)")
    p.add_argument("--backend", default="auto", help="auto (default), cpu, cuda, cuda-emu")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling, dropout, augmentation")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/DATASET)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.npz (written after every epoch)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use at most N training and N test samples (quick checks)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for kernels and BLAS (default 1; 0 = all cores)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and the result")


def run_train(args) -> int:
    import gpucnn as gc
    from . import metrics, plots
    from .callbacks import LearningRateScheduler, ModelCheckpoint
    from .datasets import RandomShift
    from .models import MODEL_NAMES, build_model
    from .trainer import Trainer

    if args.dataset not in DATASETS:
        raise CommandError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(DATASETS)}")
    if args.model not in MODEL_NAMES:
        raise CommandError(f"unknown model {args.model!r}; known models: {', '.join(MODEL_NAMES)}")
    defaults = DATASET_DEFAULTS[args.dataset]
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    shift = defaults["shift"] if args.shift is None else args.shift
    if epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise CommandError(f"--epochs ({epochs}), --batch-size ({args.batch_size}) and --lr ({args.lr}) "
                           f"must be positive")
    out = args.out or os.path.join("runs", args.dataset)
    set_threads(args.threads)
    backend = gc.get_backend(args.backend)

    (x_train, y_train), (x_test, y_test), class_names = load_dataset(args.dataset, args.data, args.limit)
    c, h, w = x_train.shape[1:]
    gc.seed(args.seed)
    model = build_model(args.model, c, len(class_names), (h, w), rng=args.seed)
    print(f"gpucnn {gc.__version__}: model {args.model!r} on {args.dataset} "
          f"({len(x_train)} training, {len(x_test)} test images of {c}x{h}x{w}), backend {backend.name}")
    print(model.summary((c, h, w)))

    optimizer = gc.Adam(model.parameters(), lr=args.lr)
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), optimizer, backend=backend)
    checkpoint = os.path.join(out, "checkpoint.npz")
    initial_epoch = 0
    if args.resume:
        if not os.path.exists(checkpoint):
            raise CommandError(f"--resume: no checkpoint at {checkpoint!r} (train once without --resume first)")
        initial_epoch = trainer.load_checkpoint(checkpoint)
        print(f"resuming after epoch {initial_epoch} from {checkpoint}")
    callbacks = [LearningRateScheduler(gc.CosineLR(epochs)), ModelCheckpoint(checkpoint, save_best_only=False)]
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)

    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                          validation_split=args.validation_split, seed=args.seed, callbacks=callbacks,
                          verbose=verbose, initial_epoch=initial_epoch,
                          augment=RandomShift(shift) if shift else None)
    seconds = time.perf_counter() - start
    result = trainer.evaluate(x_test, y_test)
    predicted = trainer.predict(x_test).argmax(axis=1)
    correct = int((predicted == y_test).sum())

    os.makedirs(out, exist_ok=True)
    model.save(os.path.join(out, "model.npz"))
    history.save(os.path.join(out, "history.json"))
    summary = {"test_accuracy": result["accuracy"], "test_loss": result["loss"], "epochs": len(history),
               "seconds": round(seconds, 3), "backend": backend.name, "dataset": args.dataset,
               "model": args.model, "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr,
               "shift": shift, "train_samples": len(x_train), "test_samples": len(x_test)}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plots.plot_history(history, os.path.join(out, "curves.png"))
    plots.plot_confusion_matrix(metrics.confusion_matrix(y_test, predicted, len(class_names)),
                                os.path.join(out, "confusion.png"), class_names)
    print(f"trained {len(history) - initial_epoch} epochs in {seconds:.1f} s on {backend.name}")
    print(f"test accuracy {result['accuracy']:.4f} ({correct}/{len(y_test)}), test loss {result['loss']:.4f}")
    print(f"wrote {out}/: model.npz, checkpoint.npz, history.json, metrics.json, curves.png, confusion.png")
    return 0


# --- evaluate ---------------------------------------------------------------------------------

def add_evaluate_arguments(p) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="a model file, e.g. runs/digits/model.npz")
    p.add_argument("--dataset", default="digits", help="digits (default), mnist, shapes")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder (default data/mnist)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N test samples")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 = all cores)")


def run_evaluate(args) -> int:
    import gpucnn as gc
    from . import metrics
    from .trainer import Trainer

    if args.dataset not in DATASETS:
        raise CommandError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(DATASETS)}")
    set_threads(args.threads)
    backend = gc.get_backend(args.backend)
    model = gc.load_model(args.model, backend=backend)
    _, (x_test, y_test), class_names = load_dataset(args.dataset, args.data, args.limit)
    check_model_fits(model, x_test.shape[1:], len(class_names), f"model {args.model!r}")
    # The optimizer is never stepped; the Trainer needs one to exist.
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=1.0), backend=backend)
    result = trainer.evaluate(x_test, y_test, batch_size=args.batch_size)
    counts = metrics.confusion_matrix(y_test, trainer.predict(x_test, args.batch_size), len(class_names))
    print(f"{args.model} on {args.dataset} ({len(x_test)} test images, backend {backend.name})")
    print(f"test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")
    print("confusion matrix (rows: true, columns: predicted):")
    width = max(len(str(counts.max())), max(len(n) for n in class_names)) + 1
    print(" " * width + "".join(f"{n[:width - 1]:>{width}}" for n in class_names))
    for name, row in zip(class_names, counts):
        print(f"{name[:width - 1]:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    return 0


# --- info -------------------------------------------------------------------------------------

def run_info(args) -> int:
    import platform

    import numba

    import gpucnn as gc
    from .backend import cuda_is_available

    print(f"gpucnn {gc.__version__} on Python {platform.python_version()} ({platform.machine()})")
    print("backends:")
    for name in ("cpu", "cuda", "cuda-emu"):
        try:
            gc.get_backend(name)
            state = "usable"
        except Exception as err:  # any failure to build a backend is what we report
            state = f"not usable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        print(f"  {name:<9} {state}")
    print(f"  auto   -> {'cuda' if cuda_is_available() else 'cpu'}")
    try:
        import cupy
        cupy_version = cupy.__version__
    except ImportError:
        cupy = None
        cupy_version = "not installed"
    if cupy is not None and cuda_is_available():
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            free, total = cupy.cuda.Device(i).mem_info
            print(f"GPU {i}: {props['name'].decode()} (compute capability {props['major']}.{props['minor']}), "
                  f"{total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    else:
        print("GPU: none usable")
    # Numba names its threading layer only once a parallel kernel has run; the cpu
    # backend's kernels are single-threaded (BLAS does the parallel work), so it may have none.
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started: the cpu kernels are serial, BLAS threads do the parallel work"
    print(f"NumPy {np.__version__}, Numba {numba.__version__} (threading layer {layer}, "
          f"{numba.get_num_threads()} threads), CuPy {cupy_version}")
    return 0


# --- entry point ------------------------------------------------------------------------------

def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; the options of an external command are added only when it is ``command``."""
    parser = argparse.ArgumentParser(prog="gpucnn", description="Train, inspect and time CNNs with gpucnn.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("train", help="train a model (no arguments: the default CNN on the 8x8 digits)")
    add_train_arguments(p)
    p.set_defaults(run=run_train)
    p = sub.add_parser("evaluate", help="evaluate a saved model on a test set")
    add_evaluate_arguments(p)
    p.set_defaults(run=run_evaluate)
    p = sub.add_parser("info", help="backends usable here, GPU, library versions")
    p.set_defaults(run=run_info)
    for name, (module_name, help_text) in EXTERNAL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == command:
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise CommandError(f"'gpucnn {name}' is not available here ({err})") from None
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    # Bad input of every kind (our checks raise ValueError/TypeError, a missing or
    # unreadable file OSError, an unusable backend RuntimeError, a diverging run
    # FloatingPointError) ends as one line, not a traceback.
    except (CommandError, OSError, ValueError, TypeError, RuntimeError, FloatingPointError) as err:
        print(f"gpucnn: error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("gpucnn: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
