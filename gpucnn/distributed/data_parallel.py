"""What the Trainer does on each rank of a synchronous data-parallel job, over any communicator.

Every rank holds the whole model. Each step, every rank runs forward and
backward on its own part of one global batch; the gradients are averaged over
the ranks (weighted by how many samples each rank had), so every rank applies
the same update and the weights stay identical. The result equals one process
training on the global batch, except for BatchNorm: each rank normalises with
the statistics of its own part of the batch (as PyTorch's DDP without
SyncBatchNorm does), and the running statistics are averaged over the ranks
at the end of every epoch.
"""

from __future__ import annotations

import math

import numpy as np

from .buckets import DEFAULT_BUCKET_BYTES, Buckets, in_place

COMMUNICATOR_ATTRIBUTES = ("rank", "size", "allreduce", "broadcast", "barrier", "allgather_object", "abort")


def shard_batches(order, batch_size: int, rank: int, size: int) -> list:
    """The steps of one epoch on rank ``rank`` of ``size``: ``[(indices, samples in the global batch), ...]``.

    ``order`` (N,) is the epoch's permutation, the same on every rank. Step s
    takes the global batch ``order[s*G:(s+1)*G]`` with ``G = size * batch_size``
    and gives each rank one of its ``size`` nearly equal contiguous parts
    (``np.array_split``). Every rank gets the same number of steps, so no rank
    waits for a collective another never calls; in the last, short batch a
    rank may get no sample at all. Over the epoch the ranks' indices are
    disjoint and together are ``order``.
    """
    order = np.asarray(order)
    global_batch = batch_size * size
    steps = math.ceil(len(order) / global_batch)
    return [(np.array_split(chunk, size)[rank], len(chunk))
            for chunk in (order[s * global_batch:(s + 1) * global_batch] for s in range(steps))]


class DataParallel:
    """The collectives of data-parallel training for one model and optimizer over ``comm``.

    ``bucket_bytes`` bounds the flat buffers that carry the gradients (packed
    in reverse layer order: the order backward produces them, so the reduction
    of a bucket could later overlap the backward pass of the layers before it).
    """

    def __init__(self, comm, model, optimizer, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        missing = [name for name in COMMUNICATOR_ATTRIBUTES if not hasattr(comm, name)]
        if missing:
            raise TypeError(f"Trainer: comm must be a gpucnn.distributed communicator (see "
                            f"gpucnn.distributed.init), got {type(comm).__name__} without {missing}")
        self.comm, self.model, self.optimizer = comm, model, optimizer
        self.rank, self.size = comm.rank, comm.size
        backend = model.backend
        self._parameters = list(reversed(model.parameters()))
        self._gradients = Buckets([p.grad for p in self._parameters], backend, bucket_bytes)
        self._buffer_keys = [(layer, key) for layer in model.layers for key in layer.buffers]
        self._buffers = Buckets(self._buffer_list(), backend, bucket_bytes) if self._buffer_keys else None

    def start(self, seed, **settings):
        """Begin a fit on every rank; returns rank 0's ``seed``, which every rank then uses.

        Checks that every rank has the same model (architecture, parameter and
        buffer shapes, dtype), optimizer and fit ``settings`` (a ValueError on
        every rank naming the first difference, never a hang), then copies
        rank 0's parameters, buffers and optimizer state to every rank.
        """
        gathered = self.comm.allgather_object((self._describe(settings), seed, self._optimizer_scalars()))
        reference = gathered[0][0]
        for rank, (description, _, _) in enumerate(gathered[1:], start=1):
            if description != reference:
                raise ValueError(f"distributed training: rank {rank} has another model or settings than rank 0 "
                                 f"({_first_difference(reference, description, rank)}); every rank must "
                                 f"build the same model and optimizer and call fit with the same data size "
                                 f"and settings")
        arrays = [value for layer in self.model.layers for store in (layer.params, layer.buffers)
                  for value in store.values()]
        arrays += [state[name] for state in self.optimizer.state for name in sorted(state)]
        for array in arrays:
            in_place(lambda buffer: self.comm.broadcast(buffer, root=0), array, self.model.backend)
        self.optimizer.lr, self.optimizer.base_lr, self.optimizer.steps = gathered[0][2]
        return gathered[0][1]

    def shard(self, order, batch_size: int) -> tuple:
        """This rank's part of the epoch (``shard_batches``) as ``(local_order, steps)``.

        ``local_order``: the indices of this rank's samples in the order it
        trains on them; ``steps``: ``[(lo, hi, share), ...]``, step s training on
        ``local_order[lo:hi]`` (possibly empty), ``share`` its part of the global batch.
        """
        parts = shard_batches(order, batch_size, self.rank, self.size)
        ends = np.cumsum([0] + [len(idx) for idx, _ in parts])
        steps = [(int(ends[s]), int(ends[s + 1]), len(idx) / total) for s, (idx, total) in enumerate(parts)]
        return np.concatenate([idx for idx, _ in parts]), steps

    def average_gradients(self, weight: float) -> None:
        """Replace every gradient by the ranks' weighted sum; ``weight`` = this rank's share of the global batch.

        Each rank's gradient is the mean over its own samples, so weighting by
        ``samples here / samples in the global batch`` makes the sum the mean
        over the global batch, also in a short last batch.
        """
        self._gradients.allreduce(self.comm, [p.grad for p in self._parameters], scale=weight)

    def end_epoch(self, total_loss: float, total_correct: float) -> tuple:
        """Sum the ranks' epoch totals of loss and correct samples; average the buffers (BatchNorm statistics)."""
        totals = self.comm.allreduce(np.array([total_loss, total_correct], dtype=np.float64))
        if self._buffers is not None:
            self._buffers.allreduce(self.comm, self._buffer_list(), scale=1.0 / self.size)
        return float(totals[0]), float(totals[1])

    def finish(self) -> None:
        """End a fit: return on every rank only once rank 0's callbacks have written their files
        (so a rank may read the checkpoint rank 0 wrote as soon as fit returns)."""
        self.comm.barrier()

    def _buffer_list(self) -> list:
        return [layer.buffers[key] for layer, key in self._buffer_keys]

    def _describe(self, settings: dict) -> dict:
        """What must agree on every rank, as ``{what: value}`` (compared key by key)."""
        description = {f"layer {i}": f"{type(layer).__name__}{layer.get_config()}"
                       for i, layer in enumerate(self.model.layers)}
        description.update({f"array {key!r}": shape for key, shape in self.model.state_shapes().items()})
        description["dtype"] = str(self.model.dtype)
        description["optimizer"] = f"{type(self.optimizer).__name__} of {len(self.optimizer.params)} parameters"
        description["optimizer state"] = sorted({name for state in self.optimizer.state for name in state})
        description.update({f"fit {key}": value for key, value in settings.items()})
        return description

    def _optimizer_scalars(self) -> tuple:
        return self.optimizer.lr, self.optimizer.base_lr, self.optimizer.steps


def _first_difference(reference: dict, other: dict, rank: int) -> str:
    for key in list(reference) + [k for k in other if k not in reference]:
        mine, theirs = reference.get(key, "nothing"), other.get(key, "nothing")
        if mine != theirs:
            return f"{key}: {theirs} on rank {rank}, {mine} on rank 0"
    return "no difference"  # not reached: the caller found the descriptions unequal
