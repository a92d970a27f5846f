"""The lecture's opening question: a dense network can classify images, so why a CNN?

Trains the dense network ("dnn": flatten, 128 and 64 ReLU units) and the
digits CNN ("small") on the embedded 8x8 digits, the same way (no shift
augmentation, so neither has seen a moved digit), then evaluates both on the
test digits moved by 0, 1 and 2 pixels (each of the four directions, the
empty border filled with zeros) and prints the accuracy table.

    python examples/dnn_vs_cnn.py             # about a minute on a laptop CPU
    python examples/dnn_vs_cnn.py --epochs 3  # a quicker look
"""

import argparse

import numpy as np

import gpucnn as gc
from gpucnn.datasets import load_digits
from gpucnn.models import build_model

SHIFTS = (0, 1, 2)
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (rows, columns): right, left, down, up

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
epochs = parser.parse_args().epochs


def shifted(x, rows, cols):
    """x (N, C, H, W) moved by (rows, cols) pixels; what moves out is lost, what comes in is 0."""
    out = np.zeros_like(x)
    h, w = x.shape[2:]
    out[:, :, max(rows, 0):h + min(rows, 0), max(cols, 0):w + min(cols, 0)] = \
        x[:, :, max(-rows, 0):h + min(-rows, 0), max(-cols, 0):w + min(-cols, 0)]
    return out


(x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.2, seed=0)
accuracy = {}
for name in ("dnn", "small"):
    model = build_model(name, 1, 10, 8, rng=0)
    n_params = sum(int(np.prod(p.value.shape)) for p in model.parameters())
    trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=2e-3), backend="auto")
    trainer.fit(x_train, y_train, epochs=epochs, batch_size=32, seed=0, verbose=0,
                callbacks=[gc.LearningRateScheduler(gc.CosineLR(epochs))])
    accuracy[name] = [np.mean([trainer.evaluate(shifted(x_test, s * dr, s * dc), y_test)["accuracy"]
                               for dr, dc in (DIRECTIONS if s else [(0, 0)])]) for s in SHIFTS]
    print(f"trained {name} ({n_params:,} parameters) for {epochs} epochs")

print("\ntest accuracy on digits moved by (mean over the four directions):")
print("model   " + "".join(f"{s} pixel{'s' if s != 1 else ''}".rjust(10) for s in SHIFTS))
for name, values in accuracy.items():
    print(f"{name:<8}" + "".join(f"{v:10.3f}" for v in values))
