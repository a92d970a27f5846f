"""Every CUDA source compiles for the GPU, on a machine with no GPU.

- NVRTC through the ``cuda`` backend's own launcher (``cupy_launcher``), with
  exactly its options, for the oldest and newest supported architectures, up
  to loading the binary on the device;
- ``nvcc`` for every supported architecture, with warnings as errors.

Both compile device code only (to cubin / a fatbin), so the checks stay fast.
The emulator compiles the same sources for the CPU elsewhere in the suite;
these tests catch what only a CUDA compiler sees.
"""

import os
import re
import shutil
import subprocess

import pytest

from gpucnn.backend.cuda import COMPILE_OPTIONS, KERNELS_DIR

# Compute capabilities gpucnn supports (DESIGN.md): T4, A100, RTX 30xx, H100/H200.
ARCHS = ("75", "80", "86", "90")
# NVRTC checks the oldest and the newest: code behind an architecture check is
# compiled on both sides of it, and nvcc covers every architecture in between
# (NVRTC for all four doubles the time these tests take for no extra finding).
NVRTC_ARCHS = ("75", "90")

SOURCES = sorted(KERNELS_DIR.glob("*.cu"))


def test_kernel_sources_are_shipped():
    names = {p.name for p in SOURCES}
    assert {"conv2d_direct.cu", "pooling.cu"} <= names
    assert (KERNELS_DIR / "common.cuh").is_file()


def _nvrtc():
    """CuPy's NVRTC bindings, or a skip when CuPy or the NVRTC library is missing.

    CI installs the ``cuda13`` extra and sets GPUCNN_REQUIRE_NVRTC=1: there a
    missing NVRTC fails these tests instead of skipping them, so the extra is
    proven to bring what the launcher needs.
    """
    required = os.environ.get("GPUCNN_REQUIRE_NVRTC") == "1"
    try:
        import cupy
        cupy.cuda.nvrtc.getVersion()
    except Exception as error:  # CuPy missing, or installed without the NVRTC library
        if required:
            pytest.fail(f"GPUCNN_REQUIRE_NVRTC=1 but CuPy cannot load NVRTC: {error}")
        pytest.skip(f"CuPy with NVRTC not installed: {error}")
    return cupy.cuda.nvrtc


def _extern_c_kernels(source: str) -> set:
    """Names of the ``extern "C" __global__`` kernels of ``source`` (launch bounds ignored)."""
    source = re.sub(r"__launch_bounds__\s*\([^)]*\)", " ", source)
    return set(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', source))


@pytest.fixture
def launcher_without_device(monkeypatch, tmp_path):
    """``cupy_launcher`` with only its device-facing calls replaced, and an empty binary cache.

    ``load_module`` then runs for real up to loading the binary onto the GPU
    (``cupy.cuda.function.Module.load``, the first step that needs one): NVRTC
    with the backend's options, the on-disk cache, the error handling.
    Returns ``set_arch(arch)`` (the device's compute capability) and the list
    of binaries handed to the module loader.
    """
    _nvrtc()
    import cupy

    from gpucnn.backend import cupy_launcher

    loaded, arch = [], {}

    class RecordingModule:
        def load(self, binary):
            loaded.append(binary)

    monkeypatch.setenv("GPUCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cupy_launcher, "_modules", {})
    monkeypatch.setattr(cupy_launcher, "device_arch", lambda: arch["value"])
    monkeypatch.setattr(cupy.cuda.runtime, "getDevice", lambda: 0)
    monkeypatch.setattr(cupy.cuda.function, "Module", RecordingModule)
    return lambda value: arch.update(value=value), loaded


@pytest.mark.parametrize("arch", NVRTC_ARCHS)
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_launcher_compiles_every_kernel(path, arch, launcher_without_device):
    """The ``cuda`` backend's launcher, with exactly its options, turns the source into a cubin
    for ``sm_<arch>`` and hands it to the module loader, the step that needs a GPU.
    """
    from gpucnn.backend import cupy_launcher

    set_arch, loaded = launcher_without_device
    set_arch(int(arch))
    cupy_launcher.load_module(path, COMPILE_OPTIONS)
    assert len(loaded) == 1
    cubin = loaded[0]
    assert cubin[:4] == b"\x7fELF"
    # extern "C" keeps the names the host code launches unmangled in the binary.
    for name in _extern_c_kernels(path.read_text()):
        assert name.encode() in cubin, f"{name} missing from the cubin of {path.name}"
    # Loaded once per process; a new process reads the same binary from the disk cache.
    cupy_launcher.load_module(path, COMPILE_OPTIONS)
    assert len(loaded) == 1
    cupy_launcher._modules.clear()
    cupy_launcher.load_module(path, COMPILE_OPTIONS)
    assert loaded[1] == cubin


def test_launcher_names_the_file_nvrtc_rejects(tmp_path, launcher_without_device):
    from gpucnn.backend import cupy_launcher

    set_arch, loaded = launcher_without_device
    set_arch(75)
    source = tmp_path / "broken.cu"
    source.write_text('extern "C" __global__ void broken(float* y) { y[0] = undeclared; }\n')
    with pytest.raises(cupy_launcher.KernelLoadError, match=r"(?s)broken\.cu.*undeclared") as info:
        cupy_launcher.load_module(source)
    assert isinstance(info.value, RuntimeError) and not loaded


def test_launcher_recompiles_after_a_header_edit(tmp_path, launcher_without_device):
    """The cache key covers the headers a source includes, not only the source text."""
    from gpucnn.backend import cupy_launcher

    set_arch, loaded = launcher_without_device
    set_arch(75)
    header, source = tmp_path / "value.cuh", tmp_path / "store.cu"
    source.write_text('#include "value.cuh"\nextern "C" __global__ void store(int* y) { y[0] = VALUE; }\n')
    binaries = []
    for value in (1234567, 7654321):
        header.write_text(f"#define VALUE {value}\n")
        cupy_launcher._modules.clear()
        cupy_launcher.load_module(source)
        binaries.append(loaded[-1])
    assert (1234567).to_bytes(4, "little") in binaries[0]
    assert (7654321).to_bytes(4, "little") in binaries[1]


def test_launcher_failure_without_a_gpu_names_the_file():
    """Un-patched, on a machine without a usable GPU, loading fails as a RuntimeError naming the source."""
    _nvrtc()
    from gpucnn.backend import cuda_is_available, cupy_launcher

    if cuda_is_available():
        pytest.skip("this machine has a usable GPU")
    path = (KERNELS_DIR / "pooling.cu").resolve()
    with pytest.raises(cupy_launcher.KernelLoadError, match=re.escape(str(path))):
        cupy_launcher.load_module(path, COMPILE_OPTIONS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_for_every_arch(path, tmp_path):
    """One nvcc run per source builds a fatbin with SASS for every supported architecture."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    cmd = [nvcc, "--fatbin", "-std=c++17", f"-I{KERNELS_DIR}", "-Werror", "all-warnings",
           *gencode, str(path), "-o", str(tmp_path / "kernels.fatbin")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on {path.name}:\n{result.stdout}\n{result.stderr}"
