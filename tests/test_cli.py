"""The gpucnn command line, run as a user runs it: in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

import gpucnn as gc
from gpucnn import cli
from gpucnn.datasets import load_digits


def gpucnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gpucnn.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
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


def test_evaluate_a_trained_model(trained):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    result = gpucnn("evaluate", "--model", out / "model.npz", "--limit", 200, "--backend", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert "confusion matrix" in result.stdout


def run_main(capsys, *args):
    """cli.main in this process (no start-up cost), inside gpucnn.threads so that the command's
    --threads leaves the test process's setting as it was."""
    import gpucnn
    with gpucnn.threads(gpucnn.get_threads()):
        status = cli.main([*map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_resume_continues_to_the_same_model(tmp_path, capsys):
    args = ("--limit", 64, "--backend", "cpu", "--quiet")
    assert run_main(capsys, "train", "--epochs", 2, "--out", tmp_path / "straight", *args)[0] == 0
    assert run_main(capsys, "train", "--epochs", 1, "--out", tmp_path / "split", *args)[0] == 0
    status, out, err = run_main(capsys, "train", "--epochs", 2, "--out", tmp_path / "split", "--resume", *args)
    assert status == 0, err
    assert "resuming after epoch 1" in out
    a = np.load(tmp_path / "straight" / "model.npz")
    b = np.load(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith("weights."))


def test_error_exits_through_a_subprocess(trained):
    out, _ = trained
    assert_one_line_error(gpucnn("train", "--dataset", "cifar"), "unknown dataset 'cifar'", "digits")
    # A model for 8x8 digits does not fit 32x32 shapes.
    assert_one_line_error(gpucnn("evaluate", "--model", out / "model.npz", "--dataset", "shapes",
                                 "--limit", 8), "does not match the data")


@pytest.mark.parametrize("args, fragments", [
    (("train", "--model", "resnet"), ("unknown model 'resnet'", "small")),
    (("train", "--dataset", "mnist", "--data", "{tmp}/none"), ("train-images-idx3-ubyte", "none")),
    (("evaluate", "--model", "{tmp}/missing.npz"), ("missing.npz",)),
    (("train", "--resume", "--out", "{tmp}/fresh"), ("no checkpoint",)),
    (("train", "--backend", "tpu"), ("unknown backend 'tpu'",)),
    (("train", "--epochs", "0"), ("--epochs (0)",)),
])
def test_error_exits_are_one_line(tmp_path, capsys, args, fragments):
    status, _, err = run_main(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpucnn: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


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
