// conv2d_direct.cu: direct 2-D convolution (cross-correlation), forward,
// backward-data and backward-filter.
//
// x (N, C, H, W), w (K, C, R, S), b (K,), y and dy (N, K, P, Q), with
//   y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, c, p*stride_h - pad_h + r*dil_h,
//                                         q*stride_w - pad_w + s*dil_w] * w[k,c,r,s]
// and input cells outside x reading as zero. One thread computes one output
// element by plain loops: no tiling, no shared memory. These kernels are
// simple enough to be obviously right for every stride, padding, dilation and
// ragged edge; they are the reference the fast kernels are checked against,
// and the fallback for shapes those do not handle.
//
// Each kernel is a template over the element type; the extern "C" entry
// points at the end instantiate it for float (_f32) and double (_f64).
#include "common.cuh"

namespace gpucnn {

struct ConvShape {
    int N, C, H, W;  // input
    int K, R, S;     // filter
    int P, Q;        // output
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// Thread mapping: one thread per output element (n, k, p, q), grid-stride.
// It sums over c, r, s, skipping filter taps that land in the padding.
template <typename T>
__device__ void conv2d_forward_direct(const T* __restrict__ x, const T* __restrict__ w,
                                      const T* __restrict__ b, T* __restrict__ y,
                                      const ConvShape s) {
    const long long total = (long long)s.N * s.K * s.P * s.Q;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw o = unravel_nchw(i, s.K, s.P, s.Q);  // o.c = k, o.h = p, o.w = q
        const int h0 = o.h * s.stride_h - s.pad_h;
        const int w0 = o.w * s.stride_w - s.pad_w;
        T acc = b[o.c];
        for (int c = 0; c < s.C; ++c) {
            const T* x_plane = x + offset_nchw(o.n, c, 0, 0, s.C, s.H, s.W);
            const T* w_plane = w + offset_nchw(o.c, c, 0, 0, s.C, s.R, s.S);
            for (int r = 0; r < s.R; ++r) {
                const int h = h0 + r * s.dil_h;
                if (h < 0 || h >= s.H) continue;
                for (int t = 0; t < s.S; ++t) {
                    const int col = w0 + t * s.dil_w;
                    if (col < 0 || col >= s.W) continue;
                    acc += x_plane[(long long)h * s.W + col] * w_plane[r * s.S + t];
                }
            }
        }
        y[i] = acc;
    }
}

// The output coordinate p that filter tap r connects to input coordinate h,
// i.e. the p with p*stride - pad + r*dil == h; -1 when there is none (h is
// skipped by the stride, or p falls outside [0, P)).
__device__ __forceinline__ int output_of_tap(int h, int r, int stride, int pad, int dil, int P) {
    const int shifted = h + pad - r * dil;
    if (shifted < 0 || shifted % stride != 0) return -1;
    const int p = shifted / stride;
    return p < P ? p : -1;
}

// Thread mapping: one thread per input-gradient element (n, c, h, w),
// grid-stride (a gather: no atomics). It sums dy[n,k,p,q] * w[k,c,r,s] over
// every k and every tap (r, s) whose output (p, q) reads this input cell.
template <typename T>
__device__ void conv2d_backward_data_direct(const T* __restrict__ dy, const T* __restrict__ w,
                                            T* __restrict__ dx, const ConvShape s) {
    const long long total = (long long)s.N * s.C * s.H * s.W;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw e = unravel_nchw(i, s.C, s.H, s.W);
        T acc = 0;
        for (int r = 0; r < s.R; ++r) {
            const int p = output_of_tap(e.h, r, s.stride_h, s.pad_h, s.dil_h, s.P);
            if (p < 0) continue;
            for (int t = 0; t < s.S; ++t) {
                const int q = output_of_tap(e.w, t, s.stride_w, s.pad_w, s.dil_w, s.Q);
                if (q < 0) continue;
                for (int k = 0; k < s.K; ++k) {
                    acc += dy[offset_nchw(e.n, k, p, q, s.K, s.P, s.Q)] *
                           w[offset_nchw(k, e.c, r, t, s.C, s.R, s.S)];
                }
            }
        }
        dx[i] = acc;
    }
}

// Thread mapping: one thread per filter-gradient element (k, c, r, s),
// grid-stride. It reduces dy[n,k,p,q] * x[n,c,h,w] over all n, p, q (with
// h, w the input cell that tap (r, s) of output (p, q) reads), serially.
template <typename T>
__device__ void conv2d_backward_filter_direct(const T* __restrict__ dy, const T* __restrict__ x,
                                              T* __restrict__ dw, const ConvShape s) {
    const long long total = (long long)s.K * s.C * s.R * s.S;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw f = unravel_nchw(i, s.C, s.R, s.S);  // f.n = k, f.h = r, f.w = s
        const int k = (int)f.n;
        T acc = 0;
        for (int n = 0; n < s.N; ++n) {
            const T* x_plane = x + offset_nchw(n, f.c, 0, 0, s.C, s.H, s.W);
            const T* dy_plane = dy + offset_nchw(n, k, 0, 0, s.K, s.P, s.Q);
            for (int p = 0; p < s.P; ++p) {
                const int h = p * s.stride_h - s.pad_h + f.h * s.dil_h;
                if (h < 0 || h >= s.H) continue;
                for (int q = 0; q < s.Q; ++q) {
                    const int col = q * s.stride_w - s.pad_w + f.w * s.dil_w;
                    if (col < 0 || col >= s.W) continue;
                    acc += dy_plane[(long long)p * s.Q + q] * x_plane[(long long)h * s.W + col];
                }
            }
        }
        dw[i] = acc;
    }
}

}  // namespace gpucnn

// ---- extern "C" entry points (the names the host code launches) ----------
// Scalar parameters, in this order for every convolution kernel:
//   N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w
// The forward kernel always reads b; the host passes zeros when there is no bias.

extern "C" __global__ void conv2d_forward_direct_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
    float* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_forward_direct<float>(
        x, w, b, y,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}

extern "C" __global__ void conv2d_forward_direct_f64(
    const double* __restrict__ x, const double* __restrict__ w, const double* __restrict__ b,
    double* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_forward_direct<double>(
        x, w, b, y,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}

extern "C" __global__ void conv2d_backward_data_direct_f32(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_direct<float>(
        dy, w, dx,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}

extern "C" __global__ void conv2d_backward_data_direct_f64(
    const double* __restrict__ dy, const double* __restrict__ w, double* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_data_direct<double>(
        dy, w, dx,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}

extern "C" __global__ void conv2d_backward_filter_direct_f32(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_filter_direct<float>(
        dy, x, dw,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}

extern "C" __global__ void conv2d_backward_filter_direct_f64(
    const double* __restrict__ dy, const double* __restrict__ x, double* __restrict__ dw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    gpucnn::conv2d_backward_filter_direct<double>(
        dy, x, dw,
        {N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w});
}
