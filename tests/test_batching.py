"""Equal batches over seeds: the same results as ``jax.lax.map``, with the body traced once."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinit import _batching


def _body(x):
    return {"sin": jnp.sin(x["a"]) * x["b"], "sum": jnp.sum(x["a"])}


def _inputs(n):
    a = jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3) / 7.0
    return {"a": a, "b": jnp.arange(n, dtype=jnp.float32)[:, None] - 2.5}


def _count(fn, n, primitive="sin"):
    jaxpr = jax.make_jaxpr(fn)(_inputs(n))
    return sum(1 for eqn in _eqns(jaxpr.jaxpr) if eqn.primitive.name == primitive)


def _eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _eqns(sub)


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (16, 6), (13, 6), (7, 7), (5, 9), (4, 1)])
def test_map_padded_equals_lax_map(n, batch):
    xs = _inputs(n)
    got = jax.jit(lambda xs: _batching.map_padded(_body, xs, batch))(xs)
    want = jax.lax.map(_body, xs)
    for name in ("sin", "sum"):
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (16, 6), (13, 6)])
def test_an_uneven_last_batch_traces_the_body_once(n, batch):
    # lax.map's own batching runs the remainder as a second copy of the body: the control
    # shows that the count can tell one copy from two.
    assert _count(lambda xs: jax.lax.map(_body, xs, batch_size=batch), n) == 2
    assert _count(lambda xs: _batching.map_padded(_body, xs, batch), n) == 1


@pytest.mark.parametrize(
    ("n", "batch", "shape"),
    # (elements, batch size asked) -> (batches, batch size): the least padding with between
    # the fewest batches the size allows and twice that, then the fewest batches.
    [(16, 6, (4, 4)), (13, 6, (3, 5)), (12, 6, (2, 6)), (10, 3, (5, 2)), (9, 4, (3, 3))],
)
def test_batches_are_balanced(n, batch, shape):
    seen = []

    def run_batch(xs):
        seen.append(xs["a"].shape[0])
        return jax.vmap(_body)(xs)

    closed = jax.make_jaxpr(lambda xs: _batching.map_batches(run_batch, xs, batch))(_inputs(n))
    (scan,) = [e for e in _eqns(closed.jaxpr) if e.primitive.name == "scan"]
    assert (scan.params["length"], seen) == (shape[0], [shape[1]])
    out = jax.jit(lambda xs: _batching.map_batches(run_batch, xs, batch))(_inputs(n))
    assert out["sum"].shape == (n,)


def test_keys_pad_and_split_as_lax_map():
    keys = jax.random.split(jax.random.key(3), 7)

    def draw(k):
        return jax.random.normal(k, (4,))

    got = _batching.map_padded(draw, keys, 3)
    np.testing.assert_array_equal(got, jax.lax.map(draw, keys))
