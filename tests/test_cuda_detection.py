"""Whether the ``cuda`` backend is usable, and the reason each surface gives when it is not.

The probe's steps (``gpucnn.backend.cuda_probe``) are replaced one at a time
to simulate each failure a user meets -- no driver, a driver older than
CuPy's CUDA, no device, NVRTC missing, a kernel that does not compile -- and
each reason must reach ``cuda_status()``, ``get_backend("cuda")`` (a
RuntimeError), ``Trainer(..., backend="auto")`` (one warning, then the CPU)
and ``gpucnn info``. The last tests run the real, unpatched probe.
"""

import re
import warnings

import numpy as np
import pytest

import gpucnn as gc
import gpucnn.backend as backend_module
from gpucnn import cli
from gpucnn.backend import CudaUnusableWarning, cuda_probe, cuda_status


@pytest.fixture
def fresh_detection(monkeypatch):
    """The probe runs again, "auto" may warn again, and no backend instance outlives the test."""
    cuda_status.cache_clear()
    monkeypatch.setattr(backend_module, "_auto_warned", False)
    monkeypatch.setattr(backend_module, "_instances", {})
    yield monkeypatch
    cuda_status.cache_clear()


def _raising_cuda_error(status):
    """A probe step that fails as CuPy's runtime does with CUDA error ``status``."""
    error = pytest.importorskip("cupy").cuda.runtime.CUDARuntimeError(status)

    def fail(*args):
        raise error

    return fail


def _one_device(monkeypatch):
    """Simulate a machine whose CUDA runtime sees one device."""
    monkeypatch.setattr(cuda_probe, "_device_count", lambda cupy: 1)
    monkeypatch.setattr(cuda_probe, "_device_name", lambda cupy: "GPU 0 Simulated (compute capability 9.0)")


def _cupy_cuda_major():
    cupy = pytest.importorskip("cupy")
    return cupy.cuda.runtime.runtimeGetVersion() // 1000


def _tiny_trainer(backend):
    model = gc.Sequential([gc.Dense(4, 2)])
    return gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-3), backend=backend)


def _assert_every_surface_gives(reason_pattern, capsys):
    """cuda_status, get_backend("cuda"), Trainer(backend="auto") and gpucnn info all state the reason."""
    usable, reason = cuda_status()
    assert not usable
    assert re.search(reason_pattern, reason), reason
    assert "\n" not in reason

    with pytest.raises(RuntimeError) as info:
        gc.get_backend("cuda")
    assert reason in str(info.value)

    with pytest.warns(CudaUnusableWarning) as caught:
        trainer = _tiny_trainer("auto")
    assert trainer.backend.name == "cpu"
    assert len(caught) == 1 and reason in str(caught[0].message)
    with warnings.catch_warnings():  # once per process: the second "auto" is silent
        warnings.simplefilter("error")
        assert _tiny_trainer("auto").backend.name == "cpu"

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"cuda      not usable: {reason}" in out
    assert "auto   -> cpu" in out


def test_no_driver(fresh_detection, capsys):
    monkeypatch = fresh_detection
    monkeypatch.setattr(cuda_probe, "_driver_and_runtime", lambda cupy: (0, 13020))
    monkeypatch.setattr(cuda_probe, "_device_count", _raising_cuda_error(35))
    _assert_every_surface_gives(r"^no NVIDIA driver found.*CUDA 13\.2", capsys)


def test_driver_older_than_cupys_cuda(fresh_detection, capsys):
    """CuPy's is_available() says only False here; the reason shows both versions and the way out."""
    monkeypatch = fresh_detection
    monkeypatch.setattr(cuda_probe, "_driver_and_runtime", lambda cupy: (12040, 13020))
    monkeypatch.setattr(cuda_probe, "_device_count", _raising_cuda_error(35))
    _assert_every_surface_gives(
        r"driver supports CUDA 12\.4, older than the CUDA 13\.2 of CuPy .*update the driver.*"
        r"pip uninstall cupy-cuda13x; pip install \"gpucnn\[cuda12\]\"", capsys)


def test_no_device(fresh_detection, capsys):
    monkeypatch = fresh_detection
    monkeypatch.setattr(cuda_probe, "_device_count", _raising_cuda_error(100))
    _assert_every_surface_gives(r"^no usable CUDA device \(CUDARuntimeError: cudaErrorNoDevice", capsys)


def test_zero_devices(fresh_detection, capsys):
    pytest.importorskip("cupy")  # the probe's steps after "import cupy" are simulated, not that one
    monkeypatch = fresh_detection
    monkeypatch.setattr(cuda_probe, "_driver_and_runtime", lambda cupy: (13000, 13020))
    monkeypatch.setattr(cuda_probe, "_device_count", lambda cupy: 0)
    _assert_every_surface_gives(r"^no CUDA device found \(driver for CUDA 13\.0\)", capsys)


def test_nvrtc_missing(fresh_detection, capsys):
    """CuPy 14 raises DynamicLibNotFoundError when the NVRTC wheel is missing: the reason gives
    the install command for the CUDA major of the installed CuPy."""
    monkeypatch = fresh_detection
    major = _cupy_cuda_major()
    not_found = pytest.importorskip("cuda.pathfinder").DynamicLibNotFoundError
    _one_device(monkeypatch)

    def nvrtc_version(cupy):
        raise not_found(f"Failure finding libnvrtc.so.{major}")

    monkeypatch.setattr(cuda_probe, "_nvrtc_version", nvrtc_version)
    _assert_every_surface_gives(
        rf"cannot load NVRTC.*libnvrtc\.so\.{major}.*install it with: "
        rf"pip install \"gpucnn\[cuda{major}\]\"$", capsys)


