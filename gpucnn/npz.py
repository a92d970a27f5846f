"""``.npz`` files that are safe to write and to read: atomic saves, and reads that check before they decompress.

Writing (``save_npz_atomic``): the arrays go to a hidden temporary file in the
target's folder, which is then renamed over the target, so a reader sees the
old file or the new one, never half of one. The temporary file is locked while
its save runs; a save killed half-way leaves its temporary behind, and the next
save into the folder removes every such file whose lock is free (the lock of a
save still running elsewhere is held, so its file stays). Where the OS has no
advisory locks, a temporary counts as abandoned once it is an hour old.

Reading (``NpzReader``): before a single array byte is decompressed, every
member's name is checked against what the caller expects, and every member's
``.npy`` header (shape and dtype, a few hundred bytes at the start of the
member) is read, object arrays (pickles) are refused, and the declared sizes
are added up against a cap. The caller compares the headers with what it
expects, then reads only the members it needs.
"""

from __future__ import annotations

import numbers
import os
import re
import secrets
import time
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy_format

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; stale temporaries are told by their age
    fcntl = None

# A generous default cap on the arrays one file may declare: far above any model
# this engine trains, far below what a small forged file could make us allocate.
DEFAULT_MAX_BYTES = 4 << 30
MAX_BYTES_VARIABLE = "GPUCNN_MAX_MODEL_BYTES"

_TEMP_PREFIX, _TEMP_SUFFIX = ".gpucnn-save-", ".npz.tmp"
_STALE_SECONDS = 3600  # without file locks: a temporary untouched this long belongs to no live save
_TEMP_NAME = re.compile(re.escape(_TEMP_PREFIX) + r"[0-9a-f]{16}" + re.escape(_TEMP_SUFFIX) + r"\Z")

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# What zipfile, zlib and numpy raise for a damaged archive or member (an encrypted
# member is a RuntimeError, an unknown compression or zip version NotImplementedError).
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError)


class ArrayHeader(NamedTuple):
    """What a member's ``.npy`` header declares: enough to check an array without reading it."""

    shape: tuple
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def is_float_array(array) -> bool:
    """Whether an array (or an ArrayHeader) holds float32 or float64, in either byte order."""
    return array.dtype.newbyteorder("=") in FLOAT_DTYPES


# --- writing ---------------------------------------------------------------------------


def save_npz_atomic(path, arrays: dict) -> None:
    """``np.savez(path, **arrays)`` that never leaves a half-written ``path``.

    The file gets the mode the umask gives any new file (0644 under the usual
    022). Temporary files of killed saves in the same folder are removed first.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    fd, tmp = _create_locked_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # while the lock is held: a cleaner never sees this file unlocked
        _fsync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def create_new_file(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new empty file ``<prefix><16 hex digits><suffix>`` in ``folder``, open for writing: (fd, path).

    Its mode is 0666 less the umask, as any new file's (``tempfile.mkstemp``
    would give 0600 to what is renamed into place).
    """
    while True:
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _create_locked_temporary(folder: str) -> tuple[int, str]:
    """A new hidden file in ``folder`` (``create_new_file``), locked; returns (fd, path)."""
    while True:
        fd, tmp = create_new_file(folder, _TEMP_PREFIX, _TEMP_SUFFIX)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a filesystem without locks: cleaners cannot lock the file either
                pass
        # A cleaner may have taken and removed the file between its creation and
        # our lock; then it is no longer linked, and we start again.
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)


def remove_stale_temporaries(folder) -> list[str]:
    """Remove the temporary files of killed saves from ``folder``; returns their paths.

    Only files named like ours are looked at, and only those no running save
    holds locked are removed (a killed process's locks are released by the OS;
    without locks, those untouched for an hour).
    """
    removed = []
    for name in os.listdir(folder):
        if not _TEMP_NAME.match(name):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # its save finished meanwhile, or not ours to open
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # an OSError while a save holds it
            elif time.time() - os.fstat(fd).st_mtime < _STALE_SECONDS:
                continue
            os.remove(path)
            removed.append(path)
        except OSError:  # locked by a running save, already gone, or not ours to remove
            pass
        finally:
            os.close(fd)
    return removed


def _fsync_folder(folder: str) -> None:
    """Make the rename durable: a crash after the save returns keeps the new file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------


def max_bytes_default() -> int:
    """The cap on the bytes a file's arrays may declare: ``$GPUCNN_MAX_MODEL_BYTES`` or 4 GiB."""
    value = os.environ.get(MAX_BYTES_VARIABLE)
    if value is None:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"${MAX_BYTES_VARIABLE} must be a positive number of bytes, got {value!r}")
    return limit


def _format_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} GiB"


