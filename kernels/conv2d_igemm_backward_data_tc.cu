// conv2d_igemm_backward_data_tc.cu: the input gradient as an implicit GEMM on
// the tensor cores (TF32 or BF16 inputs, FP32 accumulation).
//
// The output phases of conv2d_igemm_backward_data.cu (backward_data_gemm), run
// by igemm::conv_gemm with the tensor-core math and tiles of igemm_tc.cuh
// instead of the FP32 ones: dy and w are rounded to TF32 as they are stored to
// shared memory (_tf32), or to BF16 as the fragments are packed (_bf16). Needs sm_80 or later; accuracy: gpucnn/backend/precision.py.
#include "igemm_backward_data.cuh"
#include "igemm_tc.cuh"

namespace gpucnn {

template <class Config>
__device__ __forceinline__ void conv2d_backward_data_igemm_tc(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    igemm::conv_gemm<typename Config::Tile, float, typename Config::Math>(
        dy, w, dy, dx, backward_data_gemm(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w),
        0);
}

}  // namespace gpucnn

// ---- extern "C" entry points: one per tile configuration ------------------
// Launch and arguments as conv2d_backward_data_igemm_<tile>_f32, with the threads of igemm_tc.cuh;
// named _tf32 or _bf16 after the math.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_data_igemm_128x256_tf32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Tc128x256>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_data_igemm_128x128_tf32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Tc128x128>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_data_igemm_128x64_tf32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Tc128x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_128x32_tf32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Tc128x32>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_64x64_tf32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Tc64x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

// BF16 (igemm_tc.cuh's Bf16Math, BK = 16): the tiles above but 128x256.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_data_igemm_128x128_bf16(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Bf16x128x128>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_data_igemm_128x64_bf16(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Bf16x128x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_128x32_bf16(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Bf16x128x32>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_data_igemm_64x64_bf16(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_igemm_tc<gpucnn::igemm::Bf16x64x64>(
        dy, w, dx, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
}
