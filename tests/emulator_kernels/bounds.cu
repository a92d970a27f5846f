// __launch_bounds__ in the places CUDA allows it, for tests/test_emulator.py.
// Each kernel writes its linear thread index; the bound is in its name.

#define WARPS 2

__device__ void write_index(int* out) {
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x;
  out[blockIdx.x * blockDim.x * blockDim.y + t] = (int)t;
}

extern "C" __global__ __launch_bounds__(64) void bounded_64(int* out) { write_index(out); }

// After the return type, as an expression, with a minimum-blocks argument.
extern "C" __global__ void __launch_bounds__(WARPS * 32 * 2, 2) bounded_128(int* out) { write_index(out); }

// Before __global__.
extern "C" __launch_bounds__(96) __global__ void bounded_96(int* out) { write_index(out); }

extern "C" __global__ void unbounded(int* out) { write_index(out); }
