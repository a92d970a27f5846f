// cuda_emu.h -- the CUDA built-ins for the host C++ compiler (g++ -std=c++20).
//
// The emulator's build step (build.py) force-includes this header in front of
// an unchanged kernels/*.cu file, preprocesses, rewrites the two things a macro
// cannot express (dynamic `extern __shared__` arrays, and the poisoning of
// static `__shared__` variables), appends one generated launch wrapper per
// `extern "C" __global__` kernel and compiles the result into a shared library
// that Python calls through ctypes.
//
// Execution model (see launch() below):
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
//     before each block, so a read of what no thread wrote shows up.
//
// Everything here lives in one translation unit per module, so the runtime's
// definitions need not be `inline`.

#ifndef GPUCNN_CUDA_EMU_H
#define GPUCNN_CUDA_EMU_H

#include <math.h>

#include <bit>
#include <cfloat>
#include <climits>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define GPUCNN_EMU_ASAN 1
#else
#define GPUCNN_EMU_ASAN 0
#endif

#if !defined(__x86_64__) && !defined(GPUCNN_EMU_UCONTEXT)
#define GPUCNN_EMU_UCONTEXT 1
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
#include <ucontext.h>
#endif

#define GPUCNN_EMU_API extern "C" __attribute__((visibility("default")))

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
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __cudart_builtin__

