"""Which convolution kernel runs on which shape, and how the implicit-GEMM kernels are launched.

The ``cuda`` and ``cuda-emu`` backends have two families of convolution kernels:

- ``direct`` (``kernels/conv2d_direct.cu``): one thread per output element, every
  dtype, every shape; the reference the fast kernels are tested against;
- ``igemm`` (``kernels/conv2d_igemm_*.cu``): implicit-GEMM kernels with shared-memory
  tiles and 8x8 register tiles per thread, float32, in a few tile
  configurations per op (``FORWARD_TILES`` and friends below); with the conv
  precision (``precision.py``) "tf32" or "bf16", the tensor-core kernels
  (``TENSOR_CORE_SOURCES``, tiles ``PRECISION_TILES``) on a GPU of sm_80 or later.

``choose(op, geom, dtype)`` is the rule that picks one per shape, written down
here with its reasons; ``force(...)`` (or the ``GPUCNN_CONV_ALGO`` environment
variable) overrides it, so tests can run every kernel and every tile in turn;
``autotune(True)`` makes a GPU time every candidate once per shape and keep the
fastest, as cuDNN's algorithm search does. ``str(choice)`` is what ``gpucnn
bench`` prints beside its timings, and each new choice is logged once on the
``gpucnn.conv`` logger at DEBUG level.

The launch functions (``conv2d_forward`` ...) take the backend they run on and
use only its ``xp``, its ``empty`` (outputs; tests wrap it with guard cells)
and its ``function(source, name)`` (a cached kernel of its launcher).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from . import precision as conv_precision
from .base import check_conv_activation
from .geometry import ConvGeometry
from .launch import elementwise_launch, gemm_tile_launch

log = logging.getLogger("gpucnn.conv")

OPS = ("forward", "backward_data", "backward_filter")

SOURCES = {
    "forward": "conv2d_igemm_forward.cu",
    "backward_data": "conv2d_igemm_backward_data.cu",
    "backward_filter": "conv2d_igemm_backward_filter.cu",
}

#: The tensor-core kernels per precision and op: entry points and arguments as
#: the FP32 ones, named ``..._<tile>_<precision>``, tiles in PRECISION_TILES.
_TENSOR_CORE_FILES = {"forward": "conv2d_igemm_forward_tc.cu", "backward_data": "conv2d_igemm_backward_data_tc.cu",
                      "backward_filter": "conv2d_igemm_backward_filter_tc.cu"}
TENSOR_CORE_SOURCES = {"tf32": _TENSOR_CORE_FILES, "bf16": _TENSOR_CORE_FILES}

#: Reduction rows per shared tile (BK) of the FP32 and TF32 igemm kernels (TileConfig.k).
TILE_K = 8
#: BK of the BF16 kernels: mma.sync.m16n8k16 reduces 16 rows at a time.
BF16_TILE_K = 16
#: The kernels split a pixel's filter taps into a 32-bit mask (kernels/igemm_tile.cuh).
MAX_TAPS = 32
_INT32_LIMIT = 2**31
_MAX_GRID_YZ = 65535


@dataclass(frozen=True)
class TileConfig:
    """One compiled tile configuration: ``rows`` x ``cols`` outputs per block of ``threads``.

    Rows are the GEMM's M (output pixels; output channels for backward-filter),
    cols its N (output channels; filter elements for backward-filter).
    """

    rows: int
    cols: int
    threads: int
    k: int = TILE_K  # reduction rows per shared tile (BK): the unit of backward-filter's tiles_per_split

    @property
    def name(self) -> str:
        return f"{self.rows}x{self.cols}"

    def grid(self, m: int, n: int, layers: int = 1) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Grid and block covering an ``m`` x ``n`` GEMM output ``layers`` times (blockIdx.z)."""
        return gemm_tile_launch(m, n, self.rows, self.cols, self.threads, layers)


def _tiles(*configs: TileConfig) -> dict[str, TileConfig]:
    return {c.name: c for c in configs}


