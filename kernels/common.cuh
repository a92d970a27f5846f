// common.cuh: index helpers shared by every kernel file.
//
// Flat indices and offsets are 64-bit (long long): N*C*H*W of a large batch
// can pass 2^31 even though every single dimension fits an int.
#pragma once

namespace gpucnn {

// Index of this thread in a 1-D grid of 1-D blocks.
__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// Number of threads in the whole 1-D grid: the step of a grid-stride loop.
// The launch helper caps the grid size, so every element-per-thread kernel
// loops `for (i = global_thread_index(); i < total; i += grid_thread_count())`
// and covers any number of elements with any grid.
__device__ __forceinline__ long long grid_thread_count() {
    return (long long)gridDim.x * blockDim.x;
}

__device__ __forceinline__ int min_int(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int max_int(int a, int b) { return a > b ? a : b; }

// Coordinates of one element of a contiguous 4-D array of shape (N, C, H, W).
// Kernels over other 4-D arrays reuse the names: for a filter (K, C, R, S),
// n is k, h is r and w is s.
struct Nchw {
    long long n;
    int c, h, w;
};

// (n, c, h, w) of the flat index i into a contiguous (N, C, H, W) array.
__device__ __forceinline__ Nchw unravel_nchw(long long i, int C, int H, int W) {
    Nchw e;
    e.w = (int)(i % W);
    i /= W;
    e.h = (int)(i % H);
    i /= H;
    e.c = (int)(i % C);
    e.n = i / C;
    return e;
}

// Flat offset of (n, c, h, w) in a contiguous (N, C, H, W) array.
__device__ __forceinline__ long long offset_nchw(long long n, int c, int h, int w,
                                                 int C, int H, int W) {
    return ((n * C + c) * H + h) * (long long)W + w;
}

}  // namespace gpucnn
