"""The machine's limits that ``peak_fraction`` divides by: FP32 FLOP/s and memory bandwidth.

CPU: cores x clock x FP32 FLOP per cycle per core from the vector units the
CPU reports. The FLOP/cycle table assumes two FMA pipes per core, as in
every x86 core of the last decade with AVX2 (Intel Haswell and later, AMD
Zen 2 and later; Zen 1 splits a 256-bit FMA into two halves and reaches only
half of it). Memory bandwidth of a CPU cannot be read from the system, so it
is *measured*: a copy of a buffer larger than the last-level cache,
counting read and write bytes (STREAM "copy"); small pooling cases that fit
in cache can exceed it.

GPU: the card's FP32 peak from its properties (SMs x FP32 cores per SM for
its compute capability x 2 FLOP per FMA x boost clock) and its DRAM
bandwidth (2 transfers per memory clock x bus width).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

# FP32 FLOP per cycle per core, by the widest vector unit with FMA:
# 2 FMA pipes x lanes x 2 FLOP per FMA.
FLOP_PER_CYCLE = (
    ("avx512f", 2 * 16 * 2, "AVX-512: 2 FMA pipes x 16 FP32 lanes x 2 FLOP"),
    ("fma", 2 * 8 * 2, "AVX2+FMA: 2 FMA pipes x 8 FP32 lanes x 2 FLOP"),
    ("avx", 8 + 8, "AVX without FMA: one 8-lane add + one 8-lane multiply"),
    ("sse", 4 + 4, "SSE: one 4-lane add + one 4-lane multiply"),
)

# FP32 cores per SM by compute capability (CUDA C Programming Guide, "Arithmetic Instructions").
FP32_CORES_PER_SM = {(7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64}
FP32_CORES_PER_SM_DEFAULT = 128  # 8.6, 8.7, 8.9, 9.0, 10.x, 12.x


@dataclass
class Peak:
    """The limits of one device and where each number came from."""

    device: str
    flops: float  # FP32 FLOP/s
    bandwidth: float  # bytes/s
    flops_note: str
    bandwidth_note: str

    def to_dict(self) -> dict:
        return asdict(self)


def _cpuinfo() -> list[dict]:
    """``/proc/cpuinfo`` as one dict per logical CPU (empty where the file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        cpus.append(entry)
    return cpus


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cpu_cores(cpuinfo=None) -> int:
    """Physical cores this process may run on (SMT siblings share one core's FMA pipes)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    usable = _usable_cpus()
    cores = {(c.get("physical id"), c.get("core id")) for c in cpuinfo
             if int(c.get("processor", -1)) in usable and "core id" in c}
    return len(cores) or len(usable)


def cpu_clock_hz(cpuinfo=None) -> tuple[float, str]:
    """(clock in Hz, where it came from): cpufreq's maximum if the kernel exposes it, else cpuinfo's MHz."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) * 1e3, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    mhz = [float(c["cpu MHz"]) for c in cpuinfo if "cpu MHz" in c]
    if mhz:
        return max(mhz) * 1e6, "/proc/cpuinfo 'cpu MHz' (the current clock as reported; boost may be higher)"
    raise RuntimeError("bench peak: cannot read the CPU clock (no cpufreq and no 'cpu MHz' in /proc/cpuinfo)")


def cpu_flop_per_cycle(flags) -> tuple[int, str]:
    """(FP32 FLOP per cycle per core, the assumption) from the CPU's feature flags."""
    flags = set(flags)
    for flag, flop, note in FLOP_PER_CYCLE:
        if flag in flags and (flag != "fma" or "avx2" in flags):
            return flop, note
    return 2, "scalar: one add + one multiply per cycle (no vector flags found)"


def _copy_bandwidth(nbytes: int = 128 * 2**20, repeats: int = 5) -> float:
    """Bytes/s of ``numpy.copyto`` (read + write) of a ``nbytes`` buffer: the best of ``repeats``.

    One thread's memcpy, which on the machines measured so far reaches more
    than a Numba ``prange`` copy loop (it uses streaming stores).
    """
    src = np.ones(nbytes // 4, np.float32)
    dst = np.zeros_like(src)  # touched, so page faults stay out of the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def cpu_peak(measure_bandwidth: bool = True, threads: int | None = None) -> Peak:
    """The CPU's FP32 peak (cores x clock x FLOP/cycle) and its measured copy bandwidth.

    ``threads``: the benchmark runs with this many threads, so the peak is that of
    ``min(threads, cores)`` cores (the copy bandwidth is one thread's either way).
    """
    info = _cpuinfo()
    model = info[0].get("model name", platform.processor() or "unknown CPU") if info else platform.processor()
    cores = cpu_cores(info)
    if threads is not None:
        cores = min(cores, threads)
    clock, clock_source = cpu_clock_hz(info)
    flags = info[0].get("flags", "").split() if info else []
    per_cycle, assumption = cpu_flop_per_cycle(flags)
    bandwidth = _copy_bandwidth() if measure_bandwidth else float("nan")
    return Peak(
        device=f"{model}, {cores} core{'s' if cores != 1 else ''}",
        flops=cores * clock * per_cycle,
        bandwidth=bandwidth,
        flops_note=(f"{cores} cores x {clock / 1e9:.3f} GHz ({clock_source}) x {per_cycle} FP32 FLOP/cycle "
                    f"({assumption})"),
        bandwidth_note="measured: numpy.copyto of 128 MiB (read + write bytes), best of 5",
    )


def gpu_peak(device: int | None = None) -> Peak:
    """The current (or given) CUDA device's FP32 peak and DRAM bandwidth from its properties."""
    import cupy
    from cupy.cuda import runtime

    dev = cupy.cuda.Device(device)
    props = runtime.getDeviceProperties(dev.id)

    def attr(name: str, prop: str) -> int:
        # Attributes first: CUDA 13 dropped clockRate and memoryClockRate from cudaDeviceProp.
        try:
            return int(runtime.deviceGetAttribute(getattr(runtime, name), dev.id))
        except (AttributeError, runtime.CUDARuntimeError):
            if prop in props:
                return int(props[prop])
            raise RuntimeError(f"bench peak: this CUDA runtime reports neither {name} nor {prop}") from None

    major, minor = (int(v) for v in (dev.compute_capability[:-1], dev.compute_capability[-1]))
    sms = attr("cudaDevAttrMultiProcessorCount", "multiProcessorCount")
    clock_khz = attr("cudaDevAttrClockRate", "clockRate")
    mem_khz = attr("cudaDevAttrMemoryClockRate", "memoryClockRate")
    bus_bits = attr("cudaDevAttrGlobalMemoryBusWidth", "memoryBusWidth")
    cores = FP32_CORES_PER_SM.get((major, minor), FP32_CORES_PER_SM_DEFAULT)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return Peak(
        device=f"{name} (sm_{major}{minor})",
        flops=sms * cores * 2 * clock_khz * 1e3,
        bandwidth=2 * mem_khz * 1e3 * bus_bits / 8,
        flops_note=f"{sms} SMs x {cores} FP32 cores x 2 FLOP x {clock_khz / 1e6:.3f} GHz boost clock",
        bandwidth_note=f"2 x {mem_khz / 1e6:.3f} GHz memory clock x {bus_bits}-bit bus",
    )


def peak_for(backend_name: str, measure_bandwidth: bool = True, threads: int | None = None) -> Peak:
    """The peak of the device a backend computes on (``cuda-emu`` runs on the CPU with ``threads``)."""
    return gpu_peak() if backend_name == "cuda" else cpu_peak(measure_bandwidth, threads)