# The extern "C" entry points of each kernel file, largest tile first. Each
# thread owns 8x8 outputs, so threads = rows*cols/64.
FORWARD_TILES = _tiles(TileConfig(128, 128, 256), TileConfig(128, 64, 128), TileConfig(64, 64, 64),
                       TileConfig(128, 32, 64))
BACKWARD_DATA_TILES = FORWARD_TILES
BACKWARD_FILTER_TILES = _tiles(TileConfig(128, 128, 256), TileConfig(128, 64, 128), TileConfig(64, 128, 128),
                               TileConfig(64, 64, 64))
TILES = {"forward": FORWARD_TILES, "backward_data": BACKWARD_DATA_TILES,
         "backward_filter": BACKWARD_FILTER_TILES}
# The tensor-core tiles (kernels/igemm_tc.cuh): the FP32 names, each warp
# owning a 64x32 warp tile, except the two large ones, whose warps own 64x64
# (an mma per 5-8 loop instructions instead of per 9.5: see the tensor-core
# section of benchmarks/RESULTS.md): 128x128 with 4 warps, and 128x256.
_TENSOR_CORE_TILES = _tiles(TileConfig(128, 256, 256), TileConfig(128, 128, 128), TileConfig(128, 64, 128),
                            TileConfig(64, 64, 64), TileConfig(128, 32, 64))
TENSOR_CORE_TILES = {"forward": _TENSOR_CORE_TILES, "backward_data": _TENSOR_CORE_TILES,
                     "backward_filter": _tiles(TileConfig(128, 256, 256), TileConfig(128, 128, 128),
                                               TileConfig(128, 64, 128), TileConfig(64, 128, 128),
                                               TileConfig(64, 64, 64))}
# The BF16 tiles (kernels/igemm_tc.cuh): the tensor-core ones with BK = 16, but
# 128x256 (its BK = 16 buffers would pass the 48 KB of static shared memory);
# 128x128 has eight 64x32 warps (256 threads): four 64x64 ones spilled at BK = 16.
_BF16_TILES = _tiles(TileConfig(128, 128, 256, BF16_TILE_K), TileConfig(128, 64, 128, BF16_TILE_K),
                     TileConfig(64, 64, 64, BF16_TILE_K), TileConfig(128, 32, 64, BF16_TILE_K))
BF16_TILES = {"forward": _BF16_TILES, "backward_data": _BF16_TILES,
              "backward_filter": _tiles(TileConfig(128, 128, 256, BF16_TILE_K), TileConfig(128, 64, 128, BF16_TILE_K),
                                        TileConfig(64, 128, 128, BF16_TILE_K), TileConfig(64, 64, 64, BF16_TILE_K))}
#: The tiles of each tensor-core precision, per op.
PRECISION_TILES = {"tf32": TENSOR_CORE_TILES, "bf16": BF16_TILES}

#: A grid with fewer blocks than this leaves multiprocessors idle: two blocks
#: per SM of the largest supported GPU (132 SMs on an H100 SXM).
MIN_BLOCKS = 264
#: Backward-filter split-K: each slice reduces at least this many BK-tiles of
#: pixels (shorter slices spend more on the epilogue and the reduction pass
#: than they save), in at most MAX_SPLITS slices, with a workspace of at most
#: MAX_WORKSPACE_BYTES.
MIN_TILES_PER_SPLIT = 16
MAX_SPLITS = 64
MAX_WORKSPACE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Choice:
    """The kernel one op runs on one shape: ``algorithm`` "direct" or "igemm", its tile, split-K factor.

    ``precision``: "fp32", or "tf32" or "bf16" for a tensor-core igemm kernel;
    ``precision_note``: why it is "fp32" although the setting asked for more
    ("" when it is what was asked). Both show in ``str``: "igemm 128x64 tf32",
    "igemm 128x64 [tf32 asked: sm_75 has no tensor cores for it]".
    """

    op: str
    algorithm: str
    tile: TileConfig | None = None
    splits: int = 1
    tiles_per_split: int = 0
    reason: str = ""
    precision: str = "fp32"
    precision_note: str = ""

    def __str__(self) -> str:
        text = "direct" if self.algorithm == "direct" else f"igemm {self.tile.name}"
        text += f" split-K {self.splits}" if self.splits > 1 else ""
        text += f" {self.precision}" if self.precision != "fp32" else ""
        return text + (f" [{self.precision_note}]" if self.precision_note else "")


