// cuda_emu.h -- the CUDA built-ins for the host C++ compiler (g++ -std=c++20).
//
// The emulator's build step (build.py) force-includes this header in front of
// an unchanged kernels/*.cu file, preprocesses, rewrites the two things a macro
// cannot express (dynamic `extern __shared__` arrays, and the poisoning of
// static `__shared__` variables), appends one generated launch wrapper per
// `extern "C" __global__` kernel and compiles the result into a shared library
// that Python calls through ctypes.
//
// Execution model (launch() below, launch_grid() in runtime.cpp):
//   - blocks run one after another, in blockIdx order, on the calling OS thread;
//   - a kernel that can never reach a barrier or warp function (decided by the
//     build step from the object file's call graph) runs its threads as a plain
//     loop; the collective functions fail the launch if one is reached anyway;
//   - any other kernel runs the threads of a block as cooperative fibers that
//     switch only at barriers and warp functions, so __syncthreads() holds and
//     the warp functions see the values of all the lanes they name;
//   - divergent barriers, deadlocks and misused warp functions fail the launch
//     with the source lines involved (the collective macros carry __FILE__ and
//     __LINE__, and the preprocessed text keeps the .cu line markers);
//   - shared memory is filled with 0xFF bytes (NaN for float and double)
//     before each block, so a read of what no thread wrote shows up;
//   - a race-checking build (GPUCNN_EMU_RACECHECK, see runtime.cpp) reports
//     two threads' conflicting accesses to a shared word with no barrier
//     between them;
//   - a launch with more threads per block than the kernel's
//     __launch_bounds__ fails, as on a GPU (the bound is read by source.py).
//
// This header holds what the kernels see; runtime.cpp (compiled once per
// compiler and flags, then linked into every module) holds the scheduler.

#ifndef GPUCNN_CUDA_EMU_H
#define GPUCNN_CUDA_EMU_H

#include <math.h>

#include <bit>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cassert>  // for its include guard: the emulator's assert is defined below
#include <type_traits>
#include <utility>

// Everything below is private to the module's shared library, including the
// declarations of what runtime.cpp defines (so accesses need no GOT or PLT).
#pragma GCC visibility push(hidden)

// ---------------------------------------------------------------------------
// Declaration specifiers
// ---------------------------------------------------------------------------

// __global__ and __shared__ become marker tokens that survive preprocessing;
// build.py finds the kernels by the first and rewrites the second.
#define __global__ __emu_global__
#define __shared__ __emu_shared__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
// A marker too: source.py reads the bound of each kernel and removes it.
#define __launch_bounds__(...) __emu_launch_bounds__(__VA_ARGS__)
#define __align__(n) __attribute__((aligned(n)))
#define __cudart_builtin__

#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 750  // the oldest supported architecture; -arch=sm_XX overrides
#endif
#define __CUDACC__ 1
#define GPUCNN_EMULATOR 1
#ifndef GPUCNN_EMU_RACECHECK
#define GPUCNN_EMU_RACECHECK 0  // build.py defines it to 1 for race-checking builds
#endif

// ---------------------------------------------------------------------------
// Vector types
// ---------------------------------------------------------------------------

#define GPUCNN_EMU_VEC1(T, N, A)                                               \
  struct __attribute__((aligned(A))) N##1 { T x; };                          \
  static inline N##1 make_##N##1(T x) { return N##1{x}; }
#define GPUCNN_EMU_VEC2(T, N, A)                                               \
  struct __attribute__((aligned(A))) N##2 { T x, y; };                       \
  static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define GPUCNN_EMU_VEC3(T, N)                                                  \
  struct N##3 { T x, y, z; };                                                \
  static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define GPUCNN_EMU_VEC4(T, N, A)                                               \
  struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };                 \
  static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }

