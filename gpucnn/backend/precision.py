"""The arithmetic of the float32 convolutions on the ``cuda`` and ``cuda-emu`` backends.

``set_conv_precision(p)`` (or the environment variable ``GPUCNN_CONV_PRECISION``)
chooses it, for every later convolution of the process:

- ``"fp32"`` (the default): the FP32 kernels, FMAs in float32;
- ``"tf32"``: the tensor-core kernels (``kernels/conv2d_igemm_*_tc.cu``), whose
  inputs are rounded to TF32 (10 stored mantissa bits, ``cvt.rna.tf32.f32``:
  to nearest, ties away from zero) and whose products are accumulated in
  float32 by ``mma.sync``; what cuDNN does by default on Ampere and later;
- ``"bf16"``: the same kernels with BF16 inputs (8 significant bits, rounded
  to nearest even by ``cvt.rn.bf16x2.f32`` as the fragments are packed) and
  ``mma.sync.m16n8k16``, products accumulated in float32; BK = 16, and no
  128x256 tile (``conv_algorithms.BF16_TILES``). Half the operand bits of
  TF32 and twice its tensor-core rate: about 8x less accurate (bound below).

A GPU older than sm_80 (a T4 is sm_75) has no TF32 or BF16 tensor cores: there the
FP32 kernels run whatever the setting. float64 convolutions, and shapes the
implicit-GEMM kernels do not take, run the FP32/float64 kernels too. Which
kernel and precision ran is ``conv_algorithms.choose(...)``'s ``precision``
and part of its ``str`` ("igemm 128x64 tf32", "igemm 128x64 bf16").

Accuracy contract of TF32 (``tf32_error_bound``). For one output
y = sum_{i<n} x_i w_i (+ b), with u = 2^-11 the unit roundoff of TF32's 11
significant bits:

    rounding each input:  x~ = x (1 + d), |d| <= u, likewise w~, so each product
                          errs by at most (2u + u^2) |x_i w_i|;
    the products x~ w~:   exact (11 x 11 significant bits fit float32's 24);
    the float32 sums:     at most n + 1 of them (n products, the bias), each
                          erring by at most one float32 ulp 2^-23 relative
                          (covers a tensor core that truncates), so together
                          at most (n + 1) 2^-23 (sum|x_i w_i| + |b|) to first order.

    |y_tf32 - y| <= (2u + u^2) S + (n + 1) 2^-23 (S + |b|),   S = sum_i |x_i| |w_i|.

The first term dominates until n ~ 2^13; the bound holds for every op and
shape (backward-data and backward-filter are sums of the same form) and is
what tests/test_conv_tensor_cores.py checks against float64 on the emulator.

Accuracy contract of BF16 (``bf16_error_bound``): the same derivation with
u = 2^-8, the unit roundoff of BF16's 8 significant bits (round to nearest
even: |d| <= 2^-8). The products are exact again (8 x 8 significant bits), and
the float32 sums are the same, so

    |y_bf16 - y| <= (2u + u^2) S + (n + 1) 2^-23 (S + |b|),   u = 2^-8,

whose first term dominates until n ~ 2^16. A tighter check of the kernels
themselves, used by the tests: against float64 on the BF16-rounded inputs
(``round_to_bf16``) only the second term remains.
"""

from __future__ import annotations

import os

import numpy as np

PRECISIONS = ("fp32", "tf32", "bf16")
ENVIRONMENT_VARIABLE = "GPUCNN_CONV_PRECISION"
#: The oldest compute capability with TF32 and BF16 tensor cores (A100).
MIN_TENSOR_CORE_ARCH = 80
#: Unit roundoff of TF32 (11 significant bits), of BF16 (8), and float32's ulp bound per sum.
TF32_UNIT_ROUNDOFF = 2.0**-11
BF16_UNIT_ROUNDOFF = 2.0**-8
FLOAT32_SUM_ERROR = 2.0**-23

_setting: dict = {"precision": None}  # None: the environment variable, else "fp32"


def _checked(precision, what: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{what}: conv precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, "
                         f"got {precision!r}")
    return precision


def set_conv_precision(precision: str | None) -> None:
    """Use ``precision`` ("fp32", "tf32" or "bf16") for every later float32 convolution.

    None goes back to ``GPUCNN_CONV_PRECISION`` (default "fp32"). Raises
    ValueError for anything else. See the module docstring for what each means.
    """
    _setting["precision"] = None if precision is None else _checked(precision, "set_conv_precision")


def get_conv_precision() -> str:
    """The precision asked for: ``set_conv_precision``'s, else ``GPUCNN_CONV_PRECISION``'s, else "fp32"."""
    if _setting["precision"] is not None:
        return _setting["precision"]
    text = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return _checked(text, ENVIRONMENT_VARIABLE) if text else "fp32"


def round_to_tf32(a) -> np.ndarray:
    """float32 array ``a`` rounded as ``cvt.rna.tf32.f32`` (a float32 array; inf and NaN kept)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits)
    return rounded.astype(np.uint32).view(np.float32)


def round_to_bf16(a) -> np.ndarray:
    """float32 array ``a`` rounded as ``cvt.rn.bf16.f32`` (to nearest even), as float32; inf kept, NaN a NaN."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return np.where(finite, rounded, bits).astype(np.uint32).view(np.float32)


def _error_bound(u: float, abs_sum, n: int, abs_bias):
    return (2 * u + u * u) * np.asarray(abs_sum) + (n + 1) * FLOAT32_SUM_ERROR * (np.asarray(abs_sum) + abs_bias)


def tf32_error_bound(abs_sum, n: int, abs_bias=0.0):
    """The bound above on |y_tf32 - y| for outputs with S = ``abs_sum`` (sum |x||w|) over ``n`` products."""
    return _error_bound(TF32_UNIT_ROUNDOFF, abs_sum, n, abs_bias)


def bf16_error_bound(abs_sum, n: int, abs_bias=0.0):
    """The bound above on |y_bf16 - y| for outputs with S = ``abs_sum`` (sum |x||w|) over ``n`` products."""
    return _error_bound(BF16_UNIT_ROUNDOFF, abs_sum, n, abs_bias)


#: Per tensor-core precision: the input rounding and the error bound.
ROUNDING = {"tf32": round_to_tf32, "bf16": round_to_bf16}
ERROR_BOUND = {"tf32": tf32_error_bound, "bf16": bf16_error_bound}
