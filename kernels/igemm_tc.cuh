// igemm_tc.cuh: the tensor-core math of the implicit-GEMM kernels.
//
// Tf32Math and Bf16Math have SimtMath's interface (igemm_tile.cuh), so
// conv_gemm, its loader and its double-buffered main loop are the FP32
// kernels' own; what changes:
//
//   - the block's warps each own a WM x WN warp tile of the block tile, made
//     of (WM/16) x (WN/8) mma tiles of 16 x 8 (WarpTileMath: the accumulators
//     and where each belongs, shared by both);
//   - Tf32Math: the loader stores each element rounded to TF32
//     (cvt.rna.tf32.f32), once per element instead of once per fragment read;
//     per BK = 8 slice of shared memory, a warp reads its A and B fragments
//     (mma.cuh's layouts) and issues one mma.sync.m16n8k8 per mma tile;
//   - Bf16Math: shared memory keeps the float32 values; per BK = 16 slice a
//     warp reads them in pairs and packs each pair into one .bf16x2 register
//     (cvt.rn.bf16x2.f32, round to nearest even: the packing is needed anyway,
//     so the rounding costs no extra instruction), then issues one
//     mma.sync.m16n8k16 per mma tile.
//
// Shared-memory reads: lane (g, t) reads As[k = t or t+4][m = g, g+8, ...] and
// Bs[k][n = g]: 4 reduction rows by 8 columns per warp instruction, which a
// row pitch of BM + 8 (TileShape's PAD = 8) spreads over the 32 banks. Bf16Math
// keeps that pattern (rows t, t+4, t+8, t+12 of a 16-row slice) by feeding
// fragment reduction column 2t + e + 8h from shared row t + 4e + 8h, for A and
// B alike: a permutation of the reduction, which leaves the sum as it is,
// where the fragments' own order (rows 2t, 2t+1) would conflict 2 ways.
#pragma once

#include "igemm_tile.cuh"
#include "mma.cuh"

namespace gpucnn {
namespace igemm {

// Warp w of the block owns rows (w % WARPS_M)*WM.. and columns (w / WARPS_M)*WN..
// of the block tile. Lane (g = lane/4, t = lane%4) holds, of mma tile (i, j),
// the accumulators c[0..3] at rows g, g+8 and columns 2t, 2t+1 (mma.cuh; the
// same for m16n8k8 and m16n8k16). The part of the math both precisions share.
template <class Tile, int WM, int WN>
struct WarpTileMath {
    static constexpr int WARPS_M = Tile::BM / WM, WARPS_N = Tile::BN / WN;
    static constexpr int MT = WM / 16, NT = WN / 8;  // mma tiles per warp tile
    static constexpr int ROWS = 2 * MT, COLS = 2 * NT;
    static_assert(Tile::BM % WM == 0 && Tile::BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0,
                  "warp tiles of whole mma tiles must tile the block tile");
    static_assert(WARPS_M * WARPS_N * 32 == Tile::THREADS, "one warp per warp tile");

    int row0, col0;      // the lane's first accumulator row / column in the block tile
    int a_lane, b_lane;  // its fragments' offsets in As and Bs (shared row t)
    float acc[MT][NT][4];

    __device__ WarpTileMath() {
        const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
        const int g = lane >> 2, t = lane & 3;
        const int warp_row = (warp % WARPS_M) * WM, warp_col = (warp / WARPS_M) * WN;
        row0 = warp_row + g;
        col0 = warp_col + 2 * t;
        a_lane = opaque(t * Tile::LDA + warp_row + g);
        b_lane = opaque(t * Tile::LDB + warp_col + g);
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }

    // Accumulator (i, j): mma tile (i/2, j/2), element 2*(i%2) + j%2.
    __device__ __forceinline__ int row(int i) const { return row0 + (i / 2) * 16 + (i % 2) * 8; }
    __device__ __forceinline__ int col(int j) const { return col0 + (j / 2) * 8 + (j % 2); }
    __device__ __forceinline__ float value(int i, int j) const { return acc[i / 2][j / 2][2 * (i % 2) + j % 2]; }
};

// TF32 inputs (rounded by the loader), mma.sync.m16n8k8.
template <class Tile, int WM, int WN>
struct Tf32Math : WarpTileMath<Tile, WM, WN> {
    using Base = WarpTileMath<Tile, WM, WN>;
    static_assert(Tile::BK % 8 == 0, "m16n8k8 takes the reduction 8 at a time");

    // The TF32 pattern of v, kept in a float slot of shared memory.
    __device__ static __forceinline__ float to_shared(float v) { return __uint_as_float(mma::to_tf32(v)); }

    __device__ __forceinline__ void multiply(const float* As, const float* Bs) {
#pragma unroll
        for (int k = 0; k < Tile::BK; k += 8) {
            const float* a = As + k * Tile::LDA + this->a_lane;
            const float* b = Bs + k * Tile::LDB + this->b_lane;
            unsigned fa[Base::MT][4], fb[Base::NT][2];
#pragma unroll
            for (int i = 0; i < Base::MT; ++i) {  // a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
                fa[i][0] = __float_as_uint(a[i * 16]);
                fa[i][1] = __float_as_uint(a[i * 16 + 8]);
                fa[i][2] = __float_as_uint(a[4 * Tile::LDA + i * 16]);
                fa[i][3] = __float_as_uint(a[4 * Tile::LDA + i * 16 + 8]);
            }
#pragma unroll
            for (int j = 0; j < Base::NT; ++j) {  // b0 (t, g), b1 (t+4, g)
                fb[j][0] = __float_as_uint(b[j * 8]);
                fb[j][1] = __float_as_uint(b[4 * Tile::LDB + j * 8]);
            }
#pragma unroll
            for (int i = 0; i < Base::MT; ++i)
#pragma unroll
                for (int j = 0; j < Base::NT; ++j)
                    mma::mma_m16n8k8_tf32(this->acc[i][j], fa[i], fb[j], this->acc[i][j]);
        }
    }
};

// BF16 inputs (rounded to nearest even as the fragments are packed),
// mma.sync.m16n8k16. Register r of a lane's A fragment holds row g + 8*(r&1)
// and reduction columns 2t, 2t+1 (+8 for r >= 2), read from shared rows t and
// t+4 (+8): see the top of this file; B's register r likewise at column g.
template <class Tile, int WM, int WN>
struct Bf16Math : WarpTileMath<Tile, WM, WN> {
    using Base = WarpTileMath<Tile, WM, WN>;
    static_assert(Tile::BK % 16 == 0, "m16n8k16 takes the reduction 16 at a time");