GPUCNN_EMU_VEC1(signed char, char, 1)
GPUCNN_EMU_VEC2(signed char, char, 2)
GPUCNN_EMU_VEC3(signed char, char)
GPUCNN_EMU_VEC4(signed char, char, 4)
GPUCNN_EMU_VEC1(unsigned char, uchar, 1)
GPUCNN_EMU_VEC2(unsigned char, uchar, 2)
GPUCNN_EMU_VEC3(unsigned char, uchar)
GPUCNN_EMU_VEC4(unsigned char, uchar, 4)
GPUCNN_EMU_VEC1(short, short, 2)
GPUCNN_EMU_VEC2(short, short, 4)
GPUCNN_EMU_VEC3(short, short)
GPUCNN_EMU_VEC4(short, short, 8)
GPUCNN_EMU_VEC1(unsigned short, ushort, 2)
GPUCNN_EMU_VEC2(unsigned short, ushort, 4)
GPUCNN_EMU_VEC3(unsigned short, ushort)
GPUCNN_EMU_VEC4(unsigned short, ushort, 8)
GPUCNN_EMU_VEC1(int, int, 4)
GPUCNN_EMU_VEC2(int, int, 8)
GPUCNN_EMU_VEC3(int, int)
GPUCNN_EMU_VEC4(int, int, 16)
GPUCNN_EMU_VEC1(unsigned int, uint, 4)
GPUCNN_EMU_VEC2(unsigned int, uint, 8)
GPUCNN_EMU_VEC3(unsigned int, uint)
GPUCNN_EMU_VEC4(unsigned int, uint, 16)
GPUCNN_EMU_VEC1(long long, longlong, 8)
GPUCNN_EMU_VEC2(long long, longlong, 16)
GPUCNN_EMU_VEC1(unsigned long long, ulonglong, 8)
GPUCNN_EMU_VEC2(unsigned long long, ulonglong, 16)
GPUCNN_EMU_VEC1(float, float, 4)
GPUCNN_EMU_VEC2(float, float, 8)
GPUCNN_EMU_VEC3(float, float)
GPUCNN_EMU_VEC4(float, float, 16)
GPUCNN_EMU_VEC1(double, double, 8)
GPUCNN_EMU_VEC2(double, double, 16)
GPUCNN_EMU_VEC3(double, double)

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------
// Thread coordinates: globals the launcher sets before running each thread
// (read-only references for the kernels, as in CUDA).
// ---------------------------------------------------------------------------

namespace gpucnn_emu {
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;
}  // namespace gpucnn_emu

static const uint3& threadIdx = gpucnn_emu::thread_idx;
static const uint3& blockIdx = gpucnn_emu::block_idx;
static const dim3& blockDim = gpucnn_emu::block_dim;
static const dim3& gridDim = gpucnn_emu::grid_dim;
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------
// Math and bit intrinsics (the rest -- expf, fmaxf, ... -- come from <math.h>)
// ---------------------------------------------------------------------------

using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

#define GPUCNN_EMU_MINMAX(T)                                                   \
  static inline T min(T a, T b) { return b < a ? b : a; }                    \
  static inline T max(T a, T b) { return a < b ? b : a; }
GPUCNN_EMU_MINMAX(int)
GPUCNN_EMU_MINMAX(unsigned int)
GPUCNN_EMU_MINMAX(long)
GPUCNN_EMU_MINMAX(unsigned long)
GPUCNN_EMU_MINMAX(long long)
GPUCNN_EMU_MINMAX(unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float fdividef(float a, float b) { return a / b; }
// glibc declares these names itself, so they are macros (defined after the
// system headers above, which include guards keep from being read again).
#define __expf(x) expf(x)
#define __exp10f(x) powf(10.0f, (x))
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __powf(x, y) powf((x), (y))
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }

static inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
static inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
static inline unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
static inline float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
static inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
static inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
static inline int __double2hiint(double x) { return (int)(std::bit_cast<unsigned long long>(x) >> 32); }
static inline int __double2loint(double x) { return (int)(std::bit_cast<unsigned long long>(x) & 0xffffffffu); }
static inline double __hiloint2double(int hi, int lo) {
  return std::bit_cast<double>(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo);
}
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned int __float2uint_rn(float x) { return (unsigned int)nearbyintf(x); }
static inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }
static inline float __double2float_rn(double x) { return (float)x; }
static inline float __int2float_rn(int x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }

