"""Self-tests of the CUDA emulator (gpucnn.backend.emulator): it must run correct
kernels correctly and make every class of kernel bug it promises to catch fail loudly."""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the CUDA emulator")

from gpucnn.backend.emulator import load_module  # noqa: E402

KERNELS = Path(__file__).with_name("emulator_kernels")


@pytest.fixture(scope="module")
def reduce_module():
    return load_module(KERNELS / "reduce.cu")


def test_block_sum_with_shared_memory_and_barriers(reduce_module, rng):
    kernel = reduce_module.get_function("block_sum_f32")
    assert kernel.needs_fibers
    n, threads = 1000, 256
    blocks = (n + threads - 1) // threads
    x = rng.standard_normal(n).astype(np.float32)
    partial = np.full(blocks, np.nan, np.float32)
    kernel((blocks,), (threads,), (x, partial, np.int32(n)))
    expected = np.pad(x, (0, blocks * threads - n)).reshape(blocks, threads).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(partial, expected, rtol=1e-5, atol=1e-5)


def test_barrier_free_kernel_runs_as_plain_loop(reduce_module, rng):
    kernel = reduce_module.get_function("axpy_f32")
    assert not kernel.needs_fibers
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    expected = np.float32(2.5) * x + y
    kernel(4, 256, (np.float32(2.5), x, y, 1000))
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("args, message", [
    (lambda x, y: (2.5, x, y, 1000), "not a Python float"),
    (lambda x, y: (np.float32(2.5), x.astype(np.float64), y, 1000), "needs a float32 array, got float64"),
    (lambda x, y: (np.float32(2.5), x, y), "takes 4 arguments"),
    (lambda x, y: (np.float32(2.5), x, y, np.int32(1000)), "needs numpy.int64, got numpy.int32"),
    (lambda x, y: (np.float32(2.5), x, y[::2], 500), "C-contiguous"),
    (lambda x, y: (np.float32(2.5), x, y.tolist(), 1000), "needs a NumPy array"),
])
def test_wrongly_typed_arguments_are_refused(reduce_module, args, message):
    kernel = reduce_module.get_function("axpy_f32")
    x, y = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    with pytest.raises(TypeError, match=message):
        kernel(4, 256, args(x, y))
    assert not y.any()  # refused before anything ran


def test_python_int_refused_for_int_parameter(reduce_module):
    kernel = reduce_module.get_function("block_sum_f32")
    with pytest.raises(TypeError, match="not a Python int"):
        kernel(1, 256, (np.ones(256, np.float32), np.zeros(1, np.float32), 256))


def test_unknown_kernel_name_lists_known_ones(reduce_module):
    with pytest.raises(KeyError, match="block_sum_f32, axpy_f32"):
        reduce_module.get_function("block_sum")
