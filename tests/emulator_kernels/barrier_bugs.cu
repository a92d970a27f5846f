// Deliberately buggy kernels: the emulator must report each bug, naming the
// source lines marked "<- line:NAME" (tests/test_emulator.py looks them up).

// The first warp waits at one barrier, the rest at another: undefined on a GPU.
extern "C" __global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();  // <- line:divergent-first
  } else {
    __syncthreads();  // <- line:divergent-second
  }
  out[threadIdx.x] = 1.0f;
}

// Threads past n leave before the barrier the others wait at: a deadlock.
extern "C" __global__ void early_exit_before_barrier(float* out, int n) {
  __shared__ float tile[128];
  const int i = threadIdx.x;
  if (i >= n) return;
  tile[i] = (float)i;
  __syncthreads();  // <- line:early-exit-barrier
  out[i] = tile[(i + 1) % n];
}

// Block b never writes slot b % blockDim.x of its tile, and each thread reads
// its right neighbour's slot: the one read of the unwritten slot must see the
// poison (NaN), not zero or what the previous block left there.
extern "C" __global__ void read_unwritten_shared(float* out) {
  __shared__ float tile[64];
  if (threadIdx.x != blockIdx.x % blockDim.x) tile[threadIdx.x] = (float)(blockIdx.x * 1000 + threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}

// The same with dynamic shared memory, in double precision.
extern "C" __global__ void read_unwritten_dynamic_shared(double* out) {
  extern __shared__ __align__(16) double dyn[];
  if (threadIdx.x != blockIdx.x % blockDim.x) dyn[threadIdx.x] = (double)(blockIdx.x * 1000 + threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = dyn[(threadIdx.x + 1) % blockDim.x];
}

// No barrier (so a plain loop runs it): odd threads write their slot, every
// thread reads its own; even threads must read the poison.
extern "C" __global__ void read_own_unwritten_slot(float* out) {
  __shared__ float slots[32];
  if (threadIdx.x % 2) slots[threadIdx.x] = (float)threadIdx.x;
  out[blockIdx.x * blockDim.x + threadIdx.x] = slots[threadIdx.x];
}

// A barrier hidden in a device function that is never inlined: the
// barrier-free analysis must still see it.
__device__ __noinline__ float neighbour_sum(float* tile, unsigned i) {
  __syncthreads();
  return tile[i] + tile[(i + 1) % blockDim.x];
}

extern "C" __global__ void barrier_in_callee(const float* x, float* out) {
  __shared__ float tile[256];
  tile[threadIdx.x] = x[threadIdx.x];
  out[threadIdx.x] = neighbour_sum(tile, threadIdx.x);
}

// A lane calls a warp shuffle with a mask that leaves out its own lane.
extern "C" __global__ void shuffle_mask_without_self(int* out) {
  const int lane = threadIdx.x % 32;
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, lane, 0);  // <- line:bad-mask
}

// A failed device-side assert, in a plain-loop kernel.
extern "C" __global__ void assert_positive(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  assert(x[i] > 0.0f);  // <- line:assert
  y[i] = sqrtf(x[i]);
}

// A trap in a kernel with a barrier (so it runs as fibers).
extern "C" __global__ void trap_before_barrier(float* y) {
  if (threadIdx.x == 37) __trap();  // <- line:trap
  __syncthreads();
  y[threadIdx.x] = 1.0f;
}
