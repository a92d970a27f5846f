"""The emulated warp-level MMA (kernels/mma.cuh) against a NumPy model of the PTX ISA.

The model below is written from the ISA's fragment tables ("Matrix Fragments
for mma.m16n8k8" / "... mma.m16n8k16 with floating point type") independently
of the C++: it places each lane's registers into A, B and C by (row, col)
formulas, rounds with frexp/ldexp arithmetic instead of bit tricks, and
accumulates as the emulator documents (float32, one product at a time in
increasing k, round to nearest even). The products are exact in float32 for
both input types, so the only rounding is that of the sums; bit equality is
a statement about the emulator's chosen order, not about a GPU's tensor core,
whose internal accumulation the ISA leaves unspecified.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the CUDA emulator")

from gpucnn.backend.emulator import EmulatorLaunchError, load_module  # noqa: E402

SOURCE = Path(__file__).with_name("emulator_kernels") / "mma.cu"
WARPS = 6  # two blocks of three warps: lanes are found by threadIdx.x % 32


def line_of(tag):
    lines = SOURCE.read_text().splitlines()
    (index,) = [i for i, text in enumerate(lines) if f"<- line:{tag}" in text]
    return index + 1


@pytest.fixture(scope="module")
def module():
    return load_module(SOURCE)


# --- the model ------------------------------------------------------------------


def round_to_bits(x, mantissa_bits, ties_away):
    """x (float32, normal numbers) rounded to ``mantissa_bits`` stored mantissa bits, as float32."""
    m, e = np.frexp(x.astype(np.float64))  # x = m * 2**e, 0.5 <= |m| < 1
    scaled = m * 2.0 ** (mantissa_bits + 1)
    if ties_away:
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    else:
        rounded = np.rint(scaled)  # ties to even
    return np.ldexp(rounded, e - (mantissa_bits + 1)).astype(np.float32)


def tf32(x):
    """cvt.rna.tf32.f32: 10 mantissa bits, round to nearest, ties away from zero."""
    return round_to_bits(x, 10, ties_away=True)


def bf16(x):
    """cvt.rn.bf16.f32: 7 mantissa bits, round to nearest, ties to even."""
    return round_to_bits(x, 7, ties_away=False)


def fragment_positions(shape):
    """Per lane, the (row, col) of each A, B and C element, from the ISA's tables.

    shape "m16n8k8" (.tf32: A 4, B 2 elements per lane) or "m16n8k16" (.bf16:
    A 8, B 4, in the order low half of register 0, high half, register 1, ...).
    """
    a_pos, b_pos, c_pos = [], [], []
    for lane in range(32):
        group, tig = lane >> 2, lane % 4
        if shape == "m16n8k8":
            a_pos.append([(group, tig), (group + 8, tig), (group, tig + 4), (group + 8, tig + 4)])
            b_pos.append([(tig, group), (tig + 4, group)])
        else:
            a_pos.append([(group if i in (0, 1, 4, 5) else group + 8, tig * 2 + (i & 1) + (8 if i >= 4 else 0))
                          for i in range(8)])
            b_pos.append([(tig * 2 + (i & 1) + (8 if i >= 2 else 0), group) for i in range(4)])
        c_pos.append([(group + (8 if i >= 2 else 0), tig * 2 + (i & 1)) for i in range(4)])
    return np.array(a_pos), np.array(b_pos), np.array(c_pos)


def gather(registers, positions, rows, cols):
    """One warp's per-lane values (32, n) placed into a rows x cols matrix."""
    matrix = np.full((rows, cols), np.nan, np.float32)
    matrix[positions[..., 0], positions[..., 1]] = registers
    assert not np.isnan(matrix).any(), "the fragment tables must cover the matrix"
    return matrix


def model_mma(a, b, c, shape, k):
    """The emulator's D = A*B + C for every warp; a, b, c: (warps*32, n) already-rounded registers."""
    a_pos, b_pos, c_pos = fragment_positions(shape)
    d = np.empty_like(c)
    for w in range(len(c) // 32):
        lanes = slice(32 * w, 32 * w + 32)
        A = gather(a[lanes], a_pos, 16, k)
        B = gather(b[lanes], b_pos, k, 8)
        D = gather(c[lanes], c_pos, 16, 8)
        for kk in range(k):
            D = (D + A[:, kk:kk + 1] * B[kk:kk + 1, :]).astype(np.float32)  # exact product, rounded sum
        d[lanes] = D[c_pos[..., 0], c_pos[..., 1]]
    return d


def operands(rng, n, mantissa_bits):
    """n random normal floats over several binades, a quarter of them exact ties of the rounding."""
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-6, 7, n)).astype(np.float32)
    ties = rng.random(n) < 0.25
    # A tie: a value representable with mantissa_bits, plus half its last place.
    base = round_to_bits(x, mantissa_bits, ties_away=False)
    m, e = np.frexp(base.astype(np.float64))
    half_ulp = np.ldexp(np.sign(m) * 0.5, e - (mantissa_bits + 1))
    x[ties] = (base.astype(np.float64) + half_ulp)[ties].astype(np.float32)
    return x


# --- emulator against the model -------------------------------------------------------