class NpzReader:
    """An ``.npz`` file opened for checked reading (a context manager).

    ``NpzReader(path, max_bytes=None)`` opens the archive and lists its members
    (``keys``: names without ``.npy``); ``check_members(accept)`` refuses any
    member ``accept(key)`` does not allow, then reads every header into
    ``headers`` and adds the declared sizes up against ``max_bytes``. After
    that, ``read(key)`` returns an array (the checks are what bound its size).
    Every problem is a ValueError that starts with ``source``
    (``"checkpoint 'path'"``) and names the member.
    """

    def __init__(self, path, max_bytes: int | None = None):
        self.path = os.fspath(path)
        self.source = f"checkpoint {self.path!r}"
        if max_bytes is None:
            max_bytes = max_bytes_default()
        elif isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.headers: dict[str, ArrayHeader] = {}
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.source} does not exist")
        if os.path.isdir(self.path):
            raise ValueError(f"{self.source} is a folder, not an .npz file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except PermissionError:
            raise
        except _DAMAGED as err:
            raise ValueError(self._not_an_npz(err)) from None
        try:
            self._infos = self._list_members()
        except BaseException:
            self._zip.close()
            raise
        self.keys = set(self._infos)

    def check_members(self, accept) -> None:
        """Refuse members ``accept(key)`` rejects, then read and check every header (no array data)."""
        for key, info in self._infos.items():
            if not accept(key):
                raise ValueError(f"{self.source} has a member {info.filename!r} that does not belong "
                                 f"in it; refusing the file")
        self.headers = {key: self._read_header(key) for key in self._infos}
        self._check_total()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _not_an_npz(self, err) -> str:
        with open(self.path, "rb") as f:
            start = f.read(len(npy_format.MAGIC_PREFIX))
        if start == npy_format.MAGIC_PREFIX:
            return f"{self.source} is a single .npy array, not an .npz file (a gpucnn model is an .npz)"
        return f"{self.source} is not an .npz file, or it is corrupt or truncated ({err})"

    def _list_members(self) -> dict:
        infos = {}
        for info in self._zip.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{self.source} has a member {info.filename!r} that is not an array; "
                                 f"refusing the file")
            key = info.filename[:-len(".npy")]
            if key in infos:
                raise ValueError(f"{self.source} has the member {info.filename!r} twice")
            infos[key] = info
        return infos

    def _open(self, key):
        return self._zip.open(self._infos[key])

    def _read_header(self, key) -> ArrayHeader:
        """The member's header, from the first bytes of its (decompressed) stream only."""
        where = f"{self.source}, member {key!r}"
        try:
            with self._open(key) as f:
                version = npy_format.read_magic(f)
                reader = {(1, 0): npy_format.read_array_header_1_0,
                          (2, 0): npy_format.read_array_header_2_0}.get(version)
                if reader is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran_order, dtype = reader(f)
                offset = f.tell()
        except _DAMAGED as err:
            raise ValueError(f"{where} is not a readable array ({err})") from None
        if dtype.hasobject:
            raise ValueError(f"{where} carries pickled objects; refusing to load it "
                             f"(a gpucnn file is data, never code)")
        header = ArrayHeader(tuple(shape), dtype, bool(fortran_order))
        # np.savez writes the header then exactly the data; the zip's own size for
        # the member must agree, so that what read() inflates is bounded by the header.
        if self._infos[key].file_size != offset + header.nbytes:
            raise ValueError(f"{where} is corrupt: its header declares {header.nbytes} bytes of "
                             f"{dtype} {tuple(shape)}, the archive holds "
                             f"{self._infos[key].file_size - offset}")
        return header

    def _check_total(self) -> None:
        total = 0
        for key, header in self.headers.items():
            total += header.nbytes
            if total > self.max_bytes:
                raise ValueError(
                    f"{self.source}: member {key!r} ({header.dtype} {header.shape}, "
                    f"{_format_bytes(header.nbytes)}) takes the file's arrays past the limit of "
                    f"{_format_bytes(self.max_bytes)}; if the file is trusted, raise it with "
                    f"max_bytes= or ${MAX_BYTES_VARIABLE}")

    def read(self, key) -> np.ndarray:
        """The array of member ``key`` (its header was checked when the file was opened)."""
        try:
            with self._open(key) as f:
                return npy_format.read_array(f, allow_pickle=False)
        except _DAMAGED as err:
            raise ValueError(f"{self.source}, member {key!r} is corrupt or truncated ({err})") from None

    def read_scalar(self, key, kind: str) -> np.ndarray:
        """A member that must be a single value of ``kind``: "integer", "float" or "text"."""
        header = self.headers.get(key)
        if header is None:  # absent (or check_members has not run)
            raise ValueError(f"{self.source} lacks the member {key!r}")
        if header.shape != () or header.dtype.kind not in _SCALAR_KINDS[kind]:
            raise ValueError(f"{self.source}, member {key!r} should be a single {kind}, "
                             f"but is {header.dtype} of shape {header.shape}")
        return self.read(key)


_SCALAR_KINDS = {"integer": "iu", "float": "f", "text": "U"}  # numpy dtype kinds