static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
static inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
static inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// Cache-hinted loads and stores are plain memory accesses on the host.
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }

static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------
// Atomics: CUDA's overload set, on GCC's __atomic built-ins (what
// std::atomic_ref compiles to, without the cost of parsing <atomic>).
// ---------------------------------------------------------------------------

namespace gpucnn_emu {
// Read-modify-write by compare-and-swap, for the operations with no built-in.
template <class T, class F> static inline T atomic_update(T* p, F f) {
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired = f(old);
  while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) desired = f(old);
  return old;
}
}  // namespace gpucnn_emu

#define GPUCNN_EMU_ATOMIC_INT(T)                                                                          \
  static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }            \
  static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }          \
  static inline T atomicCAS(T* p, T compare, T v) {                                                       \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                \
    return compare;                                                                                       \
  }
GPUCNN_EMU_ATOMIC_INT(int)
GPUCNN_EMU_ATOMIC_INT(unsigned int)
GPUCNN_EMU_ATOMIC_INT(unsigned long long)
static inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
static inline unsigned int atomicSub(unsigned int* p, unsigned int v) {
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
#define GPUCNN_EMU_ATOMIC_FLOAT(T)                                                                        \
  static inline T atomicAdd(T* p, T v) { return gpucnn_emu::atomic_update(p, [v](T o) { return o + v; }); } \
  static inline T atomicExch(T* p, T v) {                                                                 \
    T old;                                                                                                \
    __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED);                                                     \
    return old;                                                                                           \
  }
GPUCNN_EMU_ATOMIC_FLOAT(float)
GPUCNN_EMU_ATOMIC_FLOAT(double)
#define GPUCNN_EMU_ATOMIC_BITS(T)                                                                          \
  static inline T atomicMax(T* p, T v) { return gpucnn_emu::atomic_update(p, [v](T o) { return o < v ? v : o; }); } \
  static inline T atomicMin(T* p, T v) { return gpucnn_emu::atomic_update(p, [v](T o) { return v < o ? v : o; }); } \
  static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }             \
  static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }               \
  static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }
GPUCNN_EMU_ATOMIC_BITS(int)
GPUCNN_EMU_ATOMIC_BITS(unsigned int)
GPUCNN_EMU_ATOMIC_BITS(long long)
GPUCNN_EMU_ATOMIC_BITS(unsigned long long)
static inline unsigned int atomicInc(unsigned int* p, unsigned int limit) {
  return gpucnn_emu::atomic_update(p, [limit](unsigned int o) { return o >= limit ? 0u : o + 1u; });
}
static inline unsigned int atomicDec(unsigned int* p, unsigned int limit) {
  return gpucnn_emu::atomic_update(p, [limit](unsigned int o) { return (o == 0u || o > limit) ? limit : o - 1u; });
}

// ---------------------------------------------------------------------------
// The interface to the runtime (runtime.cpp)
// ---------------------------------------------------------------------------

