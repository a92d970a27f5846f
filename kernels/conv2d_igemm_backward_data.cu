// conv2d_igemm_backward_data.cu: the input gradient as an implicit GEMM, one
// output phase at a time, with no multiply-adds on the zeros a strided
// convolution's transpose would insert.
//
//   dx[n,c,h,w] = sum_{k,r,s} dy[n,k,p,q] * w[k,c,r,s]
//                 over the (r, s) with h + ph - r*dh = p*sh, w + pw - s*dw = q*sw
//
// is a convolution of dy with the rotated filter, K and C swapped. At stride
// sh > 1 only some taps r reach a given row h, and which ones depends only on
// h mod sh: for the phase ph_h = h mod sh, r must satisfy
// r*dh = ph_h + ph (mod sh), i.e. r = r0 + a*rstep with rstep = sh/gcd(sh, dh),
// and then p = i + dr0 - a*(rstep*dh/sh) for h = ph_h + i*sh, with
// dr0 = (ph_h + ph - r0*dh)/sh. So each of the sh*sw phases (blockIdx.z) is a
// dense GEMM of its own: M = N * ceil((H-ph_h)/sh) * ceil((W-ph_w)/sw) pixels of
// dx, N = C channels, a reduction over g = (k, a, b) of K * RA * SB real taps,
// written as an igemm::ConvGemm and run by the same loader, main loop and
// epilogue as the forward pass (igemm_tile.cuh). A phase that no tap reaches
// (e.g. a 1x1 filter at stride 2) has an empty reduction and writes zeros.
// At stride 1 there is one phase and this is the usual rotated-filter GEMM.
//
// Tiling and configurations are those of conv2d_igemm_forward.cu (BM pixels x
// BN input channels, BK = 8 taps per tile, TM x TN per thread):
//   128x128 (8x8, 256 threads), 128x64 (8x8, 128), 64x64 (8x8, 64), 128x32 (8x8, 64).
// float32 only: float64 gradients run the direct kernels.
#include "igemm_backward_data.cuh"

namespace gpucnn {

template <class Tile>
__device__ __forceinline__ void conv2d_backward_data_igemm(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    igemm::conv_gemm<Tile, float>(dy, w, dy, dx, backward_data_gemm(N, C, H, W, K, R, S, P, Q, stride_h, stride_w,
                                                                    pad_h, pad_w, dil_h, dil_w), 0);
}

using Bwd128x128 = igemm::TileShape<128, 128, 8, 8, 8>;
using Bwd128x64 = igemm::TileShape<128, 64, 8, 8, 8>;
using Bwd64x64 = igemm::TileShape<64, 64, 8, 8, 8>;
using Bwd128x32 = igemm::TileShape<128, 32, 8, 8, 8>;

}  // namespace gpucnn

// ---- extern "C" entry points ----------------------------------------------
// Launch: grid (ceil(N * ceil(H/sh) * ceil(W/sw) / BM), ceil(C / BN), sh*sw),
// block (threads of the configuration). Every element of dx is written.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_data_igemm_128x128_f32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm<gpucnn::Bwd128x128>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_data_igemm_128x64_f32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm<gpucnn::Bwd128x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_64x64_f32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm<gpucnn::Bwd64x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_128x32_f32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm<gpucnn::Bwd128x32>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}
