"""gpucnn.distributed: sharding, gradient buckets, transport choice, and real MPI jobs of two ranks.

The jobs run ``tests/distributed_worker.py`` under ``mpiexec -n 2`` (mpi4py and
mpich from PyPI; skipped where they are absent) and are compared here with
single-process references.
"""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import import_module

import numpy as np
import pytest

import gpucnn as gc
from gpucnn import distributed
from gpucnn.backend import cuda_is_available
from gpucnn.cli import main
from gpucnn.distributed import Buckets, choose_transport, device_for, shard_batches

sys.path.insert(0, os.path.dirname(__file__))
import distributed_worker as worker  # noqa: E402  (the script the MPI jobs run)
from conftest import backend_unavailable_reason  # noqa: E402

CPU = gc.get_backend("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def find_mpiexec():
    """The mpiexec of this Python's environment (pip's mpich puts it there), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    MPI_MISSING = None if find_mpiexec() else "no mpiexec (pip install mpich)"
except ImportError:
    MPI_MISSING = "mpi4py is not installed (pip install mpi4py mpich)"
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))


def run_mpi(args, ranks=2, timeout=180, cwd=None):
    """Run ``mpiexec -n ranks python ARGS``; returns (CompletedProcess, seconds it took)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    start = time.monotonic()
    # A session of its own, so that a job past its timeout is ended with every rank it started.
    proc = subprocess.Popen([find_mpiexec(), "-n", str(ranks), sys.executable, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"mpiexec {' '.join(args)} did not end within {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - start


def relative_error(a, b) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a).max())


# --- without MPI ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch, size", [(41, 4, 2), (40, 4, 2), (7, 3, 4), (3, 2, 4), (100, 32, 3)])
def test_shards_are_disjoint_cover_the_data_and_match_the_global_batches(n, batch, size):
    order = np.random.default_rng(n).permutation(n)
    shards = [shard_batches(order, batch, rank, size) for rank in range(size)]
    steps = -(-n // (batch * size))
    assert all(len(s) == steps for s in shards)  # every rank joins every step's collective
    for step in range(steps):
        parts = [shards[rank][step][0] for rank in range(size)]
        totals = {shards[rank][step][1] for rank in range(size)}
        global_batch = order[step * batch * size:(step + 1) * batch * size]
        np.testing.assert_array_equal(np.concatenate(parts), global_batch)  # in order, rank by rank
        assert totals == {len(global_batch)}
        assert max(len(p) for p in parts) <= batch
    everything = np.concatenate([idx for shard in shards for idx, _ in shard])
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # disjoint and covering


def test_buckets_keep_order_respect_the_size_and_split_dtypes():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape, dtype in
              [((3, 4), np.float32), ((10,), np.float32), ((2, 2, 2), np.float32), ((40,), np.float32),
               ((5,), np.float64), ((6,), np.float64), ((1,), np.float32)]]
    buckets = Buckets(arrays, CPU, bucket_bytes=64)
    slots = [slot for _, bucket in buckets.buckets for slot in bucket]
    assert [i for i, _, _ in slots] == list(range(len(arrays)))
    for flat, bucket in buckets.buckets:
        assert len({arrays[i].dtype for i, _, _ in bucket}) == 1 and flat.dtype == arrays[bucket[0][0]].dtype
        assert flat.nbytes <= 64 or len(bucket) == 1  # an array over the limit travels alone
        offsets = [offset for _, offset, _ in bucket]
        assert offsets == list(np.cumsum([0] + [size for _, _, size in bucket[:-1]]))
    # Together with the next array, no bucket would have stayed under the limit (buckets are few).
    for (flat, bucket), (_, following) in zip(buckets.buckets, buckets.buckets[1:]):
        nxt = arrays[following[0][0]]
        assert flat.nbytes + nxt.nbytes > 64 or nxt.dtype != flat.dtype


def test_buckets_refuse_arrays_unlike_the_plan():
    plan = Buckets([np.zeros(3, np.float32)], CPU)
    with pytest.raises(ValueError, match=r"array 0 is float32 of shape \(4,\).*\(3,\)"):
        plan.allreduce(None, [np.zeros(4, np.float32)])
    with pytest.raises(ValueError, match="bucket_bytes"):
        Buckets([np.zeros(3)], CPU, bucket_bytes=0)


def test_transport_choice():
    assert choose_transport("auto", "cpu", nccl_usable=True) == "mpi"
    assert choose_transport("auto", "cuda", nccl_usable=True) == "nccl"
    assert choose_transport("auto", "cuda", nccl_usable=False) == "mpi"
    assert choose_transport("mpi", "cuda", nccl_usable=True) == "mpi"
    assert choose_transport("nccl", "cuda", nccl_usable=True) == "nccl"
    with pytest.raises(ValueError, match="needs the cuda backend, not 'cpu'"):
        choose_transport("nccl", "cpu", nccl_usable=True)
    with pytest.raises(ValueError, match="transport must be one of"):
        choose_transport("gloo", "cpu", nccl_usable=False)


@pytest.mark.skipif(distributed.nccl_module() is not None, reason="NCCL is usable here")
def test_asking_for_nccl_without_it_says_what_is_missing():
    with pytest.raises(RuntimeError, match="NCCL|CuPy"):
        choose_transport("nccl", "cuda", nccl_usable=False)


def test_one_gpu_per_local_rank():
    assert device_for(1, 2, rank=5) == 1
    with pytest.raises(ValueError, match="rank 6 is local rank 2 of its machine, which has 2 GPU"):
        device_for(2, 2, rank=6)
    with pytest.raises(ValueError, match="rank 0 found no GPU"):
        device_for(0, 0, rank=0)


def test_trainer_refuses_what_is_not_a_communicator():
    model = worker.build(False)
    with pytest.raises(TypeError, match="comm must be a gpucnn.distributed communicator.*'allreduce'"):
        gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters()), backend="cpu", comm=object())


