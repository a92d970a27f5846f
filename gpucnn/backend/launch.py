"""Launch sizes of our CUDA kernels, computed in this one place.

Every kernel of ``kernels/*.cu`` launched by the ``cuda`` and ``cuda-emu``
backends gets its grid and block from a function here, so a change of block
size, or of the cap on the grid, is made once and seen by both backends.
"""

from __future__ import annotations

# Threads per block of the one-thread-per-element kernels: a multiple of the
# 32-thread warp, large enough to hide memory latency, small enough to leave
# room for several blocks per multiprocessor on every supported GPU (sm_75+).
ELEMENTWISE_THREADS = 256

# Upper bound on the blocks of a one-thread-per-element launch. The kernels
# walk their elements in a grid-stride loop, so a capped grid still covers
# every element; 2**16 blocks of 256 threads keep a few hundred resident
# blocks per multiprocessor busy on the largest GPUs and make the emulator's
# per-block overhead independent of the array size.
MAX_ELEMENTWISE_BLOCKS = 2**16


def elementwise_launch(total: int, threads: int = ELEMENTWISE_THREADS):
    """Grid and block ``((blocks, 1, 1), (threads, 1, 1))`` for ``total`` elements.

    For kernels with one thread per output element in a grid-stride loop (see
    ``kernels/common.cuh``): ``blocks = ceil(total / threads)``, capped at
    ``MAX_ELEMENTWISE_BLOCKS``. ``total`` must be positive.
    """
    if total < 1:
        raise ValueError(f"elementwise_launch: need at least one element, got total={total}")
    blocks = min(-(-total // threads), MAX_ELEMENTWISE_BLOCKS)
    return (blocks, 1, 1), (threads, 1, 1)
