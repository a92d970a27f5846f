// igemm_tile.cuh: the pieces every implicit-GEMM convolution kernel shares.
//
// An implicit-GEMM kernel computes a block tile BM x BN of a GEMM
//     out[m, n] = sum_g A[m, g] * B[g, n]
// whose operands are never stored as matrices: each tile of A and B is gathered
// from the NCHW tensors while it is copied from global memory into shared memory.
// This header holds what does not depend on which convolution pass it is:
//
//   FastDiv         index decomposition by a multiply-high, for the gathers;
//   TileShape       block tile BM x BN x BK, thread tile TM x TN, thread layout;
//   multiply_tile   one BK slice of the block product, out of shared memory into
//                   a TM x TN register tile (the hot loop: float4 reads + FMAs);
//   SimtMath        that product as the "math" of a kernel: its accumulators,
//                   what the loader stores, and where each accumulator belongs
//                   (igemm_tc.cuh has the tensor-core math with the same interface);
//   gemm_mainloop   the double-buffered loop over the reduction (register-staged
//                   prefetch: the global loads of tile t+1 are in flight while
//                   tile t is multiplied, so it works on every arch >= sm_75);
//   ConvGemm        a convolution written as that GEMM, general enough to be
//                   the forward pass and each output phase of backward-data;
//   forward_gemm    the ConvGemm of the forward pass;
//   conv_gemm       the kernel body for ConvGemm: loader, main loop, epilogue.
//
// conv2d_igemm_forward.cu, conv2d_igemm_backward_data.cu and
// conv2d_igemm_forward_tc.cu instantiate conv_gemm; conv2d_igemm_backward_filter.cu
// has its own loader (its reduction runs over pixels, not filter taps) and
// reuses the rest.
#pragma once

namespace gpucnn {
namespace igemm {

// Division by a divisor fixed for the whole kernel, as a multiply-high and a
// shift (Granlund & Montgomery 1994): with l = ceil(log2 d) and
// mul = ceil(2^(31+l) / d), which lies in [2^31, 2^32), n / d is
// ((2n * mul) >> 32) >> l exactly for 0 <= n < 2^31 (d = 1 included). The
// gathers split a flat index into coordinates every tile; an integer division
// by a run-time value costs ~20 instructions there, this costs 3.
struct FastDiv {
    unsigned mul, shift;

    __device__ explicit FastDiv(int divisor) : shift(0) {
        while ((1LL << shift) < divisor) ++shift;
        mul = (unsigned)(((1ULL << (31 + shift)) + (unsigned long long)divisor - 1) /
                         (unsigned long long)divisor);
    }

