"""One rank of the distributed tests: ``mpiexec -n 2 python tests/distributed_worker.py SCENARIO OUT``.

Scenarios (tests/test_distributed.py starts them and checks what they leave):
  train     fits a model without and one with BatchNorm (batch 4 per rank, shuffled, a short last
            batch that leaves rank 1 empty) and saves, from rank 0, every rank's final state and
            the indices each rank trained on, per epoch and step;
  stall     rank 1 stops answering mid-epoch: rank 0 must end the job after the 3 s timeout;
  kill      rank 1 kills itself (SIGKILL) mid-epoch: the job must end with an error;
  mismatch  rank 1 builds a wider Dense layer: every rank must raise the ValueError naming rank 1;
  resume    3 epochs in one go, and 1 epoch, a checkpoint, then epochs 2-3 from it, with BatchNorm,
            Dropout and augmentation: rank 0 saves both final states.
"""

import os
import signal
import sys
import time

import numpy as np

import gpucnn as gc
from gpucnn import distributed

SAMPLES, BATCH, EPOCHS, SEED, CLASSES = 41, 4, 2, 7, 3  # 41 = 5 global batches of 8 and one of 1


def make_data():
    """Images whose first pixel tells them apart (a recorder looks samples up by it)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, CLASSES, SAMPLES)
    return x, y


def build(batch_norm: bool, width: int = CLASSES, dropout: bool = False):
    layers = [gc.Conv2D(1, 4, 3, padding=1, rng=1)]
    if batch_norm:
        layers += [gc.BatchNorm2D(4)]
    layers += [gc.ReLU(), gc.MaxPool2D(2), gc.Flatten()]
    if dropout:
        layers += [gc.Dropout(0.3, rng=0)]
    layers += [gc.Dense(36, width, rng=2)]
    return gc.Sequential(layers)


class Recorder(gc.Callback):
    """An augmentation that changes nothing and notes which samples each batch of each epoch got."""

    def __init__(self, x):
        self.keys = x[:, 0, 0, 0]
        self.steps = []  # per epoch, per batch this rank trained on: the sample indices

    def on_epoch_begin(self, trainer, epoch):
        self.steps.append([])

    def __call__(self, xb, rng):
        self.steps[-1].append([int(np.flatnonzero(self.keys == k)[0]) for k in xb[:, 0, 0, 0]])
        return xb


class AtEpoch(gc.Callback):
    """Does ``action`` at the start of epoch ``epoch``."""

    def __init__(self, epoch, action):
        self.epoch, self.action = epoch, action

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.epoch:
            self.action()


def make_trainer(comm, model):
    return gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-2),
                      backend="cpu", comm=comm)


def fit(comm, model, x, y, callbacks=(), augment=None, epochs=EPOCHS):
    trainer = make_trainer(comm, model)
    trainer.fit(x, y, epochs=epochs, batch_size=BATCH, seed=SEED, verbose=0, callbacks=callbacks,
                augment=augment)
    return trainer


def main(scenario, out):
    comm = distributed.init(backend="cpu", timeout=3.0 if scenario in ("stall", "kill") else 60.0)
    x, y = make_data()
    if scenario == "train":
        results = {}
        for name, batch_norm in (("plain", False), ("batchnorm", True)):
            recorder = Recorder(x)
            trainer = fit(comm, build(batch_norm), x, y, callbacks=[recorder], augment=recorder)
            gathered = comm.allgather_object((trainer.model.state_arrays(), recorder.steps,
                                              trainer.history.history["loss"]))
            for rank, (state, steps, loss) in enumerate(gathered):
                results.update({f"{name}.rank{rank}.{key}": value for key, value in state.items()})
                results[f"{name}.rank{rank}.steps"] = np.array(repr(steps))
                results[f"{name}.rank{rank}.loss"] = np.array(loss)
        if comm.rank == 0:
            np.savez(out, **results)
    elif scenario == "resume":
        shift, checkpoint = gc.datasets.RandomShift(1), os.path.join(out, "checkpoint.npz")
        whole = fit(comm, build(True, dropout=True), x, y, augment=shift, epochs=3)
        fit(comm, build(True, dropout=True), x, y, augment=shift, epochs=1,
            callbacks=[gc.ModelCheckpoint(checkpoint)])
        resumed = make_trainer(comm, build(True, dropout=True))
        resumed.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, augment=shift,
                    initial_epoch=resumed.load_checkpoint(checkpoint))
        if comm.rank == 0:
            np.savez(os.path.join(out, "states.npz"),
                     **{f"whole.{k}": v for k, v in whole.model.state_arrays().items()},
                     **{f"resumed.{k}": v for k, v in resumed.model.state_arrays().items()})
    elif scenario in ("stall", "kill"):
        fail = (lambda: time.sleep(120)) if scenario == "stall" else (lambda: os.kill(os.getpid(), signal.SIGKILL))
        fit(comm, build(False), x, y, callbacks=[AtEpoch(1, fail)] if comm.rank == 1 else [])
    elif scenario == "mismatch":
        try:
            fit(comm, build(False, width=CLASSES + comm.rank), x, y)
        except ValueError as err:
            print(f"rank {comm.rank} refused: {err}", flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
