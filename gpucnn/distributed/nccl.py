"""The NCCL communicator (``cupy.cuda.nccl``): CuPy arrays reduced GPU to GPU, one GPU per rank.

MPI starts the job and carries what is not a GPU array: rank 0's NCCL unique
id is broadcast over it, and host arrays, barriers and objects go through it.
A NCCL collective is queued on CuPy's current stream; an event recorded after
it is polled against the timeout, and a rank that waits too long aborts the
NCCL communicator and the job.
"""

from __future__ import annotations

import numpy as np

from .base import Communicator, check_buffer, check_op, is_device_array, wait_until

NCCL_HINT = ("pip install nvidia-nccl-cu12 (or -cu13, matching CuPy's CUDA) so that cupy.cuda.nccl "
             "finds libnccl.so.2")


def nccl_module():
    """``cupy.cuda.nccl`` when CuPy is installed and its NCCL library loads, else None."""
    try:
        import warnings
        with warnings.catch_warnings():  # CuPy warns when libnccl is missing; we say it ourselves
            warnings.simplefilter("ignore")
            from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", False) else None


def require_nccl():
    """``cupy.cuda.nccl``, or a RuntimeError that says what is missing."""
    nccl = nccl_module()
    if nccl is None:
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise RuntimeError("gpucnn.distributed: the NCCL transport needs CuPy "
                               "(pip install gpucnn[cuda12] or gpucnn[cuda13])") from None
        raise RuntimeError(f"gpucnn.distributed: CuPy cannot load NCCL; {NCCL_HINT}")
    return nccl


def nccl_version() -> str | None:
    """NCCL's version as "2.21.5", or None when NCCL is not usable here."""
    nccl = nccl_module()
    if nccl is None:
        return None
    code = nccl.get_version()  # 2.9 and newer: major * 10000 + minor * 100 + patch
    return f"{code // 10000}.{code // 100 % 100}.{code % 100}"


def device_for(local_rank: int, device_count: int, rank: int) -> int:
    """The GPU of a rank: its local rank, or a ValueError when this machine has too few GPUs.

    NCCL refuses two ranks on one GPU, and sharing one would halve each
    rank's speed anyway: start at most one rank per GPU on each machine.
    """
    if device_count < 1:
        raise ValueError(f"gpucnn.distributed: rank {rank} found no GPU on its machine")
    if not 0 <= local_rank < device_count:
        raise ValueError(f"gpucnn.distributed: rank {rank} is local rank {local_rank} of its machine, "
                         f"which has {device_count} GPU(s); start at most {device_count} ranks per machine")
    return local_rank


def use_local_gpu(local_rank: int, rank: int) -> int:
    """Make the GPU of this rank (``device_for``) CuPy's current device; returns its number."""
    import cupy

    device = device_for(local_rank, cupy.cuda.runtime.getDeviceCount(), rank)
    cupy.cuda.Device(device).use()
    return device


class NCCLCommunicator(Communicator):
    """NCCL for CuPy arrays over the ranks of ``mpi`` (an ``MPICommunicator``), which does the rest.

    Selects this rank's GPU (``device_for(local_rank)``) as CuPy's current
    device: build the model on the cuda backend after this.
    """

    name = "NCCL"

    def __init__(self, mpi):
        nccl = require_nccl()
        import cupy

        self._nccl, self._cupy, self.mpi = nccl, cupy, mpi
        self.rank, self.size, self.local_rank, self.timeout = mpi.rank, mpi.size, mpi.local_rank, mpi.timeout
        self.device = use_local_gpu(self.local_rank, self.rank)
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = mpi.allgather_object(unique_id)[0]
        # Creating the communicator blocks until every rank has joined; the allgather
        # just before (with its timeout) has seen every rank alive.
        self.comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self._dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                        np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
                        np.dtype(np.int64): nccl.NCCL_INT64}
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def allreduce(self, array, op: str = "sum"):
        if not is_device_array(array):
            return self.mpi.allreduce(array, op)
        check_buffer(array, "allreduce")
        stream = self._cupy.cuda.get_current_stream()
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array),
                            self._ops[check_op(op)], stream.ptr)
        self._wait(stream, f"allreduce of {array.size} {array.dtype} values")
        return array

    def broadcast(self, array, root: int = 0):
        if not is_device_array(array):
            return self.mpi.broadcast(array, root)
        check_buffer(array, "broadcast")
        self.mpi._check_root(root)
        stream = self._cupy.cuda.get_current_stream()
        self.comm.broadcast(array.data.ptr, array.data.ptr, array.size, self._dtype(array), root, stream.ptr)
        self._wait(stream, f"broadcast of {array.size} {array.dtype} values from rank {root}")
        return array

    def barrier(self) -> None:
        self.mpi.barrier()

    def allgather_object(self, obj) -> list:
        return self.mpi.allgather_object(obj)

    def abort(self, message: str, status: int = 1) -> None:
        self.comm.abort()  # frees this GPU's side of the collectives still in flight
        self.mpi.abort(message, status)

    def _dtype(self, array):
        try:
            return self._dtypes[np.dtype(array.dtype)]
        except KeyError:
            raise TypeError(f"gpucnn.distributed: NCCL reduces {sorted(str(d) for d in self._dtypes)} "
                            f"arrays, got {array.dtype}") from None

    def _wait(self, stream, what: str) -> None:
        event = stream.record()

        def done():
            try:
                self.comm.check_async_error()  # a failure NCCL noticed, e.g. a peer that went away
            except self._nccl.NcclError as err:
                self.abort(f"NCCL {what} failed: {err}")
            return event.done

        wait_until(done, self.timeout, lambda: self.abort(
            f"NCCL {what} waited more than {self.timeout:g} s for the other ranks; "
            f"one of them has died or stalled, so the job is ended"))
