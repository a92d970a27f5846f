"""Callbacks: hooks the Trainer calls around epochs (early stopping, checkpoints, lr schedules).

A callback overrides any of ``on_train_begin(trainer)``,
``on_epoch_begin(trainer, epoch)``, ``on_epoch_end(trainer, epoch, logs)`` and
``on_train_end(trainer)``; ``epoch`` counts from 0 and ``logs`` holds the
epoch's ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` and
``time``. Setting ``trainer.stop_training = True`` ends ``fit`` after the
current epoch.
"""

from __future__ import annotations

import math

from .arguments import as_int


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer) -> None:
        pass

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


class _Monitor:
    """Which log value to watch, whether smaller or larger is better, and what counts as better."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float = 0.0):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, abs(float(min_delta))

    def value(self, logs: dict) -> float:
        value = logs.get(self.monitor, math.nan)
        if math.isnan(value):
            available = ", ".join(k for k, v in logs.items() if not math.isnan(v))
            raise ValueError(f"{self.owner}: monitor {self.monitor!r} has no value in the epoch logs "
                             f"(available: {available}); pass validation data or monitor 'loss'")
        return value

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    ``mode`` "auto" maximises names containing "acc" and minimises the rest;
    an improvement must beat the best by more than ``min_delta``. With
    ``restore_best_weights`` the model gets the weights of its best epoch back
    when training ends. ``best_epoch`` and ``stopped_epoch`` (counted from 0,
    None if training ran to the end) say what happened. A run resumed from a
    checkpoint replays the history it inherits, so patience counts across the
    interruption; weights from before the interruption cannot be restored.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.monitor = monitor
        self.patience = as_int(patience, "patience", "EarlyStopping", minimum=0)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, trainer):
        self.best = self.best_epoch = self.stopped_epoch = self.best_weights = None
        self.wait = 0
        history = trainer.history.history
        for epoch, value in zip(trainer.history.epoch, history.get(self.monitor, [])):
            if not math.isnan(value):
                self._observe(epoch, value)

    def _observe(self, epoch: int, value: float) -> bool:
        if self._monitor.improves(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, trainer, epoch, logs):
        if self._observe(epoch, self._monitor.value(logs)):
            if self.restore_best_weights:
                self.best_weights = trainer.model.state_arrays()  # a snapshot (copies)
        elif self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_arrays(self.best_weights, source="EarlyStopping best weights")


class ModelCheckpoint(Callback):
    """Save the trainer's checkpoint (model, optimizer, epoch, seed, history) after epochs.

    ``path`` may hold ``{epoch}`` and log names, e.g. ``"ckpt-{epoch:02d}.npz"``
    (epoch counted from 1, the number of finished epochs). With
    ``save_best_only`` a file is written only when ``monitor`` improves (``mode``
    as in EarlyStopping). Files are written atomically; resume with
    ``Trainer.load_checkpoint``.
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto"):
        self.path = str(path)
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.monitor, self.save_best_only = monitor, bool(save_best_only)
        self.best = None

    def on_train_begin(self, trainer):
        self.best = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only:
            value = self._monitor.value(logs)
            if not self._monitor.improves(value, self.best):
                return
            self.best = value
        trainer.save_checkpoint(self.path.format(epoch=epoch + 1, **logs))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch.

    ``schedule(epoch, base_lr) -> lr``, e.g. ``gpucnn.StepLR(10, 0.1)`` or
    ``gpucnn.CosineLR(total_epochs)``; the lr depends only on the epoch, so a
    resumed run gets the same rates.
    """

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable(epoch, base_lr), "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule

    def on_epoch_begin(self, trainer, epoch):
        lr = float(self.schedule(epoch, trainer.optimizer.base_lr))
        if not lr > 0 or math.isinf(lr):
            raise ValueError(f"LearningRateScheduler: schedule gave lr={lr} for epoch {epoch}")
        trainer.optimizer.lr = lr
