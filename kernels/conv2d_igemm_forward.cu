// conv2d_igemm_forward.cu: convolution forward as an implicit GEMM, with the
// bias / bias + ReLU epilogue fused in.
//
//   y[n,k,p,q] = act(b[k] + sum_{c,r,s} x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s])
//
// is the GEMM Y[m, k] = sum_g A[m, g] * W[k, g] with M = N*P*Q output pixels
// m = (n, p, q), N = K output channels, and a reduction over g = (c, r, s) of
// length C*R*S. A[m, g] (the "im2col" patch matrix) is never stored: the
// loader of igemm_tile.cuh gathers each BK x BM slice of it from x while
// copying it to shared memory, zero outside the image (padding, ragged edges).
//
// Tiling (all configurations): a block computes BM pixels x BN channels; the
// reduction runs BK = 8 (c, r, s) taps at a time through two shared buffers
// (tile t+1 is loaded to registers while tile t is multiplied); each thread
// owns a TM x TN register tile and per tap reads TM/4 + TN/4 float4s from
// shared memory for TM*TN FMAs. Configurations (entry point suffix):
//   128x128: TM x TN = 8x8, 256 threads — K > 64 and many pixels;
//   128x64:  8x8, 128 threads           — K around 64;
//   64x64:   8x8, 64 threads            — few pixels (late layers, small batch);
//   128x32:  8x8, 64 threads            — K <= 32.
// gpucnn/backend/conv_algorithms.py chooses among them per shape. Every tile
// is 8x8 per thread: each x element gathered feeds BN FMAs and each weight BM,
// and smaller thread tiles would spend more of the loop on shared-memory reads.
// float32 only: float64 runs the direct kernels.
//
// Epilogue flags: 1 adds bias[k], 2 clamps at zero (ReLU after the bias).
// Indices into x and y are 64-bit; the host refuses shapes whose N*P*Q, or one
// image of x or y, reaches 2^31 elements (the direct kernels take those).
#include "igemm_tile.cuh"

namespace gpucnn {

template <class Tile, typename T>
__device__ __forceinline__ void conv2d_forward_igemm(
    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    const igemm::ConvGemm cg =
        igemm::forward_gemm(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
    igemm::conv_gemm<Tile, T>(x, w, bias, y, cg, epilogue);
}

using Fwd128x128 = igemm::TileShape<128, 128, 8, 8, 8>;
using Fwd128x64 = igemm::TileShape<128, 64, 8, 8, 8>;
using Fwd64x64 = igemm::TileShape<64, 64, 8, 8, 8>;
using Fwd128x32 = igemm::TileShape<128, 32, 8, 8, 8>;

}  // namespace gpucnn

// ---- extern "C" entry points: one per tile configuration ------------------
// Launch: grid (ceil(N*P*Q / BM), ceil(K / BN)), block (threads of the
// configuration). bias may be any array of the dtype when epilogue has no bias.

extern "C" __global__ __launch_bounds__(256) void conv2d_forward_igemm_128x128_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm<gpucnn::Fwd128x128, float>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_forward_igemm_128x64_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm<gpucnn::Fwd128x64, float>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_128x32_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm<gpucnn::Fwd128x32, float>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_64x64_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm<gpucnn::Fwd64x64, float>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}
