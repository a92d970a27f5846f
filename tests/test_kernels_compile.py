"""Every CUDA source compiles for the GPU, on a machine with no GPU.

- NVRTC (through CuPy's bindings, which need no device) with exactly the
  options the ``cuda`` backend uses, for the oldest and newest supported
  architectures;
- ``nvcc`` for every supported architecture, with warnings as errors.

Both compile device code only (to cubin / a fatbin), so the checks stay fast.
The emulator compiles the same sources for the CPU elsewhere in the suite;
these tests catch what only a CUDA compiler sees.
"""

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
    """CuPy's NVRTC bindings, or a skip when CuPy or the NVRTC library is missing."""
    cupy = pytest.importorskip("cupy")
    nvrtc = cupy.cuda.nvrtc
    try:
        nvrtc.getVersion()
    except Exception as error:  # CuPy installed without the NVRTC library
        pytest.skip(f"NVRTC library not loadable: {error}")
    return nvrtc


def _extern_c_kernels(source: str) -> set:
    """Names of the ``extern "C" __global__`` kernels of ``source`` (launch bounds ignored)."""
    source = re.sub(r"__launch_bounds__\s*\([^)]*\)", " ", source)
    return set(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', source))


@pytest.mark.parametrize("arch", NVRTC_ARCHS)
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles(path, arch):
    """The backend's NVRTC options turn the source into a cubin for ``sm_<arch>``.

    ``cupy.cuda.compiler.compile_using_nvrtc`` asks the (missing) device for
    its architecture, so this calls the NVRTC bindings directly.
    """
    nvrtc = _nvrtc()
    source = path.read_text()
    program = nvrtc.createProgram(source, str(path), [], [])
    try:
        try:
            nvrtc.compileProgram(program, list(COMPILE_OPTIONS) + [f"-arch=sm_{arch}"])
        except nvrtc.NVRTCError as error:
            pytest.fail(f"NVRTC rejected {path.name} for sm_{arch}: {error}\n"
                        f"{nvrtc.getProgramLog(program)}")
        cubin = nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    assert cubin[:4] == b"\x7fELF"
    # extern "C" keeps the names the host code launches unmangled in the binary.
    for name in _extern_c_kernels(source):
        assert name.encode() in cubin, f"{name} missing from the cubin of {path.name}"


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
