// pooling.cu: 2-D max and average pooling, forward and backward.
//
// x is (N, C, H, W), y and dy are (N, C, P, Q), windows are R x S with the
// given stride and zero padding. Each kernel is written once as a template
// over the element type; the extern "C" entry points below instantiate it for
// float (_f32) and double (_f64).
//
// Both backward passes GATHER: one thread per input element visits the output
// windows that cover it and sums their contributions, so overlapping windows
// (stride < window) need no atomics and the result is deterministic.
#include "common.cuh"

namespace gpucnn {

struct PoolShape {
    int N, C, H, W;  // input
    int P, Q;        // output
    int R, S;        // window
    int stride_h, stride_w, pad_h, pad_w;
};

// The output rows p whose window covers input row h: those with
// p*stride - pad <= h <= p*stride - pad + extent - 1, clipped to [0, P).
// Writes the range as [first, last]; it is empty when first > last.
__device__ __forceinline__ void covering_windows(int h, int extent, int stride, int pad, int P,
                                                 int& first, int& last) {
    const int reach = h + pad;  // >= 0: h is a real input row
    first = reach < extent ? 0 : (reach - extent) / stride + 1;
    last = min_int(reach / stride, P - 1);
}

// Thread mapping: one thread per output element (n, c, p, q), grid-stride.
// Writes the window maximum to y and the flat index h*W + w of its FIRST
// occurrence (row-major scan) to argmax. Padding never wins: only real input
// cells are scanned (every window holds at least one, since pad <= R/2).
// A NaN wins over any number, so NaNs propagate as in PyTorch.
template <typename T>
__device__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   int* __restrict__ argmax, const PoolShape s) {
    const long long total = (long long)s.N * s.C * s.P * s.Q;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw o = unravel_nchw(i, s.C, s.P, s.Q);  // o.h = p, o.w = q
        const T* plane = x + offset_nchw(o.n, o.c, 0, 0, s.C, s.H, s.W);
        const int h0 = o.h * s.stride_h - s.pad_h;
        const int w0 = o.w * s.stride_w - s.pad_w;
        T best = 0;
        int best_index = -1;
        for (int h = max_int(h0, 0); h < min_int(h0 + s.R, s.H); ++h) {
            for (int w = max_int(w0, 0); w < min_int(w0 + s.S, s.W); ++w) {
                const T v = plane[(long long)h * s.W + w];
                const bool v_is_nan = v != v, best_is_nan = best != best;
                if (best_index < 0 || (!best_is_nan && (v > best || v_is_nan))) {
                    best = v;
                    best_index = h * s.W + w;
                }
            }
        }
        y[i] = best;
        argmax[i] = best_index;
    }
}

// Thread mapping: one thread per input element (n, c, h, w), grid-stride.
// dx[n,c,h,w] = sum of dy[n,c,p,q] over the windows (p, q) covering (h, w)
// whose argmax is this element.
template <typename T>
__device__ void max_pool2d_backward(const T* __restrict__ dy, const int* __restrict__ argmax,
                                    T* __restrict__ dx, const PoolShape s) {
    const long long total = (long long)s.N * s.C * s.H * s.W;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw e = unravel_nchw(i, s.C, s.H, s.W);
        const long long plane = offset_nchw(e.n, e.c, 0, 0, s.C, s.P, s.Q);
        const int me = e.h * s.W + e.w;
        int p_first, p_last, q_first, q_last;
        covering_windows(e.h, s.R, s.stride_h, s.pad_h, s.P, p_first, p_last);
        covering_windows(e.w, s.S, s.stride_w, s.pad_w, s.Q, q_first, q_last);
        T sum = 0;
        for (int p = p_first; p <= p_last; ++p) {
            for (int q = q_first; q <= q_last; ++q) {
                const long long o = plane + (long long)p * s.Q + q;
                if (argmax[o] == me) sum += dy[o];
            }
        }
        dx[i] = sum;
    }
}

