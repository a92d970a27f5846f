"""The ``gpucnn`` command line: train, evaluate, info, and the gradcam and bench tools.

``gpucnn train`` with no arguments trains the default CNN ("small") on the
embedded 8x8 digits and writes the model, its history, its test metrics and
plots to ``runs/digits``. Errors in the input (a missing file, an unknown
data set, a model that does not fit the data) print one line to stderr and
exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import sys
import time
import warnings

import numpy as np

from . import run_folder

DATASETS = ("digits", "mnist", "shapes", "jets")

# Settings per data set that the command-line defaults take (each can be overridden).
DATASET_DEFAULTS = {
    "digits": {"epochs": 20, "shift": 1},
    "mnist": {"epochs": 5, "shift": 0},
    "shapes": {"epochs": 10, "shift": 0},
    "jets": {"epochs": 4, "shift": 0},
}
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SIZE = 2000, 500, 32
DEFAULT_LR = 2e-3

# Subcommands that live in other modules, each with add_arguments(parser) and run(args) -> int.
# They are imported only when asked for, so a missing optional dependency of one
# of them never breaks `gpucnn train`.
EXTERNAL_COMMANDS = {
    "gradcam": ("gpucnn.cam_cli", "Grad-CAM heat maps of a trained model"),
    "bench": ("gpucnn.bench.cli", "time kernels and training against references"),
    "selftest": ("gpucnn.selftest", "check kernels, training and Grad-CAM on a GPU against the CPU"),
    "jets": ("gpucnn.jets_cli", "top-quark and QCD jet images: generate, compare DNN and CNNs, explain"),
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
    elif name == "jets":
        from .jets_cli import load_jets_dataset
        train, test, class_names = load_jets_dataset(data_path)
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


def require_positive(**values) -> None:
    """Raise CommandError naming each option (``batch_size`` -> ``--batch-size``) whose value is not > 0."""
    bad = [f"--{name.replace('_', '-')} ({value})" for name, value in values.items() if not value > 0]
    if bad:
        raise CommandError(f"{' and '.join(bad)} must be positive")


def resume_command(args, out: str) -> str:
    """The command line that continues this ``gpucnn train`` run: its own arguments plus ``--resume``."""
    argv = [a for a in getattr(args, "argv", ["train"]) if a != "--resume"]
    if args.out is None:
        argv += ["--out", out]
    return shlex.join(["gpucnn", *argv, "--resume"])


def per_class_scores(y_true, predicted, class_names) -> dict:
    """``{class name: {"precision", "recall", "f1", "support"}}`` for metrics.json and the tables."""
    from . import metrics
    scores = metrics.precision_recall_f1(y_true, predicted, len(class_names))
    return {name: {key: (int(values[k]) if key == "support" else round(float(values[k]), 6))
                   for key, values in scores.items()}
            for k, name in enumerate(class_names)}


def format_per_class(scores: dict) -> list[str]:
    """The lines of a per-class precision / recall / F1 / support table."""
    width = max(8, max(len(name) for name in scores) + 1)
    lines = [f"{'class':>{width}} precision  recall      f1  support"]
    for name, s in scores.items():
        lines.append(f"{name:>{width}} {s['precision']:9.4f} {s['recall']:7.4f} {s['f1']:7.4f} {s['support']:8d}")
    return lines


def set_threads(threads: int) -> None:
    """``--threads``: ``gpucnn.set_threads`` (0 = all cores), a one-line error when negative."""
    if threads < 0:
        raise CommandError(f"--threads must be >= 0, got {threads}")
    from .cpu_threads import set_threads as set_library_threads
    set_library_threads(threads)


# --- train ------------------------------------------------------------------------------------

def add_train_arguments(p) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default, embedded), mnist, shapes, jets")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST folder with the four IDX files or mnist.npz (default data/mnist); "
                        "for jets a jets .npz (default data/jets/top_qcd_10k.npz, generated on first use)")
    p.add_argument("--model", default="small", help="small (default), lenet, jet, jet-small, dnn")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: digits 20, mnist 5, shapes 10, jets 4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate in (0, 1], cosine-annealed to 0 (default 2e-3; with --resume: "
                        "the resumed run's schedule, or a new cosine from LR at the resumed epoch)")
    p.add_argument("--shift", type=int, default=None, metavar="PIXELS",
                   help="random-shift augmentation of up to PIXELS (default: 1 for digits, else 0)")
    p.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the training set held out for validation (default 0)")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop when the validation loss has not improved for PATIENCE epochs and keep "
                        "the best epoch's weights (needs --validation-split)")
    p.add_argument("--backend", default="auto", help="auto (default), cpu, cuda, cuda-emu")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling, dropout, augmentation")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/DATASET)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.npz (written after every epoch); see --lr")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use at most N training and N test samples (quick checks)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for kernels and BLAS (default 1; 0 = all cores)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and the result")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of mpiexec (--batch-size is per rank); rank 0 writes DIR")
    p.add_argument("--collective-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --distributed: end the job when a rank waits this long for the others (default 300)")


def run_train(args) -> int:
    import gpucnn as gc
    from .models import MODEL_NAMES

    if args.dataset not in DATASETS:
        raise CommandError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(DATASETS)}")
    if args.model not in MODEL_NAMES:
        raise CommandError(f"unknown model {args.model!r}; known models: {', '.join(MODEL_NAMES)}")
    defaults = DATASET_DEFAULTS[args.dataset]
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    shift = defaults["shift"] if args.shift is None else args.shift
    require_positive(epochs=epochs, batch_size=args.batch_size)
    # Adam moves every weight by up to about lr per step: beyond 1 a run only overflows.
    if args.lr is not None and not 0 < args.lr <= 1:  # also refuses nan
        raise CommandError(f"--lr {args.lr} is not a usable Adam learning rate: use a value in (0, 1] "
                           f"(the default is {DEFAULT_LR:g})")
    if shift < 0:
        raise CommandError(f"--shift must be >= 0 pixels, got {shift}")
    if not 0 <= args.validation_split < 1:
        raise CommandError(f"--validation-split must lie in [0, 1), got {args.validation_split}")
    if args.early_stopping is not None:
        if args.early_stopping < 0:
            raise CommandError(f"--early-stopping PATIENCE must be >= 0 epochs, got {args.early_stopping}")
        if not args.validation_split:
            raise CommandError("--early-stopping watches the validation loss: give --validation-split too")
    out = args.out or os.path.join("runs", args.dataset)
    set_threads(args.threads)
    comm = start_distributed(args) if args.distributed else None
    backend = gc.get_backend(args.backend)

    (x_train, y_train), (x_test, y_test), class_names = load_dataset(args.dataset, args.data, args.limit)
    c, h, w = x_train.shape[1:]
    if shift >= min(h, w):
        raise CommandError(f"--shift {shift} must be smaller than the {h}x{w} images of {args.dataset}")
    # Rank 0 alone holds and writes the run folder.
    with run_folder.locked(out) if comm is None or comm.rank == 0 else contextlib.nullcontext():
        return _train_in_folder(args, out, epochs, shift, backend, (x_train, y_train), (x_test, y_test),
                                class_names, comm)


def start_distributed(args):
    """The communicator of ``--distributed``; ranks other than 0 print nothing (they train alike)."""
    from . import distributed

    if not args.collective_timeout > 0:
        raise CommandError(f"--collective-timeout must be positive, got {args.collective_timeout}")
    try:
        comm = distributed.init(backend=args.backend, timeout=args.collective_timeout)
    except ImportError as err:
        raise CommandError(str(err)) from None
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")
    return comm


def _train_in_folder(args, out, epochs, shift, backend, train, test, class_names, comm=None) -> int:
    """``gpucnn train`` once its options are checked and the run folder ``out`` is locked."""
    import gpucnn as gc
    from . import metrics, plots
    from .callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint
    from .datasets import RandomShift
    from .models import build_model
    from .trainer import NonFiniteLossError, Trainer

    (x_train, y_train), (x_test, y_test) = train, test
    c, h, w = x_train.shape[1:]
    gc.seed(args.seed)
    model = build_model(args.model, c, len(class_names), (h, w), rng=args.seed)
    print(f"gpucnn {gc.__version__}: model {args.model!r} on {args.dataset} "
          f"({len(x_train)} training, {len(x_test)} test images of {c}x{h}x{w}), backend {backend.name}")
    print(model.summary((c, h, w)))
    if comm is not None:
        print(f"data-parallel over {comm.size} ranks ({comm.name}): global batch {comm.size} x {args.batch_size}")

    optimizer = gc.Adam(model.parameters(), lr=DEFAULT_LR if args.lr is None else args.lr)
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), optimizer, backend=backend, comm=comm)
    checkpoint = os.path.join(out, "checkpoint.npz")
    initial_epoch = 0
    if args.resume:
        if not os.path.exists(checkpoint):
            raise CommandError(f"--resume: no checkpoint at {checkpoint!r} (train once without --resume first)")
        initial_epoch = trainer.load_checkpoint(checkpoint)
        if initial_epoch > epochs:
            raise CommandError(f"--resume: {checkpoint!r} has {initial_epoch} finished epochs, "
                               f"more than --epochs {epochs}")
        print(f"resuming after epoch {initial_epoch} from {checkpoint}")
    plan = None
    if trainer.is_main_process:  # the other ranks take rank 0's plan: only it reads and writes the folder
        plan = run_folder.plan_lr_schedule(out, args.lr, DEFAULT_LR, epochs,
                                           initial_epoch if args.resume else None,
                                           optimizer.lr, optimizer.base_lr)
        run_folder.save_schedule(out, plan[0])
    schedule, reason = plan if comm is None else comm.allgather_object(plan)[0]
    print(f"learning rate: {run_folder.describe_schedule(schedule)} ({reason})")
    optimizer.base_lr = schedule["start_lr"]  # what the checkpoints record as the base rate
    cosine = gc.CosineLR(max(schedule["epochs"] - schedule["start_epoch"], 1))
    callbacks = [LearningRateScheduler(lambda epoch, base_lr: cosine(epoch - schedule["start_epoch"], base_lr))]
    early = None
    if args.early_stopping is not None:
        early = EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True)
        callbacks.append(early)
    callbacks.append(ModelCheckpoint(checkpoint, save_best_only=False))
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)

    started, start = time.time(), time.perf_counter()
    try:
        # Overflow in NumPy means the run diverged: stop with one line, not a stream of warnings.
        with np.errstate(over="raise", invalid="raise"):
            history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                                  validation_split=args.validation_split, seed=args.seed, callbacks=callbacks,
                                  verbose=verbose, initial_epoch=initial_epoch,
                                  augment=RandomShift(shift) if shift else None)
    except NonFiniteLossError:
        raise
    except FloatingPointError as err:
        raise CommandError(f"training diverged in epoch {trainer.epoch + 1} (NumPy: {err}; lr "
                           f"{optimizer.lr:.2e}): lower --lr or check the scale of the data") from None
    except KeyboardInterrupt:
        saved = run_folder.saved_epochs(checkpoint, None if args.resume else started)
        if not saved:
            raise KeyboardInterrupt("no epoch of this run finished, nothing to resume") from None
        raise KeyboardInterrupt(f"{checkpoint} holds epoch {saved} of {epochs}; "
                                f"continue with: {resume_command(args, out)}") from None
    seconds = time.perf_counter() - start
    result = trainer.evaluate(x_test, y_test)
    predicted = trainer.predict(x_test).argmax(axis=1)
    correct = int((predicted == y_test).sum())
    per_class = per_class_scores(y_test, predicted, class_names)
    if not trainer.is_main_process:
        return 0

    model.save(os.path.join(out, "model.npz"))
    history.save(os.path.join(out, "history.json"))
    earlier_seconds = sum(history.history["time"][:initial_epoch])
    summary = {"test_accuracy": result["accuracy"], "test_loss": result["loss"], "epochs": len(history),
               "resumed_after_epoch": initial_epoch if args.resume else None,
               "seconds": round(seconds, 3), "seconds_total": round(earlier_seconds + seconds, 3),
               "backend": backend.name, "dataset": args.dataset, "model": args.model, "seed": args.seed,
               "batch_size": args.batch_size, "lr": schedule["start_lr"], "lr_schedule": {"kind": "cosine", **schedule},
               "shift": shift, "validation_split": args.validation_split,
               "train_samples": len(x_train), "test_samples": len(x_test), "image_shape": [c, h, w],
               "ranks": 1 if comm is None else comm.size}
    if args.data is not None:
        summary["data"] = args.data
    if early is not None:
        restored = early.best_weights is not None
        summary["early_stopping"] = {"patience": args.early_stopping, "best_epoch": early.best_epoch + 1,
                                     "stopped_after_epoch": None if early.stopped_epoch is None
                                     else early.stopped_epoch + 1, "restored_best_weights": restored}
    summary["per_class"] = per_class
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plots.plot_history(history, os.path.join(out, "curves.png"))
    plots.plot_confusion_matrix(metrics.confusion_matrix(y_test, predicted, len(class_names)),
                                os.path.join(out, "confusion.png"), class_names)
    trained = len(history) - initial_epoch
    print(f"trained {trained} epochs in {seconds:.1f} s on {backend.name}"
          + (f" ({earlier_seconds + seconds:.1f} s with the {initial_epoch} epochs before the resume)"
             if initial_epoch else ""))
    if early is not None:
        best = early.best_epoch + 1
        if early.stopped_epoch is not None:
            print(f"early stopping: no better validation loss for {args.early_stopping} epochs after epoch "
                  f"{best}; stopped after epoch {early.stopped_epoch + 1}")
        if restored:
            print(f"model.npz holds the weights of epoch {best}, the best validation loss")
        elif best != len(history):  # EarlyStopping keeps no weights from before a resume
            print(f"model.npz holds the weights of epoch {len(history)}: the best, epoch {best}, "
                  f"came before the resume and its weights were not kept")
    print(f"test accuracy {result['accuracy']:.4f} ({correct}/{len(y_test)}), test loss {result['loss']:.4f}")
    print(f"wrote {out}/: model.npz, checkpoint.npz, history.json, metrics.json, curves.png, confusion.png")
    return 0


# --- evaluate ---------------------------------------------------------------------------------

def add_saved_model_arguments(p) -> None:
    """--model, --dataset and --data: a trained model and the test data it is run on (evaluate, gradcam)."""
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model file, or a run folder holding model.npz (from gpucnn train)")
    p.add_argument("--dataset", default=None,
                   help="digits, mnist, shapes (default: the run's, from metrics.json beside the model; else digits)")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder (default: the run's, else data/mnist)")


def add_evaluate_arguments(p) -> None:
    add_saved_model_arguments(p)
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N test samples")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 = all cores)")


def run_evaluate(args) -> int:
    import gpucnn as gc
    from . import metrics
    from .trainer import Trainer

    path, dataset, data, source = run_folder.find_run(args.model, args.dataset, args.data)
    if dataset not in DATASETS:
        raise CommandError(f"unknown dataset {dataset!r} (from {source}); known datasets: {', '.join(DATASETS)}")
    set_threads(args.threads)
    backend = gc.get_backend(args.backend)
    model = gc.load_model(path, backend=backend)
    _, (x_test, y_test), class_names = load_dataset(dataset, data, args.limit)
    check_model_fits(model, x_test.shape[1:], len(class_names), f"model {path!r}")
    # The optimizer is never stepped; the Trainer needs one to exist.
    trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.SGD(model.parameters(), lr=1.0), backend=backend)
    result = trainer.evaluate(x_test, y_test, batch_size=args.batch_size)
    predicted = trainer.predict(x_test, args.batch_size).argmax(axis=1)
    counts = metrics.confusion_matrix(y_test, predicted, len(class_names))
    print(f"{path} on {dataset} (from {source}; {len(x_test)} test images, backend {backend.name})")
    print(f"test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")
    print("confusion matrix (rows: true, columns: predicted):")
    width = max(len(str(counts.max())), max(len(n) for n in class_names)) + 1
    print(" " * width + "".join(f"{n[:width - 1]:>{width}}" for n in class_names))
    for name, row in zip(class_names, counts):
        print(f"{name[:width - 1]:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    print("per class:")
    print("\n".join(format_per_class(per_class_scores(y_test, predicted, class_names))))
    return 0


# --- info -------------------------------------------------------------------------------------

def run_info(args) -> int:
    import platform

    import numba

    import gpucnn as gc
    from .backend import cuda_status
    from .environment import cuda_environment

    print(f"gpucnn {gc.__version__} on Python {platform.python_version()} ({platform.machine()})")
    print("backends:")
    for name in ("cpu", "cuda-emu"):
        try:
            gc.get_backend(name)
            state = "usable"
        except Exception as err:  # any failure to build a backend is what we report
            state = f"not usable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        print(f"  {name:<9} {state}")
    # The cuda backend's own check: a device answers and a test kernel runs (see backend.cuda_probe).
    cuda_usable, cuda_reason = cuda_status()
    print(f"  {'cuda':<9} {'usable' if cuda_usable else 'not usable'}: {cuda_reason}")
    print(f"  auto   -> {'cuda' if cuda_usable else 'cpu'}")
    cuda = cuda_environment()
    for device in cuda["devices"] if cuda_usable else ():
        print(f"GPU {device['index']}: {device['name']} (compute capability {device['compute_capability']}), "
              f"{device['memory_gib']:.1f} GiB, {device['free_gib']:.1f} GiB free")
    if not cuda_usable:
        print("GPU: none usable")
    # Numba names its threading layer only once a parallel kernel has run; the cpu
    # backend's kernels are single-threaded (BLAS does the parallel work), so it may have none.
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started: the cpu kernels are serial, BLAS threads do the parallel work"
    print(f"NumPy {np.__version__}, Numba {numba.__version__} (threading layer {layer}, "
          f"{numba.get_num_threads()} threads), CuPy {cuda['cupy'] or 'not installed'}")
    from .distributed import library_versions
    versions = library_versions()
    print(f"MPI: {versions['MPI'] or 'mpi4py not installed (pip install mpi4py mpich)'}; "
          f"NCCL: {versions['NCCL'] or 'not usable'}")
    return 0


# --- entry point ------------------------------------------------------------------------------

def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; the options of an external command are added only when it is ``command``."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="gpucnn", description="Train, inspect and time CNNs with gpucnn.")
    parser.add_argument("--version", action="version", version=f"gpucnn {__version__}")
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


def _show_warning_in_one_line(message, category, filename, lineno, file=None, line=None):
    """Warnings of a command as one line each, like its errors (Python's own format takes two)."""
    print(f"gpucnn: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning_in_one_line
        return _run(argv)


def _run(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        args.argv = argv  # for the resume hint of an interrupted train
        return int(args.run(args) or 0)
    # Bad input of every kind (our checks raise ValueError/TypeError, a missing or
    # unreadable file OSError, an unusable backend RuntimeError, a diverging run
    # FloatingPointError) ends as one line, not a traceback.
    except (CommandError, OSError, ValueError, TypeError, RuntimeError, FloatingPointError) as err:
        print(f"gpucnn: error: {err}", file=sys.stderr)
        from .distributed import abort_job
        abort_job("ended after the error above")  # in a job of several ranks the others would wait for us
    except KeyboardInterrupt as err:  # run_train's says what was saved and how to continue
        print(f"gpucnn: interrupted{f'; {err}' if str(err) else ''}", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    # ``python -m gpucnn.cli`` runs this file as __main__, a second copy of the module:
    # the subcommand modules raise gpucnn.cli.CommandError, which only the package's own
    # main() catches.
    from gpucnn.cli import main as package_main

    sys.exit(package_main())
