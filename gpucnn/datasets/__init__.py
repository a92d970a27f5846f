"""Data sets: the embedded 8x8 digits, MNIST from local files, and synthetic shapes.

Every loader returns float32 NCHW images in [0, 1] and int64 labels; nothing
is downloaded unless asked for.
"""

from .augment import RandomShift
from .digits import load_digits
from .mnist import load_mnist, read_idx

__all__ = ["load_digits", "load_mnist", "read_idx", "make_shapes", "RandomShift"]


def __getattr__(name):
    # make_shapes comes from the Grad-CAM side of the package (shapes.py); it is
    # imported on first use so the loaders above never depend on it.
    if name == "make_shapes":
        from .shapes import make_shapes
        return make_shapes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