    // n / d for 0 <= n < 2^31.
    __device__ __forceinline__ int div(int n) const {
        const unsigned twice = 2u * (unsigned)n;
        return (int)((unsigned)(((unsigned long long)twice * mul) >> 32) >> shift);
    }
};

// A block tile of BM x BN outputs, reduced BK at a time, by (BM/TM) x (BN/TN)
// threads that each own a TM x TN register tile.
//
// Thread layout inside the block tile: thread t has tm = t % THREADS_M and
// tn = t / THREADS_M. Its TM rows are 4-wide strips m = s*4*THREADS_M + tm*4 + i
// (strip s < TM/4, i < 4), likewise its TN columns; so each shared-memory read
// of a thread is one float4, and the 16 (or 8) threads of a warp that differ in
// tm read consecutive float4s: no bank conflict, the rest are broadcasts.
// Shared rows are padded by 4 elements: rows stay 16-byte aligned, and the
// transposing stores of the loaders (8 reduction rows by 4 columns per warp)
// land in 32 different banks. (The tensor-core kernels pad by 8 instead: their
// fragment reads, 4 rows by 8 columns per warp, are then conflict-free.)
template <int BM_, int BN_, int BK_, int TM_, int TN_, int PAD_ = 4>
struct TileShape {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
    static constexpr int THREADS_M = BM / TM, THREADS_N = BN / TN;
    static constexpr int THREADS = THREADS_M * THREADS_N;
    static constexpr int LDA = BM + PAD_, LDB = BN + PAD_;
    static_assert(PAD_ % 4 == 0, "shared rows stay 16-byte aligned");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of float4 strips");
    static_assert(BM % TM == 0 && BN % TN == 0, "thread tiles must tile the block tile");
    static_assert(THREADS % BK == 0, "loaders give each reduction row THREADS/BK threads");
    static_assert(BM % (THREADS / BK) == 0 && BN % (THREADS / BK) == 0,
                  "loaders give each thread a whole number of elements per tile");
};

// Four consecutive elements of a 16-byte aligned shared row, as one vector read.
// (The igemm kernels are float32 only; float64 convolutions run the direct kernels.)
__device__ __forceinline__ void load4(const float* p, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}

// acc[i][j] += sum_{k < BK} As[k][m_i] * Bs[k][n_j]: one shared tile pair into
// the thread's register tile. Per k: TM/4 + TN/4 vector reads, TM*TN FMAs.
template <class Tile, typename T>
__device__ __forceinline__ void multiply_tile(const T* __restrict__ As, const T* __restrict__ Bs,
                                              int tm, int tn, T (&acc)[Tile::TM][Tile::TN]) {
#pragma unroll
    for (int k = 0; k < Tile::BK; ++k) {
        T a[Tile::TM], b[Tile::TN];
#pragma unroll
        for (int s = 0; s < Tile::TM / 4; ++s)
            load4(As + k * Tile::LDA + s * 4 * Tile::THREADS_M + tm * 4, a + 4 * s);
#pragma unroll
        for (int s = 0; s < Tile::TN / 4; ++s)
            load4(Bs + k * Tile::LDB + s * 4 * Tile::THREADS_N + tn * 4, b + 4 * s);
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i)
#pragma unroll
            for (int j = 0; j < Tile::TN; ++j) acc[i][j] += a[i] * b[j];
    }
}

// Row (or column) of the block tile held by element i of a thread's tile.
template <int THREADS_ALONG>
__device__ __forceinline__ int tile_offset(int thread_coord, int i) {
    return (i / 4) * 4 * THREADS_ALONG + thread_coord * 4 + (i % 4);
}

// The FP32 math of a kernel: each thread's TM x TN register tile, multiplied
// by FMAs (multiply_tile). The interface every math has (see igemm_tc.cuh):
//   to_shared(v)      what the loader stores in shared memory for element v;
//   multiply(As, Bs)  acc += one shared tile pair;
//   ROWS, COLS, row(i), col(j), value(i, j): the thread's accumulators are a
//                     ROWS x COLS grid; value(i, j) belongs to GEMM row
//                     row(i) and column col(j) of the block tile.
template <class Tile, typename T>
struct SimtMath {
    static constexpr int ROWS = Tile::TM, COLS = Tile::TN;
    int tm, tn;  // the thread's coordinates in the thread layout of TileShape
    T acc[Tile::TM][Tile::TN];

    __device__ SimtMath() : tm((int)threadIdx.x % Tile::THREADS_M), tn((int)threadIdx.x / Tile::THREADS_M) {
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i)
#pragma unroll
            for (int j = 0; j < Tile::TN; ++j) acc[i][j] = T(0);
    }
    __device__ static __forceinline__ T to_shared(T v) { return v; }
    __device__ __forceinline__ void multiply(const T* As, const T* Bs) {
        multiply_tile<Tile, T>(As, Bs, tm, tn, acc);
    }
    __device__ __forceinline__ int row(int i) const { return tile_offset<Tile::THREADS_M>(tm, i); }
    __device__ __forceinline__ int col(int j) const { return tile_offset<Tile::THREADS_N>(tn, j); }
    __device__ __forceinline__ T value(int i, int j) const { return acc[i][j]; }
};

