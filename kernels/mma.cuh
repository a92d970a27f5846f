// mma.cuh: warp-level tensor-core matrix multiply-accumulate, D = A*B + C.
//
//   mma_m16n8k8_tf32   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   mma_m16n8k16_bf16  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   to_tf32            cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero
//   pack_bf16x2        cvt.rn.bf16x2.f32: two floats to bfloat16, ties to even
//
// A is M x K (row), B is K x N (col), C and D are M x N floats. Each of the 32
// lanes holds a fixed part of each matrix ("fragment"); with
// groupID g = lane >> 2 and threadID_in_group t = lane % 4 (PTX ISA,
// "Matrix Fragments for mma.m16n8k8" and "... mma.m16n8k16 with floating point type"):
//
//   m16n8k8 .tf32   a[0] = A[g][t]     a[1] = A[g+8][t]   a[2] = A[g][t+4]   a[3] = A[g+8][t+4]
//                   b[0] = B[t][g]     b[1] = B[t+4][g]
//   m16n8k16 .bf16  element i of a (register i/2, low half first):
//                   row g for i in {0,1,4,5}, g+8 otherwise; col 2t + (i&1), +8 for i >= 4
//                   element i of b: row 2t + (i&1), +8 for i >= 2; col g
//   both            c[i] = C[g + 8*(i>=2)][2t + (i&1)]  (likewise d)
//
// On a GPU (sm_80 and later) each function is one instruction. On the CUDA
// emulator (GPUCNN_EMULATOR) it is a warp collective: the lanes swap their A
// and B fragments through gpucnn_emu::warp_exchange, which, like `.aligned`,
// insists on all 32 lanes at the same call site; each lane then computes its
// own four elements of D from the matrices rebuilt by the tables above.
//
// Arithmetic of the emulation. The products are exact in float (TF32 has 11
// significant bits, so a product has at most 22 <= 24; bfloat16 8 and 16). The
// PTX ISA does not specify how the hardware adds them to C; the emulator adds
// them to c in float32, one at a time in increasing k, each sum rounded to
// nearest even: d = (((c + p_0) + p_1) + ... + p_{K-1}). That is a definite
// answer the tests reproduce bit for bit, but not a claim about the GPU, whose
// tensor cores add the products with a wider internal sum and their own
// rounding; both lie within the accuracy bound stated in
// gpucnn/backend/precision.py.
//
// An operand that is not a TF32 value (any of its low 13 bits set) is
// undefined for .tf32 in the ISA; the emulator traps on one, so a kernel that
// forgot to_tf32 fails on the CPU instead of truncating silently on a GPU.
#pragma once

