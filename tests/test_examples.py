"""The scripts in examples/ run end to end (one epoch each) and write what they promise.

Examples are what users copy from; without a test they rot silently when the
API moves. Each runs in a subprocess in a fresh folder, as a user would run it.
"""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script, outputs", [
    ("digits_cnn.py", ["digits_cnn.npz", "digits_curves.png", "digits_gradcam.png"]),
    ("gradcam_digits.py", [f"gradcam_digits_{m}.png" for m in ("gradcam", "gradcam++", "scorecam", "guided",
                                                               "average")]),
    ("dnn_vs_cnn.py", []),
])
def test_example_runs_and_writes_its_files(script, outputs, tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES / script), "--epochs", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "test:" in run.stdout or "accuracy" in run.stdout
    for name in outputs:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG if name.endswith(".png") else data[:2] == b"PK", name
