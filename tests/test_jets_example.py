"""examples/jet_images.py runs end to end on a dozen jets per class and writes what it promises."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jet_images.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("pythia8mc", "fastjet")),
                    reason='needs the physics extra: pip install "gpucnn[physics]"')
def test_jet_images_example_runs_and_writes_its_files(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--n", "12", "--epochs", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for text in ("mass median", "CNN 3 channels", "jet mass alone", "Grad-CAM of layer"):
        assert text in run.stdout, text
    out = tmp_path / "runs" / "jets"
    for name in ("roc.png", "explain.png", "single_jets.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert (out / "compare.md").read_text().count("\n| ") == 6  # header, rule and four classifiers
    assert (tmp_path / "data" / "jets" / "top_qcd_12.npz").exists()
