// Warp-level MMA (kernels/mma.cuh) on the emulator, for tests/test_mma.py.
#include "../../kernels/mma.cuh"

using gpucnn::mma::mma_m16n8k16_bf16;
using gpucnn::mma::mma_m16n8k8_tf32;
using gpucnn::mma::pack_bf16x2;
using gpucnn::mma::to_tf32;

// One m16n8k8 TF32 mma per warp on per-lane registers: thread t rounds
// a[4t..4t+3] and b[2t..2t+1] with to_tf32 (the patterns go to a_bits and
// b_bits), takes c[4t..4t+3] and writes its d registers to d[4t..4t+3].
extern "C" __global__ void mma_tf32_registers(const float* __restrict__ a, const float* __restrict__ b,
                                              const float* __restrict__ c, unsigned* __restrict__ a_bits,
                                              unsigned* __restrict__ b_bits, float* __restrict__ d) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned ra[4], rb[2];
    float rc[4], rd[4];
    for (int i = 0; i < 4; ++i) ra[i] = a_bits[4 * t + i] = to_tf32(a[4 * t + i]);
    for (int i = 0; i < 2; ++i) rb[i] = b_bits[2 * t + i] = to_tf32(b[2 * t + i]);
    for (int i = 0; i < 4; ++i) rc[i] = c[4 * t + i];
    mma_m16n8k8_tf32(rd, ra, rb, rc);
    for (int i = 0; i < 4; ++i) d[4 * t + i] = rd[i];
}

// The same for m16n8k16 BF16: thread t packs a[8t..8t+7] into four .bf16x2
// registers (elements 2i, 2i+1 into register i) and b[4t..4t+3] into two.
extern "C" __global__ void mma_bf16_registers(const float* __restrict__ a, const float* __restrict__ b,
                                              const float* __restrict__ c, unsigned* __restrict__ a_bits,
                                              unsigned* __restrict__ b_bits, float* __restrict__ d) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned ra[4], rb[2];
    float rc[4], rd[4];
    for (int i = 0; i < 4; ++i) ra[i] = a_bits[4 * t + i] = pack_bf16x2(a[8 * t + 2 * i], a[8 * t + 2 * i + 1]);
    for (int i = 0; i < 2; ++i) rb[i] = b_bits[2 * t + i] = pack_bf16x2(b[4 * t + 2 * i], b[4 * t + 2 * i + 1]);
    for (int i = 0; i < 4; ++i) rc[i] = c[4 * t + i];
    mma_m16n8k16_bf16(rd, ra, rb, rc);
    for (int i = 0; i < 4; ++i) d[4 * t + i] = rd[i];
}

// D = A * B for one row-major 16x8 A, 8x8 B and 16x8 D per warp, each lane
// loading its fragments from the matrices as a tensor-core kernel does. With
// wrong_mapping != 0 it swaps a[1] and a[2] (rows g+8 and columns t+4 mixed
// up), the kind of slip the tests must catch.
extern "C" __global__ void mma_tf32_matrices(const float* __restrict__ A, const float* __restrict__ B,
                                             float* __restrict__ D, int wrong_mapping) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    const float* Aw = A + warp * 16 * 8;
    const float* Bw = B + warp * 8 * 8;
    float* Dw = D + warp * 16 * 8;
    unsigned ra[4] = {to_tf32(Aw[g * 8 + t]), to_tf32(Aw[(g + 8) * 8 + t]), to_tf32(Aw[g * 8 + t + 4]),
                      to_tf32(Aw[(g + 8) * 8 + t + 4])};
    if (wrong_mapping) {
        const unsigned swap = ra[1];
        ra[1] = ra[2];
        ra[2] = swap;
    }
    const unsigned rb[2] = {to_tf32(Bw[t * 8 + g]), to_tf32(Bw[(t + 4) * 8 + g])};
    const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float rd[4];
    mma_m16n8k8_tf32(rd, ra, rb, zero);
    for (int i = 0; i < 4; ++i) Dw[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = rd[i];
}

// Misuse, each of which the emulator must refuse.
extern "C" __global__ void mma_half_warp(float* __restrict__ d) {  // lanes 16-31 leave
    if (threadIdx.x % 32 >= 16) return;
    const unsigned a[4] = {0u, 0u, 0u, 0u}, b[2] = {0u, 0u};
    float c[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    mma_m16n8k8_tf32(c, a, b, c);  // <- line:half
    d[threadIdx.x] = c[0];
}

extern "C" __global__ void mma_two_sites(float* __restrict__ d) {  // the two halves at different instructions
    const unsigned a[4] = {0u, 0u, 0u, 0u}, b[2] = {0u, 0u};
    float c[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    if (threadIdx.x % 32 < 16)
        mma_m16n8k8_tf32(c, a, b, c);  // <- line:site1
    else
        mma_m16n8k8_tf32(c, a, b, c);  // <- line:site2
    d[threadIdx.x] = c[0];
}

extern "C" __global__ void mma_unrounded(const float* __restrict__ x, float* __restrict__ d) {
    const unsigned a[4] = {__float_as_uint(x[threadIdx.x]), 0u, 0u, 0u}, b[2] = {0u, 0u};  // no to_tf32
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_m16n8k8_tf32(c, a, b, c);  // <- line:unrounded
    d[threadIdx.x] = c[0];
}