#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 750  // the oldest supported architecture; -arch=sm_XX overrides
#endif
#define __CUDACC__ 1
#define GPUCNN_EMULATOR 1

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
uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;
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
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
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
static inline unsigned int atomicSub(unsigned int* p, unsigned int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
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
// The runtime: launch configuration, fibers, collectives
// ---------------------------------------------------------------------------

namespace gpucnn_emu {

// A fixed-size string for error messages (<string> would double the compile time).
struct Text {
  char s[2048];
  unsigned n = 0;
  Text() { s[0] = 0; }
  Text(const char* c) : Text() { *this += c; }
  Text& operator+=(const char* c) {
    while (c && *c && n + 1 < sizeof s) s[n++] = *c++;
    s[n] = 0;
    return *this;
  }
  Text& operator+=(const Text& t) { return *this += t.s; }
};
static inline Text operator+(Text a, const char* b) { return a += b; }
static inline Text operator+(Text a, const Text& b) { return a += b.s; }
static inline Text operator+(const char* a, const Text& b) { return Text(a) += b.s; }
static inline Text num(long long v) {
  char b[24];
  std::snprintf(b, sizeof b, "%lld", v);
  return Text(b);
}

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
  kTrap,
};

static const char* op_name(int op) {
  static const char* const names[] = {"__syncthreads()", "__syncthreads_count()", "__syncthreads_and()",
                                      "__syncthreads_or()", "__syncwarp()", "__shfl_sync()",
                                      "__shfl_up_sync()", "__shfl_down_sync()", "__shfl_xor_sync()",
                                      "__ballot_sync()", "__any_sync()", "__all_sync()", "__trap()"};
  return (op >= 0 && op <= kTrap) ? names[op] : "?";
}

enum State : int { kRunnable, kWaitBlock, kWaitWarp, kDone, kTrapped };

struct Fiber {
  void* sp;  // saved stack pointer while switched out
  uint3 tid;
  State state;
  int op;
  const char* file;
  int line;
  unsigned mask;
  int arg;  // source lane, delta or lane mask of a shuffle
  int width;
  uint64_t value;   // what this thread contributes to the collective
  uint64_t result;  // what the collective returns to it
  char* stack_lo;
  size_t stack_size;
#if GPUCNN_EMU_ASAN
  void* fake_stack;
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
  ucontext_t ctx;
#endif
};

constexpr size_t kFiberStackBytes = 256 * 1024;
constexpr size_t kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // the largest opt-in on current GPUs (sm_90)

struct Runtime {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  // one launch at a time (ctypes drops the GIL)
  bool in_launch = false;
  bool fibers_mode = false;
  const char* kernel_name = "";
  Text error;
  std::jmp_buf plain_escape;
  unsigned long long block_serial = 1;  // changes before each block; see on_shared_declared
  Fiber* fibers = nullptr;
  size_t fibers_capacity = 0;
  char* stacks = nullptr;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  void (*thunk)(void*) = nullptr;
  void* thunk_ctx = nullptr;
  unsigned nthreads = 0;
#if GPUCNN_EMU_ASAN
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
  ucontext_t scheduler_ctx;
#endif
};
Runtime rt;

// Dynamic shared memory: one buffer per module; `extern __shared__ T name[];`
// is rewritten by build.py into `T* const name = (T*)gpucnn_emu::dynamic_shared;`.
alignas(256) unsigned char dynamic_shared[kMaxDynamicShared];

// The poison pattern: every byte 0xFF, a NaN for float and double, -1 for ints.
// Under AddressSanitizer the fill must not go through the intercepted memset,
// which would (rightly) refuse to touch the redzones of neighbouring objects.
__attribute__((no_sanitize_address)) static void poison_bytes(void* p, size_t n) {
#if GPUCNN_EMU_ASAN
  volatile unsigned char* b = static_cast<volatile unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = 0xFF;
#else
  std::memset(p, 0xFF, n);
#endif
}

// Called (through the code build.py appends after every `__shared__`
// declaration) each time a thread passes the declaration of a static shared
// variable. The first thread of each block to pass it fills it with poison:
// no thread of the block can have written it before, because a block-scope
// variable is only reachable after its declaration has run. Namespace-scope
// shared variables are seen at load time and filled before every block.
struct SharedRange {
  void* p;
  size_t n;
};
SharedRange namespace_shared[64];
int namespace_shared_count = 0;

static inline bool on_shared_declared(unsigned long long& seen, void* p, size_t n) {
  if (__builtin_expect(seen != rt.block_serial, 0)) {
    seen = rt.block_serial;
    if (rt.in_launch) {
      poison_bytes(p, n);
    } else if (namespace_shared_count < 64) {
      namespace_shared[namespace_shared_count++] = SharedRange{p, n};
    } else {
      std::fprintf(stderr, "gpucnn emulator: more than 64 namespace-scope __shared__ variables\n");
      std::abort();
    }
  }
  return true;
}

static void begin_block(const LaunchConfig* cfg, unsigned bx, unsigned by, unsigned bz) {
  block_idx = uint3{bx, by, bz};
  ++rt.block_serial;
  for (int i = 0; i < namespace_shared_count; ++i) poison_bytes(namespace_shared[i].p, namespace_shared[i].n);
  if (cfg->shared_mem) poison_bytes(dynamic_shared, cfg->shared_mem);
}

// ----- context switching ----------------------------------------------------

#if !defined(GPUCNN_EMU_UCONTEXT)
// x86-64 System V: save the callee-saved registers on the current stack, swap
// stack pointers, restore. A new fiber's stack is prepared so that the first
// switch "returns" into fiber_trampoline with the Fiber* in r12.
extern "C" void gpucnn_emu_switch(void** save_sp, void* load_sp);
extern "C" void gpucnn_emu_fiber_trampoline();
asm(R"(
  .text
  .p2align 4
  .hidden gpucnn_emu_switch
  .type gpucnn_emu_switch, @function
gpucnn_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gpucnn_emu_switch, .-gpucnn_emu_switch

  .p2align 4
  .hidden gpucnn_emu_fiber_trampoline
  .type gpucnn_emu_fiber_trampoline, @function
gpucnn_emu_fiber_trampoline:
  xorl %ebp, %ebp
  movq %r12, %rdi
  call gpucnn_emu_fiber_main
  ud2
  .size gpucnn_emu_fiber_trampoline, .-gpucnn_emu_fiber_trampoline
)");
#endif

extern "C" [[noreturn]] void gpucnn_emu_fiber_main(Fiber* f);

static inline void asan_leave(void** fake_save, const void* to_bottom, size_t to_size) {
#if GPUCNN_EMU_ASAN
  __sanitizer_start_switch_fiber(fake_save, to_bottom, to_size);
#else
  (void)fake_save, (void)to_bottom, (void)to_size;
#endif
}

static inline void asan_arrive(void* fake, const void** from_bottom, size_t* from_size) {
#if GPUCNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, from_bottom, from_size);
#else
  (void)fake, (void)from_bottom, (void)from_size;
#endif
}

// Scheduler -> fiber f.
static inline void resume_fiber(Fiber* f) {
  rt.current = f;
  thread_idx = f->tid;
#if GPUCNN_EMU_ASAN
  asan_leave(&rt.scheduler_fake_stack, f->stack_lo, f->stack_size);
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
  swapcontext(&rt.scheduler_ctx, &f->ctx);
#else
  gpucnn_emu_switch(&rt.scheduler_sp, f->sp);
#endif
#if GPUCNN_EMU_ASAN
  asan_arrive(rt.scheduler_fake_stack, nullptr, nullptr);
#endif
  asm volatile("" ::: "memory");
}

// Fiber -> scheduler; returns when the scheduler resumes this fiber.
static inline void yield_to_scheduler(Fiber* f) {
#if GPUCNN_EMU_ASAN
  asan_leave(f->state == kDone ? nullptr : &f->fake_stack, rt.scheduler_stack_bottom, rt.scheduler_stack_size);
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
  swapcontext(&f->ctx, &rt.scheduler_ctx);
#else
  gpucnn_emu_switch(&f->sp, rt.scheduler_sp);
#endif
#if GPUCNN_EMU_ASAN
  asan_arrive(f->fake_stack, nullptr, nullptr);
#endif
  asm volatile("" ::: "memory");
}

extern "C" [[noreturn]] void gpucnn_emu_fiber_main(Fiber* f) {
#if GPUCNN_EMU_ASAN
  asan_arrive(nullptr, &rt.scheduler_stack_bottom, &rt.scheduler_stack_size);
#endif
  rt.thunk(rt.thunk_ctx);
  f->state = kDone;
  yield_to_scheduler(f);
  __builtin_trap();  // a finished fiber is never resumed
}

#if defined(GPUCNN_EMU_UCONTEXT)
static void ucontext_entry() { gpucnn_emu_fiber_main(rt.current); }
#endif

// One stack per thread of a block, each with a guard page below it so that an
// overflow faults instead of corrupting the neighbour. Kept for the module's life.
static bool ensure_fibers(size_t n) {
  if (n <= rt.fibers_capacity) return true;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t slot = kFiberStackBytes + page;
  void* mem = mmap(nullptr, slot * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return false;
  Fiber* fibers = static_cast<Fiber*>(std::calloc(n, sizeof(Fiber)));
  if (!fibers) {
    munmap(mem, slot * n);
    return false;
  }
  for (size_t i = 0; i < n; ++i) {
    char* base = static_cast<char*>(mem) + i * slot;
    mprotect(base, page, PROT_NONE);
    fibers[i].stack_lo = base + page;
    fibers[i].stack_size = kFiberStackBytes;
  }
  if (rt.stacks) munmap(rt.stacks, slot * rt.fibers_capacity);
  std::free(rt.fibers);
  rt.stacks = static_cast<char*>(mem);
  rt.fibers = fibers;
  rt.fibers_capacity = n;
  return true;
}

static void init_fiber(Fiber* f, uint3 tid) {
  f->tid = tid;
  f->state = kRunnable;
  f->op = -1;
  f->file = nullptr;
  f->line = 0;
#if GPUCNN_EMU_ASAN
  f->fake_stack = nullptr;
  // A fiber abandoned by a failed launch leaves poisoned stack redzones behind.
  __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
#if defined(GPUCNN_EMU_UCONTEXT)
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack_lo;
  f->ctx.uc_stack.ss_size = f->stack_size;
  f->ctx.uc_link = nullptr;
  makecontext(&f->ctx, ucontext_entry, 0);
#else
  // Layout popped by gpucnn_emu_switch: r15 r14 r13 r12 rbx rbp, then the
  // return address. The trampoline then runs with rsp 16-byte aligned.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack_lo) + f->stack_size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top) - 7;
  sp[0] = nullptr;                                                    // r15
  sp[1] = nullptr;                                                    // r14
  sp[2] = nullptr;                                                    // r13
  sp[3] = f;                                                          // r12
  sp[4] = nullptr;                                                    // rbx
  sp[5] = nullptr;                                                    // rbp
  sp[6] = reinterpret_cast<void*>(&gpucnn_emu_fiber_trampoline);      // return address
  f->sp = sp;
#endif
}

// ----- error reporting ---------------------------------------------------------

static Text site(const Fiber& f) {
  Text s = op_name(f.op);
  if (f.file) s = s + " at " + f.file + ":" + num(f.line);
  return s;
}

// "threads 0-31, 40, 64-95" for a sorted list of linear thread indices.
template <class Pred> static Text thread_list(unsigned n, Pred pred) {
  Text s;
  int ranges = 0;
  unsigned total = 0;
  for (unsigned i = 0; i < n;) {
    if (!pred(i)) {
      ++i;
      continue;
    }
    unsigned j = i;
    while (j + 1 < n && pred(j + 1)) ++j;
    total += j - i + 1;
    if (ranges < 8) {
      if (ranges) s += ", ";
      s += num(i);
      if (j > i) s = s + "-" + num(j);
    } else if (ranges == 8) {
      s += ", ...";
    }
    ++ranges;
    i = j + 1;
  }
  return (total == 1 ? "thread " : "threads ") + s;
}

static void set_error(const Text& what) {
  rt.error = Text("kernel '") + rt.kernel_name + "', block (" + num(block_idx.x) + "," + num(block_idx.y) + "," +
             num(block_idx.z) + "): " + what +
             " [threads are numbered x + y*blockDim.x + z*blockDim.x*blockDim.y]";
}

// ----- the collectives -------------------------------------------------------------

// Every barrier and warp function goes through this one non-inlinable function,
// which is what build.py looks for in a kernel's call graph to decide that the
// kernel needs fibers.
extern "C" __attribute__((noinline, noipa)) uint64_t gpucnn_emu_collective(int op, const char* file, int line,
                                                                         unsigned mask, uint64_t value, int arg,
                                                                         int width) {
  if (!rt.fibers_mode) {
    // The static analysis said this kernel never reaches a collective: it ran
    // as a plain loop, so this call cannot be honoured. Never happens unless
    // the analysis is wrong; fail loudly rather than give a wrong answer.
    rt.error = Text("internal error of the emulator: kernel '") + rt.kernel_name +
               "' was classified barrier-free but reached " + op_name(op) + " at " + (file ? file : "?") + ":" +
               num(line);
    std::longjmp(rt.plain_escape, 1);
  }
  Fiber* f = rt.current;
  f->op = op;
  f->file = file;
  f->line = line;
  f->mask = mask;
  f->value = value;
  f->arg = arg;
  f->width = width;
  f->state = op == kTrap ? kTrapped : (op < kFirstWarpOp ? kWaitBlock : kWaitWarp);
  yield_to_scheduler(f);
  return f->result;
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

template <class T>
static inline T shfl(int op, const char* file, int line, unsigned mask, T var, int arg, int width = 32) {
  return from_bits<T>(gpucnn_emu_collective(op, file, line, mask, to_bits(var), arg, width));
}

// Completes the warp collective of the lanes named by fiber `f`'s mask if all
// of them are waiting at a warp function. Returns 1 on completion, 0 when some
// participant is not there yet, -1 (with rt.error set) when it never can be.
static int try_complete_warp_op(Fiber* fibers, unsigned n, unsigned self) {
  const Fiber& me = fibers[self];
  const unsigned warp_base = self & ~31u;
  const unsigned lane_self = self & 31u;
  const unsigned lanes_in_warp = n - warp_base < 32u ? n - warp_base : 32u;
  const unsigned existing = lanes_in_warp == 32 ? 0xffffffffu : ((1u << lanes_in_warp) - 1u);
  if (!(me.mask >> lane_self & 1u)) {
    set_error(thread_list(n, [&](unsigned i) { return i == self; }) + " calls " + site(me) + " with mask 0x" +
              [&] { char b[16]; std::snprintf(b, sizeof b, "%08x", me.mask); return Text(b); }() +
              " that does not name its own lane " + num(lane_self));
    return -1;
  }
  if (me.op != kSyncwarp && me.op != kBallot && me.op != kAny && me.op != kAll &&
      (me.width < 1 || me.width > 32 || (me.width & (me.width - 1)))) {
    set_error(site(me) + " with width " + num(me.width) + ": width must be a power of 2 in 1..32");
    return -1;
  }
  const unsigned participants = me.mask & existing;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(participants >> l & 1u)) continue;
    const Fiber& o = fibers[warp_base + l];
    if (o.state == kDone) {
      set_error(thread_list(n, [&](unsigned i) { return i == warp_base + l; }) +
                " has exited, but lanes waiting at " + site(me) + " name it in their mask");
      return -1;
    }
    if (o.state == kWaitBlock) {
      set_error("deadlock: " + thread_list(n, [&](unsigned i) { return i == self; }) + " waits at " + site(me) +
                " for " + thread_list(n, [&](unsigned i) { return i == warp_base + l; }) + ", which waits at " +
                site(o));
      return -1;
    }
    if (o.state != kWaitWarp) return 0;
    if (o.op != me.op || o.mask != me.mask || o.width != me.width) {
      set_error("lanes of one warp disagree: " + thread_list(n, [&](unsigned i) { return i == self; }) + " is at " +
                site(me) + " and " + thread_list(n, [&](unsigned i) { return i == warp_base + l; }) + " at " +
                site(o) + " (the same mask must call the same warp function with the same mask and width)");
      return -1;
    }
  }
  uint64_t reduced = 0;
  if (me.op == kBallot || me.op == kAny || me.op == kAll) {
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; ++l)
      if ((participants >> l & 1u) && fibers[warp_base + l].value) ballot |= 1u << l;
    reduced = me.op == kBallot ? ballot : me.op == kAny ? (ballot != 0) : (ballot == participants);
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(participants >> l & 1u)) continue;
    Fiber& o = fibers[warp_base + l];
    uint64_t result = reduced;
    if (me.op >= kShflIdx && me.op <= kShflXor) {
      const int w = me.width;
      const int seg = (int)l & ~(w - 1);  // first lane of this lane's width-segment
      int src;
      switch (me.op) {
        case kShflIdx: src = seg + (me.arg & (w - 1)); break;
        case kShflUp: src = ((int)l - seg - me.arg >= 0) ? (int)l - me.arg : (int)l; break;
        case kShflDown: src = ((int)l - seg + me.arg < w) ? (int)l + me.arg : (int)l; break;
        default: src = (int)l ^ me.arg; if (src >= seg + w) src = (int)l; break;
      }
      // A lane outside the mask (or beyond the block) has no defined value: poison it.
      result = (src >= 0 && src < 32 && (participants >> src & 1u)) ? fibers[warp_base + src].value : ~0ull;
    }
    o.result = result;
    o.state = kRunnable;
  }
  return 1;
}

