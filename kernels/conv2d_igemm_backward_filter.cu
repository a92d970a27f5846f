// conv2d_igemm_backward_filter.cu: the filter gradient as an implicit GEMM with
// a deterministic split-K.
//
//   dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw]
//
// is the GEMM dW[k, g] = sum_l dY[k, l] * X[l, g] with M = K output channels,
// N = C*R*S filter elements g = (c, r, s), and a reduction over the
// l = (n, p, q) output pixels, N*P*Q of them. The output is small and the
// reduction long, so the reduction is split into `splits` slices (blockIdx.z):
// each block writes its partial tile to its own slice of a workspace
// ws[splits, K, C*R*S], and conv2d_backward_filter_reduce sums the slices in a
// fixed order. No atomics: the result is bitwise reproducible. With one slice
// the block writes dw directly and no reduction runs.
//
// Tiling: a block computes BM channels x BN filter elements; the reduction
// runs BK = 8 pixels at a time through two shared buffers (register-staged
// prefetch, see igemm_tile.cuh), each thread owning a TM x TN register tile.
// Each thread loads, per tile, one pixel row l = tile*BK + t % BK for both
// operands (consecutive threads take consecutive pixels: consecutive addresses
// of dy, and of x at stride 1), and columns t / BK + e*(THREADS/BK) of each:
// the pixel is split into (n, p, q) once per tile for all its loads, and the
// per-column parts (channel offset of dy; tap offsets of x) are computed once.
// Configurations (entry point suffix):
//   128x128: TM x TN = 8x8, 256 threads — K >= 128 and C*R*S >= 128;
//   128x64:  8x8, 128 threads           — K >= 128, few filter elements;
//   64x128:  8x8, 128 threads           — K <= 64;
//   64x64:   8x8, 64 threads            — K <= 64, few filter elements.
// No tile is narrower than 64 channels: every x element gathered feeds BM
// FMAs, and below 64 the gather (bounds checks, address) outweighs them.
// float32 only: float64 gradients run the direct kernels.
//
// Bounds: pixel rows l >= N*P*Q load zeros; channels k >= K and filter
// elements g >= C*R*S load the last real one and are never stored; x loads
// are checked against the image (padding). Offsets inside one image of dy and
// x are 32-bit (the host keeps each image below 2^31 elements); image bases
// are 64-bit.
#include "igemm_backward_filter.cuh"

namespace gpucnn {

using Bwf128x128 = igemm::TileShape<128, 128, 8, 8, 8>;
using Bwf64x128 = igemm::TileShape<64, 128, 8, 8, 8>;
using Bwf64x64 = igemm::TileShape<64, 64, 8, 8, 8>;
using Bwf128x64 = igemm::TileShape<128, 64, 8, 8, 8>;

}  // namespace gpucnn

// ---- extern "C" entry points ----------------------------------------------
// Launch: grid (ceil(K / BM), ceil(C*R*S / BN), splits), block (threads of the
// configuration); tiles_per_split = ceil(ceil(N*P*Q / 8) / splits). out is dw
// (K, C, R, S) when splits == 1, else a workspace (splits, K, C, R, S) that
// conv2d_backward_filter_reduce sums into dw.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_filter_igemm_128x128_f32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    gpucnn::conv2d_backward_filter_igemm<gpucnn::Bwf128x128>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_64x128_f32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    gpucnn::conv2d_backward_filter_igemm<gpucnn::Bwf64x128>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_filter_igemm_64x64_f32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    gpucnn::conv2d_backward_filter_igemm<gpucnn::Bwf64x64>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_128x64_f32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    gpucnn::conv2d_backward_filter_igemm<gpucnn::Bwf128x64>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

// dw[i] = sum over z of ws[z, i], z in order: the split-K reduction pass.
// One thread per element, grid-stride (any grid covers any size).
extern "C" __global__ void conv2d_backward_filter_reduce_f32(const float* __restrict__ ws,
                                                             float* __restrict__ dw, int splits,
                                                             long long count) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        float sum = 0.0f;
        for (int z = 0; z < splits; ++z) sum += ws[z * count + i];
        dw[i] = sum;
    }
}
