"""The training loop: ``Trainer.fit`` / ``evaluate`` / ``predict``, and the ``History`` it returns.

The data set arrives on the host (NumPy arrays; CuPy arrays and other
``__cuda_array_interface__`` objects are copied there). When it fits in
``device_data_share`` of the device's free memory and no host augmentation is
asked for, it is uploaded once per ``fit`` and each batch is gathered on the
device; otherwise each batch is copied up just before its forward pass, so a
data set larger than the GPU's memory trains as well as a small one.

Host synchronisations. On a GPU every read of a device value by the host
waits for the queued kernels. The loop therefore keeps the per-batch loss and
correct-count on the device and reads them once at the end of the epoch (and
at most once per ``progress_interval`` for the progress bar); validation reads
its results once more. The labels of an epoch are uploaded in one copy, and
Dropout draws its masks on the device. The non-finite-loss check runs on the
values read back, so it still names the first bad batch (training has then
gone on to the epoch's end, or to the next progress refresh).

Determinism and resuming. Every random choice the loop makes is drawn from a
Generator seeded by ``(seed, epoch, stream)``: the shuffling order of epoch
``e``, the Dropout masks of epoch ``e`` (each Dropout layer is re-seeded at the
start of every epoch) and the augmentation of epoch ``e`` depend on nothing
but the seed and ``e``. A checkpoint therefore needs only the weights, the
optimizer state, the number of finished epochs and the seed to continue to
exactly the result of an uninterrupted run (``save_checkpoint`` /
``load_checkpoint``; ``ModelCheckpoint`` calls the former).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import numpy as np

from .arguments import as_int
from .backend import get_backend
from .backend.base import host_array
from .distributed.data_parallel import DataParallel
from .layers import Dropout
from .losses import BinaryCrossEntropyWithLogits, SoftmaxCrossEntropy
from .model import check_finite, check_state_arrays, open_checkpoint
from .random import as_generator

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")

# Independent random streams of one epoch: np.random.default_rng([seed, epoch, stream, ...]).
_SHUFFLE, _DROPOUT, _AUGMENT = 0, 1, 2

#: Seconds the first training step of a backend may take before fit says it is compiling kernels.
COMPILE_NOTICE_AFTER = 1.0
_warm_backends: set = set()  # names of the backends that have finished a training step in this process


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the epoch and batch."""


