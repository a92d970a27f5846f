"""The CuPy launcher: our kernel sources compiled by NVRTC into ``cupy.RawModule`` objects.

It has the launcher interface shared with the emulator
(``gpucnn.backend.emulator.load_module``)::

    module = load_module(path, options)
    module.get_function(name)(grid, block, args, shared_mem=0)

A ``cupy.RawModule`` already answers exactly that call, so this launcher's
work is to build one per source file and options, once per process, and to
report a compile error against the source file's path.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_modules: dict = {}
_lock = threading.Lock()


def _headers_digest(path: Path, options) -> str:
    """Hash of every ``*.cuh`` the source may include: next to it and in its ``-I`` folders.

    CuPy caches compiled modules on disk keyed by the source text and the
    options, not by the headers the source includes. Passing this digest as a
    macro in the options makes an edited header recompile the modules.
    """
    folders = [path.parent] + [Path(o[2:]) for o in options if o.startswith("-I")]
    digest = hashlib.sha256()
    for folder in dict.fromkeys(f.resolve() for f in folders):
        for header in sorted(folder.glob("*.cuh")):
            digest.update(header.name.encode())
            digest.update(header.read_bytes())
    return digest.hexdigest()[:16]


def load_module(path, options=()):
    """Compile the CUDA source file ``path`` with NVRTC and ``options``; return its ``cupy.RawModule``.

    The module is compiled on the first call for a (path, options) pair and
    reused afterwards (CuPy also keeps the binary in its on-disk cache).
    Raises RuntimeError naming ``path`` with the compiler's log when NVRTC
    rejects the source.
    """
    import cupy
    from cupy.cuda.compiler import CompileException

    path = Path(path).resolve()
    options = tuple(options)
    key = (path, options)
    with _lock:
        module = _modules.get(key)
        if module is None:
            nvrtc_options = options + (f"-DGPUCNN_HEADERS_DIGEST=0x{_headers_digest(path, options)}",)
            module = cupy.RawModule(code=path.read_text(), options=nvrtc_options)
            try:
                module.compile()  # now, rather than at the first launch, to name the file on error
            except CompileException as error:
                raise RuntimeError(f"NVRTC could not compile {path}:\n{error}") from error
            _modules[key] = module
    return module
