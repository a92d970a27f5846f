"""The lecture's worked convolution example, on every backend: a 5x5 input, padding 1, stride 2,
one 3x3 filter, a 3x3 output.

The output printed with the example in the lecture, as quoted in issue 14,
is [[1, 6, 5], [7, 10, 9], [7, 10, 8]]. The input and filter quoted with it
do not give that under cross-correlation, true convolution, or any flip or
transposition of filter or input (6 of the 9 numbers differ). By hand, with
cross-correlation (what a CNN layer computes, PyTorch's included), rows
and columns counted from 1: output[1, 1] puts filter rows 2-3 on input rows
1-2, columns 1-2 behind one column of padding: [1, 0, 0].[0, 2, 2] +
[0, 1, 1].[0, 0, 1] = 1; output[1, 2] puts them on input rows 1-2, columns
2-4: [1, 0, 0].[2, 3, 3] + [0, 1, 1].[1, 3, 0] = 2 + 3 = 5, not 6.
So the expected values here are the ones a plain loop computes.
"""

import numpy as np
import pytest

import gpucnn as gc

LECTURE_INPUT = [[2, 2, 3, 3, 3],
                 [0, 1, 3, 0, 3],
                 [2, 3, 0, 1, 3],
                 [3, 3, 2, 1, 2],
                 [3, 3, 0, 2, 3]]
LECTURE_FILTER = [[2, 0, 1],
                  [1, 0, 0],
                  [0, 1, 1]]
EXPECTED = [[1, 5, 6],
            [7, 8, 3],
            [3, 10, 4]]


def plain_loop(x, f, padding, stride):
    """Cross-correlation of one 2-D image with one filter, written as the lecture draws it."""
    padded = np.pad(np.asarray(x, np.float64), padding)
    r = len(f)
    n = (len(x) + 2 * padding - r) // stride + 1
    return np.array([[np.sum(padded[i * stride:i * stride + r, j * stride:j * stride + r] * f)
                      for j in range(n)] for i in range(n)])


def test_the_plain_loop_agrees_with_the_numbers_worked_by_hand():
    np.testing.assert_array_equal(plain_loop(LECTURE_INPUT, np.array(LECTURE_FILTER), 1, 2), EXPECTED)


def test_output_size_formula_gives_three():
    # (H + 2 * padding - kernel) / stride + 1 = (5 + 2 - 3) / 2 + 1 = 3
    layer = gc.Conv2D(1, 1, 3, stride=2, padding=1)
    assert layer.output_shape((1, 1, 5, 5)) == (1, 1, 3, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lecture_convolution_with_padding_and_stride(backend, dtype):
    layer = gc.Conv2D(1, 1, 3, stride=2, padding=1, bias=False)
    layer.to(backend, dtype=dtype)
    layer.params["W"][...] = backend.asarray(np.array(LECTURE_FILTER, dtype)[None, None])
    x = backend.asarray(np.array(LECTURE_INPUT, dtype)[None, None])
    out = backend.to_numpy(layer.forward(x, training=False))
    np.testing.assert_array_equal(out[0, 0], np.array(EXPECTED, dtype))
