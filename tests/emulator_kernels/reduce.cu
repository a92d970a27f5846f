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

// out (cols, rows) = in (rows, cols)^T through a 16x17 shared tile (the extra
// column avoids bank conflicts on a GPU); 2-D blocks of 16x16, ragged edges guarded.
#define TILE 16
extern "C" __global__ void transpose_tiled_f64(const double* __restrict__ in, double* __restrict__ out,
                                               int rows, int cols) {
  __shared__ double tile[TILE][TILE + 1];
  int c = blockIdx.x * TILE + threadIdx.x, r = blockIdx.y * TILE + threadIdx.y;
  if (r < rows && c < cols) tile[threadIdx.y][threadIdx.x] = in[(long long)r * cols + c];
  __syncthreads();
  c = blockIdx.y * TILE + threadIdx.x;  // now a column of out = a row of in
  r = blockIdx.x * TILE + threadIdx.y;
  if (r < cols && c < rows) out[(long long)r * rows + c] = tile[threadIdx.x][threadIdx.y];
}

// block_sum_f32 with its buffer in dynamic shared memory (blockDim.x floats).
extern "C" __global__ void block_sum_dynamic_f32(const float* __restrict__ x, float* __restrict__ partial, int n) {
  extern __shared__ float buf[];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = buf[0];
}
