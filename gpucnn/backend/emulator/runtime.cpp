// runtime.cpp -- the CUDA emulator's scheduler: runs the blocks of a grid and
// the threads of a block, enforces barriers and warp functions, reports
// divergence and deadlocks. Compiled once per compiler and flags by build.py
// and linked into every module next to the kernels (see cuda_emu.h).
//
// Threads of a block are fibers: each has its own stack, and runs until it
// reaches a collective (barrier or warp function) or exits, then switches back
// to the scheduler. When every thread waits or has exited, the scheduler
// completes the warp collectives whose lanes are all present, else releases a
// block barrier that all live threads wait at, else reports what is stuck.
// A race-checking build also holds the shared-memory race checker (below).

#include "cuda_emu.h"

#include <csetjmp>

#include <dlfcn.h>
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

#pragma GCC visibility push(hidden)

namespace gpucnn_emu {

uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;
alignas(256) unsigned char dynamic_shared[kMaxDynamicShared];
unsigned long long block_serial = 1;
bool in_launch = false;

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

static const char* op_name(int op) {
  static const char* const names[] = {"__syncthreads()", "__syncthreads_count()", "__syncthreads_and()",
                                      "__syncthreads_or()", "__syncwarp()", "__shfl_sync()",
                                      "__shfl_up_sync()", "__shfl_down_sync()", "__shfl_xor_sync()",
                                      "__ballot_sync()", "__any_sync()", "__all_sync()",
                                      "mma.sync (warp exchange)"};
  return (op >= 0 && op <= kWarpExchange) ? names[op] : "?";
}


enum State : int { kRunnable, kWaitBlock, kWaitWarp, kDone, kTrapped };

// What launch_grid returns (mirrored in launcher.py).
enum LaunchStatus : int { kLaunchOk = 0, kLaunchFailed = 1, kLaunchRace = 2 };

namespace racecheck {
void new_interval();
void warp_synchronised(unsigned warp);
}  // namespace racecheck

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

constexpr size_t kFiberStackBytes = 128 * 1024;  // GPU threads have little local memory

struct Runtime {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  // one launch at a time (ctypes drops the GIL)
  bool fibers_mode = false;
  const char* kernel_name = "";
  Text error;
  int failure = kLaunchFailed;  // what launch_grid returns when the launch fails
  std::jmp_buf plain_escape;
  Fiber* fibers = nullptr;
  size_t fibers_capacity = 0;
  char* stacks = nullptr;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  void (*thunk)(void*) = nullptr;
  void* thunk_ctx = nullptr;
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


// The poison pattern: every byte 0xFF, a NaN for float and double, -1 for ints.
// Under AddressSanitizer the fill must not go through the intercepted memset,
// which would (rightly) refuse to touch the redzones of neighbouring objects.
__attribute__((no_sanitize_address)) void poison_bytes(void* p, size_t n) {
#if GPUCNN_EMU_ASAN
  volatile unsigned char* b = static_cast<volatile unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = 0xFF;
#else
  std::memset(p, 0xFF, n);
#endif
}

struct SharedRange {
  void* p;
  size_t n;
};
static SharedRange namespace_shared[64];
static int namespace_shared_count = 0;

// Namespace-scope __shared__ variables announce themselves at load time.
void add_namespace_shared(void* p, size_t n, const char* name) {
  if (namespace_shared_count == 64) {
    std::fprintf(stderr, "gpucnn emulator: more than 64 namespace-scope __shared__ variables\n");
    std::abort();
  }
  namespace_shared[namespace_shared_count++] = SharedRange{p, n};
#if GPUCNN_EMU_RACECHECK
  track_shared(p, n, name);
#else
  (void)name;
#endif
}

void begin_block(const LaunchConfig* cfg, unsigned bx, unsigned by, unsigned bz) {
  block_idx = uint3{bx, by, bz};
  ++block_serial;
#if GPUCNN_EMU_RACECHECK
  racecheck::new_interval();
#endif
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
extern "C" uint64_t gpucnn_emu_collective(int op, const char* file, int line, unsigned mask, uint64_t value,
                                          int arg, int width) {
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
  f->state = op < kFirstWarpOp ? kWaitBlock : kWaitWarp;
  yield_to_scheduler(f);
  return f->result;
}

// "thread 37 (threadIdx 5,1,0)" for a linear thread index.
static Text thread_name(unsigned linear) {
  const unsigned x = linear % block_dim.x, y = linear / block_dim.x % block_dim.y,
                 z = linear / (block_dim.x * block_dim.y);
  return Text("thread ") + num(linear) + " (threadIdx " + num(x) + "," + num(y) + "," + num(z) + ")";
}

static unsigned current_thread() {
  return thread_idx.x + thread_idx.y * block_dim.x + thread_idx.z * block_dim.x * block_dim.y;
}

// Ends the launch from inside a kernel thread, rt.error already set: returns
// to launch_grid, which reports `failure`.
[[noreturn]] static void abort_launch(int failure) {
  rt.failure = failure;
  if (!rt.fibers_mode) std::longjmp(rt.plain_escape, 1);
  Fiber* f = rt.current;
  f->state = kTrapped;  // the scheduler abandons the launch and never resumes this fiber
  yield_to_scheduler(f);
  __builtin_trap();
}

extern "C" [[noreturn]] void gpucnn_emu_trap(const char* what, const char* file, int line) {
  set_error(thread_name(current_thread()) + ": " + what + " at " + file + ":" + num(line));
  abort_launch(kLaunchFailed);
}

// The warp exchanges' buffers: kMaxExchangeBytes per thread of a block.
alignas(16) static unsigned char exchange_tables[kMaxThreadsPerBlock * kMaxExchangeBytes];

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
  if (me.op == kWarpExchange && (lanes_in_warp < 32 || me.arg < 0 || me.arg > (int)kMaxExchangeBytes)) {
    set_error(site(me) + (lanes_in_warp < 32 ? " needs all 32 lanes of a warp (.aligned), but this warp has only " +
                                                   num(lanes_in_warp) + " threads (blockDim too small)"
                                             : Text(" exchanges too many bytes per lane")));
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
    // An .aligned warp instruction must be the same instruction in every lane:
    // same call site and operand size too.
    const bool aligned_mismatch = me.op == kWarpExchange && (o.arg != me.arg || o.line != me.line ||
                                                              std::strcmp(o.file, me.file) != 0);
    if (o.op != me.op || o.mask != me.mask || o.width != me.width || aligned_mismatch) {
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
#if GPUCNN_EMU_RACECHECK
  racecheck::warp_synchronised(warp_base / 32);
#endif
  if (me.op == kWarpExchange) {
    // Copied, so a lane may leave (and reuse its stack) while others still read.
    unsigned char* table = exchange_tables + (size_t)warp_base * kMaxExchangeBytes;
    for (unsigned l = 0; l < 32; ++l)
      std::memcpy(table + l * kMaxExchangeBytes, reinterpret_cast<const void*>(fibers[warp_base + l].value),
                  (size_t)me.arg);
    reduced = reinterpret_cast<uintptr_t>(table);
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
        // Each lane names its own source lane (or delta, or lane mask).
        case kShflIdx: src = seg + (o.arg & (w - 1)); break;
        case kShflUp: src = ((int)l - seg - o.arg >= 0) ? (int)l - o.arg : (int)l; break;
        case kShflDown: src = ((int)l - seg + o.arg < w) ? (int)l + o.arg : (int)l; break;
        default: src = (int)l ^ o.arg; if (src >= seg + w) src = (int)l; break;
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
    for (unsigned i = 0; i < n; ++i) {
      if (fibers[i].state != kRunnable) continue;
      resume_fiber(&fibers[i]);
      if (fibers[i].state == kTrapped) return false;  // gpucnn_emu_trap has set the error
    }
    // Every thread now waits at a collective or has finished.
    unsigned done = 0, at_warp = 0;
    for (unsigned i = 0; i < n; ++i) {
      switch (fibers[i].state) {
        case kDone: ++done; break;
        case kWaitWarp: ++at_warp; break;
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
#if GPUCNN_EMU_RACECHECK
    racecheck::new_interval();
#endif
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

// ----- shared-memory race checking (GPUCNN_EMU_RACECHECK builds) ----------------
//
// A racecheck build compiles the kernels with GCC's -fsanitize=thread, which
// puts a call to __tsan_read4(addr), __tsan_write8(addr), ... in front of
// every memory access and turns atomics into __tsan_atomic* calls, but links
// them against the hooks below instead of ThreadSanitizer's runtime. A hook
// ignores every address outside the tracked shared-memory ranges (one
// compare); for a shared word it applies CUDA's rule: two accesses to the same
// word by different threads of a block conflict when at least one is a write,
// not both are atomics, and no __syncthreads() (a new barrier interval) and,
// for two lanes of one warp, no warp function (__syncwarp(), a shuffle, a
// vote) completed between them. The first conflict ends the launch; the
// message names both accesses by their return addresses in the kernel code,
// "@pc[0x...]", which launcher.py turns into file:line with addr2line.
#if GPUCNN_EMU_RACECHECK
namespace racecheck {

// 16 bytes, so that a word's shadow is one 64-byte cache line: four 32-bit
// fields, stored one by one (copying a whole Access built on the stack stalls
// on store forwarding, in the hottest line of the checker).
struct Access {
  uint32_t interval;    // barrier interval of the access; 0: none
  int32_t pc;           // return address of the hook (just after the access), relative to pc_origin()
  uint32_t warp_syncs;  // warp functions completed by the thread's warp before the access
  uint32_t who;         // linear thread index in the block | kAtomic
  static constexpr uint32_t kAtomic = 1u << 16;
  unsigned thread() const { return who & 0xffffu; }
  bool atomic() const { return who & kAtomic; }
};

// One 4-byte word of tracked shared memory. Each kind of access keeps the
// latest one of the current interval by the current thread and the latest by
// another thread: a later access by any thread conflicts with one of the two
// if with any. (Two writers in one interval are possible: atomics.)
struct alignas(64) Word {
  Access writes[2];
  Access reads[2];
};

// A tracked range, for naming the variable of a racy word.
struct Named {
  uintptr_t p;
  size_t n;
  const char* name;
};

// Interval 1 is the first block's; begin_block and every barrier release start
// a new one, so accesses of different blocks never share an interval.
static uint32_t interval = 1;
static uint32_t warp_syncs[kMaxThreadsPerBlock / 32];
// Words of [lo, hi): the smallest box holding every tracked range (all of them
// in the module's .bss, a few hundred KiB at most); tracked[w]: word w belongs
// to a __shared__ variable or the dynamic buffer.
static uintptr_t lo = 0, hi = 0;
static Word* words = nullptr;
static bool* tracked = nullptr;
static Named variables[256];
static int variable_count = 0;

static uintptr_t pc_origin() { return reinterpret_cast<uintptr_t>(&new_interval); }

void new_interval() {
  if (__builtin_expect(++interval == 0, 0)) {  // after 2^32 intervals: forget them all, start over
    if (words) std::memset(static_cast<void*>(words), 0, (hi - lo) / 4 * sizeof(Word));
    interval = 1;
  }
}
void warp_synchronised(unsigned warp) { ++warp_syncs[warp]; }

static void track(const void* p, size_t n, const char* name) {
  bool known = false;
  for (int i = 0; i < variable_count && !known; ++i) known = variables[i].p == reinterpret_cast<uintptr_t>(p);
  if (known) return;
  if (variable_count < 256) variables[variable_count++] = Named{reinterpret_cast<uintptr_t>(p), n, name};
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(3);
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + n + 3) & ~uintptr_t(3);
  if (a < lo || b > hi || !words) {
    const uintptr_t new_lo = words ? (a < lo ? a : lo) : a, new_hi = words ? (b > hi ? b : hi) : b;
    const size_t count = (new_hi - new_lo) / 4;
    Word* grown = static_cast<Word*>(std::aligned_alloc(alignof(Word), count * sizeof(Word)));
    bool* grown_tracked = static_cast<bool*>(std::calloc(count, 1));
    if (!grown || !grown_tracked) {
      std::fprintf(stderr, "gpucnn emulator: out of memory for the race checker's shadow words\n");
      std::abort();
    }
    std::memset(static_cast<void*>(grown), 0, count * sizeof(Word));
    if (words) {
      std::memcpy(static_cast<void*>(grown + (lo - new_lo) / 4), words, (hi - lo) / 4 * sizeof(Word));
      std::memcpy(grown_tracked + (lo - new_lo) / 4, tracked, (hi - lo) / 4);
    }
    std::free(words);
    std::free(tracked);
    words = grown;
    tracked = grown_tracked;
    lo = new_lo;
    hi = new_hi;
  }
  for (uintptr_t w = (a - lo) / 4; w < (b - lo) / 4; ++w) tracked[w] = true;
}

static inline bool conflict(const Access& before, const Access& now) {
  return before.interval == now.interval && before.thread() != now.thread() && !(before.atomic() && now.atomic()) &&
         !(before.thread() / 32 == now.thread() / 32 && before.warp_syncs != now.warp_syncs);
}

// "@pc[0x1a2b]": the access's address inside the module, for launcher.py to symbolize.
static Text code_address(int32_t relative_pc) {
  const uintptr_t pc = pc_origin() + relative_pc;
  Dl_info info;
  uintptr_t offset = pc;
  if (dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fbase)
    offset -= reinterpret_cast<uintptr_t>(info.dli_fbase);
  char b[40];
  std::snprintf(b, sizeof b, "@pc[0x%lx]", static_cast<unsigned long>(offset - 1));  // -1: inside the call
  return Text(b);
}

// "byte 12 of __shared__ tile (1024 bytes)"
static Text word_name(uintptr_t address) {
  for (int i = 0; i < variable_count; ++i) {
    const Named& v = variables[i];
    if (address >= v.p && address < v.p + v.n)
      return Text("byte ") + num((long long)(address - v.p)) + " of " + v.name + " (" + num((long long)v.n) +
             " bytes)";
  }
  return Text("a shared word");
}

static Text access_name(const Access& a, bool write) {
  return Text(a.atomic() ? "atomic " : "") + (write ? "write" : "read");
}

[[noreturn]] static void report(const char* kind, const Access& before, bool before_write, const Access& now,
                                bool now_write, uintptr_t address) {
  set_error(Text("shared-memory race (") + kind + ", no barrier between): " + thread_name(now.thread()) + " " +
            access_name(now, now_write) + " at " + code_address(now.pc) + " " + word_name(address) + ", which " +
            thread_name(before.thread()) + " " + (before_write ? "wrote" : "read") +
            (before.atomic() ? " atomically" : "") + " at " + code_address(before.pc) +
            " in the same barrier interval");
  abort_launch(kLaunchRace);
}

// The hook behind every instrumented access of `size` bytes at `p`.
__attribute__((noinline)) static void check_slow(uintptr_t a, unsigned size, bool write, bool atomic,
                                                 const void* pc) {
  if (!in_launch) return;
  const unsigned thread = current_thread();
  const Access now{interval, static_cast<int32_t>(reinterpret_cast<uintptr_t>(pc) - pc_origin()),
                   warp_syncs[thread / 32], thread | (atomic ? Access::kAtomic : 0u)};
  const uintptr_t last = a + size - 1 < hi ? a + size - 1 : hi - 1;
  for (uintptr_t w = (a - lo) / 4; w <= (last - lo) / 4; ++w) {
    if (!tracked[w]) continue;
    Word& word = words[w];
    const uintptr_t address = lo + w * 4;
    for (const Access& earlier : word.writes)
      if (conflict(earlier, now))
        report(write ? "write after write" : "read after write", earlier, true, now, write, address);
    if (write)
      for (const Access& earlier : word.reads)
        if (conflict(earlier, now)) report("write after read", earlier, false, now, true, address);
    Access* slots = write ? word.writes : word.reads;
    // Slot 0 unless it holds another thread's access of this interval; left
    // as it is when it holds an access that differs from this one only in pc.
    Access& slot = slots[slots[0].interval == interval && slots[0].thread() != thread];
    if (slot.interval != now.interval || slot.who != now.who || slot.warp_syncs != now.warp_syncs) {
      slot.interval = now.interval;
      slot.pc = now.pc;
      slot.warp_syncs = now.warp_syncs;
      slot.who = now.who;
    }
  }
}

static inline void check(const volatile void* p, unsigned size, bool write, bool atomic, const void* pc) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (__builtin_expect(a - lo < hi - lo, 0)) check_slow(a, size, write, atomic, pc);
}

}  // namespace racecheck

void track_shared(const void* p, size_t n, const char* name) { racecheck::track(p, n, name); }

// ----- the hooks that -fsanitize=thread code calls (ThreadSanitizer's ABI) -----

#define GPUCNN_EMU_PC __builtin_return_address(0)
extern "C" {
void __tsan_init() { racecheck::track(dynamic_shared, sizeof dynamic_shared, "dynamic shared memory"); }
void __tsan_read_range(const void* p, unsigned long n) { racecheck::check(p, (unsigned)n, false, false, GPUCNN_EMU_PC); }
void __tsan_write_range(void* p, unsigned long n) { racecheck::check(p, (unsigned)n, true, false, GPUCNN_EMU_PC); }
#define GPUCNN_EMU_TSAN_ACCESS(N)                                                                             \
  void __tsan_read##N(const void* p) { racecheck::check(p, N, false, false, GPUCNN_EMU_PC); }               \
  void __tsan_write##N(void* p) { racecheck::check(p, N, true, false, GPUCNN_EMU_PC); }                    \
  void __tsan_unaligned_read##N(const void* p) { racecheck::check(p, N, false, false, GPUCNN_EMU_PC); }     \
  void __tsan_unaligned_write##N(void* p) { racecheck::check(p, N, true, false, GPUCNN_EMU_PC); }          \
  void __tsan_volatile_read##N(const void* p) { racecheck::check(p, N, false, false, GPUCNN_EMU_PC); }      \
  void __tsan_volatile_write##N(void* p) { racecheck::check(p, N, true, false, GPUCNN_EMU_PC); }
GPUCNN_EMU_TSAN_ACCESS(1)
GPUCNN_EMU_TSAN_ACCESS(2)
GPUCNN_EMU_TSAN_ACCESS(4)
GPUCNN_EMU_TSAN_ACCESS(8)
GPUCNN_EMU_TSAN_ACCESS(16)

// Atomics: checked as atomic accesses, then done (the memory order numbers are
// GCC's __ATOMIC_* values).
#define GPUCNN_EMU_TSAN_ATOMIC(N, T)                                                                            \
  T __tsan_atomic##N##_load(const volatile T* p, int mo) {                                                    \
    racecheck::check(p, sizeof(T), false, true, GPUCNN_EMU_PC);                                               \
    return __atomic_load_n(p, mo);                                                                            \
  }                                                                                                           \
  void __tsan_atomic##N##_store(volatile T* p, T v, int mo) {                                                 \
    racecheck::check(p, sizeof(T), true, true, GPUCNN_EMU_PC);                                                \
    __atomic_store_n(p, v, mo);                                                                               \
  }                                                                                                           \
  GPUCNN_EMU_TSAN_RMW(N, T, exchange, __atomic_exchange_n)                                                    \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_add, __atomic_fetch_add)                                                    \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_sub, __atomic_fetch_sub)                                                    \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_and, __atomic_fetch_and)                                                    \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_or, __atomic_fetch_or)                                                      \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_xor, __atomic_fetch_xor)                                                    \
  GPUCNN_EMU_TSAN_RMW(N, T, fetch_nand, __atomic_fetch_nand)                                                  \
  bool __tsan_atomic##N##_compare_exchange_strong(volatile T* p, T* expected, T v, int mo, int fail_mo) {     \
    racecheck::check(p, sizeof(T), true, true, GPUCNN_EMU_PC);                                                \
    return __atomic_compare_exchange_n(p, expected, v, false, mo, fail_mo);                                   \
  }                                                                                                           \
  bool __tsan_atomic##N##_compare_exchange_weak(volatile T* p, T* expected, T v, int mo, int fail_mo) {       \
    racecheck::check(p, sizeof(T), true, true, GPUCNN_EMU_PC);                                                \
    return __atomic_compare_exchange_n(p, expected, v, true, mo, fail_mo);                                    \
  }
