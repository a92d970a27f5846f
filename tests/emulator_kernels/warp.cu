// Warp functions and atomics, for tests/test_emulator.py. Each thread records
// what the warp functions returned to it; the test recomputes the CUDA rules.

extern "C" __global__ void warp_functions(const int* __restrict__ value, int* __restrict__ out, int n_ops) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = value[t];
  const unsigned lane = threadIdx.x % 32;
  int* o = out + (long long)t * n_ops;
  o[0] = __shfl_sync(0xffffffffu, v, 3);               // broadcast lane 3
  o[1] = __shfl_sync(0xffffffffu, v, lane + 5, 16);    // rotate inside 16-lane halves
  o[2] = __shfl_up_sync(0xffffffffu, v, 2);
  o[3] = __shfl_down_sync(0xffffffffu, v, 4, 8);
  o[4] = __shfl_xor_sync(0xffffffffu, v, 1);
  o[5] = (int)__ballot_sync(0xffffffffu, v % 3 == 0);
  o[6] = __any_sync(0xffffffffu, v == 7);
  o[7] = __all_sync(0xffffffffu, v >= 0);
  __syncwarp();
  o[8] = __syncthreads_count(v % 2 == 0);
}

// Warp-shuffle tree sum of doubles, one result per warp.
extern "C" __global__ void warp_sum_f64(const double* __restrict__ x, double* __restrict__ sums) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  double v = x[t];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) sums[t / 32] = v;
}

// Every thread adds into a few counters: a histogram of value % bins.
extern "C" __global__ void atomic_histogram(const int* __restrict__ value, int n, int bins,
                                            unsigned int* __restrict__ counts, float* __restrict__ sums,
                                            int* __restrict__ maximum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int bin = value[i] % bins;
  atomicAdd(&counts[bin], 1u);
  atomicAdd(&sums[bin], 0.5f);
  atomicMax(maximum, value[i]);
}
