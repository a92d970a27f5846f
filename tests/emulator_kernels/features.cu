// Kernel-source constructs the emulator's translation must handle: kernels
// made by macros, extern "C" blocks, template device functions with their own
// __shared__ arrays, namespace-scope __shared__ variables, vector types,
// scalar parameters of several C types, and a kernel without C linkage.
#define BLOCK 64

__shared__ float scratch[BLOCK];  // namespace scope: visible to every kernel of the module

// v + the value of the thread at the mirrored position of the block.
template <typename T>
__device__ __forceinline__ T add_mirrored(T v) {
  __shared__ T buf[BLOCK];
  buf[threadIdx.x] = v;
  __syncthreads();
  const T r = v + buf[BLOCK - 1 - threadIdx.x];
  __syncthreads();
  return r;
}

#define DEFINE_ADD_MIRRORED(T, suffix)                                                          \
  extern "C" __global__ void __launch_bounds__(BLOCK)                                          \
      add_mirrored_##suffix(const T* __restrict__ x, T* __restrict__ y) {                      \
    const int i = blockIdx.x * BLOCK + threadIdx.x;                                            \
    y[i] = add_mirrored<T>(x[i]);                                                              \
  }
DEFINE_ADD_MIRRORED(float, f32)
DEFINE_ADD_MIRRORED(double, f64)

extern "C" {

// Even threads write their slot of the namespace-scope array; odd slots stay poison.
__global__ void namespace_shared_roundtrip(float* y) {
  if (threadIdx.x % 2 == 0) scratch[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  y[blockIdx.x * blockDim.x + threadIdx.x] = scratch[threadIdx.x];
}

// y[i] = (x.x + x.y, x.z * x.w) * scale, or zero where !keep; float4 loads.
__global__ void vector_types(const float4* __restrict__ x, float2* __restrict__ y, unsigned int n, double scale,
                             bool keep) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float4 v = __ldg(&x[i]);
  y[i] = keep ? make_float2((float)((v.x + v.y) * scale), (float)(v.z * v.w * scale)) : make_float2(0.0f, 0.0f);
}

}  // extern "C"

// C++ linkage: not reachable by name through CuPy's RawModule, so not listed.
__global__ void not_extern_c(float* y) { y[threadIdx.x] = 1.0f; }
