// Feature kernels for the emulator's self-tests (tests/test_emulator.py).

// Block-wide sum through static shared memory and barriers: one partial sum per block.
extern "C" __global__ void block_sum_f32(const float* __restrict__ x, float* __restrict__ partial, int n) {
  __shared__ float buf[256];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = buf[0];
}

// y = a*x + y, with no barrier: runs as a plain loop.
extern "C" __global__ void axpy_f32(float a, const float* __restrict__ x, float* __restrict__ y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
