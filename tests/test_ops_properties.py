"""Property tests: random valid conv/pool configurations agree with the loop reference on every
backend; random invalid ones are refused by the geometry with an error that names the op."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucnn.backend.geometry import ConvGeometry, PoolGeometry
from reference import (avg_pool2d_backward_ref, avg_pool2d_forward_ref, conv2d_backward_data_ref,
                       conv2d_backward_filter_ref, conv2d_forward_ref, max_pool2d_backward_ref,
                       max_pool2d_forward_ref)
from test_ops import rel_err, run

# The backend fixture is one shared object per backend, so reusing it across examples is safe.
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

pairs = st.tuples  # (vertical, horizontal)


def spatial_size(draw, kernel, stride, pad, dilation=1):
    """An image size from the smallest the (dilated) kernel fits in, up to a few strides more."""
    smallest = max(1, dilation * (kernel - 1) + 1 - 2 * pad)
    return draw(st.integers(smallest, smallest + 2 * stride + 3))


@st.composite
def conv_configs(draw):
    R, S = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    stride = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    pad = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    dil = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    H = spatial_size(draw, R, stride[0], pad[0], dil[0])
    W = spatial_size(draw, S, stride[1], pad[1], dil[1])
    N, C, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (N, C, H, W), (K, C, R, S), stride, pad, dil, draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_configs(draw):
    R, S = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    stride = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    pad = draw(pairs(st.integers(0, R // 2), st.integers(0, S // 2)))
    H = spatial_size(draw, R, stride[0], pad[0])
    W = spatial_size(draw, S, stride[1], pad[1])
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return (N, C, H, W), (R, S), stride, pad, draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(config=conv_configs())
def test_random_conv2d_matches_loop_reference(backend, config):
    x_shape, w_shape, stride, pad, dil, seed = config
    rng = np.random.default_rng(seed)
    geom = ConvGeometry.from_shapes(x_shape, w_shape, stride, pad, dil)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)

    assert rel_err(run(backend, "conv2d_forward", x, w, b, geom),
                   conv2d_forward_ref(x, w, b, stride, pad, dil)) < 1e-5
    assert rel_err(run(backend, "conv2d_backward_data", dy, w, geom),
                   conv2d_backward_data_ref(dy, w, x_shape, stride, pad, dil)) < 1e-5
    assert rel_err(run(backend, "conv2d_backward_filter", dy, x, geom),
                   conv2d_backward_filter_ref(dy, x, w_shape[2:], stride, pad, dil)) < 1e-5


@SETTINGS
@given(config=pool_configs(), ties=st.booleans())
def test_random_pool2d_matches_loop_reference(backend, config, ties):
    x_shape, kernel, stride, pad, seed = config
    rng = np.random.default_rng(seed)
    geom = PoolGeometry.from_shape(x_shape, kernel, stride, pad)
    x = (rng.integers(0, 3, size=x_shape) if ties else rng.standard_normal(x_shape)).astype(np.float32)
    dy = rng.standard_normal(geom.y_shape).astype(np.float32)

    y, argmax = run(backend, "max_pool2d_forward", x, geom)
    y_ref, argmax_ref = max_pool2d_forward_ref(x, kernel, stride, pad)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert rel_err(run(backend, "max_pool2d_backward", dy, argmax, geom),
                   max_pool2d_backward_ref(dy, argmax_ref, x_shape)) < 1e-5

    assert rel_err(run(backend, "avg_pool2d_forward", x, geom),
                   avg_pool2d_forward_ref(x, kernel, stride, pad)) < 1e-5
    assert rel_err(run(backend, "avg_pool2d_backward", dy, geom),
                   avg_pool2d_backward_ref(dy, x_shape, kernel, stride, pad)) < 1e-5


# --- invalid configurations ------------------------------------------------------------
#
# Each strategy returns (call, expected exception); ``call(where)`` builds the geometry
# for an op named ``where``, whose name must appear in the message.

@st.composite
def invalid_conv_configs(draw):
    N, C, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(R, R + 6)), draw(st.integers(S, S + 6))
    x_shape, w_shape = (N, C, H, W), (K, C, R, S)
    kwargs = {}
    kind = draw(st.sampled_from(["stride", "dilation", "padding", "too-small", "channels",
                                 "x-rank", "w-rank", "float-stride"]))
    error = ValueError
    if kind == "stride":
        kwargs["stride"] = draw(st.one_of(st.integers(-3, 0),
                                          pairs(st.integers(-3, 0), st.integers(1, 3)),
                                          pairs(st.integers(1, 3), st.integers(-3, 0))))
    elif kind == "dilation":
        kwargs["dilation"] = draw(st.integers(-2, 0))
    elif kind == "padding":
        kwargs["padding"] = draw(pairs(st.integers(-3, -1), st.integers(0, 2)))
    elif kind == "too-small":              # image smaller than the dilated kernel, padding included
        dil = draw(st.integers(1, 3))
        R = draw(st.integers(2, 5))
        pad = draw(st.integers(0, 2))
        H = draw(st.integers(1, max(1, dil * (R - 1) - 2 * pad)))
        if H + 2 * pad >= dil * (R - 1) + 1:
            H, pad = 1, 0
        x_shape, w_shape = (N, C, H, W), (K, C, R, S)
        kwargs.update(dilation=dil, padding=(pad, 0))
    elif kind == "channels":
        w_shape = (K, C + draw(st.integers(1, 3)), R, S)
    elif kind == "x-rank":
        x_shape = draw(st.sampled_from([x_shape[1:], x_shape + (1,), (N * C * H * W,)]))
    elif kind == "w-rank":
        w_shape = draw(st.sampled_from([w_shape[1:], w_shape + (1,)]))
    else:
        kwargs["stride"] = draw(st.sampled_from([1.0, (1, 2.0), "2"]))
        error = TypeError
    return (lambda where: ConvGeometry.from_shapes(x_shape, w_shape, where=where, **kwargs)), error


@st.composite
def invalid_pool_configs(draw):
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(R, R + 6)), draw(st.integers(S, S + 6))
    x_shape, kernel, stride, pad = (N, C, H, W), (R, S), None, 0
    kind = draw(st.sampled_from(["stride", "kernel", "padding-too-large", "padding-negative",
                                 "too-small", "x-rank", "float-kernel"]))
    error = ValueError
    if kind == "stride":
        stride = draw(pairs(st.integers(-3, 0), st.integers(1, 3)))
    elif kind == "kernel":
        kernel = (draw(st.integers(-2, 0)), S)
    elif kind == "padding-too-large":
        pad = (R // 2 + draw(st.integers(1, 3)), 0)
    elif kind == "padding-negative":
        pad = (0, draw(st.integers(-3, -1)))
    elif kind == "too-small":
        R = draw(st.integers(2, 6))
        kernel, H = (R, S), draw(st.integers(1, R - 1))
        x_shape = (N, C, H, W)
    elif kind == "x-rank":
        x_shape = draw(st.sampled_from([x_shape[1:], x_shape + (1,)]))
    else:
        kernel = (float(R), S)
        error = TypeError
    return (lambda where: PoolGeometry.from_shape(x_shape, kernel, stride, pad, where=where)), error


@SETTINGS
@given(config=invalid_conv_configs())
def test_invalid_conv_configurations_are_refused_naming_the_op(config):
    make, error = config
    with pytest.raises(error, match="MyConv2D"):
        make("MyConv2D")


@SETTINGS
@given(config=invalid_pool_configs())
def test_invalid_pool_configurations_are_refused_naming_the_op(config):
    make, error = config
    with pytest.raises(error, match="MyPool2D"):
        make("MyPool2D")
