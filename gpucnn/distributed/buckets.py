"""Reduce many arrays in a few large collectives: pack them into flat buckets, reduce, unpack.

One collective per gradient tensor would pay the network's latency dozens of
times per step; one per bucket of up to ``bucket_bytes`` pays it a few times
and moves large messages, which networks do at full speed.
"""

from __future__ import annotations

import numpy as np

from .base import is_device_array

DEFAULT_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default bucket size


def in_place(call, array, backend) -> None:
    """Run the collective ``call(buffer)`` so that its result lands in ``array``.

    NumPy and CUDA arrays are handed over as they are (the communicator knows
    them); other device arrays (the cuda-emu backend's) go through a host copy.
    """
    if isinstance(array, np.ndarray) or is_device_array(array):
        call(array)
        return
    host = np.array(backend.to_numpy(array))
    call(host)
    array[...] = backend.asarray(host)


class Buckets:
    """A fixed plan that packs ``arrays`` (in the order given, all on ``backend``) into flat buffers of
    at most ``bucket_bytes``.

    Consecutive arrays of one dtype and one array module share a bucket until
    it would exceed ``bucket_bytes``; an array larger than that gets a bucket of
    its own. The arrays passed to ``allreduce`` must have the shapes and dtypes
    of those the plan was made from (they may be new array objects).
    """

    def __init__(self, arrays, backend, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"Buckets: bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self.backend = backend
        self.shapes = [tuple(a.shape) for a in arrays]
        self.dtypes = [np.dtype(a.dtype) for a in arrays]
        self.buckets = []  # (flat buffer, [(array index, offset, size), ...])
        slots, used, dtype = [], 0, None
        for i, a in enumerate(arrays):
            nbytes = a.size * a.dtype.itemsize
            if slots and (np.dtype(a.dtype) != dtype or used + nbytes > bucket_bytes):
                self.buckets.append(self._bucket(slots, dtype))
                slots, used = [], 0
            slots.append((i, used // np.dtype(a.dtype).itemsize, a.size))
            used, dtype = used + nbytes, np.dtype(a.dtype)
        if slots:
            self.buckets.append(self._bucket(slots, dtype))

    def _bucket(self, slots, dtype):
        size = slots[-1][1] + slots[-1][2]
        return self.backend.xp.empty(size, dtype=dtype), slots

    def allreduce(self, comm, arrays, scale: float = 1.0, op: str = "sum") -> None:
        """``arrays[i][...] = reduce over ranks of (scale * arrays[i])``, one collective per bucket."""
        self._check(arrays)
        for flat, slots in self.buckets:
            for i, offset, size in slots:
                flat[offset:offset + size] = arrays[i].reshape(-1)
            if scale != 1.0:
                flat *= scale
            in_place(lambda buffer: comm.allreduce(buffer, op), flat, self.backend)
            for i, offset, size in slots:
                arrays[i][...] = flat[offset:offset + size].reshape(self.shapes[i])

    def _check(self, arrays) -> None:
        if len(arrays) != len(self.shapes):
            raise ValueError(f"Buckets.allreduce: the plan holds {len(self.shapes)} arrays, got {len(arrays)}")
        for i, a in enumerate(arrays):
            if tuple(a.shape) != self.shapes[i] or np.dtype(a.dtype) != self.dtypes[i]:
                raise ValueError(f"Buckets.allreduce: array {i} is {a.dtype} of shape {tuple(a.shape)}, "
                                 f"the plan was made for {self.dtypes[i]} of shape {self.shapes[i]}")
