// Shared-memory races for the race checker (tests/test_emulator.py), each next
// to its corrected twin, which must run clean. The checker must name the two
// source lines marked "<- line:NAME" of each race.

// Read after write: every thread stores its element, then reads its left
// neighbour's (within the block) with no barrier between (the twin has one).
template <bool kBarrier>
__device__ void left_neighbour(const float* x, float* out) {
  __shared__ float tile[256];
  const unsigned t = threadIdx.x, offset = blockIdx.x * blockDim.x;
  tile[t] = x[offset + t];  // <- line:raw-write
  if (kBarrier) __syncthreads();
  out[offset + t] = tile[(t + blockDim.x - 1) % blockDim.x];  // <- line:raw-read
}
extern "C" __global__ void raw_missing_barrier(const float* x, float* out) { left_neighbour<false>(x, out); }
extern "C" __global__ void raw_with_barrier(const float* x, float* out) { left_neighbour<true>(x, out); }

// Write after read: every thread reads its right neighbour's element, then
// overwrites its own slot with twice that value, with no barrier between the
// reads and the writes (the twin has one).
template <bool kBarrier>
__device__ void double_right_neighbour(const float* x, float* out) {
  __shared__ float tile[256];
  const unsigned t = threadIdx.x;
  tile[t] = x[t];
  __syncthreads();
  const float right = tile[(t + 1) % blockDim.x];  // <- line:war-read
  if (kBarrier) __syncthreads();
  tile[t] = 2.0f * right;  // <- line:war-write
  __syncthreads();
  out[t] = tile[t];
}
extern "C" __global__ void war_missing_barrier(const float* x, float* out) { double_right_neighbour<false>(x, out); }
extern "C" __global__ void war_with_barrier(const float* x, float* out) { double_right_neighbour<true>(x, out); }

// Double buffering, as in igemm_tile.cuh's main loop: out[t] = sum over the
// `tiles` rows of x (each blockDim.x long) of the right neighbour's element.
// Each iteration reads row r from buffer `cur` and stores row r+1 into the
// other buffer; one barrier per row suffices because the buffer being stored
// was last read before the previous barrier.
extern "C" __global__ void double_buffer(const float* x, float* out, int tiles) {
  __shared__ float buf[2][256];
  const unsigned t = threadIdx.x, n = blockDim.x;
  buf[0][t] = x[t];
  __syncthreads();
  int cur = 0;
  float acc = 0.0f;
  for (int r = 0; r < tiles; ++r) {
    const float next = r + 1 < tiles ? x[(r + 1) * n + t] : 0.0f;
    acc += buf[cur][(t + 1) % n];
    buf[cur ^ 1][t] = next;
    __syncthreads();
    cur ^= 1;
  }
  out[t] = acc;
}

// The same, but `cur` flips one barrier too early (before the store instead of
// after the barrier): row r+1 overwrites the buffer that the other threads are
// still reading row r from.
extern "C" __global__ void double_buffer_early_flip(const float* x, float* out, int tiles) {
  __shared__ float buf[2][256];
  const unsigned t = threadIdx.x, n = blockDim.x;
  buf[0][t] = x[t];
  __syncthreads();
  int cur = 0;
  float acc = 0.0f;
  for (int r = 0; r < tiles; ++r) {
    const float next = r + 1 < tiles ? x[(r + 1) * n + t] : 0.0f;
    acc += buf[cur][(t + 1) % n];  // <- line:flip-read
    cur ^= 1;
    buf[cur ^ 1][t] = next;  // <- line:flip-write
    __syncthreads();
  }
  out[t] = acc;
}

// Warp-synchronous exchange: every lane stores its value, then reads lane
// (lane + 1) % 32 of its own warp. With `sync` 1 a __syncwarp() separates the
// two (correct), 2 a warp shuffle does (correct), 0 nothing does (a race).
extern "C" __global__ void warp_exchange(const int* x, int* out, int sync) {
  __shared__ int slots[256];
  const unsigned t = threadIdx.x, warp_base = t & ~31u;
  slots[t] = x[t];  // <- line:warp-write
  if (sync == 1) __syncwarp();
  if (sync == 2) (void)__shfl_sync(0xffffffffu, 0, 0);
  out[t] = slots[warp_base + (t + 1) % 32];  // <- line:warp-read
}

// __syncwarp() orders the lanes of one warp only: the first lane of each warp
// reading the last slot of the previous warp still races.
extern "C" __global__ void syncwarp_across_warps(const int* x, int* out) {
  __shared__ int slots[256];
  const unsigned t = threadIdx.x;
  slots[t] = x[t];  // <- line:cross-write
  __syncwarp();
  out[t] = slots[(t + blockDim.x - 1) % blockDim.x];  // <- line:cross-read
}

// Atomics on one shared counter from every thread are no race; the counter is
// read after a barrier. A plain store to it in the same interval as the
// atomics is one (when `plain_reset` is set, thread 0 resets it late).
extern "C" __global__ void shared_counter(const int* x, int* out, int plain_reset) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  if (x[threadIdx.x] > 0) atomicAdd(&count, 1);  // <- line:counter-atomic
  if (plain_reset && threadIdx.x == blockDim.x - 1) count = 0;  // <- line:counter-plain
  __syncthreads();
  out[threadIdx.x] = count;
}

// Read after write in dynamic shared memory (as left_neighbour, no barrier).
extern "C" __global__ void dynamic_raw_missing_barrier(const double* x, double* out) {
  extern __shared__ double dyn[];
  const unsigned t = threadIdx.x;
  dyn[t] = x[t];  // <- line:dyn-write
  out[t] = dyn[(t + blockDim.x - 1) % blockDim.x];  // <- line:dyn-read
}