// Thread mapping: one thread per output element (n, c, p, q), grid-stride.
// y = (sum of the real cells of the window) / (R*S): padding cells count as
// zeros in the divisor (PyTorch's count_include_pad=True).
template <typename T>
__device__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, const PoolShape s) {
    const long long total = (long long)s.N * s.C * s.P * s.Q;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw o = unravel_nchw(i, s.C, s.P, s.Q);
        const T* plane = x + offset_nchw(o.n, o.c, 0, 0, s.C, s.H, s.W);
        const int h0 = o.h * s.stride_h - s.pad_h;
        const int w0 = o.w * s.stride_w - s.pad_w;
        T sum = 0;
        for (int h = max_int(h0, 0); h < min_int(h0 + s.R, s.H); ++h) {
            for (int w = max_int(w0, 0); w < min_int(w0 + s.S, s.W); ++w) {
                sum += plane[(long long)h * s.W + w];
            }
        }
        y[i] = sum / (T)(s.R * s.S);
    }
}

// Thread mapping: one thread per input element (n, c, h, w), grid-stride.
// dx[n,c,h,w] = sum of dy[n,c,p,q] / (R*S) over the windows covering (h, w).
template <typename T>
__device__ void avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                    const PoolShape s) {
    const long long total = (long long)s.N * s.C * s.H * s.W;
    for (long long i = global_thread_index(); i < total; i += grid_thread_count()) {
        const Nchw e = unravel_nchw(i, s.C, s.H, s.W);
        const long long plane = offset_nchw(e.n, e.c, 0, 0, s.C, s.P, s.Q);
        int p_first, p_last, q_first, q_last;
        covering_windows(e.h, s.R, s.stride_h, s.pad_h, s.P, p_first, p_last);
        covering_windows(e.w, s.S, s.stride_w, s.pad_w, s.Q, q_first, q_last);
        T sum = 0;
        for (int p = p_first; p <= p_last; ++p) {
            for (int q = q_first; q <= q_last; ++q) {
                sum += dy[plane + (long long)p * s.Q + q];
            }
        }
        dx[i] = sum / (T)(s.R * s.S);
    }
}

}  // namespace gpucnn

// ---- extern "C" entry points (the names the host code launches) ----------
// Scalar parameters, in this order for every pooling kernel:
//   N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w

extern "C" __global__ void max_pool2d_forward_f32(
    const float* __restrict__ x, float* __restrict__ y, int* __restrict__ argmax,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::max_pool2d_forward<float>(
        x, y, argmax, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void max_pool2d_forward_f64(
    const double* __restrict__ x, double* __restrict__ y, int* __restrict__ argmax,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::max_pool2d_forward<double>(
        x, y, argmax, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void max_pool2d_backward_f32(
    const float* __restrict__ dy, const int* __restrict__ argmax, float* __restrict__ dx,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::max_pool2d_backward<float>(
        dy, argmax, dx, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void max_pool2d_backward_f64(
    const double* __restrict__ dy, const int* __restrict__ argmax, double* __restrict__ dx,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::max_pool2d_backward<double>(
        dy, argmax, dx, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void avg_pool2d_forward_f32(
    const float* __restrict__ x, float* __restrict__ y,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::avg_pool2d_forward<float>(
        x, y, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void avg_pool2d_forward_f64(
    const double* __restrict__ x, double* __restrict__ y,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::avg_pool2d_forward<double>(
        x, y, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void avg_pool2d_backward_f32(
    const float* __restrict__ dy, float* __restrict__ dx,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::avg_pool2d_backward<float>(
        dy, dx, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}

extern "C" __global__ void avg_pool2d_backward_f64(
    const double* __restrict__ dy, double* __restrict__ dx,
    int N, int C, int H, int W, int P, int Q, int R, int S,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    gpucnn::avg_pool2d_backward<double>(
        dy, dx, {N, C, H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w});
}
