"""Convolutions rewritten into XLA:CPU's canonical order compute what they computed, at any
depth of nesting, and the compiled loop bodies then hold only canonical convolutions."""

import re

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax import lax

import jaxinit
from jaxinit import _conv_layout

# (input shape, kernel shape, dimension numbers, keyword arguments): every axis order a
# user or an autodiff transpose can produce, with strides, padding, dilations and groups.
CASES = {
    "nhwc-hwio": ((2, 6, 5, 4), (3, 3, 4, 6), ("NHWC", "HWIO", "NHWC"), {}),
    "nchw-oihw": ((2, 4, 6, 5), (6, 4, 3, 3), ("NCHW", "OIHW", "NCHW"), {"window_strides": (2, 1)}),
    "nchw-hwio-nhwc": ((2, 4, 7, 5), (3, 2, 4, 6), ("NCHW", "HWIO", "NHWC"), {"padding": "SAME"}),
    "dilated": (
        (2, 9, 8, 3),
        (3, 3, 3, 4),
        ("NHWC", "HWIO", "NCHW"),
        {"padding": ((2, 1), (0, 2)), "lhs_dilation": (2, 1), "rhs_dilation": (1, 2)},
    ),
    "feature-groups": ((2, 6, 5, 4), (2, 6, 3, 3), ("NHWC", "IOHW", "NHWC"), {"fgc": 2}),
    "batch-groups": ((4, 6, 5, 3), (3, 3, 3, 6), ("NHWC", "HWIO", "NCHW"), {"bgc": 2}),
    "1d": ((3, 5, 9), (4, 5, 3), ("NCH", "OIH", "NHC"), {"window_strides": (2,)}),
    "3d": ((2, 3, 5, 4, 4), (2, 3, 3, 3, 5), ("NCDHW", "DHWIO", "NDHWC"), {}),
}


def _conv(case):
    lhs_shape, rhs_shape, dn, kw = CASES[case]
    kw = dict(kw)
    fgc, bgc = kw.pop("fgc", 1), kw.pop("bgc", 1)
    strides = kw.pop("window_strides", (1,) * (len(lhs_shape) - 2))
    padding = kw.pop("padding", "VALID")

    def conv(lhs, rhs):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides=strides,
            padding=padding,
            dimension_numbers=dn,
            feature_group_count=fgc,
            batch_group_count=bgc,
            precision=lax.Precision.HIGHEST,
            **kw,
        )

    keys = jax.random.split(jax.random.key(len(case)), 2)
    return (
        conv,
        jax.random.normal(keys[0], lhs_shape),
        jax.random.normal(keys[1], rhs_shape),
    )


