"""The README's tour as a script: build a CNN, train it on the embedded 8x8 digits,
evaluate, save, reload, and ask Grad-CAM where it looked.

    python examples/digits_cnn.py            # about a minute on a laptop CPU
    python examples/digits_cnn.py --epochs 3 # a quicker look

Writes digits_cnn.npz, digits_curves.png and digits_gradcam.png to the current folder.
"""

import argparse

import numpy as np

import gpucnn as gc
from gpucnn.datasets import RandomShift, load_digits
from gpucnn.plots import plot_history

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
parser.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1, gpucnn's default; 0 = all cores)")
args = parser.parse_args()
epochs = args.epochs
# One thread is gpucnn's default already; more pay only for large images on idle cores.
gc.set_threads(args.threads)

# 1797 handwritten digits shipped with scikit-learn: float32 (N, 1, 8, 8) in [0, 1].
(x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.2, seed=0)

gc.seed(0)  # every weight below is drawn from this seed
model = gc.Sequential([
    gc.Conv2D(1, 32, 3, padding=1), gc.ReLU(),
    gc.Conv2D(32, 32, 3, padding=1), gc.ReLU(), gc.MaxPool2D(2),   # -> (N, 32, 4, 4)
    gc.Conv2D(32, 64, 3, padding=1), gc.ReLU(), gc.MaxPool2D(2),   # -> (N, 64, 2, 2)
    gc.Flatten(), gc.Dropout(0.25), gc.Dense(64 * 2 * 2, 10),
])
print(model.summary((1, 8, 8)))

trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=2e-3), backend="auto")
history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=32, seed=0,
                      augment=RandomShift(1),  # shift each image by up to one pixel
                      callbacks=[gc.LearningRateScheduler(gc.CosineLR(epochs))])
print("test:", trainer.evaluate(x_test, y_test))          # {"loss": ..., "accuracy": ...}
plot_history(history, "digits_curves.png")

model.save("digits_cnn.npz")                              # architecture + weights, one .npz
again = gc.load_model("digits_cnn.npz")                   # on the cpu backend by default
probs = gc.Trainer(again, gc.SoftmaxCrossEntropy(), gc.Adam(again.parameters())).predict(x_test)
assert np.array_equal(probs, trainer.predict(x_test)), "a reloaded model predicts the same"

heatmaps = gc.GradCAM(again)(x_test[:8])                  # (8, 8, 8) in [0, 1]: where the model looked
print("Grad-CAM maps:", heatmaps.shape)

from matplotlib.figure import Figure  # noqa: E402  (only the picture below needs it)

fig = Figure(figsize=(12, 3.2), layout="constrained")
for i, (ax_image, ax_map) in enumerate(fig.subplots(2, 8).T):
    ax_image.imshow(x_test[i, 0], cmap="gray")
    ax_image.set_title(f"{y_test[i]} -> {probs[i].argmax()}")
    ax_map.imshow(heatmaps[i], cmap="jet", vmin=0, vmax=1)
    ax_image.set_axis_off()
    ax_map.set_axis_off()
fig.savefig("digits_gradcam.png")
print("wrote digits_cnn.npz, digits_curves.png, digits_gradcam.png")
