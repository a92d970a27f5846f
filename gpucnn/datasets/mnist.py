"""MNIST from local files: the four IDX files (plain or gzip) or one ``.npz``.

Nothing is fetched unless ``download=True`` is passed; then the four gzip
files come from a public mirror and each is checked against its known MD5
before it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request

import numpy as np

# name -> (file stem, MD5 of the .gz file as published alongside the mirror)
MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "y_train": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "x_test": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "y_test": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# The third byte of an IDX magic number names the element type (all big-endian).
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (plain, or gzip when the name ends in ``.gz``) into an array.

    The header is 0x00 0x00, a type byte, the number of dimensions d, then d
    big-endian uint32 sizes; the data follow in C order. Raises ValueError for a
    bad magic number, an unknown type, or a file whose length does not match
    its header.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"IDX file {path!r} cannot be read ({type(err).__name__}: {err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path!r} has a bad magic number {raw[:4].hex() or '(empty)'}; "
                         f"expected 0000 then a type byte (08 for uint8) and the number of dimensions")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path!r} is truncated inside its header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX file {path!r} holds {len(raw)} bytes; its header (shape {shape}, "
                         f"{dtype}) says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: str, stem: str) -> str | None:
    """The IDX file ``stem`` in ``folder``, plain or .gz (also the ``stem.idx3-ubyte`` spelling)."""
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _missing_message(path: str) -> str:
    names = ", ".join(stem + "[.gz]" for stem, _ in MNIST_FILES.values())
    return (f"MNIST not found at {path!r}: put the four IDX files ({names}) in that folder, "
            f"or an mnist.npz with arrays x_train, y_train, x_test, y_test, "
            f"or call load_mnist(path, download=True)")


def _normalise(x, y, source: str):
    """uint8 images (N, 28, 28) or (N, 1, 28, 28) and labels (N,) -> float32 NCHW in [0, 1], int64."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"{source}: expected images (N, 28, 28) and labels (N,), "
                         f"got {x.shape} and {y.shape}")
    scale = 255.0 if x.dtype == np.uint8 or x.max(initial=0) > 1 else 1.0
    return (x / scale).astype(np.float32), y.astype(np.int64)


def download_mnist(folder) -> None:
    """Fetch the four gzip IDX files into ``folder`` and check each MD5; a mismatch is a ValueError."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for stem, md5 in MNIST_FILES.values():
        target = os.path.join(folder, stem + ".gz")
        if os.path.isfile(target) and _md5(target) == md5:
            continue
        tmp = target + ".part"
        urllib.request.urlretrieve(MNIST_MIRROR + stem + ".gz", tmp)
        got = _md5(tmp)
        if got != md5:
            os.remove(tmp)
            raise ValueError(f"download of {stem}.gz failed its checksum (MD5 {got}, expected {md5})")
        os.replace(tmp, target)


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_mnist(path="data/mnist", download: bool = False):
    """Return ``(x_train, y_train), (x_test, y_test)`` from local MNIST files.

    ``path`` is a folder holding the four IDX files (plain or ``.gz``) or an
    ``mnist.npz``, or the path of such an ``.npz`` (arrays ``x_train``,
    ``y_train``, ``x_test``, ``y_test``). x: float32 (N, 1, 28, 28) in [0, 1];
    y: int64 (N,). With ``download=True`` a folder without the files is first
    filled from the public mirror (checksums checked); by default nothing is
    fetched and a missing file is a FileNotFoundError saying what to put where.
    """
    path = os.fspath(path)
    npz = path if path.endswith(".npz") else os.path.join(path, "mnist.npz")
    if os.path.isfile(npz):
        with np.load(npz, allow_pickle=False) as data:
            missing = [k for k in MNIST_FILES if k not in data.files]
            if missing:
                raise ValueError(f"{npz!r} lacks the arrays {missing} (needs x_train, y_train, x_test, y_test)")
            arrays = {k: data[k] for k in MNIST_FILES}
        source = npz
    else:
        if path.endswith(".npz"):
            raise FileNotFoundError(_missing_message(path))
        found = {k: _find(path, stem) for k, (stem, _) in MNIST_FILES.items()}
        if None in found.values() and download:
            download_mnist(path)
            found = {k: _find(path, stem) for k, (stem, _) in MNIST_FILES.items()}
        if None in found.values():
            raise FileNotFoundError(_missing_message(path))
        arrays = {k: read_idx(f) for k, f in found.items()}
        source = path
    train = _normalise(arrays["x_train"], arrays["y_train"], f"MNIST training set in {source!r}")
    test = _normalise(arrays["x_test"], arrays["y_test"], f"MNIST test set in {source!r}")
    return train, test