# --- the rule ---------------------------------------------------------------

def gemm_shape(op: str, g: ConvGeometry) -> tuple[int, int, int]:
    """(M, N, reduction) of the implicit GEMM of ``op`` on ``g``.

    forward: N*P*Q pixels x K channels, over C*R*S; backward_data: the pixels of
    the largest output phase x C channels, over K times the taps of that phase;
    backward_filter: K channels x C*R*S filter elements, over N*P*Q pixels.
    """
    if op == "forward":
        return g.N * g.P * g.Q, g.K, g.C * g.R * g.S
    if op == "backward_data":
        (sh, sw), (dh, dw) = g.stride, g.dilation
        return (g.N * -(-g.H // sh) * -(-g.W // sw), g.C,
                g.K * _phase_taps(g.R, sh, dh) * _phase_taps(g.S, sw, dw))
    if op == "backward_filter":
        return g.K, g.C * g.R * g.S, g.N * g.P * g.Q
    raise ValueError(f"unknown convolution op {op!r}; known: {', '.join(OPS)}")


def _phase_taps(R: int, stride: int, dilation: int) -> int:
    """Most filter taps of one axis that reach a single output phase of backward-data."""
    step = stride // np.gcd(stride, dilation)
    return -(-R // step)


def igemm_unsupported(op: str, g: ConvGeometry, dtype) -> str | None:
    """Why the igemm kernels cannot run ``op`` on ``g`` in ``dtype``, or None when they can.

    They are float32 only; they keep a pixel's taps in a 32-bit mask
    (forward and backward-data); they index within one image, and count
    GEMM rows, in 32 bits (the image bases are 64-bit pointers); and grid y
    and z hold at most 65535 blocks.
    """
    if np.dtype(dtype) != np.float32:
        return f"the igemm kernels are float32 only, got {np.dtype(dtype)}"
    m, n, _ = gemm_shape(op, g)
    if op == "forward" and g.R * g.S > MAX_TAPS:
        return f"{g.R}x{g.S} filter has more than {MAX_TAPS} taps"
    if op == "backward_data" and gemm_shape(op, g)[2] > g.K * MAX_TAPS:
        return f"more than {MAX_TAPS} taps reach one output phase"
    if -(-n // 32) > _MAX_GRID_YZ or g.stride[0] * g.stride[1] > _MAX_GRID_YZ:
        return f"GEMM N={n} or stride {g.stride} needs more than {_MAX_GRID_YZ} blocks along grid y or z"
    sizes = {"N*P*Q": g.N * g.P * g.Q, "one image of x": g.C * g.H * g.W, "one image of y": g.K * g.P * g.Q,
             "w": g.K * g.C * g.R * g.S, "GEMM rows": m}
    for what, size in sizes.items():
        if size + 2 * TILE_K * max(g.R, g.S, 1) >= _INT32_LIMIT:
            return f"{what} has {size} elements, past the kernels' 32-bit indices"
    return None


def _pick_tile(tiles: dict[str, TileConfig], m: int, n: int, layers: int = 1) -> tuple[TileConfig, str]:
    """The largest tile that wastes little on ragged edges and still fills the GPU.

    Larger tiles reuse each gathered element more (80% of the hot loop is FMAs
    at 128x128, 73-76% at the smaller tiles, sm_90), but (a) a tile much wider
    than the GEMM computes padding: only tiles whose padded area is within 25%
    of the best-fitting tile's qualify; (b) a grid of fewer than MIN_BLOCKS
    blocks leaves multiprocessors idle, so among the qualifying tiles the
    largest one that still gives MIN_BLOCKS wins (the squarer one on a tie:
    it reuses each loaded element more), else the one giving most blocks.
    ``layers`` multiplies the grid (backward-filter's most split-K slices).
    """
    def padded(t):
        return -(-m // t.rows) * t.rows * -(-n // t.cols) * t.cols

    def blocks(t):
        return -(-m // t.rows) * -(-n // t.cols) * layers

    best_fit = min(padded(t) for t in tiles.values())
    fitting = [t for t in tiles.values() if padded(t) <= 1.25 * best_fit]
    filling = [t for t in fitting if blocks(t) >= MIN_BLOCKS]
    if filling:
        tile = max(filling, key=lambda t: (t.rows * t.cols, min(t.rows, t.cols)))
        return tile, f"largest tile within 25% of the least padding that gives >= {MIN_BLOCKS} blocks"
    tile = max(fitting, key=lambda t: (blocks(t), min(t.rows, t.cols)))
    return tile, f"no tile gives {MIN_BLOCKS} blocks: the one giving most"


def _most_splits(g: ConvGeometry, tile_k: int = TILE_K) -> int:
    """The most split-K slices backward-filter's reduction allows with BK = ``tile_k`` (see ``_split_k``)."""
    tiles = -(-(g.N * g.P * g.Q) // tile_k)
    return max(1, min(tiles // MIN_TILES_PER_SPLIT, MAX_SPLITS))


def _split_k(tile: TileConfig, g: ConvGeometry) -> tuple[int, int]:
    """(splits, tiles_per_split) of backward-filter's reduction over N*P*Q pixels.

    Its output (K x C*R*S) is small and its reduction long: split the reduction
    until the grid has MIN_BLOCKS blocks, keeping MIN_TILES_PER_SPLIT tiles per
    slice, at most MAX_SPLITS slices and MAX_WORKSPACE_BYTES of partial sums.
    """
    m, n, length = gemm_shape("backward_filter", g)
    tiles = -(-length // tile.k)
    blocks = -(-m // tile.rows) * -(-n // tile.cols)
    splits = max(1, min(-(-MIN_BLOCKS // blocks), tiles // MIN_TILES_PER_SPLIT, MAX_SPLITS,
                        MAX_WORKSPACE_BYTES // (4 * m * n)))
    per_split = -(-tiles // splits)
    return -(-tiles // per_split), per_split  # no empty slice


def rule(op: str, g: ConvGeometry, dtype) -> Choice:
    """The kernel ``op`` runs on ``g`` when nothing is forced or autotuned.

    1. direct where igemm cannot run (float64, more than 32 taps, 32-bit limits);
    2. direct for forward and backward-data when the GEMM's N (output channels
       of the op: K forward, C backward-data) is at most 4 or its reduction is
       under two tiles (C*R*S < 16: 1-channel images): most of every 32-wide
       tile would be idle or padding, while the direct kernel has no barriers,
       no shared memory, and reads each input from L1;
    3. backward-filter always igemm: the direct kernel has one thread per
       filter element looping over all N*P*Q pixels (a few hundred threads on
       a first layer), split-K gives every multiprocessor work;
    4. the tile by ``_pick_tile`` (for backward-filter counting the blocks
       split-K can add); backward-filter's split-K by ``_split_k``.
    """
    why_not = igemm_unsupported(op, g, dtype)
    if why_not:
        return Choice(op, "direct", reason=why_not)
    m, n, length = gemm_shape(op, g)
    if op != "backward_filter" and (n <= 4 or length < 2 * TILE_K):
        return Choice(op, "direct", reason=f"GEMM N={n}, reduction {length}: too small for a tile")
    return _igemm_choice(op, g, *_pick(op, g))


def _pick(op: str, g: ConvGeometry, tiles: dict[str, TileConfig] | None = None) -> tuple[TileConfig, str]:
    """``_pick_tile`` among ``tiles`` (default ``TILES[op]``) for ``op``, counting the grid's z
    (backward-data's phases, split-K slices)."""
    m, n, _ = gemm_shape(op, g)
    tiles = TILES[op] if tiles is None else tiles
    tile_k = next(iter(tiles.values())).k  # one BK per tile set
    layers = {"forward": 1, "backward_data": g.stride[0] * g.stride[1], "backward_filter": _most_splits(g, tile_k)}
    return _pick_tile(tiles, m, n, layers[op])


def _igemm_choice(op: str, g: ConvGeometry, tile: TileConfig, reason: str, splits: int | None = None) -> Choice:
    if op != "backward_filter":
        return Choice(op, "igemm", tile, reason=reason)
    if splits is None:
        splits, per_split = _split_k(tile, g)
    else:
        tiles = -(-(g.N * g.P * g.Q) // tile.k)
        per_split = -(-tiles // max(1, splits))
        splits = -(-tiles // per_split)
    return Choice(op, "igemm", tile, splits, per_split, reason)


# --- forcing, autotuning, the choice per shape --------------------------------

AUTOTUNE_CANDIDATE = "autotune candidate"  # the reason of each choice autotuning times
_forced: contextvars.ContextVar[dict | None] = contextvars.ContextVar("gpucnn_conv_forced", default=None)
_autotune = {"on": os.environ.get("GPUCNN_CONV_AUTOTUNE", "") not in ("", "0")}
_tuned: dict[tuple, Choice] = {}
_logged: set[tuple] = set()


def _parse_spec(op: str, spec: str) -> tuple[str, str | None]:
    """"direct" | "igemm" | "igemm:<tile>" -> (algorithm, tile name or None); ValueError otherwise."""
    algorithm, _, tile = spec.partition(":")
    if algorithm not in ("direct", "igemm") or (algorithm == "direct" and tile):
        raise ValueError(f"conv algorithm for {op}: expected 'direct', 'igemm' or 'igemm:<tile>', got {spec!r}")
    known = _known_tiles(op)
    if tile and tile not in known:
        raise ValueError(f"conv algorithm for {op}: no tile {tile!r}; known: {', '.join(known)}")
    return algorithm, tile or None


def _known_tiles(op: str) -> dict[str, TileConfig]:
    """The tiles ``force`` accepts for ``op``: the FP32 ones, and those only the tensor-core kernels have."""
    return {**BF16_TILES.get(op, {}), **TENSOR_CORE_TILES.get(op, {}), **TILES[op]}


def _env_forced() -> dict:
    """``GPUCNN_CONV_ALGO``: "igemm", "igemm:64x64" (every op that has that tile),
    or "forward=igemm:128x32,backward_filter=direct,splits=4"."""
    text = os.environ.get("GPUCNN_CONV_ALGO", "").strip()
    if not text:
        return {}
    forced = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            algorithm, _, tile = part.partition(":")
            for op in OPS:
                if not tile or tile in TILES[op]:
                    forced[op] = _parse_spec(op, part)
        elif key == "splits":
            forced["splits"] = int(value)
        elif key in OPS:
            forced[key] = _parse_spec(key, value)
        else:
            raise ValueError(f"GPUCNN_CONV_ALGO: unknown op {key!r} in {text!r}; known: {', '.join(OPS)}, splits")
    return forced


@contextlib.contextmanager
def force(forward: str | None = None, backward_data: str | None = None,
          backward_filter: str | None = None, splits: int | None = None):
    """Within the ``with`` block, run the named algorithm for each op given.

    Each is "direct", "igemm" (tile by the rule) or "igemm:<tile>" (e.g.
    "igemm:128x32"; the tiles of each op are the keys of ``TILES[op]``, and of
    ``TENSOR_CORE_TILES[op]`` at conv precision "tf32", where a tensor-core-only
    tile such as "igemm:128x256" at "fp32" (or "bf16", which has no 128x256)
    runs the rule's tile of that precision instead);
    ``splits`` forces backward-filter's split-K factor (capped so that no slice
    is empty). Where igemm cannot run a call (float64 operands, see
    ``igemm_unsupported``) the direct kernel runs and ``choose`` says why.
    Raises ValueError for an unknown algorithm or tile.
    """
    forced = dict(_forced.get() or {})
    for op, spec in zip(OPS, (forward, backward_data, backward_filter)):
        if spec is not None:
            forced[op] = _parse_spec(op, spec)
    if splits is not None:
        if splits < 1:
            raise ValueError(f"force: splits must be positive, got {splits}")
        forced["splits"] = int(splits)
    token = _forced.set(forced)
    try:
        yield
    finally:
        _forced.reset(token)


def autotune(enabled: bool = True) -> None:
    """Time every candidate kernel once per shape on the GPU and keep the fastest (``cuda`` only).

    Off by default (the rule decides); ``GPUCNN_CONV_AUTOTUNE=1`` turns it on
    at import. Turning it off forgets the timed choices.
    """
    _autotune["on"] = bool(enabled)
    if not enabled:
        _tuned.clear()


def with_precision(choice: Choice, g: ConvGeometry, dtype, arch: int | None, requested: str | None = None) -> Choice:
    """``choice`` for ``g`` at the conv precision ``requested`` (default: ``precision.get_conv_precision()``).

    A tensor-core kernel replaces an igemm choice's FP32 one when the op has
    one at that precision, the operands are float32 and the GPU (compute
    capability ``arch``, e.g. 90; None on the emulator, which executes
    mma.sync whatever the architecture) is sm_80 or later; its tile is the
    forced one where that precision has it, else ``_pick_tile`` among
    ``PRECISION_TILES[requested]``. Otherwise the choice stays FP32, with
    ``precision_note`` saying why.
    """
    requested = requested or conv_precision.get_conv_precision()
    note = ""
    if requested == "fp32" or np.dtype(dtype) != np.float32:
        pass
    elif arch is not None and arch < conv_precision.MIN_TENSOR_CORE_ARCH:
        note = f"{requested} asked: sm_{arch} has no tensor cores for it"
    elif choice.op not in TENSOR_CORE_SOURCES.get(requested, {}):
        note = f"{requested} asked: no {requested} kernel for {choice.op} yet"
    elif choice.algorithm != "igemm":
        note = f"{requested} asked: the direct kernel is FP32"
    else:
        tiles = PRECISION_TILES[requested][choice.op]
        forced = choice.reason.startswith("forced") or choice.reason == AUTOTUNE_CANDIDATE
        if forced and choice.tile.name in tiles:
            tile, reason = tiles[choice.tile.name], choice.reason
        else:
            tile, reason = _pick(choice.op, g, tiles)
            reason += f" ({choice.tile.name} has no {requested} kernel)" if forced else ""
        return dataclasses.replace(_retiled(choice, g, tile, reason), precision=requested)
    if choice.algorithm == "igemm" and choice.tile.name not in TILES[choice.op]:
        # A forced tensor-core-only tile (128x256): the FP32 kernels take the rule's tile.
        tile, reason = _pick(choice.op, g)
        choice = _retiled(choice, g, tile, f"{reason} ({choice.tile.name} is tensor-core only)")
    return dataclasses.replace(choice, precision_note=note)


def _retiled(choice: Choice, g: ConvGeometry, tile: TileConfig, reason: str) -> Choice:
    """An igemm ``choice`` on another ``tile``: backward-filter's split-K follows the tile unless forced."""
    forced_splits = {**_env_forced(), **(_forced.get() or {})}.get("splits")
    return _igemm_choice(choice.op, g, tile, reason, forced_splits)


def choose(op: str, g: ConvGeometry, dtype=np.float32, arch: int | None = None) -> Choice:
    """The kernel ``op`` runs on ``g``: forced (``force``, ``GPUCNN_CONV_ALGO``), else the rule;
    at the conv precision (``with_precision`` on a GPU of compute capability ``arch``)."""
    return with_precision(_choose_algorithm(op, g, dtype), g, dtype, arch)


def _choose_algorithm(op: str, g: ConvGeometry, dtype) -> Choice:
    if op not in OPS:
        raise ValueError(f"unknown convolution op {op!r}; known: {', '.join(OPS)}")
    forced = {**_env_forced(), **(_forced.get() or {})}
    if op in forced:
        algorithm, tile = forced[op]
        why_not = igemm_unsupported(op, g, dtype) if algorithm == "igemm" else None
        if algorithm == "direct" or why_not:
            return Choice(op, "direct", reason="forced" if not why_not else f"forced igemm, but {why_not}")
        tile_config, reason = (_known_tiles(op)[tile], "forced") if tile else _pick(op, g)
        return _igemm_choice(op, g, tile_config, reason, forced.get("splits"))
    if "splits" in forced and op == "backward_filter":
        choice = rule(op, g, dtype)
        if choice.algorithm == "igemm":
            return _igemm_choice(op, g, choice.tile, "forced splits", forced["splits"])
        return choice
    return rule(op, g, dtype)


def candidates(op: str, g: ConvGeometry, dtype) -> list[Choice]:
    """Every choice autotuning times: the kernels that can be the fastest on ``g``.

    Left out, since they cannot win:

    - the direct backward-filter whenever an igemm tile can run: one thread
      per filter element, each looping over all N*P*Q pixels -- a few hundred
      threads on a first layer, seconds of stall where split-K spreads the
      same reduction over every multiprocessor;
    - a tile with the same grid as a smaller tile that fits inside it (as
      many blocks along M and N, so the same split-K): every row and column
      it has beyond the smaller one is padding, computed for nothing, by a
      larger block. Such a tile is never the rule's choice either (its
      padded area is at least twice the smaller tile's).
    """
    if igemm_unsupported(op, g, dtype) is not None:
        return [Choice(op, "direct", reason=AUTOTUNE_CANDIDATE)]
    m, n, _ = gemm_shape(op, g)
    tiles = list(TILES[op].values())

    def grid(t):
        return -(-m // t.rows), -(-n // t.cols)

    def padding_only(t):
        return any(o is not t and o.rows <= t.rows and o.cols <= t.cols and grid(o) == grid(t) for o in tiles)

    out = [] if op == "backward_filter" else [Choice(op, "direct", reason=AUTOTUNE_CANDIDATE)]
    return out + [_igemm_choice(op, g, t, AUTOTUNE_CANDIDATE) for t in tiles if not padding_only(t)]


def _log_choice(backend, op: str, g: ConvGeometry, dtype, choice: Choice) -> None:
    key = (backend.name, op, g, np.dtype(dtype).str, str(choice))
    if key not in _logged:
        _logged.add(key)
        log.debug("%s conv2d_%s %s %s: %s (%s)", backend.name, op, g, np.dtype(dtype), choice, choice.reason)


def _select(backend, op: str, g: ConvGeometry, dtype, run) -> Choice:
    """The choice for this call; with autotuning on a GPU, time ``run(choice)`` for each candidate once."""
    forced = _forced.get() or _env_forced()
    arch = backend.arch()
    if _autotune["on"] and backend.name == "cuda" and not forced:
        key = (op, g, np.dtype(dtype).str, conv_precision.get_conv_precision())
        if key not in _tuned:
            timed = [with_precision(c, g, dtype, arch) for c in candidates(op, g, dtype)]
            _tuned[key] = _time_candidates(backend, timed, run)
        choice = _tuned[key]
    else:
        choice = choose(op, g, dtype, arch)
    _log_choice(backend, op, g, dtype, choice)
    return choice


def _time_candidates(backend, choices: list[Choice], run) -> Choice:
    """The fastest of ``choices``: each run once to warm up, then timed over three runs.

    A single candidate is returned without running it.
    """
    if len(choices) == 1:
        return dataclasses.replace(choices[0], reason="autotuned: the only candidate")
    best, best_time = None, float("inf")
    for choice in choices:
        run(choice)
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(3):
            run(choice)
        backend.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed < best_time:
            best, best_time = choice, elapsed
    return dataclasses.replace(best, reason=f"autotuned: fastest of {len(choices)}")


# --- launching ----------------------------------------------------------------

EPILOGUE_BIAS = 1
EPILOGUE_RELU = 2


def _conv_scalars(g: ConvGeometry) -> tuple:
    """The sizes every igemm entry point takes, in the order of its signature, as np.int32."""
    return tuple(np.int32(v) for v in (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q,
                                       *g.stride, *g.pad, *g.dilation))


def _function(backend, op: str, choice: Choice):
    """The igemm entry point of ``choice``: float32 (the only dtype they have), FP32 or tensor-core."""
    if choice.precision == "fp32":
        return backend.function(SOURCES[op], f"conv2d_{op}_igemm_{choice.tile.name}_f32")
    return backend.function(TENSOR_CORE_SOURCES[choice.precision][op],
                            f"conv2d_{op}_igemm_{choice.tile.name}_{choice.precision}")


def _no_direct(op: str):
    """The ``direct`` callback of a caller that gave none: a clear error if the rule needs it."""
    def refuse(_):
        raise ValueError(f"conv2d_{op}: the direct kernel was chosen but no direct launch was given")
    return refuse


def conv2d_forward(backend, x, w, b, g: ConvGeometry, activation=None, direct=None):
    """y = act(conv(x, w) + b): x (N, C, H, W), w (K, C, R, S), b (K,) or None -> y (N, K, P, Q).

    Operands are checked, C-contiguous arrays of one dtype. ``activation`` is
    None or "relu" (fused into the igemm epilogue). ``direct(y)`` runs the
    direct kernel into y when the choice is "direct" (the backend's own
    launch; needed unless igemm is forced); the activation is then applied
    with ``xp``.
    """
    check_conv_activation(activation)
    xp = backend.xp
    direct = direct or _no_direct("forward")
    y = backend.empty(g.y_shape, x.dtype)

    def run(choice):
        if choice.algorithm == "direct":
            direct(y)
            if activation == "relu":
                xp.maximum(y, 0, out=y)
            return
        grid, block = choice.tile.grid(g.N * g.P * g.Q, g.K)
        epilogue = (EPILOGUE_BIAS if b is not None else 0) | (EPILOGUE_RELU if activation == "relu" else 0)
        # Without a bias the kernel never reads its bias argument: any array of the dtype will do.
        _function(backend, "forward", choice)(
            grid, block, (x, w, w if b is None else b, y) + _conv_scalars(g) + (np.int32(epilogue),))

    run(_select(backend, "forward", g, x.dtype, run))
    return y


def conv2d_backward_data(backend, dy, w, g: ConvGeometry, direct=None):
    """dx of the convolution: dy (N, K, P, Q), w (K, C, R, S) -> dx (N, C, H, W).

    ``direct(dx)`` runs the direct kernel when the choice is "direct".
    """
    direct = direct or _no_direct("backward_data")
    dx = backend.empty(g.x_shape, dy.dtype)

    def run(choice):
        if choice.algorithm == "direct":
            direct(dx)
            return
        m, n, _ = gemm_shape("backward_data", g)
        grid, block = choice.tile.grid(m, n, layers=g.stride[0] * g.stride[1])
        _function(backend, "backward_data", choice)(grid, block, (dy, w, dx) + _conv_scalars(g))

    run(_select(backend, "backward_data", g, dy.dtype, run))
    return dx


def conv2d_backward_filter(backend, dy, x, g: ConvGeometry, direct=None):
    """dw of the convolution: dy (N, K, P, Q), x (N, C, H, W) -> dw (K, C, R, S).

    With split-K the partial sums go to a workspace (splits, K, C, R, S) that
    ``conv2d_backward_filter_reduce`` adds up in a fixed order (reproducible).
    ``direct(dw)`` runs the direct kernel when the choice is "direct".
    """
    direct = direct or _no_direct("backward_filter")
    dw = backend.empty(g.w_shape, dy.dtype)

    def run(choice):
        if choice.algorithm == "direct":
            direct(dw)
            return
        m, n, _ = gemm_shape("backward_filter", g)
        grid, block = choice.tile.grid(m, n, layers=choice.splits)
        out = dw if choice.splits == 1 else backend.xp.empty((choice.splits,) + g.w_shape, dy.dtype)
        _function(backend, "backward_filter", choice)(
            grid, block, (dy, x, out) + _conv_scalars(g) + (np.int32(choice.tiles_per_split),))
        if choice.splits > 1:
            count = dw.size
            reduce_grid, reduce_block = elementwise_launch(count)
            backend.function(SOURCES["backward_filter"], "conv2d_backward_filter_reduce_f32")(
                reduce_grid, reduce_block, (out, dw, np.int32(choice.splits), np.int64(count)))

    run(_select(backend, "backward_filter", g, dy.dtype, run))
    return dw
