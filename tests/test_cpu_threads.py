"""The cpu backend's threads and per-shape strategies against the NumPy loop references.

Every path the backend can choose (backward-filter per image or per chunk) and
every pooling op runs with one thread and with two (the images then shared
between two Python threads), with several chunks and a ragged last one.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import gpucnn as gc
import gpucnn.backend.cpu as cpu_module
from gpucnn.backend import cpu_pool
from reference import (avg_pool2d_backward_ref, avg_pool2d_forward_ref, conv2d_backward_data_ref,
                       conv2d_backward_filter_ref, conv2d_forward_ref, max_pool2d_backward_ref,
                       max_pool2d_forward_ref)
from test_ops import CONV_CASES, POOL_CASES, conv_ids, conv_operands, pool_geometry, rel_err


@pytest.fixture
def cpu():
    return gc.get_backend("cpu")


@pytest.fixture
def pool_threads(monkeypatch):
    """``pool_threads(n)``: the backend's pool runs n threads, whatever else the machine runs."""
    monkeypatch.setattr(cpu_pool, "ADAPT_TO_LOAD", False)
    return lambda n: monkeypatch.setattr(cpu_pool, "get_threads", lambda: n)


def blas_threads():
    """Thread counts of every BLAS library loaded: NumPy's matmul's, SciPy's (the kernels' np.dot)."""
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("filter_depth", [0, 10**9], ids=["filter-per-image", "filter-per-chunk"])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_ids(CONV_CASES))
def test_cpu_conv2d_every_strategy_and_thread_count(cpu, rng, monkeypatch, pool_threads, case, filter_depth,
                                                   threads):
    _, x_shape, w_shape, stride, padding, dilation = case
    x_shape = (7,) + x_shape[1:]                    # several chunks, the last one short
    monkeypatch.setattr(cpu_module, "MIN_FILTER_GEMM_DEPTH", filter_depth)
    monkeypatch.setattr(cpu_module, "COL_BYTES", 3000)
    geom, x, w, b, dy = conv_operands(rng, x_shape, w_shape, stride, padding, dilation, np.float64)
    pool_threads(threads)
    y = cpu.conv2d_forward(x, w, b, geom)
    y_relu = cpu.conv2d_forward(x, w, b, geom, activation="relu")
    dx = cpu.conv2d_backward_data(dy, w, geom)
    dw = cpu.conv2d_backward_filter(dy, x, geom)
    y_ref = conv2d_forward_ref(x, w, b, stride, padding, dilation)
    assert rel_err(y, y_ref) < 1e-12
    assert rel_err(y_relu, np.maximum(y_ref, 0)) < 1e-12
    assert rel_err(dx, conv2d_backward_data_ref(dy, w, x.shape, stride, padding, dilation)) < 1e-12
    assert rel_err(dw, conv2d_backward_filter_ref(dy, x, w.shape[2:], stride, padding, dilation)) < 1e-12


