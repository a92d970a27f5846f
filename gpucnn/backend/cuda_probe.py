"""Is the ``cuda`` backend usable here, and if not, why: ``probe() -> (usable, reason)``.

A GPU counts as usable only when every step a real run takes succeeds:

1. CuPy imports;
2. the CUDA runtime inside CuPy finds a driver that can run it, and a device
   (``cupy.cuda.is_available()`` answers False without saying which of these
   failed; a driver older than CuPy's CUDA is common on clusters);
3. CuPy loads NVRTC, the compiler of our kernels (a plain ``pip install
   cupy-cuda13x`` does not bring it);
4. a test kernel of ours (``avg_pool2d_forward`` of ``kernels/pooling.cu``)
   compiles, loads and runs through the ``cuda`` backend's own host code and
   launcher, and gives NumPy's answer.

The reason names the failed step in one line, with what to do about it.
Each step is a small function here, so the tests can simulate its failure.
"""

from __future__ import annotations

import numpy as np

from .geometry import PoolGeometry

#: The CUDA majors gpucnn has an install extra for (pyproject.toml: cuda12, cuda13).
EXTRAS_CUDA_MAJORS = (12, 13)

#: The start of the reason when CuPy is not installed: "auto" then runs on the CPU without a warning.
CUPY_MISSING = "CuPy is not installed"

# cudaErrorInsufficientDriver: the driver is older than the CUDA runtime linked into CuPy.
_INSUFFICIENT_DRIVER = 35


def cuda_version(version: int) -> str:
    """CUDA's integer version as text: 12040 -> "12.4"; 0 (no driver) -> "none"."""
    return "none" if version == 0 else f"{version // 1000}.{version % 1000 // 10}"


def install_command(cuda_major: int | None = None) -> str:
    """The pip command that installs gpucnn's GPU extra for CUDA ``cuda_major`` (both majors when None)."""
    if cuda_major is None:
        return 'pip install "gpucnn[cuda13]" (or "gpucnn[cuda12]" for a CUDA 12 driver)'
    return f'pip install "gpucnn[cuda{cuda_major}]"'


def _import_cupy():
    import cupy

    return cupy


def _driver_and_runtime(cupy) -> tuple[int, int]:
    """(driver's CUDA version, CuPy's CUDA runtime version) as CUDA integers; 0 for no driver."""
    runtime = cupy.cuda.runtime
    try:
        driver = runtime.driverGetVersion()
    except Exception:  # no libcuda at all
        driver = 0
    return driver, runtime.runtimeGetVersion()


def _device_count(cupy) -> int:
    """CUDA devices the runtime sees; raises CuPy's CUDARuntimeError when it cannot ask."""
    return cupy.cuda.runtime.getDeviceCount()


def _nvrtc_version(cupy) -> tuple[int, int]:
    """NVRTC's (major, minor); raises whatever CuPy raises when it cannot load the library."""
    return tuple(cupy.cuda.nvrtc.getVersion())


def _device_name(cupy) -> str:
    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    major, minor = device.compute_capability
    return f"GPU {device.id} {name} (compute capability {major}.{minor})"


def _run_test_kernel() -> None:
    """2x2 average pooling of a 4x4 image on the GPU, through the ``cuda`` backend's host code
    and launcher, against NumPy; raises on any failure or a wrong answer."""
    from .cuda import cupy_cuda_backend

    backend = cupy_cuda_backend()
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    geom = PoolGeometry(N=1, C=1, H=4, W=4, R=2, S=2, stride=(2, 2))
    y = backend.to_numpy(backend.avg_pool2d_forward(backend.asarray(x), geom))
    expected = x.reshape(1, 1, 2, 2, 2, 2).mean(axis=(3, 5))
    if not np.array_equal(y, expected):
        raise RuntimeError(f"avg_pool2d_forward returned {y.ravel().tolist()}, "
                           f"expected {expected.ravel().tolist()}")


def first_line(error: BaseException) -> str:
    """``"TypeName: first line of the message"``, for reasons that must fit one line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _mentions_nvrtc(error: BaseException) -> bool:
    """True when ``error`` or one of its causes is a failure to load the NVRTC library."""
    while error is not None:
        if type(error).__name__ == "DynamicLibNotFoundError" or "libnvrtc" in str(error).lower():
            return True
        error = error.__cause__
    return False


def probe() -> tuple[bool, str]:
    """(usable, reason): whether the ``cuda`` backend can run here, and why (not).

    The reason is one line: when usable, the device, driver, CuPy and NVRTC
    versions; otherwise the first failed step of the module docstring with
    what to do (an install command, the driver and CUDA versions involved).
    """
    try:
        cupy = _import_cupy()
    except ImportError:
        return False, f"{CUPY_MISSING}; for an NVIDIA GPU: {install_command()}"
    except Exception as error:  # a broken install (two CuPy packages, a missing library) fails otherwise
        return False, f"CuPy is installed but does not import ({first_line(error)})"

    cupy_version = f"CuPy {cupy.__version__}"
    try:
        driver, runtime = _driver_and_runtime(cupy)
    except Exception as error:
        return False, f"{cupy_version} cannot ask the CUDA runtime for versions ({first_line(error)})"
    cuda_major, driver_major = runtime // 1000, driver // 1000
    cupy_text = f"{cupy_version} (built for CUDA {cuda_version(runtime)})"

    try:
        count = _device_count(cupy)
    except Exception as error:
        if getattr(error, "status", None) == _INSUFFICIENT_DRIVER:
            if driver == 0:
                return False, ("no NVIDIA driver found: this machine has no NVIDIA GPU, "
                               f"or its driver is not installed; {cupy_text}")
            remedy = "update the driver"
            if driver_major in EXTRAS_CUDA_MAJORS:
                remedy += (f", or use CuPy for CUDA {driver_major}: pip uninstall cupy-cuda{cuda_major}x; "
                           f"{install_command(driver_major)}")
            return False, (f"the NVIDIA driver supports CUDA {cuda_version(driver)}, older than "
                           f"the CUDA {cuda_version(runtime)} of {cupy_version}: {remedy}")
        return False, f"no usable CUDA device ({first_line(error)}); {cupy_text}"
    if count == 0:
        return False, f"no CUDA device found (driver for CUDA {cuda_version(driver)}); {cupy_text}"

    nvrtc_missing = (f"{cupy_text} cannot load NVRTC, the CUDA compiler of our kernels ({{}}); "
                     f"install it with: {install_command(cuda_major)}")
    try:
        nvrtc = _nvrtc_version(cupy)
    except Exception as error:
        return False, nvrtc_missing.format(first_line(error))
    try:
        device = _device_name(cupy)
    except Exception as error:
        return False, f"the CUDA device does not answer ({first_line(error)}); {cupy_text}"
    try:
        _run_test_kernel()
    except Exception as error:
        if _mentions_nvrtc(error):
            return False, nvrtc_missing.format(first_line(error))
        return False, f"a test kernel failed on {device}: {first_line(error)}"
    return True, (f"{device}, driver for CUDA {cuda_version(driver)}, {cupy_text}, "
                  f"NVRTC {nvrtc[0]}.{nvrtc[1]}")