// The reduction over tiles [tile_begin, tile_end) of BK each, double-buffered:
// the loader's global loads of tile t+1 go to registers before tile t is
// multiplied out of shared buffer t&1, and are stored to the other buffer after
// it, so global latency hides behind the FMAs and one barrier per tile suffices
// (buffer (t+1)&1 was last read in iteration t-1, which every thread has left).
// The last tile is peeled off so the loop body has no conditions.
// A Loader has load(tile) (global -> registers) and store(As, Bs) (registers ->
// one shared buffer); a Math has multiply(As, Bs) (see SimtMath).
// `tile_begin < tile_end` is the same for the whole block.
template <class Tile, typename T, class Loader, class Math>
__device__ __forceinline__ void gemm_mainloop(Loader& loader, int tile_begin, int tile_end,
                                              T (&As)[2][Tile::BK * Tile::LDA],
                                              T (&Bs)[2][Tile::BK * Tile::LDB], Math& math) {
    if (tile_begin >= tile_end) return;
    loader.load(tile_begin);
    loader.store(As[0], Bs[0]);
    __syncthreads();
    int cur = 0;
    for (int t = tile_begin; t + 1 < tile_end; ++t) {
        loader.load(t + 1);
        math.multiply(As[cur], Bs[cur]);
        loader.store(As[cur ^ 1], Bs[cur ^ 1]);
        __syncthreads();
        cur ^= 1;
    }
    math.multiply(As[cur], Bs[cur]);
}

// A convolution pass as the GEMM out[m, j] = sum_g A[m, g] * B[g, j]:
//   m = (n, i, u): image n, pixel (i, u) of an OH x OW grid of outputs;
//   j: one of NN output channels;
//   g = (c, a, b): input channel c < GC, tap (a, b) of an RA x SB tap grid;
//   A[m, g] = src[n, c, i*ish + ih0 + dr0 + a*drs, u*isw + iw0 + ds0 + b*dss],
//             src an (N, GC, SH, SW) array, zero outside it (padding);
//   B[g, j] = wgt[j*wj + c*wc + (r0 + a*rstep)*S + s0 + b*sstep];
//   result  -> out[n, j, oh0 + i*osh, ow0 + u*osw], out an (N, NN, OHF, OWF) array.
// Forward: src = x, wgt = w, out = y, one tap per filter element.
// Backward-data, output phase (ph, pw): src = dy, the taps are the filter
// elements that hit pixels of that phase, out = every sh-th row / sw-th column
// of dx (see conv2d_igemm_backward_data.cu).
struct ConvGemm {
    // The GEMM's extents.
    int N;   // images
    int NN;  // output channels of the pass: GEMM columns j
    int GC;  // reduction channels (channels of src)
    int RA;  // taps along the height per reduction channel (a < RA)
    int SB;  // taps along the width per reduction channel (b < SB)
    // Gather of A from src: pixel (i, u) of the OH x OW output grid reads src row
    // i*ish + ih0 + dr0 + a*drs and column u*isw + iw0 + ds0 + b*dss.
    int OH, OW;    // output grid of one image (GEMM rows m = (n, i, u))
    int ish, isw;  // src rows / columns per output pixel step (the stride)
    int ih0, iw0;  // src row / column of output pixel (0, 0)'s window (minus the padding)
    int dr0, drs;  // src row offset of tap a = 0, and per tap step (the dilation; negative in backward-data)
    int ds0, dss;  // the same along the width
    int SH, SW;    // src height and width (outside: zero, the padding)
    // Gather of B from wgt: B[g, j] = wgt[j*wj + c*wc + (r0 + a*rstep)*S + s0 + b*sstep].
    int wj;         // wgt elements per GEMM column j
    int wc;         // wgt elements per reduction channel c
    int S;          // filter width: wgt elements per filter row
    int r0, rstep;  // filter row of tap a = 0, and per tap step
    int s0, sstep;  // filter column of tap b = 0, and per tap step
    // Scatter of the result to out, an (N, NN, OHF, OWF) array: pixel (i, u)
    // goes to row oh0 + i*osh, column ow0 + u*osw.
    int OHF, OWF;  // out height and width
    int oh0, osh;  // out row of i = 0, and per i step (backward-data's phases interleave)
    int ow0, osw;  // out column of u = 0, and per u step
};

