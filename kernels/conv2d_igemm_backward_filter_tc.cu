// conv2d_igemm_backward_filter_tc.cu: the filter gradient as an implicit GEMM
// on the tensor cores (TF32 or BF16 inputs, FP32 accumulation), split-K as the FP32
// kernels (conv2d_igemm_backward_filter.cu, whose conv2d_backward_filter_reduce_f32
// sums the slices).
//
// The loader and kernel body of igemm_backward_filter.cuh with the tensor-core
// math and tiles of igemm_tc.cuh: dy and x are rounded to TF32 as they are
// stored to shared memory (_tf32), or to BF16 as the fragments are packed
// (_bf16; tiles_per_split counts that math's BK = 16 rows). Needs sm_80 or later; accuracy:
// gpucnn/backend/precision.py.
#include "igemm_backward_filter.cuh"
#include "igemm_tc.cuh"

// ---- extern "C" entry points: one per tile configuration ------------------
// Launch and arguments as conv2d_backward_filter_igemm_<tile>_f32, with the threads of igemm_tc.cuh;
// named _tf32 or _bf16 after the math.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_filter_igemm_128x256_tf32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Tc128x256;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_128x128_tf32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Tc128x128;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_128x64_tf32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Tc128x64;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_64x128_tf32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Tc64x128;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_filter_igemm_64x64_tf32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Tc64x64;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

// BF16 (igemm_tc.cuh's Bf16Math, BK = 16): the tiles above but 128x256.

extern "C" __global__ __launch_bounds__(256) void conv2d_backward_filter_igemm_128x128_bf16(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Bf16x128x128;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_128x64_bf16(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Bf16x128x64;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(128) void conv2d_backward_filter_igemm_64x128_bf16(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Bf16x64x128;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}

extern "C" __global__ __launch_bounds__(64) void conv2d_backward_filter_igemm_64x64_bf16(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ out,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w,
    int pad_h, int pad_w, int dil_h, int dil_w, int tiles_per_split) {
    using Config = gpucnn::igemm::Bf16x64x64;
    gpucnn::conv2d_backward_filter_igemm<Config::Tile, Config::Math>(
        dy, x, out, {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w},
        tiles_per_split);
}
