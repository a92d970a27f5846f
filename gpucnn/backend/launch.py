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


def gemm_tile_launch(m: int, n: int, tile_rows: int, tile_cols: int, threads: int, layers: int = 1):
    """Grid and block for a tiled GEMM kernel: one block per ``tile_rows`` x ``tile_cols``
    tile of the ``m`` x ``n`` output, ``layers`` times along blockIdx.z.

    For the implicit-GEMM convolutions (``kernels/conv2d_igemm_*.cu``): the
    grid is ``(ceil(m / tile_rows), ceil(n / tile_cols), layers)``, where
    ``layers`` is the split-K slices of backward-filter or the stride phases
    of backward-data; ``threads`` is fixed by the tile (each thread owns an
    8x8 sub-tile). The kernels guard the ragged last tiles.
    """
    if min(m, n, layers) < 1:
        raise ValueError(f"gemm_tile_launch: need a non-empty output, got m={m}, n={n}, layers={layers}")
    return (-(-m // tile_rows), -(-n // tile_cols), layers), (threads, 1, 1)
