"""Compile a ``.cu`` file into an emulator library with the host g++, cached on disk.

Steps (``build_library``): preprocess with ``cuda_emu.h`` force-included;
translate the text (``source.translate``); compile to an object file; find the
kernels that need fibers (``elf.kernels_needing_fibers``); link it with the
emulator's runtime (``runtime.cpp``, compiled once per compiler and flags)
into a shared library.

The cache directory holds, per source + options + compiler + emulator version
(the *key*), a manifest ``<key>.json`` naming the library and the hashes of the
files the source included; the library is reused while those hashes match.
Files are written under temporary names and renamed, so processes that build
the same module at once never see a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import elf, source

HEADER = Path(__file__).with_name("cuda_emu.h")
RUNTIME = Path(__file__).with_name("runtime.cpp")
# Files whose contents decide what a build produces; a change to any of them
# invalidates every cached library.
_EMULATOR_FILES = (HEADER, RUNTIME, Path(__file__), Path(source.__file__), Path(elf.__file__))
_FORMAT = 2

CXX_FLAGS = ("-std=c++20", "-O2", "-g1", "-fPIC", "-fvisibility=hidden", "-fno-gnu-unique",
             # CUDA code type-puns freely (float4 loads of float arrays); nvcc tolerates it.
             "-fno-strict-aliasing",
             # One section per function: the call graph elf.py reads.
             "-ffunction-sections")
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer")
# Race checking (see runtime.cpp): the kernels get ThreadSanitizer's compiler
# instrumentation (a hook call before every memory access), whose hooks the
# emulator's runtime defines, compiled without it. No ThreadSanitizer runtime
# is linked; `-z defs` makes a hook the runtime lacks a link error.
RACECHECK_DEFINE = "-DGPUCNN_EMU_RACECHECK=1"
RACECHECK_KERNEL_FLAGS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0")
RACECHECK_LINK_FLAGS = ("-Wl,-z,defs",)


class EmulatorError(RuntimeError):
    """Base class of the emulator's errors."""


class EmulatorCompileError(EmulatorError):
    """g++ rejected a kernel source; the message holds its diagnostics (with ``.cu`` lines)."""


def compiler() -> str:
    """The C++ compiler: ``$GPUCNN_EMU_CXX`` or ``g++``."""
    return os.environ.get("GPUCNN_EMU_CXX", "g++")


def compiler_available() -> bool:
    """True when the emulator's C++ compiler is on PATH."""
    return shutil.which(compiler()) is not None