    // Shared memory keeps v itself: multiply rounds it while packing.
    __device__ static __forceinline__ float to_shared(float v) { return v; }

    __device__ __forceinline__ void multiply(const float* As, const float* Bs) {
#pragma unroll
        for (int k = 0; k < Tile::BK; k += 16) {
            const float* a = As + k * Tile::LDA + this->a_lane;
            const float* b = Bs + k * Tile::LDB + this->b_lane;
            unsigned fa[Base::MT][4], fb[Base::NT][2];
#pragma unroll
            for (int i = 0; i < Base::MT; ++i)
#pragma unroll
                for (int r = 0; r < 4; ++r) {  // rows g, g+8, g, g+8; shared rows t (+8 for r >= 2) and t+4
                    const float* p = a + (r >> 1) * 8 * Tile::LDA + i * 16 + (r & 1) * 8;
                    fa[i][r] = mma::pack_bf16x2(p[0], p[4 * Tile::LDA]);
                }
#pragma unroll
            for (int j = 0; j < Base::NT; ++j)
#pragma unroll
                for (int r = 0; r < 2; ++r) {  // shared rows t (+8 for r = 1) and t+4, column g
                    const float* p = b + r * 8 * Tile::LDB + j * 8;
                    fb[j][r] = mma::pack_bf16x2(p[0], p[4 * Tile::LDB]);
                }
#pragma unroll
            for (int i = 0; i < Base::MT; ++i)
#pragma unroll
                for (int j = 0; j < Base::NT; ++j)
                    mma::mma_m16n8k16_bf16(this->acc[i][j], fa[i], fb[j], this->acc[i][j]);
        }
    }
};

// The tensor-core tile configurations (the host's TENSOR_CORE_TILES; threads):
//   128x256 (256), 128x128 (128): warps own 64x64 (4 x 8 mma tiles, 128
//     accumulators per thread): 32 mma per BK slice against the loader's
//     fixed cost, so the hot loop issues an mma every 5-8 instructions;
//   128x64 (128), 64x128 (128), 64x64 (64), 128x32 (64): warps own 64x32 (64 accumulators,
//     as the FP32 kernels' 8x8), the FP32 tiles' thread counts.
// TileShape's TM x TN only sets the thread count (BM*BN / (TM*TN)), i.e. the
// loader's work per thread; the accumulators are the warp tiles'. PAD = 8.
//
// The BF16 tiles (the host's BF16_TILES) are the same with BK = 16, since
// m16n8k16 reduces 16 rows at a time and pairing two BK = 8 slices would hold
// half-filled fragments across main-loop iterations (and need a final flush
// the shared main loop does not have). Shared memory doubles: 34 KB at
// 128x128; 128x256 would need 51 KB, over the 48 KB of static shared memory a
// block may have, so it has no BF16 kernel (128x128 is the largest). At
// BK = 16 the loader's per-thread state (a pointer, mask and register per
// gathered element) doubles too, so 128x128 with four 64x64 warps spilled
// (sm_90, ~80 bytes): its BF16 kernel has eight warps of 64x32 (256 threads).
template <class Shape, int WARP_M, int WARP_N, template <class, int, int> class MathOf = Tf32Math>
struct TcConfig {
    using Tile = Shape;
    using Math = MathOf<Shape, WARP_M, WARP_N>;
};
using Tc128x256 = TcConfig<TileShape<128, 256, 8, 8, 16, 8>, 64, 64>;
using Tc128x128 = TcConfig<TileShape<128, 128, 8, 16, 8, 8>, 64, 64>;
using Tc128x64 = TcConfig<TileShape<128, 64, 8, 8, 8, 8>, 64, 32>;
using Tc64x128 = TcConfig<TileShape<64, 128, 8, 8, 8, 8>, 64, 32>;
using Tc64x64 = TcConfig<TileShape<64, 64, 8, 8, 8, 8>, 64, 32>;
using Tc128x32 = TcConfig<TileShape<128, 32, 8, 8, 8, 8>, 64, 32>;
using Bf16x128x128 = TcConfig<TileShape<128, 128, 16, 8, 8, 8>, 64, 32, Bf16Math>;
using Bf16x128x64 = TcConfig<TileShape<128, 64, 16, 8, 8, 8>, 64, 32, Bf16Math>;
using Bf16x64x128 = TcConfig<TileShape<64, 128, 16, 8, 8, 8>, 64, 32, Bf16Math>;
using Bf16x64x64 = TcConfig<TileShape<64, 64, 16, 8, 8, 8>, 64, 32, Bf16Math>;
using Bf16x128x32 = TcConfig<TileShape<128, 32, 16, 8, 8, 8>, 64, 32, Bf16Math>;

}  // namespace igemm
}  // namespace gpucnn
