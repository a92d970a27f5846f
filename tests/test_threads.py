"""gpucnn.set_threads / gpucnn.threads: one setting for BLAS, OpenMP and Numba, and its default (issue 12
item 14: the Python API ran 4-9x slower than the CLI because only the CLI limited threads)."""

import json
import os
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

import gpucnn as gc
from gpucnn import cli
from gpucnn.cpu_threads import DEFAULT_THREADS, available_cores


def _pools():
    """{library API: [threads of each loaded library]}, e.g. {"blas": [1], "openmp": [1]}."""
    pools = {}
    for lib in threadpool_info():
        pools.setdefault(lib["user_api"], []).append(lib["num_threads"])
    return pools


def _assert_everything_uses(n):
    assert gc.get_threads() == n
    assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)
    for api, counts in _pools().items():
        assert counts == [n] * len(counts), (api, counts)


@pytest.fixture(autouse=True)
def restore():
    with gc.threads(gc.get_threads()):
        yield


def test_set_threads_governs_blas_openmp_and_numba():
    for n in (2, 1):
        assert gc.set_threads(n) == n
        _assert_everything_uses(n)
    assert gc.set_threads(0) == available_cores()
    _assert_everything_uses(available_cores())


def test_threads_block_restores_the_setting_also_on_error():
    gc.set_threads(1)
    with gc.threads(2) as n:
        assert n == 2
        _assert_everything_uses(2)
    _assert_everything_uses(1)
    with pytest.raises(RuntimeError):
        with gc.threads(2):
            raise RuntimeError
    _assert_everything_uses(1)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="gpucnn.set_threads: n must be"):
        gc.set_threads(bad)


def test_cli_threads_option_is_the_library_setting():
    cli.set_threads(2)
    _assert_everything_uses(2)
    with pytest.raises(cli.CommandError, match="--threads must be >= 0"):
        cli.set_threads(-1)


PROBE = ("import json, sys, gpucnn, threadpoolctl; "
         "print(json.dumps([gpucnn.get_threads(), "
         "sorted({lib['num_threads'] for lib in threadpoolctl.threadpool_info()}), "
         "'numba.np.ufunc.parallel' in sys.modules and sys.modules['numba.np.ufunc.parallel']._is_initialized]))")


def _fresh_process(env_value):
    env = {k: v for k, v in os.environ.items() if k != "GPUCNN_THREADS"}
    if env_value is not None:
        env["GPUCNN_THREADS"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)


def test_import_applies_the_default_and_the_environment_variable():
    run = _fresh_process(None)
    assert run.returncode == 0, run.stderr
    # The default reaches BLAS, and leaves Numba's threading layer unstarted (fork safety, below).
    assert json.loads(run.stdout) == [DEFAULT_THREADS, [DEFAULT_THREADS], False]
    run = _fresh_process("2")
    assert json.loads(run.stdout) == [2, [2], False]
    run = _fresh_process("0")
    assert json.loads(run.stdout)[0] == available_cores()
    run = _fresh_process("many")
    assert run.returncode != 0 and "GPUCNN_THREADS='many' must be a number of threads >= 0" in run.stderr


FORK = """
import multiprocessing, numba, numpy as np
import gpucnn

@numba.njit(parallel=True)
def total(a):
    s = 0.0
    for i in numba.prange(a.size):
        s += a[i]
    return s

def child(queue):
    queue.put(total(np.ones(100)))

if __name__ == "__main__":
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=child, args=(queue,))
    worker.start()
    worker.join(120)
    print(worker.exitcode, queue.get() if worker.exitcode == 0 else None)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_import_does_not_make_forked_numba_children_abort(tmp_path):
    """Setting Numba's threads starts its GNU OpenMP layer, after which a forked child running Numba
    parallel code is killed; the import-time default must therefore leave Numba alone."""
    script = tmp_path / "fork.py"
    script.write_text(FORK)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "100.0"], run.stderr
