"""jaxinit.measure: statistics of one pass on given parameters, against independent references
(linen's capture_intermediates, a plain-JAX chain with the same weights, a per-layer NNX call)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compiles import log_compilations
from _models import KIND_LAYERS, TOKENS, AllKinds, AllKindsNNX
from flax import nnx

import jaxinit
from jaxinit import models

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (32, 12))
LABELS = jnp.arange(32) % 5
MLP = models.MLP(depth=3, width=16, num_outputs=5, kernel_init=jaxinit.he_normal())
F32 = {"rtol": 2e-5, "atol": 1e-6}
ALL = ("mean", "std", "rms", "abs_mean", "abs_max")


def _numpy_stats(y) -> dict[str, float]:
    y = np.asarray(y, np.float64)
    return {
        "mean": y.mean(),
        "std": y.std(),
        "rms": np.sqrt((y**2).mean()),
        "abs_mean": np.abs(y).mean(),
        "abs_max": np.abs(y).max(),
    }


def test_output_and_input_statistics_equal_capture_intermediates():
    variables = MLP.init(KEY, X)
    m = jaxinit.measure(MLP, variables, X, stats=(*ALL, *(f"in_{s}" for s in ALL)))
    _, state = MLP.apply(variables, X, capture_intermediates=True)
    captured = {k: v["__call__"][0] for k, v in state["intermediates"].items() if k != "__call__"}
    assert m.paths == tuple(captured) == ("Dense_0", "Dense_1", "Dense_2", "head")
    inputs = [X] + [jax.nn.relu(captured[p]) for p in ("Dense_0", "Dense_1", "Dense_2")]
    for (path, y), xin in zip(captured.items(), inputs, strict=True):
        for name, want in _numpy_stats(y).items():
            np.testing.assert_allclose(m[path][name], want, **F32, err_msg=f"{path} {name}")
        for name, want in _numpy_stats(xin).items():
            np.testing.assert_allclose(m[path][f"in_{name}"], want, **F32, err_msg=path)
    assert m.loss is None


def _plain_chain(variables, x, eps):
    """The same MLP in plain JAX, with a perturbation added to each Dense output."""
    p = variables["params"]
    h = x
    for i in range(3):
        h = jax.nn.relu(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"][None] + eps[i])
    return h @ p["head"]["kernel"] + p["head"]["bias"][None] + eps[3]


def test_gradient_statistics_equal_a_plain_jax_chain():
    variables = jax.jit(MLP.init)(KEY, X)
    m = jax.jit(
        lambda v: jaxinit.measure(MLP, v, X, stats=("grad_std", "grad_rms"), labels=LABELS)
    )(variables)
    eps = [jnp.zeros((32, 16))] * 3 + [jnp.zeros((32, 5))]

    def loss(e):
        logits = _plain_chain(variables, X, e)
        return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(eps)
    np.testing.assert_allclose(m.loss, value, **F32)
    for path, g in zip(m.paths, grads, strict=True):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(m[path]["grad_std"], g.std(), **F32)
        np.testing.assert_allclose(m[path]["grad_rms"], np.sqrt((g**2).mean()), **F32)


def test_user_functions_and_a_custom_loss():
    variables = MLP.init(KEY, X)
    frac = ("frac_positive", lambda y: jnp.mean(y > 0))
    m = jaxinit.measure(
        MLP, variables, X, stats=[frac, "grad_abs_max"], loss=lambda out, _: jnp.sum(out**2)
    )
    _, state = MLP.apply(variables, X, capture_intermediates=True)
    head = np.asarray(state["intermediates"]["head"]["__call__"][0], np.float64)
    np.testing.assert_allclose(m["head"]["frac_positive"], (head > 0).mean(), rtol=1e-6)
    # d sum(out^2) / d out = 2 out at the head.
    np.testing.assert_allclose(m["head"]["grad_abs_max"], 2 * np.abs(head).max(), **F32)
    np.testing.assert_allclose(m.loss, (head**2).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"stats names 'x' twice"):
        jaxinit.measure(MLP, variables, X, stats=[("x", jnp.mean), ("x", jnp.max)])
    m2 = jaxinit.measure(MLP, variables, X, stats={"peak": jnp.max})
    np.testing.assert_allclose(m2["head"]["peak"], head.max(), rtol=1e-6)


def test_jit_keeps_forward_order_and_vmap_equals_a_loop():
    keys = jax.random.split(KEY, 4)
    stacked = jax.jit(jax.vmap(lambda k: MLP.init(k, X)))(keys)
    stats = ("std", "in_rms", "grad_std")

    @jax.jit
    def one(v):
        return jaxinit.measure(MLP, v, X, stats=stats, labels=LABELS)

    batched = jax.jit(jax.vmap(one))(stacked)
    assert batched.paths == ("Dense_0", "Dense_1", "Dense_2", "head")  # not sorted: head last
    # The loop calls one compiled program per seed (eagerly, every operation would compile).
    single_of = jax.jit(lambda k: one(MLP.init(k, X)))
    for i, k in enumerate(keys):
        single = single_of(k)
        for path in single.paths:
            for name in stats:
                np.testing.assert_allclose(batched[path][name][i], single[path][name], **F32)
        np.testing.assert_allclose(batched.loss[i], single.loss, **F32)


def test_an_eager_call_is_one_program_and_a_repeat_compiles_nothing():
    variables = jax.jit(MLP.init)(KEY, X)
    doubled = jax.jit(lambda v: jax.tree.map(lambda a: 2 * a, v))(variables)
    stats = ("std", "in_std", "grad_rms")
    with log_compilations() as compiled:
        first = jaxinit.measure(MLP, variables, X, stats=stats, labels=LABELS)
    # one program for the pass, where operation by operation each would compile alone
    assert compiled == ["jit(_pass)"]
    with log_compilations() as compiled:
        again = jaxinit.measure(MLP, doubled, X, stats=list(stats), labels=LABELS)
    assert compiled == []  # equal module, statistics and shapes
    want = jax.jit(lambda v: jaxinit.measure(MLP, v, X, stats=stats, labels=LABELS))(doubled)
    for path in want.paths:
        for name in stats:
            np.testing.assert_allclose(again[path][name], want[path][name], **F32)
    # parameters doubled at every layer: the first layer's output std doubles
    np.testing.assert_allclose(again["Dense_0"]["std"], 2 * first["Dense_0"]["std"], **F32)


class _Dropout(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(3)(h)


def test_array_keywords_are_traced_and_an_unhashable_keyword_still_runs():
    model = _Dropout()
    variables = jax.jit(model.init, static_argnames="train")(KEY, X, train=False)

    def head_std(**kwargs):
        return float(
            jaxinit.measure(model, variables, X, stats=("std",), **kwargs)["Dense_1"]["std"]
        )

    keys = [{"dropout": jax.random.key(s)} for s in (1, 2)]
    with log_compilations() as compiled:
        head_std(train=True, rngs=keys[0])
    assert compiled == ["jit(_pass)"]  # the measuring pass, compiled as one program
    with log_compilations() as compiled:
        a, b, a2 = (head_std(train=True, rngs=k) for k in (keys[0], keys[1], keys[0]))
    assert compiled == []  # the keys are traced arguments, not part of the program
    assert a == a2 and a != b
    # the same output with Flax's own dropout under the same key
    out = jax.jit(lambda v: model.apply(v, X, train=True, rngs=keys[0]))(variables)
    np.testing.assert_allclose(a, np.asarray(out, np.float64).std(), **F32)
    # a keyword value that cannot be hashed (a list) runs operation by operation, same result
    plain = head_std(train=False)
    with log_compilations() as compiled:
        listed = head_std(train=False, mutable=[])
    assert "jit(_pass)" not in compiled
    np.testing.assert_allclose(listed, plain, **F32)


def test_scanned_layers_give_one_value_per_iteration():
    scanned = models.MLP(depth=4, width=12, kernel_init=jaxinit.he_normal(), scan=True)
    variables = jax.jit(scanned.init)(KEY, X)
    m = jax.jit(lambda v: jaxinit.measure(scanned, v, X, stats=("std", "grad_std")))(variables)
    assert m.paths == ("Dense_0", "layers/dense")
    assert m["layers/dense"]["std"].shape == (3,) and m["layers/dense"]["grad_std"].shape == (3,)
    # The same weights as a plain chain.
    p = variables["params"]
    h, stds = jax.nn.relu(X @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None]), []
    for i in range(3):
        layer = jax.tree.map(lambda a, i=i: a[i], p["layers"]["dense"])
        y = h @ layer["kernel"] + layer["bias"][None]
        stds.append(np.asarray(y, np.float64).std())
        h = jax.nn.relu(y)
    np.testing.assert_allclose(m["layers/dense"]["std"], stds, **F32)


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.linear = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return self.linear(h.mean(axis=(1, 2)))


def test_nnx_model_is_measured_and_left_unchanged():
    model = _NNXNet(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (6, 8, 8, 3))
    before = jax.tree.map(np.asarray, nnx.state(model))
    m = jax.jit(lambda x: jaxinit.measure(model, x, stats=("mean", "std", "in_std", "grad_rms")))(x)
    assert m.paths == ("conv", "linear")
    conv = nnx.jit(lambda conv, x: conv(x))(model.conv, x)
    want = _numpy_stats(conv)
    np.testing.assert_allclose(m["conv"]["std"], want["std"], **F32)
    np.testing.assert_allclose(m["conv"]["in_std"], np.asarray(x, np.float64).std(), **F32)
    # The BatchNorm running statistics and every other variable are untouched.
    after = jax.tree.map(np.asarray, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, after, before)


def test_bad_input_is_a_clear_error():
    variables = MLP.init(KEY, X)
    with pytest.raises(ValueError, match=r"stats entry 'sdt' is not a known statistic"):
        jaxinit.measure(MLP, variables, X, stats=("sdt",))
    with pytest.raises(ValueError, match=r"stats='std' must be a non-empty sequence"):
        jaxinit.measure(MLP, variables, X, stats="std")
    with pytest.raises(TypeError, match=r"stats entry 3 must be a statistic name"):
        jaxinit.measure(MLP, variables, X, stats=(3,))
    with pytest.raises(ValueError, match=r"no layer matched select='conv\*'"):
        jaxinit.measure(MLP, variables, X, select="conv*")
    with pytest.raises(TypeError, match=r"a linen module takes \(module, variables, x\)"):
        jaxinit.measure(MLP, X)
    with pytest.raises(TypeError, match=r"model of type dict is not a Flax module"):
        jaxinit.measure({}, X)
    with pytest.raises(TypeError, match=r"loss=3 must be a callable"):
        jaxinit.measure(MLP, variables, X, loss=3)


def test_measure_of_a_dense_with_no_kernel_init_argument():
    # A plain Dense (the flax default init) is measured like any other layer.
    dense = nn.Dense(3)
    variables = dense.init(KEY, X)
    m = jaxinit.measure(dense, variables, X)
    np.testing.assert_allclose(m[""]["std"], np.asarray(dense.apply(variables, X)).std(), **F32)


# --------------------------------------------------------------------------------------------
# every layer kind of the kind table, against an independent capture


def test_every_linen_layer_kind_equals_capture_intermediates():
    model = AllKinds()
    variables = jax.jit(model.init)(KEY, TOKENS)  # one compilation, not one per operation
    # Both sides compiled (eagerly, each of the many layers' operations would compile alone).
    m = jax.jit(lambda v: jaxinit.measure(model, v, TOKENS, stats=ALL, select=list(KIND_LAYERS)))(
        variables
    )
    _, state = jax.jit(lambda v: model.apply(v, TOKENS, capture_intermediates=True))(variables)
    captured = state["intermediates"]
    assert m.paths == KIND_LAYERS
    for path in KIND_LAYERS:
        y = captured[path]["__call__"][0]
        for name, want in _numpy_stats(y).items():
            np.testing.assert_allclose(m[path][name], want, **F32, err_msg=f"{path} {name}")


def test_every_nnx_layer_kind_equals_a_layer_by_layer_run():
    model = AllKindsNNX(nnx.Rngs(0))
    names = [n for n, _ in model.layers()] + ["dense"]
    m = jaxinit.measure(model, TOKENS, stats=ALL, select=names)
    assert m.paths == tuple(names)
    h, outputs = TOKENS, {}
    for name, layer in model.layers():
        h = outputs[name] = layer(h)
    outputs["dense"] = model.dense(h.mean(1))
    for path, y in outputs.items():
        for name, want in _numpy_stats(y).items():
            np.testing.assert_allclose(m[path][name], want, **F32, err_msg=f"{path} {name}")