def _numpy_conv(lhs, rhs, dn_strings, *, strides, padding):
    """A direct sum over the window in float64, for the plain cases (no dilation, no
    groups): the independent reference."""
    lspec, rspec, ospec = dn_strings
    sp = [c for c in lspec if c not in "NC"]
    lhs = np.transpose(np.asarray(lhs, np.float64), [lspec.index(c) for c in ["N", *sp, "C"]])
    rhs = np.transpose(np.asarray(rhs, np.float64), [rspec.index(c) for c in [*sp, "I", "O"]])
    if padding == "SAME":
        pads = []
        for size, k, s in zip(lhs.shape[1:-1], rhs.shape[:-2], strides, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = [(0, 0)] * len(sp)
    lhs = np.pad(lhs, [(0, 0), *pads, (0, 0)])
    window = rhs.shape[:-2]
    outs = [(n - k) // s + 1 for n, k, s in zip(lhs.shape[1:-1], window, strides, strict=True)]
    out = np.zeros((lhs.shape[0], *outs, rhs.shape[-1]))
    for idx in np.ndindex(*outs):
        sl = tuple(slice(i * s, i * s + k) for i, s, k in zip(idx, strides, window, strict=True))
        patch = lhs[(slice(None), *sl, slice(None))]
        out[(slice(None), *idx, slice(None))] = np.tensordot(
            patch, rhs, axes=(list(range(1, len(sp) + 2)), list(range(len(sp) + 1)))
        )
    return np.transpose(out, np.argsort([ospec.index(c) for c in ["N", *sp, "C"]]))


@pytest.mark.parametrize("case", ["nhwc-hwio", "nchw-oihw", "nchw-hwio-nhwc", "1d", "3d"])
def test_rewritten_conv_equals_a_direct_sum(case):
    conv, lhs, rhs = _conv(case)
    _, _, dn, kw = CASES[case]
    rank = lhs.ndim
    want = _numpy_conv(
        lhs,
        rhs,
        dn,
        strides=kw.get("window_strides", (1,) * (rank - 2)),
        padding=kw.get("padding", "VALID"),
    )
    got = jax.jit(_conv_layout.canonical_convs(conv))(lhs, rhs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_rewritten_conv_and_its_gradients_equal_the_original_in_a_loop(case):
    conv, lhs, rhs = _conv(case)

    def loss(lhs, rhs):
        return jnp.sum(jnp.sin(conv(lhs, rhs)))

    def looped(lhs, rhs):
        # a scan over two scaled copies, with the gradient inside the loop body
        def body(c, s):
            return c, (conv(lhs * s, rhs), jax.grad(loss, argnums=(0, 1))(lhs * s, rhs))

        return lax.scan(body, 0.0, jnp.array([1.0, -0.5]))[1]

    want = jax.jit(looped)(lhs, rhs)
    got = jax.jit(_conv_layout.canonical_convs(looped))(lhs, rhs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _dim_labels(fn, *args):
    text = jax.jit(fn).lower(*args).compile().as_text()
    return set(re.findall(r"dim_labels=([0-9a-z_>\-]+)", text))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's layouts")
def test_a_training_loop_compiles_to_canonical_convolutions_only():
    model = nn.Conv(8, (3, 3))
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 8))
    params = model.init(jax.random.key(1), x)

    def train(params):
        def step(p, _):
            g = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(p)
            return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

        return lax.scan(step, params, None, length=2)[0]

    # The control: left alone, XLA:CPU keeps the backward's convolutions in the loop body in
    # their own axis orders.
    assert _dim_labels(train, params) != {"b01f_01io->b01f"}
    assert _dim_labels(_conv_layout.canonical_convs(train), params) == {"b01f_01io->b01f"}
    got = jax.jit(_conv_layout.canonical_convs(train))(params)
    want = jax.jit(train)(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nested_jaxprs_are_rewritten_and_valid():
    conv, lhs, rhs = _conv("nchw-oihw")

    def nested(lhs, rhs):
        def branch(i):
            return lambda lhs: jax.jit(conv)(lhs, rhs)

        def body(i, acc):
            y = lax.cond(i % 2 == 0, branch(0), lambda lhs: conv(-lhs, rhs), lhs)
            return acc + jnp.sum(y)

        return lax.fori_loop(0, 3, body, 0.0), jax.vmap(conv, in_axes=(None, 0))(lhs, rhs[None])

    closed = jax.make_jaxpr(nested)(lhs, rhs)
    new = _conv_layout.rewrite(closed.jaxpr)
    jex.check_jaxpr(new)
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is lax.conv_general_dilated_p:
                found.append(tuple(map(tuple, eqn.params["dimension_numbers"])))
            for sub in jex.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(new)
    assert len(found) == 3 and set(found) == {((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))}
    got = jax.jit(_conv_layout.canonical_convs(nested))(lhs, rhs)
    want = jax.jit(nested)(lhs, rhs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_a_function_without_convolutions_is_left_as_traced():
    def mlp(w, x):
        return jnp.tanh(x @ w).sum()

    closed = jax.make_jaxpr(jax.grad(mlp))(jnp.ones((3, 4)), jnp.ones((2, 3)))
    assert _conv_layout.rewrite(closed.jaxpr) is closed.jaxpr


def test_pytrees_and_none_pass_through():
    conv, lhs, rhs = _conv("nhwc-hwio")

    def fn(inputs, unused):
        return {"y": conv(inputs["lhs"], inputs["rhs"]), "none": unused}

    out = jax.jit(_conv_layout.canonical_convs(fn))({"lhs": lhs, "rhs": rhs}, None)
    assert out["none"] is None
    np.testing.assert_allclose(out["y"], conv(lhs, rhs), rtol=1e-5, atol=1e-5)
    assert _conv_layout.for_backend(fn, "gpu") is fn


class _NNXCNN(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.conv0 = nnx.Conv(1, width, (3, 3), rngs=rngs)
        self.conv1 = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(nnx.relu(self.conv0(x))))
        return self.head(x.mean(axis=(1, 2)))


@pytest.mark.slow  # 10 s: four compiles of the training; the rewrite is tested above
def test_coord_check_of_an_nnx_cnn_equals_the_check_without_the_rewrite(monkeypatch):
    """The check's training of an NNX CNN, rewritten (on CPU) and left as traced, gives the
    same statistics and losses up to float rounding."""
    images = jax.random.normal(jax.random.key(5), (8, 6, 6, 1))
    labels = jnp.arange(8) % 10
    common = dict(widths=(8, 16), seeds=2, steps=2, optimizer="adam", learning_rate=1e-2)

    def make(width, rngs):
        return _NNXCNN(width, rngs)

    rewritten = jaxinit.coord_check(make, images, labels, **common)
    monkeypatch.setattr(_conv_layout, "for_backend", lambda fn, backend=None: fn)
    traced = jaxinit.coord_check(make, images, labels, **common)
    assert rewritten.layers == traced.layers and len(traced.layers) == 3
    np.testing.assert_allclose(rewritten.values, traced.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rewritten.loss, traced.loss, rtol=1e-5)