namespace gpucnn_emu {

// Mirrors LaunchConfig in launcher.py (ctypes.Structure).
struct LaunchConfig {
  uint32_t grid[3];
  uint32_t block[3];
  uint64_t shared_mem;  // bytes of dynamic shared memory
  int32_t use_fibers;   // 0: plain loop over threads (kernel has no collective call)
};

// The collective operations. Block-wide ones are < kFirstWarpOp.
enum Op : int {
  kSyncthreads,
  kSyncthreadsCount,
  kSyncthreadsAnd,
  kSyncthreadsOr,
  kFirstWarpOp,
  kSyncwarp = kFirstWarpOp,
  kShflIdx,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
  kWarpExchange,  // the 32 lanes swap operand bytes (the emulated mma.sync; see warp_exchange)
};

// Bytes one lane may contribute to a warp exchange (an mma.sync's A and B fragments).
constexpr unsigned kMaxExchangeBytes = 64;

constexpr size_t kMaxDynamicShared = 227 * 1024;  // the largest opt-in on current GPUs (sm_90)
constexpr unsigned kMaxThreadsPerBlock = 1024;

// Dynamic shared memory: one buffer per module; `extern __shared__ T name[];`
// is rewritten by build.py into `T* const name = (T*)gpucnn_emu::dynamic_shared;`.
extern unsigned char dynamic_shared[kMaxDynamicShared];

extern unsigned long long block_serial;  // changes before each block
extern bool in_launch;
void poison_bytes(void* p, size_t n);
void add_namespace_shared(void* p, size_t n, const char* name);
#if GPUCNN_EMU_RACECHECK
// The race checker watches these bytes (of variable `name`) from now on.
void track_shared(const void* p, size_t n, const char* name);
#endif
void begin_block(const LaunchConfig* cfg, unsigned bx, unsigned by, unsigned bz);

// Runs a grid: plain(cfg, args) for a plain-loop kernel, else one fiber per
// thread of each block, each running thunk(args). Returns 0, or 1 with the
// reason copied to error.
int launch_grid(const char* name, const LaunchConfig* cfg, void** args, void (*plain)(const LaunchConfig*, void**),
                void (*thunk)(void*), char* error, unsigned long error_len);

// Every barrier and warp function calls this one function (in runtime.cpp);
// build.py looks for it in a kernel's call graph to decide that the kernel
// needs fibers.
extern "C" uint64_t gpucnn_emu_collective(int op, const char* file, int line, unsigned mask, uint64_t value,
                                          int arg, int width);

// Ends the launch: the calling thread reports `what` at file:line.
extern "C" [[noreturn]] void gpucnn_emu_trap(const char* what, const char* file, int line);

// Called (through the code build.py appends after every `__shared__`
// declaration) each time a thread passes the declaration of a static shared
// variable. The first thread of each block to pass it fills it with poison:
// no thread of the block can have written it before, because a block-scope
// variable is only reachable after its declaration has run. Namespace-scope
// shared variables are seen at load time and filled before every block.
static inline bool on_shared_declared(unsigned long long& seen, void* p, size_t n, const char* name) {
  if (__builtin_expect(seen != block_serial, 0)) {
    seen = block_serial;
    if (in_launch) {
      poison_bytes(p, n);
#if GPUCNN_EMU_RACECHECK
      track_shared(p, n, name);
#endif
    } else {
      add_namespace_shared(p, n, name);
    }
  }
  return true;
}

static inline unsigned warp_mask(unsigned mask = 0xffffffffu) { return mask; }

template <class T> static inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "warp shuffles move 4- or 8-byte values");
  if constexpr (sizeof(T) == 4) return std::bit_cast<uint32_t>(v);
  else return std::bit_cast<uint64_t>(v);
}
template <class T> static inline T from_bits(uint64_t b) {
  if constexpr (sizeof(T) == 4) return std::bit_cast<T>(static_cast<uint32_t>(b));
  else return std::bit_cast<T>(b);
}

// The collective behind the emulated warp-level matrix instructions (kernels/mma.cuh):
// every lane of a full warp contributes `bytes` bytes at `mine`; returns the
// 32 lanes' contributions, lane l's at offset l * kMaxExchangeBytes. As
// `.aligned` requires, all 32 lanes must be present and at the same call site
// (file:line) with the same size, else the launch fails. The returned buffer
// belongs to the warp and stays valid until the warp's next exchange, which
// cannot complete before every lane has arrived there, i.e. finished reading.
static inline const unsigned char* warp_exchange(const void* mine, unsigned bytes, const char* file, int line) {
  return reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(
      gpucnn_emu_collective(kWarpExchange, file, line, 0xffffffffu, reinterpret_cast<uintptr_t>(mine), (int)bytes, 32)));
}

template <class T>
static inline T shfl(int op, const char* file, int line, unsigned mask, T var, int arg, int width = 32) {
  return from_bits<T>(gpucnn_emu_collective(op, file, line, mask, to_bits(var), arg, width));
}

// ----- launching ---------------------------------------------------------------------

