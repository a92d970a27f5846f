"""Top-quark jets against QCD jets: generate jet images with Pythia 8 and FastJet, train a dense
network and CNNs on one and three colour channels, compare them, and ask Grad-CAM where they look.

    pip install -e ".[physics]"
    python examples/jet_images.py                      # 10k jets per class, cached in data/jets/
    python examples/jet_images.py --n 500 --epochs 2   # a quick look

The images are at truth level (no detector simulation), which makes the task
easier than the detector-level benchmarks of the literature. Writes to
runs/jets/: roc.png, compare.md, compare.json, explain.png, single_jets.png
and the three models. The same as: gpucnn jets generate / compare / explain.
"""

import argparse
import os

import numpy as np

from gpucnn.datasets import jets
from gpucnn.jets_cli import compare, explain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=10000, help="jets per class (default 10000)")
parser.add_argument("--epochs", type=int, default=4, help="training epochs of each model (default 4)")
parser.add_argument("--out", default=os.path.join("runs", "jets"), help="output folder (default runs/jets)")
args = parser.parse_args()

# 1. Simulate pp -> tt (hadronic) and pp -> jets at 13 TeV, one process per core; the result is
#    cached, so a second run with the same settings only reads the file.
images, labels, info = jets.generate(args.n, channels=3, seed=0,
                                     cache=os.path.join("data", "jets", f"top_qcd_{args.n}.npz"))
stats = info["stats"]
print(f"{len(labels)} jets: {stats['jets_per_second']:.1f} jets/s when generated with {stats['workers']} workers; "
      f"events passing the selection: " + ", ".join(f"{p} {f:.0%}" for p, f in stats["pass_fraction"].items()))

# 2. Physics sanity: the top jet carries the top mass, a QCD jet does not.
for label, name in ((1, "top"), (0, "QCD")):
    mass = info["mass"][labels == label]
    print(f"{name:>3} jets: mass median {np.median(mass):.0f} GeV, "
          f"{np.mean(np.abs(mass - 175) < 25):.0%} within 150-200 GeV")

# 3. DNN on flattened 1-channel images, CNN on 1 channel, CNN on 3 channels; same split and seed.
compare(images, labels, info, args.out, epochs=args.epochs, backend="auto", verbose=0)

# 4. Mean images per class and channel; class-averaged Grad-CAM maps of the 3-channel CNN beside them.
explain(images, labels, info, args.out)