// The forward pass as a ConvGemm: src = x, wgt = w, out = y, one tap per filter element.
//   A[m, g] = x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw],  B[g, k] = w[k, c, r, s],  -> y[n, k, p, q]
__device__ __forceinline__ ConvGemm forward_gemm(int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                                                 int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                                                 int dil_w) {
    ConvGemm cg;
    cg.N = N; cg.NN = K; cg.GC = C; cg.RA = R; cg.SB = S;
    cg.OH = P; cg.OW = Q;
    cg.ish = stride_h; cg.isw = stride_w; cg.ih0 = -pad_h; cg.iw0 = -pad_w;
    cg.dr0 = 0; cg.drs = dil_h; cg.ds0 = 0; cg.dss = dil_w;
    cg.SH = H; cg.SW = W;
    cg.wj = C * R * S; cg.wc = R * S; cg.S = S; cg.r0 = 0; cg.rstep = 1; cg.s0 = 0; cg.sstep = 1;
    cg.OHF = P; cg.OWF = Q; cg.oh0 = 0; cg.osh = 1; cg.ow0 = 0; cg.osw = 1;
    return cg;
}

// At most this many taps (RA*SB) per reduction channel: a pixel's in-bounds
// taps are one bit each of a 32-bit mask. The host sends larger filters to
// the direct kernels.
constexpr int MAX_TAPS = 32;

// Offsets of tap ab = a*SB + b: .x into one image of src (dr*SW + ds), .y into
// one filter row of wgt ((r0 + a*rstep)*S + s0 + b*sstep). Kept in shared
// memory so a reduction row costs one lookup instead of a second division.
__device__ __forceinline__ void fill_tap_table(const ConvGemm& cg, int2* taps) {
    for (int ab = (int)threadIdx.x; ab < cg.RA * cg.SB; ab += (int)blockDim.x) {
        const int a = ab / cg.SB, b = ab % cg.SB;
        taps[ab].x = (cg.dr0 + a * cg.drs) * cg.SW + cg.ds0 + b * cg.dss;
        taps[ab].y = (cg.r0 + a * cg.rstep) * cg.S + cg.s0 + b * cg.sstep;
    }
}

// Hides a value's provenance from nvcc, so that what a loader computes once
// per thread (a pixel's pointer, a channel's offset) stays in a register:
// otherwise nvcc re-derives it from the kernel parameters at every load of the
// main loop (up to 5 instructions per element instead of 2). An empty PTX
// move does it; the emulator (which defines __CUDA_ARCH__ too) needs nothing.
template <typename T>
__device__ __forceinline__ const T* opaque(const T* p) {
#if defined(__CUDA_ARCH__) && !defined(GPUCNN_EMULATOR)
    asm("mov.b64 %0, %0;" : "+l"(p));
#endif
    return p;
}

__device__ __forceinline__ int opaque(int v) {
#if defined(__CUDA_ARCH__) && !defined(GPUCNN_EMULATOR)
    asm("mov.b32 %0, %0;" : "+r"(v));
#endif
    return v;
}

// Gathers the tiles of ConvGemm's A and B. Thread t loads, per tile:
//  - A: reduction row g = tile*BK + t / A_THREADS, pixels m0 + t % A_THREADS +
//    e*A_THREADS (e < A_PER): consecutive threads read consecutive pixels, which
//    are consecutive addresses at stride 1 (coalesced). Each pixel's window
//    origin (a pointer) and the mask of its taps that fall inside the image
//    are computed once; per tile the row g is split into (c, tap) once for
//    all A_PER pixels, and a load costs a mask test, an address and the load.
//  - B: reduction row g = tile*BK + t % BK, output channels j0 + t / BK +
//    e*(THREADS/BK): consecutive threads read consecutive g, which are
//    consecutive filter elements in the forward pass.
// Rows m >= M and columns j >= NN of a ragged block tile load the last real
// pixel / channel instead: their products land in outputs the epilogue never
// stores, so they need no check in the loop. Reduction rows g >= G load zeros
// in both A and B. Offsets inside one image of src and inside wgt are 32-bit
// (the host keeps both below 2^31 elements); image bases are 64-bit pointers.
// What lands in shared memory is Math::to_shared of each element (the
// tensor-core math rounds to TF32 there, once per element instead of once per
// fragment read).
template <class Tile, typename T, class Math>
struct ConvGemmLoader {
    static constexpr int A_THREADS = Tile::THREADS / Tile::BK;
    static constexpr int A_PER = Tile::BM / A_THREADS;
    static constexpr int B_PER = Tile::BN / A_THREADS;