# --- MPI, one process: the collectives' arithmetic and the timeout settings --------------------

@needs_mpi
@pytest.mark.parametrize("backend_name", ["cpu", "cuda-emu"])
def test_a_job_of_one_trains_like_no_job(backend_name):
    """Also on cuda-emu, whose device arrays reach MPI through a host copy."""
    reason = backend_unavailable_reason(backend_name)
    if reason:
        pytest.skip(reason)
    comm = distributed.init(backend=backend_name)
    assert (comm.rank, comm.size, comm.local_rank) == (0, 1, 0)
    x, y = worker.make_data()
    states = []
    for c in (None, comm):
        model = worker.build(True)
        trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-2),
                             backend=backend_name, comm=c)
        trainer.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
        states.append(model.state_arrays())
    for key in states[0]:
        np.testing.assert_array_equal(states[1][key], states[0][key])


@needs_mpi
def test_buckets_scale_and_the_communicator_checks_its_input():
    comm = distributed.init(backend="cpu")
    arrays = [np.arange(6.0).reshape(2, 3), np.ones(5, np.float32)]
    expected = [0.5 * a for a in arrays]
    Buckets(arrays, CPU, bucket_bytes=8).allreduce(comm, arrays, scale=0.5)
    for got, want in zip(arrays, expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        distributed.MPICommunicator(timeout=0)
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(np.zeros((4, 4))[:, ::2])


# --- MPI, two ranks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_rank_training(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "train.npz"
    proc, _ = run_mpi([WORKER, "train", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as saved:
        return dict(saved)


def rank_results(saved, name, rank):
    prefix = f"{name}.rank{rank}."
    state = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    steps, loss = ast.literal_eval(str(state.pop("steps"))), state.pop("loss")
    return state, steps, loss


@needs_mpi
def test_two_ranks_train_on_disjoint_covering_shards(two_rank_training):
    for name in ("plain", "batchnorm"):
        steps = [rank_results(two_rank_training, name, rank)[1] for rank in (0, 1)]
        for epoch in range(worker.EPOCHS):
            seen = [i for rank in (0, 1) for batch in steps[rank][epoch] for i in batch]
            assert sorted(seen) == list(range(worker.SAMPLES)), (name, epoch)
            assert [len(b) for b in steps[0][epoch]] == [4] * 5 + [1]  # the last global batch has 1 sample
            assert [len(b) for b in steps[1][epoch]] == [4] * 5      # ... and rank 1 none of it
        assert steps[0][0] != steps[0][1]  # each epoch has its own permutation


@needs_mpi
def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(two_rank_training):
    """Without BatchNorm, the data-parallel job is one process with the global batch (to 1e-5)."""
    x, y = worker.make_data()
    model = worker.build(False)
    trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-2), backend="cpu")
    trainer.fit(x, y, epochs=worker.EPOCHS, batch_size=2 * worker.BATCH, seed=worker.SEED, verbose=0)
    reference = model.state_arrays()
    state0, _, loss0 = rank_results(two_rank_training, "plain", 0)
    state1, _, loss1 = rank_results(two_rank_training, "plain", 1)
    assert set(state0) == set(reference)
    for key, want in reference.items():
        assert relative_error(state0[key], want) < 1e-5, (key, relative_error(state0[key], want))
        np.testing.assert_array_equal(state1[key], state0[key])  # the ranks never drift apart
    np.testing.assert_allclose(loss0, trainer.history.history["loss"], rtol=1e-5)
    np.testing.assert_array_equal(loss1, loss0)


@needs_mpi
def test_two_ranks_with_batchnorm_equal_one_process_normalising_each_half(two_rank_training):
    """With BatchNorm each rank normalises over its own B samples, so the exact single-process
    equivalent is a batch of 2B whose halves get their own batch statistics: two replicas in one
    process, the gradients of each global batch averaged by sample count, one update for both,
    and the running statistics averaged at the end of every epoch. This plain loop replays the
    batches the ranks recorded (their cover of the data is checked above)."""
    x, y = worker.make_data()
    steps = [rank_results(two_rank_training, "batchnorm", rank)[1] for rank in (0, 1)]
    replicas = [worker.build(True) for _ in range(2)]
    optimizers = [gc.Adam(m.parameters(), lr=1e-2) for m in replicas]
    loss = gc.SoftmaxCrossEntropy()
    for epoch in range(worker.EPOCHS):
        for step in range(len(steps[0][epoch])):
            parts = [s[epoch][step] if step < len(s[epoch]) else [] for s in steps]
            total = sum(len(p) for p in parts)
            for model, part in zip(replicas, parts):
                model.zero_grad()
                if part:
                    loss.forward(model.forward(x[part]), y[part])
                    model.backward(loss.backward())
            grads = [sum(len(p) / total * m.parameters()[j].grad for m, p in zip(replicas, parts))
                     for j in range(len(replicas[0].parameters()))]
            for model, optimizer in zip(replicas, optimizers):
                for parameter, grad in zip(model.parameters(), grads):
                    parameter.grad[...] = grad
                optimizer.step()
        for layer in zip(*(m.layers for m in replicas)):
            for key in layer[0].buffers:
                mean = sum(l.buffers[key] for l in layer) / 2
                for l in layer:
                    l.buffers[key] = mean.copy()
    reference = replicas[0].state_arrays()
    state0, _, _ = rank_results(two_rank_training, "batchnorm", 0)
    state1, _, _ = rank_results(two_rank_training, "batchnorm", 1)
    assert any("running_mean" in key for key in reference)
    for key, want in reference.items():
        assert relative_error(state0[key], want) < 1e-5, key
        np.testing.assert_array_equal(state1[key], state0[key])


@needs_mpi
def test_two_ranks_resume_from_a_checkpoint_exactly(tmp_path):
    proc, _ = run_mpi([WORKER, "resume", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "states.npz") as states:
        whole = {k[len("whole."):]: states[k] for k in states.files if k.startswith("whole.")}
        assert any("running_var" in key for key in whole)
        for key, value in whole.items():
            np.testing.assert_array_equal(states[f"resumed.{key}"], value, err_msg=key)


@needs_mpi
def test_a_stalled_rank_ends_the_job_after_the_timeout_naming_the_rank(tmp_path):
    proc, seconds = run_mpi([WORKER, "stall", str(tmp_path)], timeout=90)
    assert proc.returncode != 0
    assert "rank 0 of 2" in proc.stderr and "waited more than 3 s" in proc.stderr, proc.stderr[-2000:]
    assert seconds < 60  # the stalled rank sleeps 120 s: the job ended because of the 3 s timeout


@needs_mpi
def test_a_killed_rank_ends_the_job_with_an_error(tmp_path):
    proc, seconds = run_mpi([WORKER, "kill", str(tmp_path)], timeout=90)
    assert proc.returncode != 0
    # Whoever notices first ends the job: the launcher (mpich's hydra reports the killed rank)
    # or rank 0 when its collective fails or passes the 3 s timeout.
    said = proc.stdout + proc.stderr
    assert "BAD TERMINATION" in said or "rank 0 of 2" in said, said[-2000:]
    assert seconds < 60


@needs_mpi
def test_a_model_mismatch_is_reported_on_every_rank(tmp_path):
    proc, _ = run_mpi([WORKER, "mismatch", str(tmp_path)], timeout=90)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} refused: distributed training: rank 1 has another model" in proc.stdout, proc.stdout
    assert "layer 4: Dense{'in_features': 36, 'out_features': 4" in proc.stdout


@needs_mpi
def test_gpucnn_train_distributed_writes_one_run_folder_from_rank_0(tmp_path):
    proc, _ = run_mpi(["-m", "gpucnn.cli", "train", "--distributed", "--backend", "cpu", "--limit", "120",
                       "--epochs", "2", "--out", "run", "--quiet", "--collective-timeout", "60"],
                      cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1  # rank 1 trains silently
    assert "data-parallel over 2 ranks (MPI): global batch 2 x 32" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["run"]
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["ranks"] == 2 and metrics["train_samples"] == 120
    with open(tmp_path / "run" / "history.json") as f:
        assert len(json.load(f)["loss"]) == 2


@needs_mpi
def test_gpucnn_info_names_the_mpi_library(capsys):
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("MPI: "))
    mpi = import_module("mpi4py.MPI")
    assert " ".join(mpi.Get_library_version().split()[:3]) in line and "(mpi4py " in line, line


# --- a GPU ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not cuda_is_available() or distributed.nccl_module() is None or MPI_MISSING is not None,
                    reason="needs a CUDA GPU, NCCL for CuPy and mpi4py")
def test_nccl_job_of_one_rank_reduces_on_the_gpu_and_trains_like_no_job():
    import cupy

    comm = distributed.init(transport="nccl", backend="cuda")
    assert comm.name == "NCCL" and comm.device == 0
    a = cupy.arange(10, dtype=cupy.float32)
    comm.allreduce(a)
    comm.broadcast(a)
    np.testing.assert_array_equal(a.get(), np.arange(10, dtype=np.float32))
    x, y = worker.make_data()
    states = []
    for c in (None, comm):
        model = worker.build(True)
        trainer = gc.Trainer(model, gc.SoftmaxCrossEntropy(), gc.Adam(model.parameters(), lr=1e-2),
                             backend="cuda", comm=c)
        trainer.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
        states.append(model.state_arrays())
    for key in states[0]:
        # Split-K kernels sum with atomics on a GPU: the two runs may round differently.
        assert relative_error(states[1][key], states[0][key]) < 1e-4, key
