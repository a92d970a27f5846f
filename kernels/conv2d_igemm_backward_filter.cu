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
#include "igemm_tile.cuh"

namespace gpucnn {

struct FilterGradShape {
    int N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

template <class Tile>
struct FilterGradLoader {
    static constexpr int COL_STEP = Tile::THREADS / Tile::BK;
    static constexpr int A_PER = Tile::BM / COL_STEP;
    static constexpr int B_PER = Tile::BN / COL_STEP;

    const float* x;
    const FilterGradShape& s;
    igemm::FastDiv div_pq, div_q;
    int L, row, col;
    const float* dy_k[A_PER];       // &dy[0, k, 0, 0]
    int g_dr[B_PER], g_ds[B_PER];   // r*dh, s*dw
    int g_off[B_PER];               // (c*H + r*dh)*W + s*dw
    float a_reg[A_PER], b_reg[B_PER];

    __device__ FilterGradLoader(const float* dy_, const float* x_, const FilterGradShape& s_, int k0, int g0)
        : x(x_), s(s_), div_pq(s_.P * s_.Q), div_q(s_.Q) {
        const int t = (int)threadIdx.x;
        L = s.N * s.P * s.Q;
        row = t % Tile::BK;
        col = t / Tile::BK;
        const int RS = s.R * s.S, CRS = s.C * RS;
#pragma unroll
        for (int e = 0; e < A_PER; ++e)
            dy_k[e] = igemm::opaque(dy_ + (long long)min(k0 + col + e * COL_STEP, s.K - 1) * s.P * s.Q);
#pragma unroll
        for (int e = 0; e < B_PER; ++e) {
            const int g = min(g0 + col + e * COL_STEP, CRS - 1);
            const int c = g / RS, r = (g % RS) / s.S, q = g % s.S;
            g_dr[e] = r * s.dil_h;
            g_ds[e] = q * s.dil_w;
            g_off[e] = (c * s.H + g_dr[e]) * s.W + g_ds[e];
        }
    }

    __device__ __forceinline__ void load(int tile) {
        const int l = tile * Tile::BK + row;
        const bool l_ok = l < L;
        const int n = div_pq.div(l);
        const int pq = l - n * s.P * s.Q;
        const int p = div_q.div(pq);
        const int hb = p * s.stride_h - s.pad_h, wb = (pq - p * s.Q) * s.stride_w - s.pad_w;
        const long long dy_pixel = (long long)n * s.K * s.P * s.Q + pq;
        const float* x_origin =
            igemm::opaque(x + (long long)n * s.C * s.H * s.W + (long long)hb * s.W + wb);
#pragma unroll
        for (int e = 0; e < A_PER; ++e) a_reg[e] = l_ok ? __ldg(dy_k[e] + dy_pixel) : 0.0f;
#pragma unroll
        for (int e = 0; e < B_PER; ++e) {
            const int h = hb + g_dr[e], w = wb + g_ds[e];
            const bool ok = l_ok && (unsigned)h < (unsigned)s.H && (unsigned)w < (unsigned)s.W;
            b_reg[e] = ok ? __ldg(x_origin + g_off[e]) : 0.0f;
        }
    }

    __device__ __forceinline__ void store(float* As, float* Bs) const {
#pragma unroll
        for (int e = 0; e < A_PER; ++e) As[row * Tile::LDA + col + e * COL_STEP] = a_reg[e];
#pragma unroll
        for (int e = 0; e < B_PER; ++e) Bs[row * Tile::LDB + col + e * COL_STEP] = b_reg[e];
    }
};

// Block (blockIdx.x, blockIdx.y, blockIdx.z) computes channels
// k0 = blockIdx.x*BM.., filter elements g0 = blockIdx.y*BN.., over the reduction tiles
// [z*tiles_per_split, (z+1)*tiles_per_split) and writes them to
// out[z, k, g] (out is dw itself when gridDim.z == 1).
template <class Tile>
__device__ __forceinline__ void conv2d_backward_filter_igemm(const float* __restrict__ dy,
                                                             const float* __restrict__ x,
                                                             float* __restrict__ out,
                                                             const FilterGradShape& s,
                                                             int tiles_per_split) {
    __shared__ __align__(16) float As[2][Tile::BK * Tile::LDA];
    __shared__ __align__(16) float Bs[2][Tile::BK * Tile::LDB];
    const int CRS = s.C * s.R * s.S;
    const int k0 = (int)blockIdx.x * Tile::BM, g0 = (int)blockIdx.y * Tile::BN;
    const int tiles = (s.N * s.P * s.Q + Tile::BK - 1) / Tile::BK;
    const int tile_begin = (int)blockIdx.z * tiles_per_split;
    const int tile_end = min(tiles, tile_begin + tiles_per_split);

    igemm::SimtMath<Tile, float> math;
    FilterGradLoader<Tile> loader(dy, x, s, k0, g0);
    igemm::gemm_mainloop<Tile, float>(loader, tile_begin, tile_end, As, Bs, math);

    // A slice with no tiles (possible only for the last ones) still writes its zeros.
    float* slice = out + (long long)blockIdx.z * s.K * CRS;
#pragma unroll
    for (int i = 0; i < math.ROWS; ++i) {
        const int k = k0 + math.row(i);
        if (k >= s.K) continue;
#pragma unroll
        for (int j = 0; j < math.COLS; ++j) {
            const int g = g0 + math.col(j);
            if (g < CRS) slice[(long long)k * CRS + g] = math.value(i, j);
        }
    }
}

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