def test_nvrtc_missing_when_the_first_kernel_loads(fresh_detection, capsys):
    """CuPy 13's way: NVRTC's version answers, loading the library for a compile fails."""
    from gpucnn.backend.cupy_launcher import KernelLoadError

    monkeypatch = fresh_detection
    major = _cupy_cuda_major()
    _one_device(monkeypatch)
    monkeypatch.setattr(cuda_probe, "_nvrtc_version", lambda cupy: (major, 0))

    def test_kernel():
        try:
            raise RuntimeError(f"CuPy failed to load libnvrtc.so.{major}: OSError: cannot open shared object")
        except RuntimeError as error:
            raise KernelLoadError("could not load the CUDA kernels of pooling.cu: RuntimeError") from error

    monkeypatch.setattr(cuda_probe, "_run_test_kernel", test_kernel)
    _assert_every_surface_gives(rf"cannot load NVRTC.*pip install \"gpucnn\[cuda{major}\]\"$", capsys)


def test_kernel_that_does_not_compile(fresh_detection, capsys, tmp_path):
    """The launcher's real NVRTC error (a broken source here) becomes the reason, naming the file."""
    from gpucnn.backend import cupy_launcher

    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as error:
        pytest.skip(f"NVRTC not installed: {error}")
    monkeypatch = fresh_detection
    _one_device(monkeypatch)
    broken = tmp_path / "pooling.cu"
    broken.write_text('extern "C" __global__ void avg_pool2d_forward_f32(float* y) { y[0] = oops; }\n')
    monkeypatch.setattr(cuda_probe, "_run_test_kernel", lambda: cupy_launcher.compile_binary(broken, (), 90))
    _assert_every_surface_gives(
        rf"^a test kernel failed on GPU 0 Simulated .*KernelLoadError: NVRTC could not compile "
        rf"{re.escape(str(broken))}", capsys)


def test_wrong_answer_of_the_test_kernel(fresh_detection, capsys):
    """A kernel that runs but computes garbage (a broken driver or device) also makes the GPU unusable."""
    pytest.importorskip("cupy")
    monkeypatch = fresh_detection
    _one_device(monkeypatch)

    class WrongBackend:
        """Runs the probe's host code, but every kernel returns zeros."""

        def asarray(self, a):
            return np.asarray(a)

        def to_numpy(self, a):
            return a

        def avg_pool2d_forward(self, x, geom):
            return np.zeros(geom.y_shape, x.dtype)

    monkeypatch.setattr("gpucnn.backend.cuda.cupy_cuda_backend", WrongBackend)
    _assert_every_surface_gives(r"avg_pool2d_forward returned \[0\.0, 0\.0, 0\.0, 0\.0\], "
                                r"expected \[2\.5, 4\.5, 10\.5, 12\.5\]", capsys)


def test_cupy_not_installed_is_said_but_auto_stays_quiet(fresh_detection, capsys):
    """Without CuPy the CPU is what was asked for: no warning from "auto", the install line elsewhere."""
    monkeypatch = fresh_detection

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(cuda_probe, "_import_cupy", no_cupy)
    usable, reason = cuda_status()
    assert not usable and reason.startswith("CuPy is not installed")
    assert 'pip install "gpucnn[cuda13]"' in reason and '"gpucnn[cuda12]"' in reason
    with pytest.raises(RuntimeError, match=re.escape(reason)):
        gc.get_backend("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gc.get_backend("auto").name == "cpu"
    assert cli.main(["info"]) == 0
    assert f"cuda      not usable: {reason}" in capsys.readouterr().out


def test_usable_gpu_is_chosen_by_auto(fresh_detection):
    """When every step passes, "auto" is cuda, silently, and the reason describes the device."""
    cupy = pytest.importorskip("cupy")
    monkeypatch = fresh_detection
    _one_device(monkeypatch)
    monkeypatch.setattr(cuda_probe, "_driver_and_runtime", lambda cupy: (13000, 13020))
    monkeypatch.setattr(cuda_probe, "_nvrtc_version", lambda cupy: (13, 5))
    monkeypatch.setattr(cuda_probe, "_run_test_kernel", lambda: None)
    usable, reason = cuda_status()
    assert usable
    assert reason == (f"GPU 0 Simulated (compute capability 9.0), driver for CUDA 13.0, "
                      f"CuPy {cupy.__version__} (built for CUDA 13.2), NVRTC 13.5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gc.get_backend("auto").name == "cuda"


def test_status_is_probed_once(fresh_detection):
    monkeypatch = fresh_detection
    calls = []
    monkeypatch.setattr(cuda_probe, "probe", lambda: calls.append(1) or (False, "simulated"))
    assert cuda_status() == cuda_status() == (False, "simulated")
    assert gc.backend.cuda_is_available() is False
    assert len(calls) == 1


# --- the real probe, unpatched ----------------------------------------------------------------

def test_real_machine_without_gpu_says_no_device(fresh_detection, capsys):
    """With CuPy installed and no GPU (this machine, CI), the reason is the missing driver or device."""
    pytest.importorskip("cupy")
    if cuda_status()[0]:
        pytest.skip("this machine has a usable GPU")
    _assert_every_surface_gives(r"^(no NVIDIA driver found|no CUDA device found|no usable CUDA device)", capsys)


@pytest.mark.gpu
def test_real_probe_on_a_gpu_runs_the_test_kernel(fresh_detection):
    """On a GPU machine the real probe passes only through the test kernel: the reason names the device."""
    usable, reason = cuda_status()
    if not usable:
        pytest.skip(f"no usable GPU: {reason}")
    assert re.match(r"GPU \d+ .* \(compute capability \d+\.\d+\), driver for CUDA", reason)
