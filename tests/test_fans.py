"""compute_fans and shape validation, with Hypothesis properties (few examples, no deadline)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxinit

FAST = settings(max_examples=40, deadline=None, derandomize=True)
KEY = jax.random.key(0)

shapes = st.lists(st.integers(0, 7), min_size=2, max_size=5).map(tuple)


@pytest.mark.parametrize(
    "shape,axes,fans",
    [
        ((256, 512), {}, (256, 512)),
        ((3, 3, 64, 128), {}, (576, 1152)),
        ((5, 64, 128), {}, (320, 640)),
        ((512, 256), {"in_axis": -1, "out_axis": -2}, (256, 512)),
        ((128, 64, 3, 3), {"in_axis": 1, "out_axis": 0}, (576, 1152)),
        ((16, 16, 8, 64), {"in_axis": (0, 1), "out_axis": (2, 3)}, (256, 512)),
        ((8, 64, 16), {"in_axis": 1, "out_axis": 2, "batch_axis": 0}, (64, 16)),
        ((64, 8, 16), {"in_axis": 0, "out_axis": -1, "batch_axis": 1}, (64, 16)),
        ((4, 2, 64, 16), {"in_axis": 2, "out_axis": 3, "batch_axis": (0, 1)}, (64, 16)),
        ((4, 5, 6), {"in_axis": np.int64(0), "out_axis": (np.int32(1),)}, (24, 30)),
    ],
    ids=str,
)
def test_layouts(shape, axes, fans):
    """The layouts of the docstring's table: Flax Dense/Conv, PyTorch (out, in, ...),
    DenseGeneral, per-head einsum kernels."""
    assert jaxinit.compute_fans(shape, **axes) == fans
    assert all(type(f) is int for f in jaxinit.compute_fans(shape, **axes))


@FAST
@given(shapes)
def test_default_axes_are_flax_layout(shape):
    """Defaults: fan_in = prod(shape[:-1]), fan_out = prod(shape[:-2]) * shape[-1]."""
    fan_in, fan_out = jaxinit.compute_fans(shape)
    assert fan_in == math.prod(shape[:-1])
    assert fan_out == math.prod(shape[:-2]) * shape[-1]


@st.composite
def roles(draw):
    """A shape and a random assignment of its axes to in/out/batch/receptive (in and out
    non-empty), each axis given as a positive or negative index."""
    shape = draw(st.lists(st.integers(1, 6), min_size=2, max_size=6).map(tuple))
    ndim = len(shape)
    perm = draw(st.permutations(range(ndim)))
    n_in = draw(st.integers(1, ndim - 1))
    n_out = draw(st.integers(1, ndim - n_in))
    n_batch = draw(st.integers(0, ndim - n_in - n_out))
    ins = perm[:n_in]
    outs = perm[n_in : n_in + n_out]
    batch = perm[n_in + n_out : n_in + n_out + n_batch]

    def spell(axes):
        out = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
        return out[0] if len(out) == 1 and draw(st.booleans()) else out

    return shape, spell(ins), spell(outs), spell(batch), (ins, outs, batch)


@FAST
@given(roles())
def test_fans_are_products_of_roles(case):
    """fan_in = prod(in) * receptive and fan_out = prod(out) * receptive, receptive being the
    axes with no role; batch axes count in neither; negative and positive indices agree."""
    shape, in_axis, out_axis, batch_axis, (ins, outs, batch) = case
    fan_in, fan_out = jaxinit.compute_fans(shape, in_axis, out_axis, batch_axis)
    receptive = math.prod(d for i, d in enumerate(shape) if i not in {*ins, *outs, *batch})
    assert fan_in == math.prod(shape[a] for a in ins) * receptive
    assert fan_out == math.prod(shape[a] for a in outs) * receptive
    # Every axis has exactly one role: fan_in * prod(out) * prod(batch) is the whole size.
    total = math.prod(shape)
    assert fan_in * math.prod(shape[a] for a in outs) * math.prod(shape[a] for a in batch) == total


@FAST
@given(roles())
def test_fans_invariant_under_transpose(case):
    """Moving axes around (and the roles with them) does not change the fans."""
    shape, _, _, _, (ins, outs, batch) = case
    ndim = len(shape)
    order = list(reversed(range(ndim)))  # transpose: new axis j is old axis order[j]
    where = {old: new for new, old in enumerate(order)}
    t_shape = tuple(shape[o] for o in order)
    t = jaxinit.compute_fans(
        t_shape,
        tuple(where[a] for a in ins),
        tuple(where[a] for a in outs),
        tuple(where[a] for a in batch),
    )
    assert t == jaxinit.compute_fans(shape, tuple(ins), tuple(outs), tuple(batch))


@FAST
@given(st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple), st.integers(-9, 9))
def test_out_of_range_axis(shape, axis):
    """An axis outside [-ndim, ndim) is an error naming the argument, its value and the range."""
    ndim = len(shape)
    if -ndim <= axis < ndim:
        return
    with pytest.raises(ValueError, match=rf"in_axis={axis} is out of range for a rank-{ndim}"):
        jaxinit.compute_fans(shape, in_axis=axis, out_axis=-1 if axis != ndim - 1 else 0)


@pytest.mark.parametrize(
    "shape,kwargs,exc,pattern",
    [
        (
            (5,),
            {},
            ValueError,
            r"compute_fans: needs rank >= 2 to compute fans, got shape \(5,\)\. For biases use "
            r"jaxinit\.zeros\(\), or pass in_axis=/out_axis=",
        ),
        ((), {}, ValueError, r"needs rank >= 2 .* got shape \(\)"),
        (
            (4, 5),
            {"in_axis": 0, "out_axis": 0},
            ValueError,
            r"axis 0 of shape \(4, 5\) is both in_axis and out_axis",
        ),
        (
            (4, 5),
            {"in_axis": 0, "out_axis": -2},
            ValueError,
            r"axis 0 .* both in_axis and out_axis",
        ),
        ((4, 5, 6), {"batch_axis": -1}, ValueError, r"axis 2 .* both out_axis and batch_axis"),
        ((4, 5, 6), {"in_axis": (0, 0)}, ValueError, r"in_axis=\(0, 0\) repeats an axis"),
        (
            (4, 5),
            {"in_axis": ()},
            ValueError,
            r"in_axis=\(\) and out_axis=-1 must each name at least one axis",
        ),
        ((4, 5), {"out_axis": 2}, ValueError, r"out_axis=2 is out of range for a rank-2 shape"),
        ((4, 5), {"in_axis": 0.5}, TypeError, r"in_axis=0\.5 must be an int or a tuple of ints"),
        ((4, 5), {"batch_axis": (True,)}, TypeError, r"batch_axis=\(True,\) must be an int"),
    ],
)
def test_compute_fans_errors(shape, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jaxinit.compute_fans(shape, **kwargs)


# ---------------------------------------------------------------------------------------------
# Shape validation of initializers (before anything is compiled)

bad_dims = st.lists(st.integers(-5, 5), min_size=1, max_size=4).filter(lambda s: min(s) < 0)


@FAST
@given(bad_dims)
def test_negative_dimension_is_an_error(shape):
    with pytest.raises(ValueError, match=r"normal: shape=\(.*\) has a negative dimension"):
        jaxinit.normal()(KEY, tuple(shape))


@pytest.mark.parametrize(
    "shape,exc,pattern",
    [
        ((3.0, 4), TypeError, r"shape=\(3\.0, 4\) must contain Python ints, got 3\.0"),
        ((True, 4), TypeError, r"must contain Python ints, got True"),
        ("ab", TypeError, r"must contain Python ints, got 'a'"),
        (None, TypeError, r"shape=None is not a sequence of ints"),
    ],
    ids=str,
)
def test_bad_shape_types(shape, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jaxinit.he_normal()(KEY, shape)


def test_int_and_numpy_shapes():
    """An int is a rank-1 shape; NumPy ints and arrays of ints are accepted."""
    assert jaxinit.zeros()(KEY, 3).shape == (3,)
    assert jaxinit.zeros()(KEY, np.array([2, 3])).shape == (2, 3)
    assert jaxinit.zeros()(KEY, (np.int32(2), np.int64(3))).shape == (2, 3)


def test_bad_dtype_arguments():
    with pytest.raises(TypeError, match=r"normal: dtype='float33' is not a dtype; use a floating"):
        jaxinit.normal()(KEY, (2, 2), "float33")
    with pytest.raises(TypeError, match=r"normal: dtype=uint8 is not supported"):
        jaxinit.normal()(KEY, (2, 2), np.uint8)