@functools.lru_cache(maxsize=None)
def _compiler_identity(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
        machine = subprocess.run([cxx, "-dumpmachine"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmulatorError(f"the CUDA emulator needs a C++ compiler; running {cxx!r} failed: {exc}") from None
    return out.splitlines()[0] + " " + machine.strip()


def cache_dir() -> Path:
    """``$GPUCNN_CACHE_DIR/emu``, else ``$XDG_CACHE_HOME/gpucnn/emu``, else ``~/.cache/gpucnn/emu``."""
    if os.environ.get("GPUCNN_CACHE_DIR"):
        return Path(os.environ["GPUCNN_CACHE_DIR"]) / "emu"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpucnn" / "emu"


def host_flags(options, source_dir: Path) -> list[str]:
    """g++ preprocessor flags for NVRTC-style ``options``.

    ``-D``/``-U``/``-I`` (and their long forms) pass through; ``-arch=sm_XY`` /
    ``--gpu-architecture=compute_XY`` set ``__CUDA_ARCH__`` to XY0; everything
    else (``-std=``, ``--use_fast_math``, ``-lineinfo``, ...) means nothing on
    the host and is ignored. The source's folder comes first on the include path.
    """
    if isinstance(options, str):
        raise TypeError("options must be a sequence of strings such as ('-DTILE=16',), not one string")
    flags = [f"-I{source_dir}"]
    opts = list(options)
    i = 0
    while i < len(opts):
        opt = opts[i]
        if not isinstance(opt, str):
            raise TypeError(f"compile options must be strings, got {opt!r}")
        value = None
        for short, long in (("-D", "--define-macro"), ("-U", "--undefine-macro"), ("-I", "--include-path")):
            if opt in (short, long) and i + 1 < len(opts):
                value, i = opts[i + 1], i + 1
            elif opt.startswith(long + "="):
                value = opt[len(long) + 1:]
            elif opt.startswith(short) and len(opt) > 2:
                value = opt[2:]
            if value is not None:
                flags.append(short + (str(Path(value).resolve()) if short == "-I" else value))
                break
        if value is None:
            arch = re.fullmatch(r"(?:-arch|--gpu-architecture)=(?:sm|compute)_(\d+)[a-z]?", opt)
            if arch:
                flags.append(f"-D__CUDA_ARCH__={arch.group(1)}0")
        i += 1
    return flags


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_hash(path) -> str | None:
    try:
        return _sha256(Path(path).read_bytes())
    except OSError:
        return None


@dataclass(frozen=True)
class BuiltLibrary:
    """A compiled module on disk and what Python needs to call it."""

    path: Path
    kernels: tuple[source.KernelDecl, ...]
    needs_fibers: dict
    compiled: bool  # True when this call ran the compiler, False when it came from the cache


def _run(cmd: list[str], what: str, source_path: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        diagnostics = proc.stderr.strip() or proc.stdout.strip()
        raise EmulatorCompileError(
            f"{what} of {source_path} for the CUDA emulator failed:\n{diagnostics}\n"
            f"(command: {shlex.join(cmd)})")


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _runtime_object(cxx: str, mode_flags: list[str], directory: Path) -> Path:
    """runtime.cpp compiled with ``mode_flags``, from the cache when it is there."""
    key = _sha256(json.dumps([_FORMAT, [_file_hash(f) for f in _EMULATOR_FILES], mode_flags,
                              _compiler_identity(cxx)]).encode())
    path = directory / f"runtime-{key[:32]}.o"
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=directory, prefix="build-") as tmp:
            obj = Path(tmp) / "runtime.o"
            _run([cxx, *mode_flags, "-c", str(RUNTIME), "-o", str(obj)], "compilation", RUNTIME)
            _write_atomically(path, obj.read_bytes())
    return path


def build_library(source_path, options=(), sanitize: bool = False, racecheck: bool = False) -> BuiltLibrary:
    """Compile ``source_path`` (a ``.cu`` file) for the emulator, or reuse the cached build.

    sanitize: with AddressSanitizer; racecheck: with the shared-memory race
    checker (the two exclude each other: each instruments every access).
    Raises EmulatorCompileError with g++'s diagnostics, which name the ``.cu``
    file and line, when the source does not compile.
    """
    if sanitize and racecheck:
        raise ValueError("build_library: sanitize=True and racecheck=True cannot be combined "
                         "(AddressSanitizer and the race checker each instrument every memory access)")
    src = Path(source_path).resolve()
    if not src.is_file():
        raise FileNotFoundError(f"CUDA source {src} does not exist")
    cxx = compiler()
    flags = host_flags(options, src.parent)
    mode_flags = list(CXX_FLAGS) + (list(ASAN_FLAGS) if sanitize else []) + ([RACECHECK_DEFINE] if racecheck else [])
    kernel_flags = mode_flags + (list(RACECHECK_KERNEL_FLAGS) if racecheck else [])
    link_flags = mode_flags + (list(RACECHECK_LINK_FLAGS) if racecheck else [])
    key = _sha256(json.dumps([
        _FORMAT, str(src), _file_hash(src), [_file_hash(f) for f in _EMULATOR_FILES],
        flags, kernel_flags, link_flags, _compiler_identity(cxx)]).encode())
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / f"{key}.json"

    cached = _load_manifest(manifest_path)
    if cached is not None:
        return cached

    with tempfile.TemporaryDirectory(dir=directory, prefix="build-") as tmp:
        tmp = Path(tmp)
        preprocessed = tmp / "preprocessed.ii"
        _run([cxx, "-E", *mode_flags, *flags, "-include", str(HEADER), "-x", "c++", str(src),
              "-o", str(preprocessed)], "preprocessing", src)
        text = preprocessed.read_text(errors="replace")
        deps = {p: _file_hash(p) for p in source.dependencies(text)
                if Path(p).resolve() != HEADER.resolve()}
        unit_text, kernels = source.translate(text)
        unit, obj = tmp / "unit.ii", tmp / "unit.o"
        unit.write_text(unit_text)
        _run([cxx, *kernel_flags, "-c", str(unit), "-o", str(obj)], "compilation", src)
        needs_fibers = elf.kernels_needing_fibers(obj.read_bytes(), [k.name for k in kernels])
        library = tmp / "module.so"
        runtime = _runtime_object(cxx, mode_flags, directory)
        _run([cxx, *link_flags, "-shared", str(obj), str(runtime), "-o", str(library)], "linking", src)

        lib_name = _sha256((key + json.dumps(sorted(deps.items()))).encode())[:32] + ".so"
        _write_atomically(directory / lib_name, library.read_bytes())
    manifest = {
        "library": lib_name,
        "source": str(src),
        "deps": deps,
        "kernels": [{"name": k.name, "param_names": k.param_names, "param_types": k.param_types,
                     "max_threads": k.max_threads, "needs_fibers": needs_fibers[k.name]} for k in kernels],
    }
    _write_atomically(manifest_path, json.dumps(manifest, indent=1).encode())
    return BuiltLibrary(directory / lib_name, tuple(kernels), needs_fibers, compiled=True)


def _load_manifest(path: Path) -> BuiltLibrary | None:
    """The cached library a manifest describes, or None when it is missing or stale."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    library = path.parent / manifest["library"]
    if not library.is_file() or any(_file_hash(p) != h for p, h in manifest["deps"].items()):
        return None
    kernels = tuple(source.KernelDecl(k["name"], tuple(k["param_names"]), tuple(k["param_types"]),
                                      k["max_threads"]) for k in manifest["kernels"])
    return BuiltLibrary(library, kernels, {k["name"]: k["needs_fibers"] for k in manifest["kernels"]},
                        compiled=False)