namespace gpucnn {
namespace mma {

#if defined(GPUCNN_EMULATOR)

// The emulator's side: the rounding of cvt, and the warp collective.
namespace emu {

// cvt.rna.tf32.f32: add half a unit in the 10th mantissa bit to the magnitude
// and cut the low 13 bits (a carry into the exponent rounds up to the next
// binade or to infinity, as the hardware does). NaN becomes the canonical NaN.
inline unsigned tf32_bits(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffffffu : u;
    return (u + 0x1000u) & 0xffffe000u;
}

// cvt.rn.bf16.f32: round to nearest, ties to the even 16-bit pattern.
inline unsigned bf16_bits(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffu : u >> 16;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

inline float checked_tf32(unsigned bits, const char* file, int line) {
    const bool nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu);
    if ((bits & 0x1fffu) && !nan)
        gpucnn_emu::gpucnn_emu_trap("mma.sync .tf32 operand is not a TF32 value (low 13 bits set): "
                                    "round it with to_tf32() first", file, line);
    return __uint_as_float(bits);
}

// The float a bfloat16 stands for: its 16 bits on top of 16 zero bits.
inline float bf16_value(unsigned half) { return __uint_as_float((half & 0xffffu) << 16); }

// d[i] = c[i] + sum_k A[row_i][k] * B[k][col_i], accumulated as described at
// the top of this file, for the lane's four elements of D.
template <int K>
inline void accumulate(float (&d)[4], const float (&A)[16][K], const float (&B)[K][8], const float (&c)[4],
                       int lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float sum = c[i];
        for (int k = 0; k < K; ++k) sum += A[row][k] * B[k][col];
        d[i] = sum;
    }
}

struct Fragments {  // one lane's A and B registers
    unsigned a[4], b[2];
};

inline void m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4],
                         const char* file, int line) {
    const Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    const unsigned char* all = gpucnn_emu::warp_exchange(&mine, sizeof mine, file, line);
    float A[16][8], B[8][8];
    for (int l = 0; l < 32; ++l) {
        Fragments f;
        std::memcpy(&f, all + l * gpucnn_emu::kMaxExchangeBytes, sizeof f);
        const int g = l >> 2, t = l & 3;
        A[g][t] = checked_tf32(f.a[0], file, line);
        A[g + 8][t] = checked_tf32(f.a[1], file, line);
        A[g][t + 4] = checked_tf32(f.a[2], file, line);
        A[g + 8][t + 4] = checked_tf32(f.a[3], file, line);
        B[t][g] = checked_tf32(f.b[0], file, line);
        B[t + 4][g] = checked_tf32(f.b[1], file, line);
    }
    accumulate<8>(d, A, B, c, (int)(threadIdx.x % 32));
}

inline void m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4],
                          const char* file, int line) {
    const Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    const unsigned char* all = gpucnn_emu::warp_exchange(&mine, sizeof mine, file, line);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        Fragments f;
        std::memcpy(&f, all + l * gpucnn_emu::kMaxExchangeBytes, sizeof f);
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 8; ++i) {  // element i: register i/2, low half first
            const float v = bf16_value(f.a[i / 2] >> (16 * (i & 1)));
            A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = v;
        }
        for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + 8 * (i >> 1)][g] = bf16_value(f.b[i / 2] >> (16 * (i & 1)));
    }
    accumulate<16>(d, A, B, c, (int)(threadIdx.x % 32));
}

}  // namespace emu

// Where the emulator reports a misuse: the caller's line (GCC's
// __builtin_FILE/LINE as default arguments), not this header's.
#define GPUCNN_MMA_SITE , const char *file = __builtin_FILE(), int line = __builtin_LINE()
#else
#define GPUCNN_MMA_SITE
#endif

// x rounded to TF32 (10 mantissa bits, to nearest, ties away from zero), as
// the 32-bit pattern mma_m16n8k8_tf32 takes.
__device__ __forceinline__ unsigned to_tf32(float x) {
#if defined(GPUCNN_EMULATOR)
    return emu::tf32_bits(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    __trap();  // no TF32 before sm_80: the host runs the FP32 kernels there
    return 0u;
#endif
}

// Two floats as one .bf16x2 register: lo in bits 0-15, hi in bits 16-31
// (each rounded to nearest even), the element order of the fragments.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
#if defined(GPUCNN_EMULATOR)
    return emu::bf16_bits(lo) | (emu::bf16_bits(hi) << 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source -> upper half
    return r;
#else
    __trap();
    return 0u;
#endif
}

// d = A*B + c for one warp, fragments as tabled above. d may alias c.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                 const float (&c)[4] GPUCNN_MMA_SITE) {
#if defined(GPUCNN_EMULATOR)
    emu::m16n8k8_tf32(d, a, b, c, file, line);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    __trap();
#endif
}

// d = A*B + c for one warp with bfloat16 A (4 .bf16x2 registers) and B (2).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                  const float (&c)[4] GPUCNN_MMA_SITE) {
#if defined(GPUCNN_EMULATOR)
    emu::m16n8k16_bf16(d, a, b, c, file, line);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    __trap();
#endif
}

#undef GPUCNN_MMA_SITE

}  // namespace mma
}  // namespace gpucnn
