// igemm_backward_filter.cuh: the filter gradient's loader and kernel body
// (described in conv2d_igemm_backward_filter.cu), shared by its FP32 and
// tensor-core kernel files.
#pragma once

#include "igemm_tile.cuh"

namespace gpucnn {

struct FilterGradShape {
    int N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// What lands in shared memory is Math::to_shared of each element (as ConvGemmLoader).
template <class Tile, class Math>
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
        for (int e = 0; e < A_PER; ++e) As[row * Tile::LDA + col + e * COL_STEP] = Math::to_shared(a_reg[e]);
#pragma unroll
        for (int e = 0; e < B_PER; ++e) Bs[row * Tile::LDB + col + e * COL_STEP] = Math::to_shared(b_reg[e]);
    }
};

// Block (blockIdx.x, blockIdx.y, blockIdx.z) computes channels
// k0 = blockIdx.x*BM.., filter elements g0 = blockIdx.y*BN.., over the reduction tiles
// [z*tiles_per_split, (z+1)*tiles_per_split) and writes them to
// out[z, k, g] (out is dw itself when gridDim.z == 1).
// Math: igemm::SimtMath (FP32), or a tensor-core math (igemm_tc.cuh).
template <class Tile, class Math = igemm::SimtMath<Tile, float>>
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

    Math math;
    FilterGradLoader<Tile, Math> loader(dy, x, s, k0, g0);
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

}  // namespace gpucnn