    const int2* taps;
    FastDiv div_taps;  // g -> (c, tap)
    int n_taps, G, a_row, b_row, a_store, b_store, src_image, wgt_channel;
    const T* a_ptr[A_PER];   // &src[n, 0, hb, wb]: window origin of the pixel (may lie in the padding)
    unsigned a_mask[A_PER];  // bit ab: tap ab of the pixel is inside the image
    const T* b_ptr[B_PER];   // &wgt[j * wj]
    T a_reg[A_PER], b_reg[B_PER];

    __device__ ConvGemmLoader(const T* __restrict__ src, const T* __restrict__ wgt, const ConvGemm& cg,
                              const int2* taps_, int m0, int j0, int M)
        : taps(taps_), div_taps(max(cg.RA * cg.SB, 1)) {  // a phase may have no taps
        const int t = (int)threadIdx.x;
        n_taps = cg.RA * cg.SB;
        G = cg.GC * n_taps;
        a_row = opaque(t / A_THREADS);
        b_row = opaque(t % Tile::BK);
        a_store = opaque(a_row * Tile::LDA + t % A_THREADS);  // shared offsets of element 0
        b_store = opaque(b_row * Tile::LDB + t / Tile::BK);
        src_image = cg.SH * cg.SW;
        wgt_channel = cg.wc;
        const FastDiv div_ow(cg.OW), div_ohw(cg.OH * cg.OW);
#pragma unroll
        for (int e = 0; e < A_PER; ++e) {
            const int m = min(m0 + t % A_THREADS + e * A_THREADS, M - 1);
            const int n = div_ohw.div(m);
            const int iu = m - n * cg.OH * cg.OW;
            const int i = div_ow.div(iu);
            const int u = iu - i * cg.OW;
            const int hb = i * cg.ish + cg.ih0, wb = u * cg.isw + cg.iw0;
            a_ptr[e] = opaque(src + (long long)n * cg.GC * cg.SH * cg.SW + (long long)hb * cg.SW + wb);
            unsigned mask = 0;  // once per pixel: not unrolled, the kernel stays small
#pragma unroll 1
            for (int a = 0; a < cg.RA; ++a) {
                const int h = hb + cg.dr0 + a * cg.drs;
                if ((unsigned)h >= (unsigned)cg.SH) continue;
#pragma unroll 1
                for (int b = 0; b < cg.SB; ++b) {
                    const int w = wb + cg.ds0 + b * cg.dss;
                    if ((unsigned)w < (unsigned)cg.SW) mask |= 1u << (a * cg.SB + b);
                }
            }
            a_mask[e] = mask;
        }
#pragma unroll
        for (int e = 0; e < B_PER; ++e) {
            const int j = min(j0 + t / Tile::BK + e * (Tile::THREADS / Tile::BK), cg.NN - 1);
            b_ptr[e] = opaque(wgt + (long long)j * cg.wj);
        }
    }

    __device__ __forceinline__ void load(int tile) {
        {
            const int g = tile * Tile::BK + a_row;
            const int c = div_taps.div(g);
            const int ab = g - c * n_taps;
            const int off = c * src_image + taps[ab].x;
            const unsigned bit = g < G ? 1u << ab : 0u;
#pragma unroll
            for (int e = 0; e < A_PER; ++e) a_reg[e] = (a_mask[e] & bit) ? __ldg(a_ptr[e] + off) : T(0);
        }
        {
            const int g = tile * Tile::BK + b_row;
            const int c = div_taps.div(g);
            const int ab = g - c * n_taps;
            const int off = c * wgt_channel + taps[ab].y;
            const bool g_ok = g < G;
#pragma unroll
            for (int e = 0; e < B_PER; ++e) b_reg[e] = g_ok ? __ldg(b_ptr[e] + off) : T(0);
        }
    }