// Calls kernel Fn with its arguments unpacked from args[i] (each pointing at
// an argument's bytes, as in cuLaunchKernel's kernelParams).
template <auto Fn, class... A, size_t... I>
static inline void invoke(void (*)(A...), void** args, std::index_sequence<I...>) {
  Fn(*static_cast<std::remove_cvref_t<A>*>(args[I])...);
}
template <auto Fn, class... A> static inline void invoke_all(void (*f)(A...), void** args) {
  invoke<Fn>(f, args, std::index_sequence_for<A...>{});
}

template <auto Fn> static void fiber_thunk(void* args) { invoke_all<Fn>(Fn, static_cast<void**>(args)); }

// The plain loop over blocks and threads, for kernels that reach no collective.
template <auto Fn> static void run_grid_plain(const LaunchConfig* cfg, void** args) {
  for (unsigned bz = 0; bz < cfg->grid[2]; ++bz)
    for (unsigned by = 0; by < cfg->grid[1]; ++by)
      for (unsigned bx = 0; bx < cfg->grid[0]; ++bx) {
        begin_block(cfg, bx, by, bz);
        for (unsigned tz = 0; tz < cfg->block[2]; ++tz)
          for (unsigned ty = 0; ty < cfg->block[1]; ++ty)
            for (unsigned tx = 0; tx < cfg->block[0]; ++tx) {
              thread_idx = uint3{tx, ty, tz};
              invoke_all<Fn>(Fn, args);
            }
      }
}

// The entry point of kernel Fn, called by the generated wrapper.
template <auto Fn>
static int launch(const char* name, const LaunchConfig* cfg, void** args, char* error, unsigned long error_len) {
  return launch_grid(name, cfg, args, &run_grid_plain<Fn>, &fiber_thunk<Fn>, error, error_len);
}

// ----- parameter signatures, read by launcher.py to check argument types ---------------

template <class T> struct vector_code { static constexpr const char* value = nullptr; };
#define GPUCNN_EMU_VCODE(T, code) template <> struct vector_code<T> { static constexpr const char* value = code; };
GPUCNN_EMU_VCODE(float2, "f4x2")
GPUCNN_EMU_VCODE(float3, "f4x3")
GPUCNN_EMU_VCODE(float4, "f4x4")
GPUCNN_EMU_VCODE(double2, "f8x2")
GPUCNN_EMU_VCODE(double3, "f8x3")
GPUCNN_EMU_VCODE(int2, "i4x2")
GPUCNN_EMU_VCODE(int3, "i4x3")
GPUCNN_EMU_VCODE(int4, "i4x4")
GPUCNN_EMU_VCODE(uint2, "u4x2")
GPUCNN_EMU_VCODE(uint3, "u4x3")
GPUCNN_EMU_VCODE(uint4, "u4x4")
GPUCNN_EMU_VCODE(longlong2, "i8x2")
GPUCNN_EMU_VCODE(ulonglong2, "u8x2")
GPUCNN_EMU_VCODE(char4, "i1x4")
GPUCNN_EMU_VCODE(uchar4, "u1x4")

// "f4", "i8", "u1", "b1", "v" (void), "f4x4" (float4), or "?" for types the
// launcher cannot pass.
template <class T> static const char* type_code() {
  using U = std::remove_cv_t<T>;
  constexpr unsigned size_log2 = sizeof(U) == 1 ? 0 : sizeof(U) == 2 ? 1 : sizeof(U) == 4 ? 2 : 3;
  if constexpr (std::is_void_v<U>) return "v";
  else if constexpr (std::is_same_v<U, bool>) return "b1";
  else if constexpr (std::is_same_v<U, float>) return "f4";
  else if constexpr (std::is_same_v<U, double>) return "f8";
  else if constexpr (std::is_integral_v<U> && sizeof(U) <= 8) {
    constexpr const char* signed_codes[] = {"i1", "i2", "i4", "i8"};
    constexpr const char* unsigned_codes[] = {"u1", "u2", "u4", "u8"};
    return std::is_signed_v<U> ? signed_codes[size_log2] : unsigned_codes[size_log2];
  } else if constexpr (vector_code<U>::value != nullptr) return vector_code<U>::value;
  else return "?";
}

