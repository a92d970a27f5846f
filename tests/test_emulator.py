"""Self-tests of the CUDA emulator (gpucnn.backend.emulator).

It must run correct kernels correctly (against NumPy), and make every kernel bug
it promises to catch fail loudly, naming the source line: divergent barriers,
deadlocks, reads of unwritten shared memory (NaN), shared-memory races (race-
checking build, both lines), launches beyond ``__launch_bounds__``, wrongly
typed arguments, out-of-bounds accesses (AddressSanitizer build), compile errors.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the CUDA emulator")

from gpucnn.backend.emulator import (  # noqa: E402
    EmulatorCompileError, EmulatorError, EmulatorLaunchError, SharedMemoryRaceError, asan_environment,
    clear_process_cache, load_module)

KERNELS = Path(__file__).with_name("emulator_kernels")


def line_of(path, tag):
    """Line number (1-based) of the line of ``path`` marked ``<- line:tag``."""
    lines = Path(path).read_text().splitlines()
    matches = [i + 1 for i, text in enumerate(lines) if f"<- line:{tag}" in text]
    assert len(matches) == 1, f"marker {tag} not found once in {path}"
    return matches[0]


@pytest.fixture(scope="module")
def scratch_cache(tmp_path_factory):
    """A cache directory for modules built from temporary sources (kept out of the user's cache)."""
    return tmp_path_factory.mktemp("emulator-cache")


@pytest.fixture(scope="module")
def reduce_module():
    return load_module(KERNELS / "reduce.cu")


@pytest.fixture(scope="module")
def bugs_module():
    return load_module(KERNELS / "barrier_bugs.cu")


@pytest.fixture(scope="module")
def warp_module():
    return load_module(KERNELS / "warp.cu")


# --- correct kernels give NumPy's answers -------------------------------------


def block_sums(x, threads):
    blocks = -(-len(x) // threads)
    return np.pad(x.astype(np.float64), (0, blocks * threads - len(x))).reshape(blocks, threads).sum(axis=1)


def test_block_sum_with_static_shared_memory_and_barriers(reduce_module, rng):
    kernel = reduce_module.get_function("block_sum_f32")
    assert kernel.needs_fibers
    x = rng.standard_normal(1000).astype(np.float32)
    partial = np.full(4, np.nan, np.float32)
    kernel((4,), (256,), (x, partial, np.int32(1000)))
    np.testing.assert_allclose(partial, block_sums(x, 256), rtol=1e-5, atol=1e-5)


def test_block_sum_with_dynamic_shared_memory(reduce_module, rng):
    kernel = reduce_module.get_function("block_sum_dynamic_f32")
    x = rng.standard_normal(300).astype(np.float32)
    partial = np.full(3, np.nan, np.float32)
    kernel(3, 128, (x, partial, np.int32(300)), shared_mem=128 * 4)
    np.testing.assert_allclose(partial, block_sums(x, 128), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, cols", [(16, 16), (33, 7), (1, 50)])
def test_tiled_transpose_with_2d_blocks(reduce_module, rng, rows, cols):
    x = rng.standard_normal((rows, cols))
    out = np.full((cols, rows), np.nan)
    grid = (-(-cols // 16), -(-rows // 16))
    reduce_module.get_function("transpose_tiled_f64")(grid, (16, 16), (x, out, np.int32(rows), np.int32(cols)))
    np.testing.assert_array_equal(out, x.T)


def test_barrier_free_kernel_runs_as_plain_loop(reduce_module, rng):
    kernel = reduce_module.get_function("axpy_f32")
    assert not kernel.needs_fibers
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    expected = np.float32(2.5) * x + y
    kernel(4, 256, (np.float32(2.5), x, y, 1000))
    np.testing.assert_array_equal(y, expected)


def test_barrier_in_a_non_inlined_callee_is_seen(bugs_module, rng):
    kernel = bugs_module.get_function("barrier_in_callee")
    assert kernel.needs_fibers
    x = rng.standard_normal(256).astype(np.float32)
    out = np.zeros(256, np.float32)
    kernel(1, 256, (x, out))
    np.testing.assert_array_equal(out, x + np.roll(x, -1))


def test_plain_loop_guard_fails_loudly_if_analysis_were_wrong(bugs_module):
    kernel = bugs_module.get_function("barrier_in_callee")
    kernel.needs_fibers = False  # pretend the analysis had missed the barrier
    try:
        with pytest.raises(EmulatorLaunchError, match="classified barrier-free but reached __syncthreads"):
            kernel(1, 32, (np.zeros(32, np.float32), np.zeros(32, np.float32)))
    finally:
        kernel.needs_fibers = True


@pytest.fixture(scope="module")
def features_module():
    return load_module(KERNELS / "features.cu")


def test_kernels_from_macros_blocks_and_templates_are_found(features_module):
    assert features_module.kernel_names == ("add_mirrored_f32", "add_mirrored_f64", "namespace_shared_roundtrip",
                                            "vector_types")


@pytest.mark.parametrize("suffix, dtype", [("f32", np.float32), ("f64", np.float64)])
def test_template_device_function_with_shared_array(features_module, rng, suffix, dtype):
    x = rng.standard_normal(128).astype(dtype)
    y = np.zeros_like(x)
    features_module.get_function(f"add_mirrored_{suffix}")(2, 64, (x, y))
    np.testing.assert_array_equal(y, x + x.reshape(2, 64)[:, ::-1].ravel())


def test_namespace_scope_shared_variable_is_poisoned_per_block(features_module):
    y = np.zeros(128, np.float32)
    features_module.get_function("namespace_shared_roundtrip")(2, 64, (y,))
    lane = np.arange(128) % 64
    np.testing.assert_array_equal(y, np.where(lane % 2 == 0, lane, np.nan))


def test_vector_type_pointers_and_scalar_types(features_module, rng):
    kernel = features_module.get_function("vector_types")
    x = rng.standard_normal((10, 4)).astype(np.float32)
    y = np.full((10, 2), np.nan, np.float32)
    kernel(1, 32, (x, y, np.uint32(10), 0.5, True))  # Python float for double, bool for bool: as CuPy
    np.testing.assert_allclose(y[:, 0], (x[:, 0] + x[:, 1]) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], x[:, 2] * x[:, 3] * 0.5, rtol=1e-6)
    kernel(1, 32, (x, y, np.uint32(10), np.float64(2), np.bool_(False)))
    assert not y.any()
    with pytest.raises(TypeError, match="needs numpy.uint32, got numpy.int32"):
        kernel(1, 32, (x, y, np.int32(10), 0.5, True))
    with pytest.raises(TypeError, match="16-byte aligned"):
        kernel(1, 32, (x.ravel()[1:37], y, np.uint32(9), 0.5, True))


# --- barrier bugs are reported with their lines --------------------------------


def test_divergent_syncthreads_names_both_lines(bugs_module):
    path = KERNELS / "barrier_bugs.cu"
    with pytest.raises(EmulatorLaunchError) as info:
        bugs_module.get_function("divergent_barrier")(1, 64, (np.zeros(64, np.float32),))
    message = str(info.value)
    assert "divergent_barrier" in message and "divergent" in message
    assert f"barrier_bugs.cu:{line_of(path, 'divergent-first')}" in message
    assert f"barrier_bugs.cu:{line_of(path, 'divergent-second')}" in message
    assert "threads 0-31" in message and "threads 32-63" in message


def test_early_exit_deadlock_names_the_barrier(bugs_module):
    path = KERNELS / "barrier_bugs.cu"
    kernel = bugs_module.get_function("early_exit_before_barrier")
    out = np.zeros(128, np.float32)
    kernel(1, 128, (out, np.int32(128)))  # every thread reaches the barrier: fine
    np.testing.assert_array_equal(out, np.roll(np.arange(128, dtype=np.float32), -1))
    with pytest.raises(EmulatorLaunchError) as info:
        kernel(1, 128, (out, np.int32(100)))
    message = str(info.value)
    assert "deadlock" in message and "threads 100-127" in message and "exited" in message
    assert f"barrier_bugs.cu:{line_of(path, 'early-exit-barrier')}" in message


def test_warp_mask_without_own_lane_is_reported(bugs_module):
    path = KERNELS / "barrier_bugs.cu"
    with pytest.raises(EmulatorLaunchError) as info:
        bugs_module.get_function("shuffle_mask_without_self")(1, 32, (np.zeros(32, np.int32),))
    assert f"barrier_bugs.cu:{line_of(path, 'bad-mask')}" in str(info.value)
    assert "does not name its own lane" in str(info.value)


def test_failed_assert_ends_the_launch_with_thread_and_line(bugs_module):
    path = KERNELS / "barrier_bugs.cu"
    kernel = bugs_module.get_function("assert_positive")
    assert not kernel.needs_fibers
    x = np.ones(100, np.float32)
    y = np.zeros(100, np.float32)
    kernel(4, 32, (x, y, np.int32(100)))
    np.testing.assert_array_equal(y, 1.0)
    x[70] = -1.0
    with pytest.raises(EmulatorLaunchError) as info:
        kernel(4, 32, (x, y, np.int32(100)))
    message = str(info.value)
    assert "assert_positive" in message and "block (2,0,0)" in message and "threadIdx 6,0,0" in message
    assert f"assert(x[i] > 0.0f) failed at {path}:{line_of(path, 'assert')}" in message


def test_trap_in_a_fiber_kernel_ends_the_launch(bugs_module):
    path = KERNELS / "barrier_bugs.cu"
    kernel = bugs_module.get_function("trap_before_barrier")
    assert kernel.needs_fibers
    with pytest.raises(EmulatorLaunchError) as info:
        kernel(1, 64, (np.zeros(64, np.float32),))
    assert f"thread 37 (threadIdx 37,0,0): __trap() at {path}:{line_of(path, 'trap')}" in str(info.value)
    out = np.zeros(32, np.float32)
    kernel(1, 32, (out,))  # no thread 37: the module still works after the abandoned launch
    np.testing.assert_array_equal(out, 1.0)


# --- shared memory starts as poison ----------------------------------------------


@pytest.mark.parametrize("name, dtype, shared", [("read_unwritten_shared", np.float32, 0),
                                                  ("read_unwritten_dynamic_shared", np.float64, 64 * 8)])
def test_unwritten_shared_memory_reads_nan_in_every_block(bugs_module, name, dtype, shared):
    blocks, threads = 3, 64
    out = np.zeros(blocks * threads, dtype)
    bugs_module.get_function(name)(blocks, threads, (out,), shared_mem=shared)
    out = out.reshape(blocks, threads)
    for b in range(blocks):
        source_slot = (np.arange(threads) + 1) % threads
        expected = np.where(source_slot == b, np.nan, b * 1000 + source_slot)
        np.testing.assert_array_equal(out[b], expected)


def test_plain_loop_kernel_shared_memory_is_poisoned_too(bugs_module):
    kernel = bugs_module.get_function("read_own_unwritten_slot")
    assert not kernel.needs_fibers
    out = np.zeros(64, np.float32)
    kernel(2, 32, (out,))
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(out, np.where(lane % 2 == 1, lane, np.nan))


# --- warp functions and atomics ----------------------------------------------------


def reference_warp_functions(v, threads):
    """What CUDA returns to each thread of warp_functions (see warp.cu)."""
    n = len(v)
    out = np.zeros((n, 9), np.int64)
    for t in range(n):
        base, lane = t - t % 32, t % 32
        w = v[base:base + 32]
        out[t, 0] = w[3]
        out[t, 1] = w[(lane & ~15) + ((lane + 5) & 15)]
        out[t, 2] = w[lane - 2] if lane >= 2 else w[lane]
        out[t, 3] = w[lane + 4] if lane % 8 + 4 < 8 else w[lane]
        out[t, 4] = w[lane ^ 1]
        out[t, 5] = sum(1 << i for i in range(32) if w[i] % 3 == 0)
        out[t, 6] = int((w == 7).any())
        out[t, 7] = int((w >= 0).all())
        block = v[t - t % threads:t - t % threads + threads]
        out[t, 8] = int((block % 2 == 0).sum())
    return out.astype(np.uint32).view(np.int32)  # the ballot may set bit 31


def test_warp_shuffles_ballot_any_all(warp_module, rng):
    threads, blocks = 64, 2
    v = rng.integers(0, 10, threads * blocks).astype(np.int32)
    v[40] = -1  # one warp where __all_sync(v >= 0) is false
    out = np.zeros((threads * blocks, 9), np.int32)
    warp_module.get_function("warp_functions")(blocks, threads, (v, out, np.int32(9)))
    np.testing.assert_array_equal(out, reference_warp_functions(v, threads))


def test_warp_shuffle_sum_of_doubles(warp_module, rng):
    x = rng.standard_normal(128)
    sums = np.zeros(4)
    warp_module.get_function("warp_sum_f64")(2, 64, (x, sums))
    np.testing.assert_allclose(sums, x.reshape(4, 32).sum(axis=1), rtol=1e-12)


def test_atomics_accumulate(warp_module, rng):
    n, bins = 1000, 7
    v = rng.integers(0, 10_000, n).astype(np.int32)
    counts = np.zeros(bins, np.uint32)
    sums = np.zeros(bins, np.float32)
    maximum = np.full(1, -1, np.int32)
    warp_module.get_function("atomic_histogram")(4, 256, (v, np.int32(n), np.int32(bins), counts, sums, maximum))
    expected = np.bincount(v % bins, minlength=bins)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(sums, expected * 0.5)
    assert maximum[0] == v.max()


# --- shared-memory races (race-checking build) --------------------------------------

RACES = KERNELS / "races.cu"


@pytest.fixture(scope="module")
def races_module():
    return load_module(RACES, racecheck=True)


def neighbour_sum_rows(x, threads):
    """What double_buffer computes: per thread t, the sum over rows of row[(t + 1) % threads]."""
    return np.roll(x.reshape(-1, threads), -1, axis=1).sum(axis=0)


# kernel, extra arguments, threads per block, the kind of race, the tags of (racing access, earlier access).
# Threads run in index order, so thread 1 is the second party and thread 0 (or the
# last thread, for a read of the left neighbour across warps) the first.
RACY = [
    ("raw_missing_barrier", (), 64, "read after write", ("raw-read", "raw-write"), (1, 0)),
    ("war_missing_barrier", (), 64, "write after read", ("war-write", "war-read"), (1, 0)),
    ("double_buffer_early_flip", (np.int32(3),), 64, "write after read", ("flip-write", "flip-read"), (1, 0)),
    ("warp_exchange", (np.int32(0),), 64, "write after read", ("warp-write", "warp-read"), (1, 0)),
    ("syncwarp_across_warps", (), 64, "read after write", ("cross-read", "cross-write"), (0, 63)),
    ("shared_counter", (np.int32(1),), 64, "write after write", ("counter-plain", "counter-atomic"), (63, 0)),
]


def race_arguments(name, extra, threads):
    dtype = np.int32 if name in ("warp_exchange", "syncwarp_across_warps", "shared_counter") else np.float32
    rows = int(extra[0]) if name.startswith("double_buffer") else 1
    x = np.arange(1, rows * threads + 1).astype(dtype)
    return (x, np.zeros(threads, dtype)) + extra


@pytest.mark.parametrize("name, extra, threads, kind, tags, parties", RACY, ids=[r[0] for r in RACY])
def test_race_is_reported_with_both_lines_and_threads(races_module, name, extra, threads, kind, tags, parties):
    with pytest.raises(SharedMemoryRaceError) as info:
        races_module.get_function(name)(1, threads, race_arguments(name, extra, threads))
    message = str(info.value)
    assert f"kernel '{name}'" in message and kind in message, message
    now, before = (f"{RACES}:{line_of(RACES, tag)}" for tag in tags)
    assert message.index(now) < message.index(before), message  # the racing access first, then the earlier one
    assert f"thread {parties[0]} (threadIdx {parties[0]},0,0)" in message, message
    assert f"thread {parties[1]} (threadIdx {parties[1]},0,0)" in message, message


def test_race_in_dynamic_shared_memory_and_plain_loop_kernels(races_module):
    kernel = races_module.get_function("dynamic_raw_missing_barrier")
    assert not kernel.needs_fibers  # no barrier at all: the plain loop is checked too
    with pytest.raises(SharedMemoryRaceError) as info:
        kernel(1, 32, (np.ones(32), np.zeros(32)), shared_mem=32 * 8)
    message = str(info.value)
    assert "byte 0 of dynamic shared memory" in message
    assert f"{RACES}:{line_of(RACES, 'dyn-read')}" in message and f"{RACES}:{line_of(RACES, 'dyn-write')}" in message


def test_static_shared_variable_is_named(races_module):
    with pytest.raises(SharedMemoryRaceError, match=r"byte 4 of __shared__ tile \(1024 bytes\)"):
        races_module.get_function("war_missing_barrier")(1, 64, race_arguments("war_missing_barrier", (), 64))


def test_correct_twins_run_clean_and_right(races_module):
    threads, blocks = 64, 2
    x = np.arange(1, threads * blocks + 1, dtype=np.float32)
    out = np.zeros_like(x)
    races_module.get_function("raw_with_barrier")(blocks, threads, (x, out))
    # Two blocks: accesses of different blocks to the same shared word are no race either.
    np.testing.assert_array_equal(out.reshape(blocks, threads), np.roll(x.reshape(blocks, threads), 1, axis=1))
    races_module.get_function("war_with_barrier")(1, threads, (x, out))
    np.testing.assert_array_equal(out[:threads], 2 * np.roll(x[:threads], -1))
    rows = np.random.default_rng(5).standard_normal((5, threads)).astype(np.float32)
    races_module.get_function("double_buffer")(1, threads, (rows.ravel(), out, np.int32(5)))
    np.testing.assert_allclose(out[:threads], neighbour_sum_rows(rows.astype(np.float64), threads), rtol=1e-5)


@pytest.mark.parametrize("sync", [1, 2], ids=["syncwarp", "shuffle"])
def test_warp_synchronous_exchange_is_no_race(races_module, sync):
    x = np.arange(64, dtype=np.int32) * 3
    out = np.zeros(64, np.int32)
    races_module.get_function("warp_exchange")(1, 64, (x, out, np.int32(sync)))
    np.testing.assert_array_equal(out, np.roll(x.reshape(2, 32), -1, axis=1).ravel())


def test_atomics_on_a_shared_word_are_no_race(races_module):
    x = np.array([1, -2, 3, 0] * 16, np.int32)
    out = np.zeros(64, np.int32)
    races_module.get_function("shared_counter")(1, 64, (x, out, np.int32(0)))
    np.testing.assert_array_equal(out, np.count_nonzero(x > 0))


def test_without_race_checking_the_same_race_goes_unseen():
    # The blind spot the checker closes: threads run one after another, so the
    # racy kernel even gives the answer of the correct one.
    module = load_module(RACES, racecheck=False)
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    module.get_function("raw_missing_barrier")(1, 64, (x, out))
    np.testing.assert_array_equal(out[1:], x[:-1])


def test_race_checking_follows_the_environment(monkeypatch):
    monkeypatch.setenv("GPUCNN_EMU_RACECHECK", "1")
    assert load_module(RACES).racecheck
    assert not load_module(RACES, racecheck=False).racecheck
    monkeypatch.setenv("GPUCNN_EMU_RACECHECK", "0")
    assert not load_module(RACES).racecheck
    with pytest.raises(ValueError, match="cannot be combined"):
        load_module(RACES, sanitize=True, racecheck=True)


def test_the_suite_runs_our_kernels_race_checked():
    # tests/conftest.py turns race checking on for the whole suite (unless
    # GPUCNN_EMU_RACECHECK is set otherwise): the cuda-emu backend's modules
    # must be race-checking builds, or the ragged/guard tests check nothing.
    if os.environ.get("GPUCNN_EMU_RACECHECK") != "1":
        pytest.skip("GPUCNN_EMU_RACECHECK is set to something else than 1 for this run")
    import gpucnn as gc
    kernel = gc.get_backend("cuda-emu").function("pooling.cu", "max_pool2d_forward_f32")
    assert kernel.module.racecheck


# --- __launch_bounds__ ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bounds_module():
    return load_module(KERNELS / "bounds.cu")


@pytest.mark.parametrize("name, bound", [("bounded_64", 64), ("bounded_128", 128), ("bounded_96", 96),
                                         ("unbounded", 0)])
def test_launch_bounds_are_read_and_enforced(bounds_module, name, bound):
    kernel = bounds_module.get_function(name)
    assert kernel.max_threads == bound
    limit = bound or 1024
    out = np.full(2 * limit, -1, np.int32)
    kernel(2, limit, (out,))  # at the bound: runs
    np.testing.assert_array_equal(out, np.tile(np.arange(limit), 2))
    if bound:
        block = (bound // 8 + 1, 8)  # a 2-D block one row of 8 over the bound
        with pytest.raises(EmulatorLaunchError) as info:
            kernel(1, block, (np.zeros(2 * bound, np.int32),))
        message = str(info.value)
        assert f"kernel '{name}'" in message and f"__launch_bounds__({bound})" in message
        assert f"block ({block[0]}, 8, 1) = {block[0] * 8} threads" in message


def test_our_kernels_declare_the_bounds_the_emulator_enforces():
    # Independent of source.py: the first argument of each __launch_bounds__ in the text.
    import re
    kernels_dir = Path(__file__).resolve().parents[1] / "kernels"
    checked = 0
    for source in sorted(kernels_dir.glob("*.cu")):
        declared = dict((name, int(n)) for n, name in re.findall(
            r"__launch_bounds__\((\d+)\)\s*void\s+(\w+)\s*\(", source.read_text()))
        module = load_module(source)
        for name, bound in declared.items():
            assert module.get_function(name).max_threads == bound, (source.name, name)
            checked += 1
    assert checked >= 12  # the igemm tiles of forward, backward-data and backward-filter


# --- launch configuration and argument checks --------------------------------------


@pytest.mark.parametrize("args, message", [
    (lambda x, y: (2.5, x, y, 1000), "not a Python float"),
    (lambda x, y: (np.float64(2.5), x, y, 1000), "needs numpy.float32, got numpy.float64"),
    (lambda x, y: (np.float32(2.5), x.astype(np.float64), y, 1000), "needs a float32 array, got float64"),
    (lambda x, y: (np.float32(2.5), x, y), "takes 4 arguments"),
    (lambda x, y: (np.float32(2.5), x, y, 1000, 1), "takes 4 arguments"),
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


def test_read_only_array_refused_for_mutable_pointer(reduce_module):
    y = np.zeros(10, np.float32)
    y.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        reduce_module.get_function("axpy_f32")(1, 32, (np.float32(1), np.ones(10, np.float32), y, 10))


@pytest.mark.parametrize("grid, block, shared, error", [
    (0, 32, 0, ValueError), (1, 2048, 0, ValueError), (1, (8, 8, 128), 0, ValueError),
    ((1, 70000), 32, 0, ValueError), (1, 32, 64 * 1024, ValueError), ((1, 2, 3, 4), 32, 0, TypeError),
    (1.0, 32, 0, TypeError)])
def test_launch_configuration_a_gpu_refuses_is_refused(reduce_module, grid, block, shared, error):
    kernel = reduce_module.get_function("block_sum_dynamic_f32")
    with pytest.raises(error):
        kernel(grid, block, (np.ones(32, np.float32), np.zeros(1, np.float32), np.int32(32)), shared_mem=shared)


def test_unknown_kernel_name_lists_known_ones(reduce_module):
    with pytest.raises(KeyError, match="block_sum_f32, axpy_f32"):
        reduce_module.get_function("block_sum")


# --- building ------------------------------------------------------------------------


def test_compile_error_names_the_cu_line(tmp_path, scratch_cache, monkeypatch):
    monkeypatch.setenv("GPUCNN_CACHE_DIR", str(scratch_cache))
    source = tmp_path / "broken.cu"
    source.write_text('extern "C" __global__ void broken(float* y) {\n'
                      '  y[threadIdx.x] = 1.0f;\n'
                      '  y[threadIdx.x] += undeclared_name;\n'
                      '}\n')
    with pytest.raises(EmulatorCompileError, match=r"broken\.cu:3:\d+: error: .undeclared_name"):
        load_module(source)


def test_options_define_macros_and_unknown_ones_are_ignored(tmp_path, scratch_cache, monkeypatch):
    monkeypatch.setenv("GPUCNN_CACHE_DIR", str(scratch_cache))
    source = tmp_path / "scaled.cu"
    source.write_text('extern "C" __global__ void scaled(float* y) { y[threadIdx.x] = SCALE * threadIdx.x; }\n')
    y = np.zeros(8, np.float32)
    load_module(source, options=("-DSCALE=3", "-std=c++17", "--use_fast_math")).get_function("scaled")(1, 8, (y,))
    np.testing.assert_array_equal(y, 3 * np.arange(8))


def test_disk_cache_is_reused_and_follows_included_headers(tmp_path, scratch_cache, monkeypatch):
    monkeypatch.setenv("GPUCNN_CACHE_DIR", str(scratch_cache))
    (tmp_path / "value.cuh").write_text("#define VALUE 1.0f\n")
    source = tmp_path / "fill.cu"
    source.write_text('#include "value.cuh"\n'
                      'extern "C" __global__ void fill(float* y) { y[threadIdx.x] = VALUE; }\n')

    def run():
        clear_process_cache()
        module = load_module(source)
        y = np.zeros(4, np.float32)
        module.get_function("fill")(1, 4, (y,))
        return module.compiled, y[0]

    assert run() == (True, 1.0)
    assert run() == (False, 1.0)  # second load: from the disk cache, no compiler run
    (tmp_path / "value.cuh").write_text("#define VALUE 2.0f\n")
    assert run() == (True, 2.0)  # the included header changed: rebuilt
    clear_process_cache()


# --- AddressSanitizer --------------------------------------------------------------------


ASAN_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from gpucnn.backend.emulator import load_module
    kernels = sys.argv[1]
    # Fibers under ASan: a correct kernel with barriers must run clean.
    reduce = load_module(kernels + "/reduce.cu")
    x = np.arange(512, dtype=np.float32)
    partial = np.zeros(2, np.float32)
    reduce.get_function("block_sum_f32")(2, 256, (x, partial, np.int32(512)))
    assert partial.tolist() == [x[:256].sum(), x[256:].sum()], partial
    oob = load_module(kernels + "/oob.cu").get_function("copy_off_by_one")
    y = np.zeros(100, np.float32)
    oob(4, 32, (np.ones(100, np.float32), y, np.int32(99)))  # in bounds: writes y[0..99]
    print("in-bounds launches ran clean", flush=True)
    oob(4, 32, (np.ones(100, np.float32), y, np.int32(100)))  # writes y[100]
    print("out-of-bounds write not caught", flush=True)
""")


def test_address_sanitizer_reports_out_of_bounds_write_with_its_line():
    try:
        env = dict(os.environ, **asan_environment())
    except EmulatorError as exc:
        pytest.skip(str(exc))
    proc = subprocess.run([sys.executable, "-c", ASAN_SCRIPT, str(KERNELS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert "in-bounds launches ran clean" in proc.stdout, proc.stderr[-3000:]
    assert "not caught" not in proc.stdout
    assert proc.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr
    line = line_of(KERNELS / "oob.cu", "oob-write")
    assert f"in copy_off_by_one {KERNELS / 'oob.cu'}:{line}" in proc.stderr, proc.stderr[-3000:]
