"""Where does a digit classifier look? Grad-CAM and its family on the embedded 8x8 digits.

    python examples/gradcam_digits.py              # about a minute on a laptop CPU
    python examples/gradcam_digits.py --epochs 3   # a quicker look

Trains a small CNN built for class activation maps (the last convolution
feeds a global average pool), then for the test digits writes

- gradcam_digits_<method>.png: 16 test digits with their heatmaps, titled true / predicted;
- gradcam_digits_average.png: the Grad-CAM heatmap averaged over every test digit of each class;

and prints, per method, how much the model's confidence drops when the
pixels the heatmap ranks highest are blurred away, against random pixels.
"""

import argparse

import numpy as np

import gpucnn as gc
from gpucnn.cam import GradCAM, GradCAMPlusPlus, GuidedGradCAM, ScoreCAM, faithfulness
from gpucnn.cam_plots import plot_cam_grid, plot_class_averages
from gpucnn.datasets import RandomShift, load_digits
from gpucnn.trainer import Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
parser.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1, gpucnn's default; 0 = all cores)")
args = parser.parse_args()
epochs = args.epochs
gc.set_threads(args.threads)  # see digits_cnn.py

(x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.2, seed=0)

gc.seed(0)
model = gc.Sequential([
    gc.Conv2D(1, 32, 3, padding=1), gc.BatchNorm2D(32), gc.ReLU(),
    gc.Conv2D(32, 64, 3, padding=1), gc.BatchNorm2D(64), gc.ReLU(), gc.MaxPool2D(2),  # (N, 64, 4, 4)
    gc.Conv2D(64, 64, 3, padding=1), gc.BatchNorm2D(64), gc.ReLU(),  # <- explained: the last conv block
    gc.GlobalAvgPool2D(), gc.Dense(64, 10),
])
trainer = Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=2e-3), backend="auto")
trainer.fit(x_train, y_train, epochs=epochs, batch_size=32, seed=0, augment=RandomShift(1), verbose=2)
print("test:", trainer.evaluate(x_test, y_test))
predicted = trainer.predict(x_test).argmax(axis=1)
names = [str(d) for d in range(10)]

for label, method in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus),
                      ("scorecam", ScoreCAM), ("guided", GuidedGradCAM)):
    cam = method(model)                                   # layer=None: the last conv block's ReLU
    maps = cam(x_test)                                    # (360, 8, 8) in [0, 1], predicted classes
    plot_cam_grid(x_test[:16], maps[:16], f"gradcam_digits_{label}.png", labels=y_test[:16],
                  predictions=predicted[:16], class_names=names, title=f"{label}, {cam!r}")
    f = faithfulness(model, x_test, maps)
    print(f"{label:10s} confidence drop, top-ranked vs random pixels: "
          + ", ".join(f"{p:.0%}: {d:.3f} vs {r:.3f}" for p, d, r in zip(f.fractions, f.drop, f.random_drop))
          + f"  (gain {f.gain:+.3f})")
    if method is GradCAM:
        plot_class_averages(x_test, maps, y_test, "gradcam_digits_average.png", class_names=names,
                            title="Grad-CAM, mean heatmap per digit (test set)")

print("wrote gradcam_digits_{gradcam,gradcam++,scorecam,guided}.png and gradcam_digits_average.png")
print("accuracy on the test digits:", np.mean(predicted == y_test))