class History:
    """Per-epoch results of ``fit``: ``history.history[key]`` is a list with one entry per epoch.

    Keys: ``loss``, ``accuracy`` (training, averaged over the epoch's batches),
    ``val_loss``, ``val_accuracy`` (NaN without validation data), ``lr`` (the
    learning rate used in the epoch) and ``time`` (seconds the epoch took).
    ``history.epoch`` lists the epoch numbers (from 0).
    """

    def __init__(self, history: dict | None = None, epoch=None):
        self.history = {key: [] for key in HISTORY_KEYS}
        for key, values in (history or {}).items():
            self.history[key] = [float(v) for v in values]
        self.epoch = list(epoch) if epoch is not None else list(range(len(self.history["loss"])))

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(int(epoch))
        for key in HISTORY_KEYS:
            self.history[key].append(float(logs.get(key, math.nan)))

    def truncate(self, epochs: int) -> None:
        """Keep the first ``epochs`` entries (what a run resumed at that epoch builds on)."""
        self.epoch = self.epoch[:epochs]
        for key in self.history:
            self.history[key] = self.history[key][:epochs]

    def to_dict(self) -> dict:
        """JSON-ready: ``{"epoch": [...], "loss": [...], ...}`` (NaN becomes None)."""
        clean = lambda v: None if math.isnan(v) else v  # noqa: E731
        out = {"epoch": list(self.epoch)}
        out.update({k: [clean(v) for v in vs] for k, vs in self.history.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        history = {k: [math.nan if v is None else v for v in vs]
                   for k, vs in data.items() if k != "epoch"}
        return cls(history, data.get("epoch"))

    def save(self, path) -> None:
        """Write ``to_dict()`` as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={list(self.history)})"


class Trainer:
    """Fits a ``Sequential`` with a loss and an optimizer.

    ``Trainer(model, loss, optimizer, backend="auto")`` moves the model and the
    loss to ``backend`` ("cpu", "cuda", "cuda-emu" or "auto": cuda when a GPU is
    usable). The optimizer must have been built on ``model.parameters()``.
    ``device_data_share`` in [0, 1]: the largest share of the device's free
    memory the training set may take to be uploaded once per ``fit`` (0: copy
    every batch up from the host). ``progress_interval``: the least number of
    seconds between two reads of the running loss for the progress bar.
    ``comm``: a ``gpucnn.distributed`` communicator for data-parallel training
    (``gpucnn.distributed.data_parallel`` says what changes; ``batch_size`` is
    then per rank); None trains in this process alone.
    """

    def __init__(self, model, loss, optimizer, backend="auto", device_data_share: float = 0.5,
                 comm=None):
        if (isinstance(device_data_share, bool) or not isinstance(device_data_share, (int, float))
                or not 0.0 <= device_data_share <= 1.0):
            raise ValueError(f"Trainer: device_data_share must be a number in [0, 1], "
                             f"got {device_data_share!r}")
        self.device_data_share = float(device_data_share)
        self.progress_interval = 0.5
        self.backend = get_backend(backend)
        self.model = model.to(self.backend)
        self.loss = loss.to(self.backend)
        self.optimizer = optimizer
        if any(optimizer.state):  # state made before the move must follow the parameters
            optimizer.load_state_dict(optimizer.state_dict())
        self.history = History()
        self.epoch = 0            # epochs finished so far (what a checkpoint records)
        self.seed = None          # the seed of the current or last fit
        self.stop_training = False  # a callback sets it to end fit after the current epoch
        self._checkpoint_seed = None
        self._parallel = None if comm is None else DataParallel(comm, self.model, optimizer)

    @property
    def is_main_process(self) -> bool:
        """True in a single process and on rank 0 of a distributed fit: the one that prints and writes files."""
        return self._parallel is None or self._parallel.rank == 0

    # --- training --------------------------------------------------------------------------

    def fit(self, x, y, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool = True, seed=None, callbacks=(),
            verbose: int = 1, initial_epoch: int = 0, augment=None) -> History:
        """Train for epochs ``initial_epoch .. epochs-1``; returns the ``History`` of all epochs.

        x: (N, C, H, W) array (on the host, or a CUDA array, copied to the host
        first); y: (N,) integer labels for ``SoftmaxCrossEntropy``, or targets shaped like the model output (or (N,)
        for a single-logit model) for the other losses.
        ``validation_data=(x_val, y_val)``, or ``validation_split`` in [0, 1): the
        last fraction of x/y (before shuffling) is held out, as Keras does.
        ``seed`` fixes shuffling, Dropout masks and augmentation (None: the seed
        of a checkpoint loaded with ``load_checkpoint``, else one drawn from the
        package-wide Generator, see ``gpucnn.seed``). ``verbose``: 0 silent,
        1 a progress bar per epoch and one line per epoch, 2 only the lines.
        ``initial_epoch``: resume after that many finished epochs (the value
        ``load_checkpoint`` returns). ``augment(x_batch, rng) -> x_batch`` is
        applied to each training batch on the host with a seeded Generator.
        Raises NonFiniteLossError naming the epoch and batch if the loss stops
        being finite.
        """
        x, y = self._check_data(x, y, "fit")
        batch_size = as_int(batch_size, "batch_size", "Trainer.fit", minimum=1)
        epochs = as_int(epochs, "epochs", "Trainer.fit", minimum=0)
        initial_epoch = as_int(initial_epoch, "initial_epoch", "Trainer.fit", minimum=0)
        if initial_epoch > epochs:
            raise ValueError(f"Trainer.fit: need 0 <= initial_epoch <= epochs, got {initial_epoch} and {epochs}")
        if validation_data is not None:
            x_val, y_val = self._check_data(*validation_data, "fit (validation_data)")
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"Trainer.fit: validation_split must lie in [0, 1), got {validation_split}")
            cut = len(x) - int(round(len(x) * validation_split))
            if cut < 1 or cut == len(x):
                raise ValueError(f"Trainer.fit: validation_split={validation_split} of {len(x)} "
                                 f"samples leaves an empty training or validation set")
            x, y, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
        else:
            x_val = y_val = None

        if seed is None:
            seed = self._checkpoint_seed
        if seed is None:
            seed = int(as_generator(None).integers(2**63))
        if self._parallel is not None:  # rank 0's weights, optimizer state and seed on every rank
            seed = self._parallel.start(seed, epochs=epochs, initial_epoch=initial_epoch, batch_size=batch_size,
                                        samples=len(x), shuffle=bool(shuffle), augment=augment is not None)
            verbose = verbose if self.is_main_process else 0
        self.seed, self._checkpoint_seed = int(seed), None
        if initial_epoch == 0:
            self.history = History()
        else:
            self.history.truncate(initial_epoch)
        self.epoch, self.stop_training = initial_epoch, False
        callbacks = list(callbacks)
        x_device = self._resident_inputs(x, augment)
        notice = _CompileNotice(self.backend.name, enabled=bool(verbose))

        for cb in callbacks:
            cb.on_train_begin(self)
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)
            start = time.perf_counter()
            try:
                loss, accuracy = self._train_epoch(x, y, x_device, epoch, epochs, batch_size, shuffle,
                                                   augment, verbose, notice)
            finally:
                notice.cancel()
            rate = len(x) / max(time.perf_counter() - start, 1e-9)
            logs = {"loss": loss, "accuracy": accuracy, "lr": self.optimizer.lr}
            if x_val is not None:
                val = self.evaluate(x_val, y_val, batch_size=max(batch_size, 256))
                logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            logs["time"] = time.perf_counter() - start
            self.epoch = epoch + 1
            self.history.append(epoch, logs)
            if verbose:
                print(format_epoch_line(epoch, epochs, logs, rate), flush=True)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self)
        if self._parallel is not None:
            self._parallel.finish()
        return self.history

    def _train_epoch(self, x, y, x_device, epoch, epochs, batch_size, shuffle, augment, verbose, notice):
        """One pass over (x, y); returns the sample-weighted mean loss and accuracy.

        ``x_device``: x already on the device (batches gathered there), or None.
        """
        n = len(x)
        order = (np.random.default_rng([self.seed, epoch, _SHUFFLE]).permutation(n)
                 if shuffle else np.arange(n))
        # Ranks draw their own Dropout masks and augmentations; rank 0 draws what one process would.
        rank = (self._parallel.rank,) if self._parallel is not None and self._parallel.rank else ()
        for i, layer in enumerate(self.model.layers):
            if isinstance(layer, Dropout):
                layer.reseed(np.random.default_rng([self.seed, epoch, _DROPOUT, i, *rank]))
        augment_rng = np.random.default_rng([self.seed, epoch, _AUGMENT, *rank])
        # Step s trains on order[lo:hi]; share: its part of the (global) batch.
        steps = [(lo, min(n, lo + batch_size), 1.0) for lo in range(0, n, batch_size)]
        if self._parallel is not None:  # this rank's samples, in its order, and its steps
            order, steps = self._parallel.shard(order, batch_size)
        targets = self.backend.asarray(y[order])  # the epoch's labels, moved in one copy
        order_device = None if x_device is None else self.backend.asarray(order)
        batches = len(steps)
        stats = _BatchStats(self.backend, batches)

        def read_totals(upto):  # one host synchronisation
            return self._check_finite(stats.fetch(upto), epoch, batches)

        progress = _Progress(verbose, len(order), f"epoch {epoch + 1}/{epochs}", self.progress_interval,
                             read_totals)
        try:
            for b, (lo, hi, share) in enumerate(steps):
                self.model.zero_grad()
                if lo == hi:  # a short last global batch left this rank nothing: it still reduces
                    self._step(share)
                    continue
                if x_device is not None:
                    xb = x_device[order_device[lo:hi]]
                else:
                    xb = x[order[lo:hi]]
                    if augment is not None:
                        xb = augment(xb, augment_rng)
                yb = targets[lo:hi]
                out = self.model.forward(xb, training=True)
                if b == 0:
                    self._check_labels(y, out)
                value = self.loss.forward_device(out, self._target(yb, out))
                self.model.backward(self.loss.backward(), input_grad=False)
                self._step(share)
                stats.record(b, value, self._correct(out, yb), hi - lo)
                notice.step_done()
                progress.batch_done(b, hi - lo)
        finally:
            progress.close()
        loss, correct = read_totals(batches)
        if self._parallel is not None:  # the shards' totals: n counts the whole data set
            loss, correct = self._parallel.end_epoch(loss, correct)
        return loss / n, correct / n

    def _step(self, share: float) -> None:
        """Update the weights; in a distributed fit first average the gradients (this rank's ``share``)."""
        if self._parallel is not None:
            self._parallel.average_gradients(share)
        self.optimizer.step()

    def _resident_inputs(self, x, augment):
        """x uploaded once for the whole fit when it fits in ``device_data_share`` of the
        device's free memory, or None (then batches are copied up one at a time: on a host
        backend, with host augmentation, or for a data set too large)."""
        if augment is not None or self.device_data_share == 0.0:
            return None
        free = self.backend.free_memory()
        if free is None or x.size * self.model.dtype.itemsize > self.device_data_share * free:
            return None
        return self.backend.asarray(x, dtype=self.model.dtype)

    def _check_finite(self, values: np.ndarray, epoch: int, batches: int) -> tuple[float, float]:
        """Sums of loss x batch size and of correct counts over the host copy of per-batch values;
        NonFiniteLossError naming the first batch whose loss is NaN or infinite."""
        bad = np.flatnonzero(~np.isfinite(values[:, 0]))
        if bad.size:
            b = int(bad[0])
            raise NonFiniteLossError(
                f"the loss became {values[b, 0]} at epoch {epoch + 1}, batch {b + 1} of {batches} "
                f"(lr {self.optimizer.lr:g}); lower the learning rate or check the data "
                f"for NaN/inf")
        return _BatchStats.totals(values)

    # --- evaluation ------------------------------------------------------------------------

    def evaluate(self, x, y, batch_size: int = 256) -> dict:
        """Mean loss and accuracy over (x, y) in inference mode: ``{"loss": ..., "accuracy": ...}``.

        Accuracy is NaN for losses without classes (MSELoss). The results are
        read from the device once, after the last batch.
        """
        x, y = self._check_data(x, y, "evaluate")
        batch_size = as_int(batch_size, "batch_size", "Trainer.evaluate", minimum=1)
        targets = self.backend.asarray(y)
        batches = math.ceil(len(x) / batch_size)
        stats = _BatchStats(self.backend, batches)
        for b in range(batches):
            lo, hi = b * batch_size, min(len(x), (b + 1) * batch_size)
            out = self.model.forward(x[lo:hi], training=False)
            if b == 0:
                self._check_labels(y, out)
            yb = targets[lo:hi]
            stats.record(b, self.loss.forward_device(out, self._target(yb, out)), self._correct(out, yb), hi - lo)
        total_loss, total_correct = _BatchStats.totals(stats.fetch(batches))
        return {"loss": total_loss / len(x), "accuracy": total_correct / len(x)}

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Class probabilities for x (N, C, H, W) as a host NumPy array.

        ``SoftmaxCrossEntropy``: softmax of the logits, (N, classes).
        ``BinaryCrossEntropyWithLogits``: sigmoid of the logits, shaped like them
        ((N, 1) for a single-logit binary model). Other losses: the raw outputs.
        """
        x = _check_samples(x, "x", "Trainer.predict")
        batch_size = as_int(batch_size, "batch_size", "Trainer.predict", minimum=1)
        outs = []
        for start in range(0, len(x), batch_size):
            out = self.backend.to_numpy(self.model.forward(x[start:start + batch_size], training=False))
            outs.append(out.astype(np.float64))
        out = np.concatenate(outs)
        if isinstance(self.loss, SoftmaxCrossEntropy):
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        elif isinstance(self.loss, BinaryCrossEntropyWithLogits):
            out = 0.5 * (1.0 + np.tanh(0.5 * out))  # the sigmoid, without overflow
        return out.astype(self.model.dtype)

    # --- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, path) -> None:
        """Write model, optimizer state, finished epochs, seed and history to ``path`` atomically.

        The file is a normal model file: ``gpucnn.load_model`` reads it too.
        In a distributed fit only rank 0 writes (every rank holds the same state).
        """
        if not self.is_main_process:
            return
        extra = {f"optimizer.{k}": v for k, v in self.optimizer.state_dict().items()}
        extra["trainer.epoch"] = np.int64(self.epoch)
        extra["trainer.seed"] = np.array(str(self.seed))  # seeds may exceed int64
        extra["trainer.history"] = np.array(json.dumps(self.history.to_dict()))
        self.model.save(path, extra=extra)

    def load_checkpoint(self, path, *, max_bytes: int | None = None, allow_nonfinite: bool = False) -> int:
        """Restore what ``save_checkpoint`` wrote; returns the number of finished epochs.

        Resume with ``fit(..., epochs=E, initial_epoch=trainer.load_checkpoint(path))``:
        with the same data and settings the result equals an uninterrupted run.
        The whole file is checked before anything is applied (``max_bytes`` and
        ``allow_nonfinite`` as for ``gpucnn.load_model``): a ValueError naming
        the file and the member leaves the trainer as it was, e.g. when the file
        was written for another architecture or lacks the trainer state (a plain
        ``model.save`` file).
        """
        npz, config = open_checkpoint(path, _is_checkpoint_member, max_bytes)
        with npz:
            source = npz.source
            if config != json.loads(json.dumps(self.model.get_config())):
                raise ValueError(f"{source} was written for another architecture than this trainer's model")
            if "extra.trainer.epoch" not in npz.headers:
                raise ValueError(f"{source} holds weights only (no optimizer or trainer state); "
                                 f"load it with gpucnn.load_model instead")
            # 1. Shapes and dtypes, from the headers: nothing large is read before they agree.
            check_state_arrays(_members(npz.headers, "weights."), self.model.state_shapes(), source)
            self.optimizer.check_state_dict(_members(npz.headers, "extra.optimizer."), source)
            # 2. The trainer's own small members.
            epoch = int(npz.read_scalar("extra.trainer.epoch", "integer"))
            if epoch < 0:
                raise ValueError(f"{source}, member 'extra.trainer.epoch' is negative ({epoch})")
            seed = _parse_seed(str(npz.read_scalar("extra.trainer.seed", "text")), source)
            history = _parse_history(str(npz.read_scalar("extra.trainer.history", "text")), source)
            # 3. The arrays, then their values.
            arrays = {key: npz.read(key) for key in npz.headers
                      if key.startswith(("weights.", "extra.optimizer."))}
        if not allow_nonfinite:
            check_finite(arrays, source)
        # 4. Apply: the optimizer checks its values before it changes; after it nothing can fail.
        self.optimizer.load_state_dict(_members(arrays, "extra.optimizer."), source)
        self.model.load_state_arrays(_members(arrays, "weights."), source=source)
        self.epoch, self._checkpoint_seed, self.history = epoch, seed, history
        return self.epoch

    # --- helpers ---------------------------------------------------------------------------

    def _check_data(self, x, y, where):
        """x and y as NumPy arrays of real numbers with the same number of samples (at least one)."""
        x, y = _check_samples(x, "x", f"Trainer.{where}"), _check_samples(y, "y", f"Trainer.{where}")
        if len(x) != len(y):
            raise ValueError(f"Trainer.{where}: x has {len(x)} samples but y has {len(y)}")
        return x, y

    def _check_labels(self, y, out) -> None:
        """Check the values of all labels of a fit or evaluate on the host once, against the first
        batch's output (the device loss then trusts them; see ``losses``)."""
        self.loss.check_target(y, (len(y),) + tuple(out.shape[1:]))

    def _target(self, yb, out):
        """Labels as the loss wants them: (N,) ints for softmax, else shaped like the output."""
        if not isinstance(self.loss, SoftmaxCrossEntropy) and yb.size == out.size:
            return yb.reshape(out.shape).astype(out.dtype)
        return yb

    def _correct(self, out, yb):
        """How many samples of the batch the model classified right: a 0-d device array
        (NaN without classes). ``yb``: the batch's labels on the device."""
        if isinstance(self.loss, SoftmaxCrossEntropy):
            return (out.argmax(axis=1) == yb).sum()
        if isinstance(self.loss, BinaryCrossEntropyWithLogits):
            n = len(yb)
            return ((out > 0).reshape(n, -1) == (yb.reshape(n, -1) > 0.5)).mean(axis=1).sum()
        return math.nan


_TRAINER_MEMBERS = ("extra.trainer.epoch", "extra.trainer.seed", "extra.trainer.history")


def _is_checkpoint_member(key: str) -> bool:
    """Whether a trainer checkpoint may hold a member of this name (besides config/format_version)."""
    return key.startswith(("weights.", "extra.optimizer.")) or key in _TRAINER_MEMBERS


def _members(mapping: dict, prefix: str) -> dict:
    """The entries of ``mapping`` under ``prefix``, with the prefix taken off their keys."""
    return {key[len(prefix):]: value for key, value in mapping.items() if key.startswith(prefix)}


def _parse_seed(text: str, source: str):
    """A checkpoint's seed: a non-negative int, or None when it was saved before any fit."""
    if text == "None":
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"{source}, member 'extra.trainer.seed' is not a seed ({text[:40]!r})")
    return seed


def _parse_history(text: str, source: str) -> History:
    """A checkpoint's History, from its JSON; a ValueError naming the member if it is malformed."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return History.from_dict(data)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as err:
        raise ValueError(f"{source}, member 'extra.trainer.history' is malformed "
                         f"({type(err).__name__}: {err})") from None


# dtype kinds a model can compute on: bool, signed and unsigned integers, floats.
_REAL_KINDS = "biuf"


def _check_samples(data, name: str, where: str) -> np.ndarray:
    """``data`` as a NumPy array of real numbers with a sample axis and at least one sample.

    Strings, objects and complex numbers are a TypeError (NumPy would turn them
    into a crash or silently drop the imaginary part); a scalar or an empty
    array is a ValueError. Messages name ``where`` and ``name``.
    """
    array = host_array(data)  # CuPy and cuda-emu arrays too, copied to the host
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{where}: {name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{where}: {name} must have one entry per sample (a sample axis first), "
                         f"got a scalar {array.item()!r}")
    if len(array) == 0:
        raise ValueError(f"{where}: {name} is empty (shape {array.shape}); need at least one sample")
    return array


class _BatchStats:
    """Per-batch (loss, correct count) kept on the device, read by the host in one copy."""

    def __init__(self, backend, batches: int):
        self.backend = backend
        self.values = backend.xp.zeros((batches, 2), np.float64)
        self.sizes = np.zeros(batches, np.int64)

    def record(self, b: int, loss, correct, size: int) -> None:
        """Store batch ``b``'s mean loss and correct count (device scalars; no synchronisation)."""
        self.values[b, 0] = loss
        self.values[b, 1] = correct
        self.sizes[b] = size

    def fetch(self, upto: int) -> np.ndarray:
        """Host copy of the first ``upto`` batches: columns loss, correct, size (one synchronisation)."""
        host = self.backend.to_numpy(self.values[:upto])
        return np.column_stack([host, self.sizes[:upto]])

    @staticmethod
    def totals(values: np.ndarray) -> tuple[float, float]:
        """Sum of loss x size and of correct counts, added batch by batch in float64, as a
        host loop reading one float per batch would (so both loops give the same bits)."""
        total_loss = total_correct = 0.0
        for loss, correct, size in values.tolist():
            total_loss += loss * int(size)
            total_correct += correct
        return total_loss, total_correct


class _Progress:
    """The per-epoch progress bar (verbose=1 with stderr on a terminal), else nothing.

    It reads the running loss and accuracy from the device (``read(upto)``
    returns the totals, and raises on a non-finite loss) at most once per
    ``interval`` seconds; tqdm's own rate is the only rate it shows.
    """

    def __init__(self, verbose: int, total: int, desc: str, interval: float, read):
        self.bar = None
        self.read, self.interval, self.seen = read, interval, 0
        if verbose == 1 and _is_terminal(sys.stderr):
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr,
                            dynamic_ncols=True)
        self.last = time.perf_counter()

    def batch_done(self, b: int, size: int) -> None:
        if self.bar is None:
            return
        self.seen += size
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            loss, correct = self.read(b + 1)
            self.bar.set_postfix_str(f"loss {loss / self.seen:.4f} acc {correct / self.seen:.4f}",
                                     refresh=False)
        self.bar.update(size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _CompileNotice:
    """Prints "compiling kernels..." once if the first training step on a backend is slow.

    The first use of the kernels compiles them (Numba, the emulator's g++,
    NVRTC), which can make epoch 1 many times slower than the rest; a timer
    says so after ``COMPILE_NOTICE_AFTER`` seconds instead of leaving the user
    in silence. A backend that has finished a step in this process (any fit,
    verbose or not) gets no timer; ``enabled`` False (verbose=0) prints nothing.
    """

    def __init__(self, backend_name: str, enabled: bool):
        self.backend_name = backend_name
        self.timer = None
        if enabled and backend_name not in _warm_backends:
            self.timer = threading.Timer(COMPILE_NOTICE_AFTER, self._say)
            self.timer.daemon = True
            self.timer.start()

    def _say(self) -> None:
        print(f"compiling kernels for the {self.backend_name} backend (first use)...", flush=True)

    def step_done(self) -> None:
        _warm_backends.add(self.backend_name)
        self.cancel()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def format_epoch_line(epoch: int, epochs: int, logs: dict, rate: float) -> str:
    """``epoch 3/20  loss 0.1234  accuracy 0.9650  val_loss ...  lr 1.00e-03  1.2 s  1200 img/s``.

    ``rate`` is the training throughput in images per second; the time is the
    whole epoch's, validation included.
    """
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        value = logs.get(key, math.nan)
        if not math.isnan(value):
            parts.append(f"{key} {value:.4f}")
    parts.append(f"lr {logs['lr']:.2e}")
    parts.append(f"{logs['time']:.1f} s")
    parts.append(f"{rate:.0f} img/s")
    return "  ".join(parts)
