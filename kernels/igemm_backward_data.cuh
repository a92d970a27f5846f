// igemm_backward_data.cuh: backward-data's output phases as igemm::ConvGemm
// (the derivation is in conv2d_igemm_backward_data.cu), shared by its FP32
// and tensor-core kernel files.
#pragma once

#include "igemm_tile.cuh"

namespace gpucnn {

__device__ __forceinline__ int gcd_int(int a, int b) {
    while (b != 0) {
        const int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// The taps of one axis that reach output phase `phase`: r = r0 + a*rstep for
// a < count, landing on dy row i + first - a*step_in_dy for dx row phase + i*stride.
struct PhaseTaps {
    int r0, rstep, count, first, step_in_dy;
};

__device__ __forceinline__ PhaseTaps phase_taps(int phase, int R, int stride, int pad, int dil) {
    PhaseTaps t;
    t.rstep = stride / gcd_int(stride, dil);
    t.r0 = -1;
    for (int r = 0; r < min(R, t.rstep) && t.r0 < 0; ++r)
        if ((phase + pad - r * dil) % stride == 0) t.r0 = r;
    t.count = t.r0 < 0 ? 0 : (R - 1 - t.r0) / t.rstep + 1;
    t.first = t.r0 < 0 ? 0 : (phase + pad - t.r0 * dil) / stride;  // exact division
    t.step_in_dy = t.rstep * dil / stride;                             // exact: lcm(stride, dil)/stride
    if (t.r0 < 0) t.r0 = 0;
    return t;
}

// The ConvGemm of output phase blockIdx.z = phase_h * stride_w + phase_w.
__device__ __forceinline__ igemm::ConvGemm backward_data_gemm(int N, int C, int H, int W, int K, int R, int S,
                                                             int P, int Q, int stride_h, int stride_w, int pad_h,
                                                             int pad_w, int dil_h, int dil_w) {
    const int phase_h = (int)blockIdx.z / stride_w, phase_w = (int)blockIdx.z % stride_w;
    const PhaseTaps th = phase_taps(phase_h, R, stride_h, pad_h, dil_h);
    const PhaseTaps tw = phase_taps(phase_w, S, stride_w, pad_w, dil_w);
    igemm::ConvGemm cg;
    cg.N = N; cg.NN = C; cg.GC = K; cg.RA = th.count; cg.SB = tw.count;
    // A[m, g] = dy[n, k, i + first_h - a*step_h, u + first_w - b*step_w]
    cg.OH = phase_h < H ? (H - phase_h + stride_h - 1) / stride_h : 0;
    cg.OW = phase_w < W ? (W - phase_w + stride_w - 1) / stride_w : 0;
    cg.ish = 1; cg.isw = 1; cg.ih0 = 0; cg.iw0 = 0;
    cg.dr0 = th.first; cg.drs = -th.step_in_dy; cg.ds0 = tw.first; cg.dss = -tw.step_in_dy;
    cg.SH = P; cg.SW = Q;
    // B[g, c] = w[k, c, r0 + a*rstep, s0 + b*sstep]
    cg.wj = R * S; cg.wc = C * R * S; cg.S = S;
    cg.r0 = th.r0; cg.rstep = th.rstep; cg.s0 = tw.r0; cg.sstep = tw.rstep;
    // dx[n, c, phase_h + i*sh, phase_w + u*sw]
    cg.OHF = H; cg.OWF = W; cg.oh0 = phase_h; cg.osh = stride_h; cg.ow0 = phase_w; cg.osw = stride_w;
    return cg;
}

}  // namespace gpucnn
