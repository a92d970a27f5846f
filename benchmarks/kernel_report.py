"""Per CUDA kernel: registers, spills and shared memory (``ptxas -v``), occupancy at the block size
gpucnn launches it with, the instruction mix of its hottest loop (SASS), and on a GPU what the
driver reports for the compiled kernel.

    python benchmarks/kernel_report.py                  # sm_90, every kernels/*.cu
    python benchmarks/kernel_report.py --arch 80 --json report.json conv2d_igemm_forward.cu

Columns:
- regs, spill (bytes stored + loaded), smem (static bytes): ``ptxas -v``, via ptxas_report.py;
- threads: the block size the backend launches (the igemm tiles of conv_algorithms, else
  the one-thread-per-element block of launch.py); occ: resident threads per SM over the SM's
  maximum at that block size, limited by registers, shared memory and blocks per SM;
- loop, fma%, lds, ldg: the loop (a backward branch's range in the SASS) holding the most FMAs
  (FFMA/DFMA, or tensor-core HMMA), its instruction count, the share of FFMA/DFMA in it, its
  shared and global loads. A GEMM's loop with an FMA share f cannot issue faster than f of the
  FP32 peak;
- hmma, flop/ins, tc bound (tensor-core kernels): the HMMA instructions in that loop, the tensor
  FLOPs per issued warp instruction of the loop (2*m*n*k per HMMA, e.g. 2048 for
  HMMA.1688.F32.TF32), and the upper bound that implies on the fraction of the tensor-core peak:
  a sub-partition issues at most one warp instruction per clock, and its dense peak is
  TENSOR_PEAK_PER_CLOCK FLOP per clock (sm_90 TF32: 512), so the loop reaches at most
  min(1, flop/ins / peak);
- on a GPU (``--gpu``, default when CuPy sees one): regs and local (spill) bytes of the kernel
  NVRTC built for that device, and the occupancy the driver computes at the launch block size
  (``cuOccupancyMaxActiveBlocksPerMultiprocessor``): the ceiling of the achieved occupancy.

Needs nvcc, and cuobjdump (on PATH or from ``pip install nvidia-cuda-cuobjdump``). A static
report is a proxy, not a timing: ``gpucnn bench`` times the kernels.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ptxas_report import KERNELS, ptxas_info  # noqa: E402  (a sibling script)

# Per-SM limits: threads, registers, blocks, shared memory usable by blocks (bytes).
SM_LIMITS = {
    "75": dict(threads=1024, registers=65536, blocks=16, smem=64 * 1024),
    "80": dict(threads=2048, registers=65536, blocks=32, smem=164 * 1024),
    "86": dict(threads=1536, registers=65536, blocks=16, smem=100 * 1024),
    "89": dict(threads=1536, registers=65536, blocks=24, smem=100 * 1024),
    "90": dict(threads=2048, registers=65536, blocks=32, smem=228 * 1024),
}
SMEM_RESERVED_PER_BLOCK = 1024  # the driver's own shared memory per block (sm_80 and newer)

FMA_OPS = ("FFMA", "DFMA", "FFMA2")
#: FLOPs of one HMMA warp instruction, by its shape suffix (m, n, k digits): 2*m*n*k.
HMMA_FLOPS = {"1688": 2 * 16 * 8 * 8, "16816": 2 * 16 * 8 * 16, "1684": 2 * 16 * 8 * 4}
#: Dense tensor-core FLOPs per clock per SM sub-partition (a quarter SM), FP32 accumulation:
#: A100 156 TFLOP/s TF32 over 108 SMs x 4 x 1.41 GHz = 256; H100 SXM 495 over 132 x 4 x 1.83 GHz = 512.
TENSOR_PEAK_PER_CLOCK = {"80": {"TF32": 256, "BF16": 512}, "90": {"TF32": 512, "BF16": 1024}}
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def launch_threads(kernel: str) -> int:
    """Threads per block the backend launches ``kernel`` with."""
    from gpucnn.backend import conv_algorithms
    from gpucnn.backend.launch import ELEMENTWISE_THREADS

    precision = kernel.rsplit("_", 1)[-1]  # the entry points end in _f32, _tf32 or _bf16
    for op, tiles in conv_algorithms.PRECISION_TILES.get(precision, conv_algorithms.TILES).items():
        for name, tile in tiles.items():
            if kernel.startswith(f"conv2d_{op}_igemm_{name}_"):
                return tile.threads
    return ELEMENTWISE_THREADS


def occupancy(arch: str, registers: int, smem: int, threads: int) -> float:
    """Resident threads per SM over the SM's maximum, for blocks of ``threads``."""
    lim = SM_LIMITS[arch]
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    blocks = min(lim["registers"] // (regs_per_warp * warps), lim["threads"] // (warps * 32), lim["blocks"])
    if smem:
        blocks = min(blocks, lim["smem"] // (smem + SMEM_RESERVED_PER_BLOCK))
    return blocks * warps * 32 / lim["threads"]


def cuobjdump() -> str | None:
    """cuobjdump on PATH, or the one pip's NVIDIA packages install next to the Python packages."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for base in map(Path, sys.path):
        for candidate in (base / "nvidia/cu13/bin/cuobjdump", base / "nvidia/cuda_cuobjdump/bin/cuobjdump"):
            if candidate.is_file():
                return str(candidate)
    return None


def hot_loops(source: Path, arch: str, tool: str) -> dict[str, dict]:
    """Per kernel of ``source``: instruction mix of the loop with the most FMAs in the sm_<arch> SASS."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernels.cubin"
        subprocess.run(["nvcc", "-cubin", f"-arch=sm_{arch}", "-std=c++17", f"-I{KERNELS}", str(source),
                        "-o", str(cubin)], check=True, capture_output=True, text=True)
        sass = subprocess.run([tool, "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
    functions, current = {}, None
    for line in sass.splitlines():
        if m := re.match(r"\s*Function : (\S+)", line):
            current = functions.setdefault(m.group(1), [])
        elif current is not None and (m := INSTRUCTION.search(line)):
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return {name: _hottest_loop(instructions) for name, instructions in functions.items()}


def _hmma_flops(op: str) -> int:
    """FLOPs of one HMMA instruction ``op`` (e.g. "HMMA.1688.F32.TF32"), 0 for anything else."""
    parts = op.split(".")
    return HMMA_FLOPS.get(parts[1], 0) if parts[0] == "HMMA" and len(parts) > 1 else 0


def _hottest_loop(instructions) -> dict:
    best = {}
    for address, op, operands in instructions:
        target = re.search(r"0x([0-9a-f]+)", operands)
        if not op.startswith("BRA") or not target or int(target.group(1), 16) >= address:
            continue
        body = [o for a, o, _ in instructions if int(target.group(1), 16) <= a <= address and not o.startswith("NOP")]
        fma = sum(o.split(".")[0] in FMA_OPS for o in body)
        hmma = [o for o in body if _hmma_flops(o)]
        work = fma + len(hmma)
        if not best or work > best["loop_work"] or (work == best["loop_work"] and len(body) < best["loop"]):
            best = dict(loop=len(body), loop_work=work, loop_fma=fma, fma_share=fma / len(body),
                        lds=sum(o.startswith("LDS") for o in body), ldg=sum(o.startswith("LDG") for o in body),
                        hmma=len(hmma), hmma_type=hmma[0].split(".")[-1] if hmma else None,
                        tensor_flops_per_instruction=sum(map(_hmma_flops, hmma)) / len(body))
    return best


def tensor_core_bound(row: dict, arch: str) -> float | None:
    """min(1, tensor FLOPs per instruction / peak per clock): the most of the tensor peak the loop can reach."""
    peak = TENSOR_PEAK_PER_CLOCK.get(arch, {}).get(row.get("hmma_type"))
    if not row.get("hmma") or peak is None:
        return None
    return min(1.0, row["tensor_flops_per_instruction"] / peak)


def gpu_columns(source: Path, kernels: list[str]) -> dict[str, dict]:
    """Per kernel, what the driver reports for the NVRTC build the cuda backend runs."""
    import cupy
    from cupy.cuda import driver

    from gpucnn.backend.cuda import COMPILE_OPTIONS
    from gpucnn.backend.cupy_launcher import load_module

    module = load_module(source, COMPILE_OPTIONS)
    max_threads = cupy.cuda.Device().attributes["MaxThreadsPerMultiProcessor"]
    out = {}
    for name in kernels:
        kernel = module.get_function(name)
        threads = launch_threads(name)
        blocks = driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, threads, 0)
        out[name] = dict(gpu_regs=kernel.num_regs, gpu_local=kernel.local_size_bytes,
                         gpu_occupancy=blocks * threads / max_threads)
    return out


def report(sources, arch: str, gpu: bool) -> list[dict]:
    """One row per kernel of ``sources`` (paths), see the module docstring for the columns."""
    tool = cuobjdump()
    rows = []
    for source in sources:
        ptxas = ptxas_info(source, arch)
        loops = hot_loops(source, arch, tool) if tool else {}
        on_gpu = gpu_columns(source, [r["kernel"] for r in ptxas]) if gpu else {}
        for r in ptxas:
            threads = launch_threads(r["kernel"])
            row = {**r, "threads": threads, "occupancy": occupancy(arch, r["registers"], r["smem"], threads),
                   **loops.get(r["kernel"], {}), **on_gpu.get(r["kernel"], {})}
            row["tensor_core_bound"] = tensor_core_bound(row, arch)
            rows.append(row)
    return rows


def _gpu_present() -> bool:
    try:
        from gpucnn.backend import cuda_is_available
        return cuda_is_available()
    except ImportError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", help="file names in kernels/ (default: every *.cu)")
    parser.add_argument("--arch", default="90", choices=sorted(SM_LIMITS), help="compute capability (default 90)")
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="add the driver's numbers (default: when CuPy sees a GPU)")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("kernel_report: nvcc not found on PATH", file=sys.stderr)
        return 2
    if cuobjdump() is None:
        print("kernel_report: no cuobjdump (pip install nvidia-cuda-cuobjdump): no loop columns", file=sys.stderr)
    sources = [KERNELS / s for s in args.sources] or sorted(KERNELS.glob("*.cu"))
    gpu = _gpu_present() if args.gpu is None else args.gpu
    rows = report(sources, args.arch, gpu)

    tensor = any(r.get("hmma") for r in rows)
    header = (f"{'kernel':<40} {'threads':>7} {'regs':>4} {'spill':>5} {'smem':>6} {'occ':>5} "
              f"{'loop':>5} {'fma%':>5} {'lds':>4} {'ldg':>4}")
    header += f" {'hmma':>4} {'flop/ins':>8} {'tc bound':>8}" if tensor else ""
    header += f" {'gpu regs':>8} {'local':>5} {'gpu occ':>7}" if gpu else ""
    print(f"sm_{args.arch}")
    print(header)
    print("-" * len(header))
    for r in rows:
        fma = f"{100 * r['fma_share']:.0f}" if "fma_share" in r else "-"
        line = (f"{r['kernel']:<40} {r['threads']:>7} {r['registers']:>4} {r['spill_stores'] + r['spill_loads']:>5} "
                f"{r['smem']:>6} {100 * r['occupancy']:>4.0f}% {r.get('loop', '-'):>5} {fma:>5} "
                f"{r.get('lds', '-'):>4} {r.get('ldg', '-'):>4}")
        if tensor:
            bound = "-" if r["tensor_core_bound"] is None else f"{100 * r['tensor_core_bound']:.0f}%"
            line += (f" {r.get('hmma', 0):>4} {r.get('tensor_flops_per_instruction', 0):>8.0f} {bound:>8}"
                     if r.get("hmma") else f" {'-':>4} {'-':>8} {'-':>8}")
        if gpu:
            line += f" {r['gpu_regs']:>8} {r['gpu_local']:>5} {100 * r['gpu_occupancy']:>6.0f}%"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