@pytest.mark.parametrize("filter_depth", [0, 10**9], ids=["filter-per-image", "filter-per-chunk"])
def test_cpu_conv2d_results_do_not_depend_on_the_thread_count(cpu, rng, monkeypatch, pool_threads, filter_depth):
    """Bit for bit, in float32: the pool's size follows the load of the moment, and the
    same seed must still give the same weights."""
    monkeypatch.setattr(cpu_module, "MIN_FILTER_GEMM_DEPTH", filter_depth)
    geom, x, w, b, dy = conv_operands(rng, (64, 8, 10, 10), (16, 8, 3, 3), 1, 1, 1, np.float32)
    results = []
    for threads in (1, 2):
        pool_threads(threads)
        results.append((cpu.conv2d_forward(x, w, b, geom), cpu.conv2d_backward_data(dy, w, geom),
                        cpu.conv2d_backward_filter(dy, x, geom)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_cpu_pool_follows_the_thread_setting(monkeypatch):
    monkeypatch.setattr(cpu_pool, "ADAPT_TO_LOAD", False)
    with gc.threads(2):
        assert cpu_pool.threads() == 2
    with gc.threads(1):
        assert cpu_pool.threads() == 1


def test_cpu_pool_leaves_the_cores_other_work_is_running_on(monkeypatch):
    monkeypatch.setattr(cpu_pool, "get_threads", lambda: 2)
    monkeypatch.setattr(cpu_pool, "available_cores", lambda: 2)
    for others, expected in ((0, 2), (1, 1), (5, 1)):
        monkeypatch.setattr(cpu_pool, "_others_running", lambda: others)
        assert cpu_pool.threads() == expected


def test_cpu_pool_reads_the_runnable_count_of_loadavg():
    assert cpu_pool.runnable_in_loadavg("0.52 0.58 0.59 2/345 12345\n") == 2
    assert cpu_pool.runnable_in_loadavg("10.10 9.80 8.43 17/1203 99") == 17


def test_cpu_parallel_hands_every_item_to_one_thread_with_blas_single_threaded(pool_threads):
    seen, blas_inside = [], []

    def task(items):
        blas_inside.extend(blas_threads())
        mine = list(items)
        seen.extend(mine)
        return len(mine)

    pool_threads(2)
    with gc.threads(2):
        counts = cpu_pool.parallel(1000, task)
        assert set(blas_threads()) == {2}         # BLAS back at two threads after the call
    assert sorted(seen) == list(range(1000)) and sum(counts) == 1000 and len(counts) == 2
    assert set(blas_inside) == {1}


BLAS_PROBE = """
import json
import numpy as np
from threadpoolctl import threadpool_info
import gpucnn as gc
from gpucnn.backend import cpu_pool

def blas():
    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")

gc.set_threads(2)
cpu_pool.ADAPT_TO_LOAD = False
cpu = gc.get_backend("cpu")
loaded = blas()
inside = []
geom = gc.ConvGeometry.from_shapes((4, 1, 8, 8), (3, 1, 3, 3), 1, 1)
x = np.ones(geom.x_shape, np.float32)
w = np.ones(geom.w_shape, np.float32)
cpu_pool.parallel(2, lambda items: [inside.append(blas()) for _ in items])
cpu.conv2d_backward(cpu.conv2d_forward(x, w, None, geom), x, w, geom)
cpu_pool.parallel(2, lambda items: [inside.append(blas()) for _ in items])
print(json.dumps({"loaded": loaded, "after_conv": blas(), "inside": inside}))
"""


def test_cpu_backend_holds_every_blas_its_kernels_call_at_one_thread_inside_parallel():
    """In a fresh process (no conv kernel has run yet): the BLAS libraries are all loaded when the
    backend is (Numba's np.dot loads none later, which the pool's controllers, looked up once,
    would miss), follow gpucnn's setting, and are at one thread inside ``parallel``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", BLAS_PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["after_conv"] == seen["loaded"]                       # nothing loaded by the kernels
    assert {n for _, n in seen["loaded"]} == {2}                      # the setting reached every one
    assert len(seen["inside"]) == 4
    for libs in seen["inside"]:
        assert [path for path, _ in libs] == [path for path, _ in seen["loaded"]]
        assert {n for _, n in libs} == {1}


def test_cpu_parallel_raises_a_worker_error_after_all_threads_finish(pool_threads):
    finished = []

    def task(items):
        for i in items:
            if i == 3:
                raise RuntimeError("item 3")
        finished.append(True)

    pool_threads(2)
    with pytest.raises(RuntimeError, match="item 3"):
        cpu_pool.parallel(50, task)
    assert len(finished) == 1                     # the other thread ran to the end before the raise


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", POOL_CASES, ids=conv_ids(POOL_CASES))
def test_cpu_pooling_with_one_and_two_threads(cpu, rng, pool_threads, case, threads):
    _, x_shape, kernel, stride, padding = case
    x_shape = (9,) + x_shape[1:]                    # several chunks per thread
    geom = pool_geometry((_, x_shape, kernel, stride, padding))
    x = rng.standard_normal(geom.x_shape)
    dy = rng.standard_normal(geom.y_shape)
    pool_threads(threads)
    y, argmax = cpu.max_pool2d_forward(x, geom)
    dx = cpu.max_pool2d_backward(dy, argmax, geom)
    y_avg = cpu.avg_pool2d_forward(x, geom)
    dx_avg = cpu.avg_pool2d_backward(dy, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_allclose(dx, max_pool2d_backward_ref(dy, argmax_ref, x.shape), rtol=0, atol=1e-12)
    assert rel_err(y_avg, avg_pool2d_forward_ref(x, kernel, stride, padding)) < 1e-12
    assert rel_err(dx_avg, avg_pool2d_backward_ref(dy, x.shape, kernel, stride, padding)) < 1e-12