#define GPUCNN_EMU_TSAN_RMW(N, T, name, builtin)                                                               \
  T __tsan_atomic##N##_##name(volatile T* p, T v, int mo) {                                                   \
    racecheck::check(p, sizeof(T), true, true, GPUCNN_EMU_PC);                                                \
    return builtin(p, v, mo);                                                                                 \
  }
GPUCNN_EMU_TSAN_ATOMIC(8, uint8_t)
GPUCNN_EMU_TSAN_ATOMIC(16, uint16_t)
GPUCNN_EMU_TSAN_ATOMIC(32, uint32_t)
GPUCNN_EMU_TSAN_ATOMIC(64, uint64_t)
void __tsan_atomic_thread_fence(int mo) { __atomic_thread_fence(mo); }
void __tsan_atomic_signal_fence(int mo) { __atomic_signal_fence(mo); }
}  // extern "C"
#endif  // GPUCNN_EMU_RACECHECK

// Runs the whole grid; see cuda_emu.h.
int launch_grid(const char* name, const LaunchConfig* cfg, void** args, void (*plain)(const LaunchConfig*, void**),
                void (*thunk)(void*), char* error, unsigned long error_len) {
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
  rt.failure = kLaunchFailed;
  in_launch = true;
  int status = kLaunchOk;
  if (cfg->use_fibers) {
    if (run_grid_fibers(cfg, thunk, args)) status = rt.failure;
  } else if (setjmp(rt.plain_escape) == 0) {
    plain(cfg, args);
  } else {
    status = rt.failure;  // a trap, a race, or a collective reached in plain-loop mode
  }
  in_launch = false;
  rt.fibers_mode = false;
  if (status && error_len) {
    std::strncpy(error, rt.error.s, error_len - 1);
    error[error_len - 1] = 0;
  }
  pthread_mutex_unlock(&rt.lock);
  return status;
}

}  // namespace gpucnn_emu

#pragma GCC visibility pop

extern "C" __attribute__((visibility("default"))) int gpucnn_emu_sanitized(void) { return GPUCNN_EMU_ASAN; }
