"""Callbacks: early stopping stops and restores, checkpoints reload and resume exactly, lr schedules."""

import numpy as np
import pytest

import gpucnn as gc
from gpucnn.callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint

from test_trainer import blobs, make_trainer, small_model, trainer_backend  # noqa: F401 (the fixture)


class Scripted(Callback):
    """Writes a scripted value into the logs as "score" and records the weights after every epoch."""

    def __init__(self, scores):
        self.scores, self.weights = scores, []

    def on_epoch_end(self, trainer, epoch, logs):
        logs["score"] = self.scores[epoch]
        self.weights.append(trainer.model.state_arrays())


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_stops_after_patience_and_restores_best(restore):
    x, y = blobs(32, 0)
    script = Scripted([3.0, 2.0, 1.0, 1.5, 1.2, 0.5, 0.1])  # best at epoch 2, then two worse epochs
    stopper = EarlyStopping(monitor="score", patience=2, restore_best_weights=restore)
    trainer = make_trainer()
    history = trainer.fit(x, y, epochs=7, batch_size=8, seed=0, verbose=0, callbacks=[script, stopper])
    assert len(history) == 5 and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    final = trainer.model.state_arrays()
    assert not same_weights(script.weights[2], script.weights[4])  # training did move the weights
    assert same_weights(final, script.weights[2] if restore else script.weights[4])


def test_early_stopping_max_mode_for_accuracy_names():
    x, y = blobs(32, 1)
    script = Scripted([0.5, 0.7, 0.6, 0.65, 0.9])
    stopper = EarlyStopping(monitor="score_acc", patience=1)  # "acc" in the name: larger is better

    class Rename(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            logs["score_acc"] = logs["score"]

    history = make_trainer().fit(x, y, epochs=5, batch_size=8, seed=0, verbose=0,
                                 callbacks=[script, Rename(), stopper])
    assert stopper.best_epoch == 1 and len(history) == 3


def test_early_stopping_on_a_missing_value_says_what_is_there():
    x, y = blobs(16, 2)
    with pytest.raises(ValueError, match="monitor 'val_loss' has no value.*available: loss"):
        make_trainer().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])


def test_checkpoint_reload_gives_identical_predictions(tmp_path):
    x, y = blobs(48, 3)
    trainer = make_trainer()
    path = tmp_path / "ckpt.npz"
    trainer.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0, callbacks=[ModelCheckpoint(path)])
    reloaded = gc.load_model(path, backend=trainer.backend)  # the same kernels give the same bits
    host = trainer.backend.to_numpy
    assert np.array_equal(host(reloaded.forward(x, training=False)), host(trainer.model.forward(x, training=False)))
    other = make_trainer(seed=7)  # different initial weights until the checkpoint is loaded
    assert other.load_checkpoint(path) == 2
    assert np.array_equal(other.predict(x), trainer.predict(x))


def test_save_best_only_writes_only_improvements(tmp_path):
    x, y = blobs(16, 4)
    script = Scripted([0.9, 0.5, 0.7, 0.4, 0.8])
    saver = ModelCheckpoint(str(tmp_path / "best-{epoch}.npz"), monitor="score", save_best_only=True)
    make_trainer().fit(x, y, epochs=5, batch_size=8, seed=0, verbose=0, callbacks=[script, saver])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-1.npz", "best-2.npz", "best-4.npz"]
    reloaded = gc.load_model(tmp_path / "best-4.npz")
    assert same_weights(reloaded.state_arrays(), script.weights[3])


def test_resume_equals_an_uninterrupted_run(tmp_path):
    """Dropout, shuffling, augmentation, Adam moments and an lr schedule all continue exactly."""
    x, y = blobs(60, 5)
    x_val, y_val = blobs(20, 6)

    def jitter(batch, rng):
        return batch + rng.normal(0, 0.05, batch.shape).astype(batch.dtype)

    def run(trainer, epochs, initial_epoch=0, extra=()):
        callbacks = [LearningRateScheduler(gc.StepLR(2, 0.5)), *extra]
        return trainer.fit(x, y, epochs=epochs, batch_size=8, validation_data=(x_val, y_val), seed=11,
                           verbose=0, initial_epoch=initial_epoch, augment=jitter, callbacks=callbacks)

    straight = make_trainer()
    full = run(straight, 5)

    first = make_trainer()
    run(first, 5, extra=[ModelCheckpoint(str(tmp_path / "e{epoch}.npz"))])
    resumed = make_trainer(seed=3)  # a fresh process would start from other weights
    start = resumed.load_checkpoint(tmp_path / "e2.npz")
    assert start == 2
    history = run(resumed, 5, initial_epoch=start)

    assert same_weights(resumed.model.state_arrays(), straight.model.state_arrays())
    assert resumed.optimizer.steps == straight.optimizer.steps
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert history.history[key] == full.history[key], key
    assert history.epoch == list(range(5))


def test_resume_with_batchnorm_keeps_running_statistics(tmp_path):
    x, y = blobs(40, 7)

    def model():
        return gc.Sequential([gc.Conv2D(1, 4, 3, padding=1, rng=0), gc.BatchNorm2D(4), gc.ReLU(),
                              gc.GlobalAvgPool2D(), gc.Dense(4, 3, rng=1)])

    straight = make_trainer(model=model())
    straight.fit(x, y, epochs=3, batch_size=8, seed=2, verbose=0)
    first = make_trainer(model=model())
    first.fit(x, y, epochs=1, batch_size=8, seed=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "c.npz")])
    resumed = make_trainer(model=model())
    resumed.fit(x, y, epochs=3, batch_size=8, verbose=0, initial_epoch=resumed.load_checkpoint(tmp_path / "c.npz"))
    assert resumed.seed == 2  # taken from the checkpoint when fit gets no seed
    assert same_weights(resumed.model.state_arrays(), straight.model.state_arrays())


def test_learning_rate_scheduler_sets_lr_per_epoch():
    x, y = blobs(16, 8)
    trainer = make_trainer(lr=0.1)
    history = trainer.fit(x, y, epochs=5, batch_size=8, seed=0, verbose=0,
                          callbacks=[LearningRateScheduler(gc.StepLR(2, 0.1))])
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    with pytest.raises(TypeError, match="callable"):
        LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match="lr=-1"):
        make_trainer().fit(x, y, epochs=1, verbose=0,
                           callbacks=[LearningRateScheduler(lambda epoch, base: -1.0)])


def test_checkpoint_from_small_model_helper_is_loadable(tmp_path):
    model = small_model()
    model.save(tmp_path / "m.npz")
    assert same_weights(gc.load_model(tmp_path / "m.npz").state_arrays(), model.state_arrays())