static const Fiber* first_in_state(const Fiber* fibers, State state) {
  while (fibers->state != state) ++fibers;
  return fibers;
}

// Runs one block of threads as fibers until all have finished. Returns false
// with rt.error set on a divergent barrier, a deadlock or a trap.
static bool run_block_fibers(unsigned n) {
  Fiber* fibers = rt.fibers;
  for (;;) {
    for (unsigned i = 0; i < n; ++i)
      if (fibers[i].state == kRunnable) resume_fiber(&fibers[i]);
    // Every thread now waits at a collective or has finished.
    unsigned done = 0, at_block = 0, at_warp = 0;
    for (unsigned i = 0; i < n; ++i) {
      switch (fibers[i].state) {
        case kDone: ++done; break;
        case kWaitBlock: ++at_block; break;
        case kWaitWarp: ++at_warp; break;
        case kTrapped: set_error(thread_list(n, [&](unsigned j) { return j == i; }) + " called " + site(fibers[i])); return false;
        default: break;
      }
    }
    if (done == n) return true;
    if (at_warp) {
      bool progress = false;
      for (unsigned i = 0; i < n; ++i) {
        if (fibers[i].state != kWaitWarp) continue;
        int r = try_complete_warp_op(fibers, n, i);
        if (r < 0) return false;
        progress |= r > 0;
      }
      if (progress) continue;
      set_error("deadlock: " + thread_list(n, [&](unsigned i) { return fibers[i].state == kWaitWarp; }) +
                " wait at warp functions that can never complete (first: " +
                site(*first_in_state(fibers, kWaitWarp)) + ")");
      return false;
    }
    // Only block barriers remain: all live threads must wait at the same one.
    const Fiber* first = first_in_state(fibers, kWaitBlock);
    if (done) {
      set_error("deadlock: " + thread_list(n, [&](unsigned i) { return fibers[i].state == kWaitBlock; }) +
                " wait at " + site(*first) + ", but " +
                thread_list(n, [&](unsigned i) { return fibers[i].state == kDone; }) +
                " already exited the kernel and will never arrive");
      return false;
    }
    for (unsigned i = 0; i < n; ++i) {
      if (fibers[i].op != first->op || fibers[i].line != first->line ||
          std::strcmp(fibers[i].file, first->file) != 0) {
        const Fiber& other = fibers[i];
        set_error("divergent barriers: threads of one block wait at different barriers: " +
                  thread_list(n, [&](unsigned j) { return fibers[j].op == first->op && fibers[j].line == first->line &&
                                                          std::strcmp(fibers[j].file, first->file) == 0; }) +
                  " at " + site(*first) + "; " +
                  thread_list(n, [&](unsigned j) { return fibers[j].op == other.op && fibers[j].line == other.line &&
                                                          std::strcmp(fibers[j].file, other.file) == 0; }) +
                  " at " + site(other));
        return false;
      }
    }
    uint64_t count = 0;
    for (unsigned i = 0; i < n; ++i) count += fibers[i].value != 0;
    const uint64_t result = first->op == kSyncthreadsCount ? count
                          : first->op == kSyncthreadsAnd   ? (count == n)
                          : first->op == kSyncthreadsOr    ? (count != 0)
                                                           : 0;
    for (unsigned i = 0; i < n; ++i) {
      fibers[i].result = result;
      fibers[i].state = kRunnable;
    }
  }
}