    __device__ __forceinline__ void store(T* As, T* Bs) const {
#pragma unroll
        for (int e = 0; e < A_PER; ++e) As[a_store + e * A_THREADS] = Math::to_shared(a_reg[e]);
#pragma unroll
        for (int e = 0; e < B_PER; ++e) Bs[b_store + e * (Tile::THREADS / Tile::BK)] = Math::to_shared(b_reg[e]);
    }
};

// Epilogue flags of conv_gemm: add bias[j] to out[., j], then clamp at zero.
constexpr int EPILOGUE_BIAS = 1;
constexpr int EPILOGUE_RELU = 2;

// One block tile of ConvGemm: pixels m0 = blockIdx.x*BM.., channels
// j0 = blockIdx.y*BN..; M = N*OH*OW pixels in all. Blocks past M return at once
// (backward-data's phases have fewer pixels than the grid is sized for).
// Needs RA*SB <= MAX_TAPS. Math: SimtMath, or a tensor-core math (igemm_tc.cuh).
template <class Tile, typename T, class Math = SimtMath<Tile, T>>
__device__ __forceinline__ void conv_gemm(const T* __restrict__ src, const T* __restrict__ wgt,
                                          const T* __restrict__ bias, T* __restrict__ out,
                                          const ConvGemm& cg, int epilogue) {
    __shared__ __align__(16) T As[2][Tile::BK * Tile::LDA];
    __shared__ __align__(16) T Bs[2][Tile::BK * Tile::LDB];
    __shared__ int2 taps[MAX_TAPS];
    if (cg.RA * cg.SB > MAX_TAPS) __trap();  // the host never launches these (see conv_algorithms.py)
    const int M = cg.N * cg.OH * cg.OW;
    const int m0 = (int)blockIdx.x * Tile::BM, j0 = (int)blockIdx.y * Tile::BN;
    if (m0 >= M) return;

    fill_tap_table(cg, taps);
    Math math;
    ConvGemmLoader<Tile, T, Math> loader(src, wgt, cg, taps, m0, j0, M);
    __syncthreads();  // the tap table is complete
    const int tiles = (loader.G + Tile::BK - 1) / Tile::BK;
    gemm_mainloop<Tile, T>(loader, 0, tiles, As, Bs, math);

    // Epilogue: at stride 1 neighbouring rows of a thread's tile (a float4
    // strip, or a fragment's 8 rows across lanes) are neighbouring pixels in
    // out, so a warp's stores for one channel cover a few 32-byte sectors.
    const FastDiv div_ow(cg.OW), div_ohw(cg.OH * cg.OW);
    const long long plane = (long long)cg.OHF * cg.OWF;
#pragma unroll
    for (int i = 0; i < Math::ROWS; ++i) {
        const int m = m0 + math.row(i);
        if (m >= M) continue;
        const int n = div_ohw.div(m);
        const int iu = m - n * cg.OH * cg.OW;
        const int pi = div_ow.div(iu);
        const int pu = iu - pi * cg.OW;
        const long long pixel = (long long)n * cg.NN * plane +
                                (long long)(cg.oh0 + pi * cg.osh) * cg.OWF + cg.ow0 + pu * cg.osw;
#pragma unroll
        for (int j = 0; j < Math::COLS; ++j) {
            const int jj = j0 + math.col(j);
            if (jj >= cg.NN) continue;
            T v = math.value(i, j);
            if (epilogue & EPILOGUE_BIAS) v += bias[jj];
            if ((epilogue & EPILOGUE_RELU) && v < T(0)) v = T(0);
            out[pixel + jj * plane] = v;
        }
    }
}

}  // namespace igemm
}  // namespace gpucnn
