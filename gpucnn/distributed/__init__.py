"""Data-parallel training across processes and machines: MPI (``mpi4py``) for any array, NCCL for CuPy arrays.

    # mpiexec -n 4 python train.py
    import gpucnn as gc
    comm = gc.distributed.init(backend="auto")       # before the model goes to a GPU
    model = ...; trainer = gc.Trainer(model, loss, optimizer, backend="auto", comm=comm)
    trainer.fit(x, y, batch_size=32)                 # 32 per rank: a global batch of 4 x 32

``init`` picks the transport: NCCL (``cupy.cuda.nccl``) when the arrays live
on the cuda backend and CuPy finds NCCL, else MPI (GPU arrays then go through
the host, or straight to a CUDA-aware MPI). See ``data_parallel`` for what the
Trainer does with a communicator.
"""

from __future__ import annotations

from .base import DEFAULT_TIMEOUT, Communicator
from .buckets import DEFAULT_BUCKET_BYTES, Buckets
from .data_parallel import DataParallel, shard_batches
from .mpi import MPICommunicator, import_mpi
from .nccl import NCCLCommunicator, device_for, nccl_module, nccl_version, use_local_gpu

TRANSPORTS = ("auto", "mpi", "nccl")

_current = None  # the communicator init made, for abort_job

__all__ = ["init", "abort_job", "choose_transport", "library_versions", "Communicator", "MPICommunicator",
           "NCCLCommunicator", "DataParallel", "Buckets", "shard_batches", "device_for",
           "DEFAULT_TIMEOUT", "DEFAULT_BUCKET_BYTES"]


def choose_transport(transport: str, backend_name: str, nccl_usable: bool) -> str:
    """"mpi" or "nccl" for a requested ``transport`` ("auto", "mpi", "nccl") and the arrays' backend.

    "auto" takes NCCL for the cuda backend when it is usable, MPI otherwise;
    asking for NCCL where it cannot work is an error, not a silent fallback.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"gpucnn.distributed.init: transport must be one of {TRANSPORTS}, got {transport!r}")
    if transport == "nccl":
        if backend_name != "cuda":
            raise ValueError(f"gpucnn.distributed.init: NCCL reduces GPU arrays; it needs the cuda backend, "
                             f"not {backend_name!r} (use transport='mpi')")
        if not nccl_usable:
            from .nccl import require_nccl
            require_nccl()  # raises the RuntimeError that says what is missing
        return "nccl"
    if transport == "auto" and backend_name == "cuda" and nccl_usable:
        return "nccl"
    return "mpi"


def init(transport: str = "auto", backend="auto", timeout: float = DEFAULT_TIMEOUT,
         cuda_aware: bool = False) -> Communicator:
    """The communicator of this process in a job started by ``mpiexec`` (a job of one without it).

    ``backend``: the gpucnn backend (name or object) the model will use;
    with "cuda" every rank takes the GPU of its local rank, and ``transport``
    "auto" picks NCCL when CuPy finds it. ``timeout``: seconds a collective
    waits for the other ranks before it ends the job with an error naming the
    rank. ``cuda_aware``: the MPI reads GPU memory itself (else GPU arrays are
    staged through the host on the MPI transport). Call it before the model
    is moved to a GPU.
    """
    from ..backend import cuda_is_available

    name = getattr(backend, "name", backend)
    if name == "auto":
        name = "cuda" if cuda_is_available() else "cpu"
    global _current
    mpi = MPICommunicator(timeout=timeout, cuda_aware=cuda_aware)
    if choose_transport(transport, name, nccl_module() is not None) == "nccl":
        _current = NCCLCommunicator(mpi)
    else:
        if name == "cuda":
            use_local_gpu(mpi.local_rank, mpi.rank)
        _current = mpi
    return _current


def abort_job(message: str, status: int = 1) -> None:
    """End every rank of the job ``init`` joined, when it has more than one (a rank that fails
    alone would leave the others waiting); does nothing otherwise."""
    if _current is not None and _current.size > 1:
        _current.abort(message, status)


def library_versions() -> dict:
    """``{"MPI": the MPI library's first version line or None, "NCCL": "2.x.y" or None}`` (``gpucnn info``)."""
    try:
        mpi = import_mpi()
        import mpi4py
        library = " ".join(mpi.Get_library_version().strip().splitlines()[0].split())
        standard = ".".join(map(str, mpi.Get_version()))
        mpi_text = f"{library} (mpi4py {mpi4py.__version__}, MPI {standard})"
    except ImportError:
        mpi_text = None
    return {"MPI": mpi_text, "NCCL": nccl_version()}
