// conv2d_igemm_forward_tc.cu: convolution forward as an implicit GEMM on the
// tensor cores (TF32 inputs, FP32 accumulation), bias / bias + ReLU fused in.
//
// The same GEMM, loader, main loop, tiles and epilogue as
// conv2d_igemm_forward.cu (igemm::forward_gemm, igemm::conv_gemm); only the
// math differs: igemm::Tf32Math (igemm_tc.cuh) rounds x and w to TF32 as they
// are stored to shared memory and multiplies with mma.sync.m16n8k8, each warp
// owning a 64 x 32 warp tile (4 x 4 mma tiles, 64 accumulators per thread, as
// the FP32 kernels' 8x8). Shared rows are padded by 8 floats (conflict-free
// fragment reads). Needs sm_80 or later (the host runs the FP32 kernels on
// sm_75); the emulator executes mma.sync as mma.cuh describes.
//
// Accuracy: see gpucnn/backend/precision.py (TF32 inputs, relative rounding
// error at most 2^-11 each).
#include "igemm_tc.cuh"

namespace gpucnn {

template <class Tile>
__device__ __forceinline__ void conv2d_forward_igemm_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    const igemm::ConvGemm cg =
        igemm::forward_gemm(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
    igemm::conv_gemm<Tile, float, igemm::Tf32Math<Tile, 64, 32>>(x, w, bias, y, cg, epilogue);
}

// Block tiles as the FP32 kernels' (same thread counts, so the host's grids
// and tile choice carry over), with PAD = 8.
using Tc128x128 = igemm::TileShape<128, 128, 8, 8, 8, 8>;
using Tc128x64 = igemm::TileShape<128, 64, 8, 8, 8, 8>;
using Tc64x64 = igemm::TileShape<64, 64, 8, 8, 8, 8>;
using Tc128x32 = igemm::TileShape<128, 32, 8, 8, 8, 8>;

}  // namespace gpucnn

// ---- extern "C" entry points: one per tile configuration ------------------
// Launch and arguments as conv2d_forward_igemm_<tile>_f32.

extern "C" __global__ __launch_bounds__(256) void conv2d_forward_igemm_128x128_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tf32<gpucnn::Tc128x128>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_forward_igemm_128x64_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tf32<gpucnn::Tc128x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_128x32_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tf32<gpucnn::Tc128x32>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_64x64_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tf32<gpucnn::Tc64x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}
