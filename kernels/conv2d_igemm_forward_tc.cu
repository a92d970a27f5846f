// conv2d_igemm_forward_tc.cu: convolution forward as an implicit GEMM on the
// tensor cores (TF32 or BF16 inputs, FP32 accumulation), bias / bias + ReLU fused in.
//
// The same GEMM, loader, main loop and epilogue as conv2d_igemm_forward.cu
// (igemm::forward_gemm, igemm::conv_gemm); only the math differs:
// igemm::Tf32Math (igemm_tc.cuh) rounds x and w to TF32 as they are stored to
// shared memory and multiplies with mma.sync.m16n8k8; igemm::Bf16Math rounds
// them to BF16 as it packs the fragments and multiplies with m16n8k16; in the
// tile configurations of igemm_tc.cuh. Needs sm_80 or later (the host runs the FP32
// kernels on sm_75); the emulator executes mma.sync as mma.cuh describes.
//
// Accuracy: see gpucnn/backend/precision.py (relative rounding error of each
// input at most 2^-11 in TF32, 2^-8 in BF16).
#include "igemm_tc.cuh"

namespace gpucnn {

template <class Config>
__device__ __forceinline__ void conv2d_forward_igemm_tc(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    const igemm::ConvGemm cg =
        igemm::forward_gemm(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
    igemm::conv_gemm<typename Config::Tile, float, typename Config::Math>(x, w, bias, y, cg, epilogue);
}

}  // namespace gpucnn

// ---- extern "C" entry points: one per tile configuration ------------------
// Launch and arguments as conv2d_forward_igemm_<tile>_f32, with the threads of igemm_tc.cuh;
// named _tf32 or _bf16 after the math.

extern "C" __global__ __launch_bounds__(256) void conv2d_forward_igemm_128x256_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Tc128x256>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_forward_igemm_128x128_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Tc128x128>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_forward_igemm_128x64_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Tc128x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_128x32_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Tc128x32>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_64x64_tf32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Tc64x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

// BF16 (igemm_tc.cuh's Bf16Math, BK = 16): the tiles above but 128x256.

extern "C" __global__ __launch_bounds__(256) void conv2d_forward_igemm_128x128_bf16(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Bf16x128x128>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_forward_igemm_128x64_bf16(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Bf16x128x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_128x32_bf16(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Bf16x128x32>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_forward_igemm_64x64_bf16(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int epilogue) {
    gpucnn::conv2d_forward_igemm_tc<gpucnn::igemm::Bf16x64x64>(
        x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, epilogue);
}
