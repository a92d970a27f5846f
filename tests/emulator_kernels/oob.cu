// An off-by-one: the guard lets thread n write one element past the end of y.
// Only the AddressSanitizer build catches this (tests/test_emulator.py).
extern "C" __global__ void copy_off_by_one(const float* __restrict__ x, float* __restrict__ y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = x[i < n ? i : 0];  // <- line:oob-write
}