static int run_grid_fibers(const LaunchConfig* cfg, void (*thunk)(void*), void* ctx) {
  const unsigned n = cfg->block[0] * cfg->block[1] * cfg->block[2];
  if (!ensure_fibers(n)) {
    rt.error = Text("cannot allocate fiber stacks for ") + num(n) + " threads";
    return 1;
  }
  rt.thunk = thunk;
  rt.thunk_ctx = ctx;
  rt.nthreads = n;
  rt.fibers_mode = true;
  for (unsigned bz = 0; bz < cfg->grid[2]; ++bz)
    for (unsigned by = 0; by < cfg->grid[1]; ++by)
      for (unsigned bx = 0; bx < cfg->grid[0]; ++bx) {
        begin_block(cfg, bx, by, bz);
        unsigned i = 0;
        for (unsigned tz = 0; tz < cfg->block[2]; ++tz)
          for (unsigned ty = 0; ty < cfg->block[1]; ++ty)
            for (unsigned tx = 0; tx < cfg->block[0]; ++tx) init_fiber(&rt.fibers[i++], uint3{tx, ty, tz});
        if (!run_block_fibers(n)) {
          rt.fibers_mode = false;
          return 1;
        }
      }
  rt.fibers_mode = false;
  return 0;
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

// Runs the whole grid of kernel Fn; returns 0, or 1 with the reason copied to error.
template <auto Fn>
static int launch(const char* name, const LaunchConfig* cfg, void** args, char* error, unsigned long error_len) {
  pthread_mutex_lock(&rt.lock);
  rt.kernel_name = name;
  rt.error = Text();
  grid_dim = dim3(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
  block_dim = dim3(cfg->block[0], cfg->block[1], cfg->block[2]);
#if GPUCNN_EMU_ASAN
  // Only the first shared_mem bytes of the dynamic buffer exist for this launch.
  __asan_unpoison_memory_region(dynamic_shared, cfg->shared_mem);
  __asan_poison_memory_region(dynamic_shared + cfg->shared_mem, kMaxDynamicShared - cfg->shared_mem);
#endif
  rt.in_launch = true;
  int status = 0;
  if (cfg->use_fibers) {
    status = run_grid_fibers(cfg, &fiber_thunk<Fn>, args);
  } else if (setjmp(rt.plain_escape) == 0) {
    run_grid_plain<Fn>(cfg, args);
  } else {
    status = 1;  // a collective was reached in plain-loop mode (see gpucnn_emu_collective)
  }
  rt.in_launch = false;
  rt.fibers_mode = false;
  if (status && error_len) {
    std::strncpy(error, rt.error.s, error_len - 1);
    error[error_len - 1] = 0;
  }
  pthread_mutex_unlock(&rt.lock);
  return status;
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
  else if constexpr (std::is_floating_point_v<U> && (sizeof(U) == 4 || sizeof(U) == 8)) return sizeof(U) == 4 ? "f4" : "f8";
  else if constexpr (std::is_integral_v<U> && sizeof(U) <= 8) {
    constexpr const char* signed_codes[] = {"i1", "i2", "i4", "i8"};
    constexpr const char* unsigned_codes[] = {"u1", "u2", "u4", "u8"};
    return std::is_signed_v<U> ? signed_codes[size_log2] : unsigned_codes[size_log2];
  } else if constexpr (vector_code<U>::value != nullptr) return vector_code<U>::value;
  else return "?";
}

// One entry per parameter, each followed by ';': "s:<code>" for a scalar,
// "p:<code>" / "pc:<code>" for a pointer to mutable / const data.
template <class T> static void append_param_code(Text& out) {
  if constexpr (std::is_pointer_v<T>) {
    using P = std::remove_pointer_t<T>;
    out = out + (std::is_const_v<P> ? "pc:" : "p:") + (std::is_pointer_v<P> ? "?" : type_code<P>()) + ";";
  } else {
    out = out + "s:" + type_code<T>() + ";";
  }
}

template <class... A> static const char* signature_of(void (*)(A...)) {
  static Text text;
  text = Text();
  (append_param_code<A>(text), ...);
  return text.s;
}

}  // namespace gpucnn_emu

GPUCNN_EMU_API int gpucnn_emu_sanitized(void) { return GPUCNN_EMU_ASAN; }

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
#define __trap() ((void)GPUCNN_EMU_COLL(kTrap, 0u, 0u, 0, 0))

// Last, so that system headers included above still see GCC's own spelling.
#define __noinline__ __attribute__((noinline))

#endif  // GPUCNN_CUDA_EMU_H