def run_registers(module, kernel, rng, a_per_lane, b_per_lane, mantissa_bits):
    threads = WARPS * 32
    a = operands(rng, threads * a_per_lane, mantissa_bits)
    b = operands(rng, threads * b_per_lane, mantissa_bits)
    c = (rng.standard_normal(threads * 4) * 4).astype(np.float32)
    a_bits = np.zeros(threads * 4, np.uint32)
    b_bits = np.zeros(threads * 2, np.uint32)
    d = np.full(threads * 4, np.nan, np.float32)
    module.get_function(kernel)(2, threads // 2, (a, b, c, a_bits, b_bits, d))
    return a, b, c, a_bits, b_bits, d


def test_tf32_mma_matches_the_isa_model_bit_for_bit(module, rng):
    a, b, c, a_bits, b_bits, d = run_registers(module, "mma_tf32_registers", rng, 4, 2, 10)
    np.testing.assert_array_equal(a_bits.view(np.float32), tf32(a))  # to_tf32, ties away from zero
    np.testing.assert_array_equal(b_bits.view(np.float32), tf32(b))
    expected = model_mma(tf32(a).reshape(-1, 4), tf32(b).reshape(-1, 2), c.reshape(-1, 4), "m16n8k8", 8)
    np.testing.assert_array_equal(d.reshape(-1, 4).view(np.uint32), expected.view(np.uint32))


def test_bf16_mma_matches_the_isa_model_bit_for_bit(module, rng):
    a, b, c, a_bits, b_bits, d = run_registers(module, "mma_bf16_registers", rng, 8, 4, 7)
    halves = lambda bits: np.stack([bits & 0xFFFF, bits >> 16], axis=-1).reshape(-1)  # low half first
    np.testing.assert_array_equal((halves(a_bits) << 16).astype(np.uint32).view(np.float32), bf16(a))
    np.testing.assert_array_equal((halves(b_bits) << 16).astype(np.uint32).view(np.float32), bf16(b))
    expected = model_mma(bf16(a).reshape(-1, 8), bf16(b).reshape(-1, 4), c.reshape(-1, 4), "m16n8k16", 16)
    np.testing.assert_array_equal(d.reshape(-1, 4).view(np.uint32), expected.view(np.uint32))


def test_rounding_ties_go_away_from_zero_for_tf32_and_to_even_for_bf16():
    # 1 + 2**-11 is the TF32 tie between 1 and 1 + 2**-10; 1 + 2**-8 the BF16 tie between 1 and 1 + 2**-7.
    x = np.array([1 + 2.0 ** -11, -(1 + 2.0 ** -11), 1 + 3 * 2.0 ** -11], np.float32)
    np.testing.assert_array_equal(tf32(x), np.array([1 + 2.0 ** -10, -(1 + 2.0 ** -10), 1 + 2 * 2.0 ** -10],
                                                    np.float32))
    y = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8], np.float32)
    np.testing.assert_array_equal(bf16(y), np.array([1.0, 1 + 2 * 2.0 ** -7], np.float32))


def test_a_wrong_model_mapping_disagrees_with_the_emulator(module, rng):
    """The comparison above can fail: the model with a1/a2 swapped does not match."""
    a, b, c, _, _, d = run_registers(module, "mma_tf32_registers", rng, 4, 2, 10)
    wrong = tf32(a).reshape(-1, 4)[:, [0, 2, 1, 3]]
    expected = model_mma(wrong, tf32(b).reshape(-1, 2), c.reshape(-1, 4), "m16n8k8", 8)
    assert (d.reshape(-1, 4) != expected).mean() > 0.5


def test_a_kernel_with_a_wrong_lane_mapping_computes_a_wrong_product(module, rng):
    A = rng.standard_normal((WARPS, 16, 8)).astype(np.float32)
    B = rng.standard_normal((WARPS, 8, 8)).astype(np.float32)
    reference = np.einsum("wik,wkj->wij", tf32(A).astype(np.float64), tf32(B).astype(np.float64))
    kernel = module.get_function("mma_tf32_matrices")
    for wrong, should_match in ((0, True), (1, False)):
        D = np.full((WARPS, 16, 8), np.nan, np.float32)
        kernel(2, WARPS * 16, (A, B, D, np.int32(wrong)))
        close = np.isclose(D, reference, rtol=1e-5, atol=1e-5)
        assert close.all() if should_match else not close.all()


# --- misuse is refused -------------------------------------------------------------------


def test_mma_with_lanes_missing_is_refused(module):
    with pytest.raises(EmulatorLaunchError) as info:
        module.get_function("mma_half_warp")(1, 32, (np.zeros(32, np.float32),))
    assert f"mma.cu:{line_of('half')}" in str(info.value) and "exited" in str(info.value)


def test_mma_from_two_call_sites_is_refused(module):
    with pytest.raises(EmulatorLaunchError) as info:
        module.get_function("mma_two_sites")(1, 32, (np.zeros(32, np.float32),))
    message = str(info.value)
    assert "disagree" in message
    assert f"mma.cu:{line_of('site1')}" in message and f"mma.cu:{line_of('site2')}" in message


def test_mma_in_a_partial_warp_is_refused(module):
    threads = 16
    args = [np.zeros(n, np.float32) for n in (threads * 4, threads * 2, threads * 4)]
    args += [np.zeros(threads * 4, np.uint32), np.zeros(threads * 2, np.uint32), np.zeros(threads * 4, np.float32)]
    with pytest.raises(EmulatorLaunchError, match="needs all 32 lanes"):
        module.get_function("mma_tf32_registers")(1, threads, tuple(args))


def test_mma_refuses_an_operand_not_rounded_to_tf32(module):
    x = np.full(32, 1 + 2.0 ** -20, np.float32)  # low mantissa bits set
    with pytest.raises(EmulatorLaunchError, match="not a TF32 value") as info:
        module.get_function("mma_unrounded")(1, 32, (x, np.zeros(32, np.float32)))
    assert f"mma.cu:{line_of('unrounded')}" in str(info.value)