// One entry per parameter, each followed by ';': "s:<code>" for a scalar,
// "p:<code>" / "pc:<code>" for a pointer to mutable / const data.
template <class T> static void append_param_code(char* out, size_t size) {
  const char* kind = "s:";
  const char* code;
  if constexpr (std::is_pointer_v<T>) {
    using P = std::remove_pointer_t<T>;
    kind = std::is_const_v<P> ? "pc:" : "p:";
    if constexpr (std::is_pointer_v<P>) code = "?";
    else code = type_code<P>();
  } else {
    code = type_code<T>();
  }
  const size_t used = std::strlen(out);
  std::snprintf(out + used, size - used, "%s%s;", kind, code);
}

template <class... A> static const char* signature_of(void (*)(A...)) {
  static char text[1024];
  text[0] = 0;
  (append_param_code<A>(text, sizeof text), ...);
  return text;
}

}  // namespace gpucnn_emu

#pragma GCC visibility pop

// ---------------------------------------------------------------------------
// The CUDA names of the collectives
// ---------------------------------------------------------------------------

#define GPUCNN_EMU_COLL(op, mask, value, arg, width) \
  ::gpucnn_emu::gpucnn_emu_collective(::gpucnn_emu::op, __FILE__, __LINE__, (mask), (value), (arg), (width))

#define __syncthreads() ((void)GPUCNN_EMU_COLL(kSyncthreads, 0u, 0u, 0, 0))
#define __syncthreads_count(pred) ((int)GPUCNN_EMU_COLL(kSyncthreadsCount, 0u, (pred) ? 1u : 0u, 0, 0))
#define __syncthreads_and(pred) ((int)GPUCNN_EMU_COLL(kSyncthreadsAnd, 0u, (pred) ? 1u : 0u, 0, 0))
#define __syncthreads_or(pred) ((int)GPUCNN_EMU_COLL(kSyncthreadsOr, 0u, (pred) ? 1u : 0u, 0, 0))
#define __syncwarp(...) ((void)GPUCNN_EMU_COLL(kSyncwarp, ::gpucnn_emu::warp_mask(__VA_ARGS__), 0u, 0, 32))
#define __ballot_sync(mask, pred) ((unsigned)GPUCNN_EMU_COLL(kBallot, (mask), (pred) ? 1u : 0u, 0, 32))
#define __any_sync(mask, pred) ((int)GPUCNN_EMU_COLL(kAny, (mask), (pred) ? 1u : 0u, 0, 32))
#define __all_sync(mask, pred) ((int)GPUCNN_EMU_COLL(kAll, (mask), (pred) ? 1u : 0u, 0, 32))
#define __shfl_sync(mask, var, ...) \
  ::gpucnn_emu::shfl(::gpucnn_emu::kShflIdx, __FILE__, __LINE__, (mask), (var), __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) \
  ::gpucnn_emu::shfl(::gpucnn_emu::kShflUp, __FILE__, __LINE__, (mask), (var), __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) \
  ::gpucnn_emu::shfl(::gpucnn_emu::kShflDown, __FILE__, __LINE__, (mask), (var), __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) \
  ::gpucnn_emu::shfl(::gpucnn_emu::kShflXor, __FILE__, __LINE__, (mask), (var), __VA_ARGS__)

// A trap or a failed assert ends the launch with an EmulatorLaunchError naming
// the thread and the line (instead of aborting the Python process).
#define __trap() ::gpucnn_emu::gpucnn_emu_trap("__trap()", __FILE__, __LINE__)
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e) \
  (static_cast<bool>(e) ? (void)0 : ::gpucnn_emu::gpucnn_emu_trap("assert(" #e ") failed", __FILE__, __LINE__))
#endif

// Last, so that system headers included above still see GCC's own spelling.
#define __noinline__ __attribute__((noinline))

#endif  // GPUCNN_CUDA_EMU_H
