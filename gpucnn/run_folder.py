"""Run folders of ``gpucnn train``: one run at a time, its learning-rate schedule, finding it again.

A run folder (``--out``, default ``runs/DATASET``) holds ``model.npz``,
``checkpoint.npz``, ``history.json``, ``metrics.json``, the plots,
``schedule.json`` (the learning-rate schedule in force, what ``--resume``
continues) and ``.gpucnn-train.lock`` (held while a run trains in it).
``gpucnn evaluate`` and ``gpucnn gradcam`` take the folder as ``--model`` and
read the data set from its ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import zipfile

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

import numpy as np


class RunFolderError(ValueError):
    """A run folder that cannot be used (unwritable, in use, not a run); the message says which and why."""


LOCK_FILE = ".gpucnn-train.lock"
SCHEDULE_FILE = "schedule.json"


@contextlib.contextmanager
def locked(out: str):
    """Create the run folder ``out``, check that it is writable, and hold it for this run alone.

    The lock is an exclusive ``flock`` on ``out/.gpucnn-train.lock``: the
    kernel drops it when the process ends, however it ends (kill -9 included),
    so a crashed run never leaves the folder locked. The file itself stays
    (removing it would let a third run lock a new file while the second
    still holds the old one). Where locks do not exist (Windows, some network
    filesystems) the run goes ahead unlocked, with a note on stderr.
    """
    try:
        os.makedirs(out, exist_ok=True)
        # Create, write and remove a file: what every save of the run will do.
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise RunFolderError(f"--out {out!r} is not a writable folder ({err.strerror or err})") from None
    if fcntl is None:
        print(f"gpucnn: note: no file locks here; make sure no other run uses {out!r}", file=sys.stderr)
        yield
        return
    fd = os.open(os.path.join(out, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"--out {out!r} is in use by another 'gpucnn train' (process {holder}); "
                                 f"wait for it to finish or choose another --out") from None
        except OSError as err:  # a filesystem without locks
            print(f"gpucnn: note: cannot lock {out!r} ({err.strerror}); make sure no other run uses it",
                  file=sys.stderr)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def plan_lr_schedule(out: str, lr: float | None, default_lr: float, epochs: int, resumed_after: int | None,
                     checkpoint_lr: float, checkpoint_base_lr: float):
    """The cosine schedule of this run, ``{"start_epoch", "start_lr", "epochs"}``, and why it is that one.

    Epoch e (from 0) trains at ``start_lr * (1 + cos(pi (e - start_epoch) / (epochs - start_epoch))) / 2``.
    ``lr`` is ``--lr`` (None when not given). A fresh run: start_epoch 0,
    start_lr ``lr`` or ``default_lr``. A resumed run (``resumed_after``
    finished epochs, ``checkpoint_lr`` the rate of the last of them) keeps the
    schedule of the run it continues (read from ``out/schedule.json``) when
    neither ``--lr`` nor ``--epochs`` changed it, so it ends exactly where an
    uninterrupted run would; with ``--lr`` a new cosine starts at that rate at
    the resumed epoch; with other ``--epochs`` and no ``--lr`` it starts at
    ``checkpoint_lr``, so the rate never jumps.
    """
    if resumed_after is None:
        return {"start_epoch": 0, "start_lr": default_lr if lr is None else lr, "epochs": epochs}, "a new run"
    try:
        with open(os.path.join(out, SCHEDULE_FILE)) as f:
            previous = json.load(f)
        previous = {key: previous[key] for key in ("start_epoch", "start_lr", "epochs")}
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    if resumed_after >= epochs:  # no epoch left to train: nothing to schedule
        return previous or {"start_epoch": 0, "start_lr": checkpoint_base_lr, "epochs": epochs}, \
            "no epoch left to train"
    if lr is not None:
        return {"start_epoch": resumed_after, "start_lr": lr, "epochs": epochs}, \
            "--lr given: a new cosine from the resumed epoch"
    if previous is None:
        return {"start_epoch": 0, "start_lr": checkpoint_base_lr, "epochs": epochs}, \
            f"no {SCHEDULE_FILE} in {out!r}: assuming the run was planned for {epochs} epochs"
    if previous["epochs"] == epochs:
        return previous, "kept from the run being resumed"
    return {"start_epoch": resumed_after, "start_lr": checkpoint_lr, "epochs": epochs}, \
        (f"--epochs changed from {previous['epochs']}: a new cosine from the last epoch's rate")


def save_schedule(out: str, schedule: dict) -> None:
    """Write ``schedule`` to ``out/schedule.json``, where a later ``--resume`` reads it."""
    with open(os.path.join(out, SCHEDULE_FILE), "w") as f:
        json.dump(schedule, f, indent=1)


def describe_schedule(schedule: dict) -> str:
    """``cosine from 2.00e-03 at epoch 1 to 0 after epoch 20`` (epochs counted from 1)."""
    return (f"cosine from {schedule['start_lr']:.2e} at epoch {schedule['start_epoch'] + 1} "
            f"to 0 after epoch {schedule['epochs']}")


def saved_epochs(checkpoint: str, not_before: float | None) -> int:
    """The finished epochs ``checkpoint`` records; 0 if it is missing, unreadable, or older than ``not_before``.

    Read from the file, not from the trainer: an interrupt may land after an
    epoch ended but before its checkpoint was renamed into place.
    """
    try:
        if not_before is not None and os.stat(checkpoint).st_mtime < not_before:
            return 0  # left by an earlier run in the same folder
        with np.load(checkpoint, allow_pickle=False) as arrays:
            return int(arrays["extra.trainer.epoch"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return 0


def find_run(model: str, dataset: str | None, data: str | None):
    """``(model file, dataset, data path, where the dataset came from)`` for ``evaluate`` and ``gradcam``.

    ``model`` is a model file or a run folder (one holding ``model.npz``). The
    data set and MNIST path default to the ones in the ``metrics.json`` beside
    the model (written by ``gpucnn train``), else digits.
    """
    path = os.path.join(model, "model.npz") if os.path.isdir(model) else model
    if os.path.isdir(model) and not os.path.exists(path):
        raise RunFolderError(f"--model {model!r} is a folder without model.npz "
                             f"(not a finished 'gpucnn train' run)")
    run = {}
    metrics_path = os.path.join(os.path.dirname(path), "metrics.json")
    if os.path.exists(metrics_path):
        try:
            with open(metrics_path) as f:
                run = json.load(f)
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{metrics_path!r} is unreadable ({err}); pass --dataset") from None
        if not isinstance(run, dict):
            raise RunFolderError(f"{metrics_path!r} is not a gpucnn metrics file; pass --dataset")
    source = "--dataset"
    if dataset is None:
        dataset, source = (run["dataset"], metrics_path) if "dataset" in run else ("digits", "the default")
    if data is None and run.get("dataset") == dataset:
        data = run.get("data")
    return path, dataset, data, source
