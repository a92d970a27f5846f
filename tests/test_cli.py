"""The gpucnn command line, run as a user runs it: in a subprocess."""

import errno
import fcntl
import json
import math
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn import metrics as skm

import gpucnn as gc
from gpucnn import cli
from gpucnn.datasets import load_digits


def gpucnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gpucnn.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def lines_besides_warnings(stderr):
    """The lines of ``stderr`` but the one-line warnings (backend "auto" on a machine with CuPy
    and no usable GPU says why it runs on the CPU)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("gpucnn: warning: ")]


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = lines_besides_warnings(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("gpucnn: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run on a digits subset, shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    result = gpucnn("train", "--epochs", 1, "--limit", 200, "--out", out, "--backend", "cpu")
    return out, result


def test_train_writes_model_history_metrics_and_plots(trained):
    out, result = trained
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("Total parameters:") for line in lines)  # the summary
    assert any(line.startswith("epoch 1/1") for line in lines)
    assert any(line.startswith("test accuracy ") for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "seconds", "backend"):
        assert key in metrics
    assert metrics["epochs"] == 1 and metrics["backend"] == "cpu" and metrics["test_samples"] == 200
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 1 and history["loss"][0] > 0
    for png in ("curves.png", "confusion.png"):
        assert imread(out / png).ndim == 3
    # The saved model is what the printed accuracy came from.
    (_, _), (xt, yt) = load_digits()
    model = gc.load_model(out / "model.npz")
    predicted = model.forward(xt[:200], training=False).argmax(1)
    assert (predicted == yt[:200]).mean() == pytest.approx(metrics["test_accuracy"])
    reference = skm.precision_recall_fscore_support(yt[:200], predicted, labels=range(10), zero_division=0)
    for k in range(10):
        scores = metrics["per_class"][str(k)]
        got = [scores[key] for key in ("precision", "recall", "f1", "support")]
        assert got == pytest.approx([r[k] for r in reference], abs=1e-6)


def test_evaluate_a_trained_model(trained):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    result = gpucnn("evaluate", "--model", out / "model.npz", "--limit", 200, "--backend", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert "confusion matrix" in result.stdout
    # The per-class table: one row per digit, the numbers metrics.json holds.
    rows = result.stdout.split("per class:\n")[1].strip().splitlines()[1:]
    for k, row in enumerate(rows):
        name, precision, recall, f1, support = row.split()
        scores = metrics["per_class"][name]
        assert name == str(k) and int(support) == scores["support"]
        assert [float(precision), float(recall), float(f1)] == pytest.approx(
            [scores["precision"], scores["recall"], scores["f1"]], abs=5e-5)
    assert len(rows) == 10


def run_main(capsys, *args):
    """cli.main in this process (no start-up cost), inside gpucnn.threads so that the command's
    --threads leaves the test process's setting as it was."""
    import gpucnn
    with gpucnn.threads(gpucnn.get_threads()):
        status = cli.main([*map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def interrupt_after_epoch(monkeypatch, epoch):
    """Make the next training raise KeyboardInterrupt (Ctrl-C) just after the checkpoint of ``epoch`` is saved."""
    from gpucnn.trainer import Trainer
    save = Trainer.save_checkpoint

    def save_then_interrupt(trainer, path):
        save(trainer, path)
        if trainer.epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)


def test_interrupt_says_how_to_resume_and_resuming_gives_the_same_model(tmp_path, capsys, monkeypatch):
    args = ("--limit", 64, "--backend", "cpu", "--quiet", "--epochs", 3)
    assert run_main(capsys, "train", "--out", tmp_path / "straight", *args)[0] == 0
    interrupt_after_epoch(monkeypatch, 1)
    status, _, err = run_main(capsys, "train", "--out", tmp_path / "split", *args)
    monkeypatch.undo()
    assert status == 130
    message = err.strip()
    assert message.startswith("gpucnn: interrupted; ") and "holds epoch 1 of 3" in message, err
    hint = shlex.split(message.split("continue with: ")[1])
    assert hint[:2] == ["gpucnn", "train"] and "--resume" in hint and str(tmp_path / "split") in hint
    status, out, err = run_main(capsys, *hint[1:])  # the printed command, as printed
    assert status == 0, err
    assert "resuming after epoch 1" in out and "(kept from the run being resumed)" in out
    a = np.load(tmp_path / "straight" / "model.npz")
    b = np.load(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith("weights."))
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    split = json.loads((tmp_path / "split" / "history.json").read_text())
    assert split["lr"] == straight["lr"]


def test_interrupt_before_the_first_checkpoint_offers_no_resume(tmp_path, capsys, monkeypatch):
    from gpucnn.trainer import Trainer

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    status, _, err = run_main(capsys, "train", "--limit", 64, "--backend", "cpu", "--out", tmp_path)
    assert status == 130 and "nothing to resume" in err and "--resume" not in err


def cosine(lr, epoch, start, end):
    """The rate of epoch ``epoch`` (from 0) on a cosine from ``lr`` at epoch ``start`` to 0 at ``end``."""
    return lr * (1 + math.cos(math.pi * (epoch - start) / (end - start))) / 2


def test_resume_with_lr_applies_it_from_the_resumed_epoch(tmp_path, capsys):
    args = ("--limit", 64, "--backend", "cpu", "--quiet", "--out", tmp_path)
    assert run_main(capsys, "train", "--epochs", 2, *args)[0] == 0
    status, out, err = run_main(capsys, "train", "--epochs", 4, "--resume", "--lr", 1e-3, *args)
    assert status == 0, err
    assert "learning rate: cosine from 1.00e-03 at epoch 3 to 0 after epoch 4 (--lr given" in out
    history = json.loads((tmp_path / "history.json").read_text())
    expected = [cosine(2e-3, e, 0, 2) for e in range(2)] + [cosine(1e-3, e, 2, 4) for e in range(2, 4)]
    assert history["lr"] == pytest.approx(expected, rel=1e-12)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["lr"] == 1e-3 and metrics["resumed_after_epoch"] == 2
    assert metrics["lr_schedule"] == {"kind": "cosine", "start_epoch": 2, "start_lr": 1e-3, "epochs": 4}
    # "seconds" is this run's; "seconds_total" adds the epochs trained before the resume.
    earlier = sum(history["time"][:2])
    assert metrics["seconds_total"] == pytest.approx(metrics["seconds"] + earlier, abs=2e-3)
    assert metrics["seconds_total"] > metrics["seconds"]


def test_resume_with_more_epochs_never_raises_the_learning_rate(tmp_path, capsys):
    args = ("--limit", 64, "--backend", "cpu", "--quiet", "--out", tmp_path)
    assert run_main(capsys, "train", "--epochs", 3, *args)[0] == 0
    status, out, err = run_main(capsys, "train", "--epochs", 6, "--resume", *args)
    assert status == 0, err
    assert "--epochs changed from 3" in out
    lr = json.loads((tmp_path / "history.json").read_text())["lr"]
    assert len(lr) == 6 and all(b <= a for a, b in zip(lr, lr[1:])), lr
    # The resumed epoch keeps the last epoch's rate, a cosine from there reaches 0 after the new last epoch.
    assert lr[3:] == pytest.approx([cosine(lr[2], e, 3, 6) for e in range(3, 6)], rel=1e-12)
    assert json.loads((tmp_path / "metrics.json").read_text())["lr"] == lr[2]


def test_two_runs_cannot_share_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["train", "--epochs", 1000, "--limit", 64, "--backend", "cpu", "--out", out]
    first = subprocess.Popen([sys.executable, "-m", "gpucnn.cli", *map(str, command)], stdout=subprocess.PIPE,
                             text=True)
    try:
        for line in first.stdout:  # wait until it trains (it has the folder by then)
            if line.startswith("epoch 1/"):
                break
        status, _, err = run_main(capsys, "train", "--epochs", 1, "--limit", 64, "--backend", "cpu", "--out", out)
        assert status == 1 and len(err.strip().splitlines()) == 1, err
        assert f"is in use by another 'gpucnn train' (process {first.pid})" in err
    finally:
        first.kill()  # kill -9: no clean-up runs, the kernel drops the lock
        first.wait()
    status, _, err = run_main(capsys, "train", "--epochs", 1, "--limit", 64, "--backend", "cpu", "--quiet",
                              "--out", out)
    assert status == 0, err


def test_a_held_lock_refuses_the_run_before_it_trains(tmp_path, capsys):
    with open(tmp_path / ".gpucnn-train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status, out, err = run_main(capsys, "train", "--limit", 64, "--backend", "cpu", "--out", tmp_path)
    assert status == 1 and "in use by another" in err and "epoch 1/" not in out
    assert not (tmp_path / "checkpoint.npz").exists()


def test_a_filesystem_without_locks_still_trains_with_a_note(tmp_path, capsys, monkeypatch):
    from gpucnn import run_folder

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(run_folder.fcntl, "flock", no_locks)
    status, _, err = run_main(capsys, "train", "--epochs", 1, "--limit", 32, "--backend", "cpu", "--quiet",
                              "--out", tmp_path)
    assert status == 0, err
    assert err.strip() == f"gpucnn: note: cannot lock {str(tmp_path)!r} (No locks available); " \
                          f"make sure no other run uses it"
    assert (tmp_path / "model.npz").exists()


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "run"
    status, stdout, err = run_main(capsys, "train", "--limit", 64, "--backend", "cpu", "--out", out)
    assert status == 1 and "epoch 1/" not in stdout
    assert err.startswith(f"gpucnn: error: --out {str(out)!r} is not a writable folder"), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_training(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        status, stdout, err = run_main(capsys, "train", "--limit", 64, "--backend", "cpu", "--out", tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert status == 1 and "epoch 1/" not in stdout and "is not a writable folder" in err


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A run folder as gpucnn train leaves it for shapes (untrained weights: only shapes and files matter)."""
    from gpucnn.models import build_model
    out = tmp_path_factory.mktemp("shapes_run")
    build_model("small", 1, 4, (32, 32), rng=0).save(out / "model.npz")
    (out / "metrics.json").write_text(json.dumps({"dataset": "shapes", "model": "small"}))
    return out


def test_evaluate_and_gradcam_take_a_run_folder_and_its_dataset(shapes_run, capsys):
    status, out, err = run_main(capsys, "evaluate", "--model", shapes_run, "--limit", 20, "--backend", "cpu")
    assert status == 0, err
    assert f"on shapes (from {shapes_run / 'metrics.json'}; 20 test images" in out
    status, out, err = run_main(capsys, "gradcam", "--model", shapes_run, "--indices", 0, 1, "--backend", "cpu")
    assert status == 0, err
    # By default the grid goes into the run folder, and the message names the file written.
    assert out.startswith(f"wrote {shapes_run / 'cam.png'}: gradcam heatmaps of 2 shapes test images")
    assert imread(shapes_run / "cam.png").ndim == 3
    # An explicit --dataset still wins.
    status, _, err = run_main(capsys, "evaluate", "--model", shapes_run, "--dataset", "digits", "--backend", "cpu")
    assert status == 1 and "does not match the data" in err


def test_gradcam_prints_the_file_it_wrote(trained, tmp_path, capsys):
    out, _ = trained
    status, stdout, err = run_main(capsys, "gradcam", "--model", out, "--indices", 3, "--backend", "cpu",
                                   "--out", tmp_path / "x")
    assert status == 0, err
    assert stdout.startswith(f"wrote {tmp_path / 'x.png'}:") and (tmp_path / "x.png").exists()


def test_a_folder_without_a_model_is_refused_by_name(tmp_path, capsys):
    for command in ("evaluate", "gradcam"):
        status, _, err = run_main(capsys, command, "--model", tmp_path)
        assert status == 1 and "is a folder without model.npz" in err, err


def test_early_stopping_keeps_the_best_epoch(tmp_path, capsys):
    status, out, err = run_main(capsys, "train", "--limit", 200, "--validation-split", 0.25, "--epochs", 12,
                                "--early-stopping", 1, "--lr", 0.02, "--backend", "cpu", "--quiet",
                                "--out", tmp_path)
    assert status == 0, err
    val_loss = json.loads((tmp_path / "history.json").read_text())["val_loss"]
    best = int(np.argmin(val_loss))
    assert len(val_loss) == best + 2 < 12  # patience 1: one epoch without improvement, then stop
    summary = json.loads((tmp_path / "metrics.json").read_text())["early_stopping"]
    assert summary == {"patience": 1, "best_epoch": best + 1, "stopped_after_epoch": best + 2,
                       "restored_best_weights": True}
    assert f"model.npz holds the weights of epoch {best + 1}, the best validation loss" in out
    # model.npz gives the best epoch's validation loss (the held-out last 50 of the 200 training images),
    # recomputed here in float64 NumPy.
    (x, y), _ = load_digits()
    logits = gc.load_model(tmp_path / "model.npz").forward(x[150:200], training=False).astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert -log_p[np.arange(50), y[150:200]].mean() == pytest.approx(val_loss[best], rel=1e-5)
    assert val_loss[best] != pytest.approx(val_loss[-1], rel=1e-5)


def test_early_stopping_needs_a_validation_split(capsys):
    status, _, err = run_main(capsys, "train", "--early-stopping", 3)
    assert status == 1 and "--validation-split" in err


def test_error_exits_through_a_subprocess(trained):
    out, _ = trained
    assert_one_line_error(gpucnn("train", "--dataset", "cifar"), "unknown dataset 'cifar'", "digits")
    # A model for 8x8 digits does not fit 32x32 shapes.
    assert_one_line_error(gpucnn("evaluate", "--model", out / "model.npz", "--dataset", "shapes",
                                 "--limit", 8), "does not match the data")
    # An error raised in a subcommand's own module (gpucnn/cam_cli.py) is one line too.
    assert_one_line_error(gpucnn("gradcam", "--model", out, "--indices", 99999), "--indices [99999]")


@pytest.mark.parametrize("args, fragments", [
    (("train", "--model", "resnet"), ("unknown model 'resnet'", "small")),
    (("train", "--dataset", "mnist", "--data", "{tmp}/none"), ("train-images-idx3-ubyte", "none")),
    (("evaluate", "--model", "{tmp}/missing.npz"), ("missing.npz",)),
    (("train", "--resume", "--out", "{tmp}/fresh"), ("no checkpoint",)),
    (("train", "--backend", "tpu"), ("unknown backend 'tpu'",)),
    (("train", "--epochs", "0"), ("--epochs (0)",)),
    (("train", "--lr", "nan"), ("--lr nan", "(0, 1]")),
    (("train", "--lr", "inf"), ("--lr inf", "(0, 1]")),
    (("train", "--lr", "1e6"), ("--lr 1000000.0", "(0, 1]")),
    (("train", "--lr", "-1"), ("--lr -1.0", "(0, 1]")),
    (("train", "--shift", "100"), ("--shift 100", "8x8")),
    (("train", "--shift", "-1"), ("--shift must be >= 0",)),
    (("train", "--resume", "--epochs", "0"), ("--epochs (0)",)),
    (("train", "--validation-split", "1.5"), ("--validation-split must lie in [0, 1)",)),
    (("train", "--early-stopping", "-1", "--validation-split", "0.2"), ("PATIENCE must be >= 0",)),
])
def test_error_exits_are_one_line(tmp_path, capsys, args, fragments):
    status, _, err = run_main(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert status == 1
    lines = lines_besides_warnings(err)
    assert len(lines) == 1 and lines[0].startswith("gpucnn: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_positivity_message_names_only_the_wrong_values(capsys):
    status, _, err = run_main(capsys, "train", "--epochs", 0, "--batch-size", 5)
    assert status == 1 and "--epochs (0) must be positive" in err and "batch-size" not in err
    status, _, err = run_main(capsys, "train", "--epochs", 0, "--batch-size", 0)
    assert status == 1 and "--epochs (0) and --batch-size (0) must be positive" in err


def test_a_diverging_run_ends_with_one_line_and_no_warnings(tmp_path):
    # Float images with huge values (legal: MNIST arrays in an .npz are scaled, not checked for size)
    # make Adam's second moment overflow float32 in the first step.
    x = np.full((40, 28, 28), 3e38, np.float32)
    y = np.arange(40) % 10
    np.savez(tmp_path / "huge.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    result = gpucnn("train", "--dataset", "mnist", "--data", tmp_path / "huge.npz", "--epochs", 2,
                    "--backend", "cpu", "--out", tmp_path / "run")
    assert_one_line_error(result, "training diverged in epoch 1", "overflow", "lower --lr")
    assert "Warning" not in result.stdout + result.stderr


def test_version():
    result = gpucnn("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gpucnn {gc.__version__}"


def test_usage_errors_and_help():
    assert gpucnn("train", "--epochs", "many").returncode == 2  # argparse's own usage error
    result = gpucnn("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "info", "gradcam", "bench"):
        assert command in result.stdout


def test_info_lists_backends_and_versions():
    result = gpucnn("info")
    assert result.returncode == 0, result.stderr
    assert "cpu       usable" in result.stdout and "Numba" in result.stdout and "NumPy" in result.stdout
