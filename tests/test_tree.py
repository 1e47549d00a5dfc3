"""jaxinit.tree: path-based parameter edits on linen variables and NNX models.

Results are compared with the same edit done by hand on the raw variables dict or on a copy
of the NNX state, never with jaxinit's own output.
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import TOKENS, AllKinds, AllKindsNNX
from flax import nnx
from flax.core import FrozenDict, freeze

import jaxinit
from jaxinit import tree

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------------
# tiny models


class MLP(nn.Module):
    depth: int = 3

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth - 1):
            x = nn.tanh(nn.Dense(3)(x))
        return nn.Dense(2)(x)


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(3, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(2, name="head")(nn.relu(x).mean((1, 2)))


class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
        layers = nn.scan(
            lambda mdl, c, _: (nn.Dense(3, name="dense")(c), None),
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=4,
        )
        x, _ = layers(self, x, None)  # pyright: ignore[reportCallIssue]
        return x


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(11)])
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x))).mean((1, 2))
        for layer in self.layers:
            x = nnx.tanh(layer(x))
        return self.head(self.drop(x))


def linen_mlp(depth=3):
    return MLP(depth).init(KEY, jnp.ones((1, 4)))


def linen_convbn():
    return ConvBN().init(KEY, jnp.ones((1, 5, 5, 1)))


def nnx_net():
    return NNXNet(nnx.Rngs(0, dropout=1))


def nnx_params(model) -> dict[str, np.ndarray]:
    """Every nnx.Param as a numpy copy, by "/"-joined path (an independent read)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, k)): np.array(v.get_value()) for k, v in flat}


def nnx_other(model) -> dict[str, np.ndarray]:
    """Every non-Param variable (BatchNorm statistics, RNG keys and counts) as numpy copies."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param)))
    out = {}
    for k, v in flat:
        value = v.get_value()
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        out["/".join(map(str, k))] = np.array(value)
    return out


def draw(init, key, path, w):
    """The documented reinit draw, computed independently of jaxinit.tree."""
    k = jax.random.fold_in(key, np.uint32(zlib.crc32(path.encode())))
    return init(k, w.shape, w.dtype)


# --------------------------------------------------------------------------------------------
# paths and order


def test_linen_paths_natural_order_and_where():
    variables = linen_mlp(depth=12)
    got = tree.paths(variables)
    want = [f"Dense_{i}/{n}" for i in range(12) for n in ("bias", "kernel")]
    assert got == want
    assert tree.paths(variables, "Dense_1?/kernel") == ["Dense_10/kernel", "Dense_11/kernel"]
    assert tree.paths(variables, ["Dense_0/*", "Dense_11/bias"]) == [
        "Dense_0/bias",
        "Dense_0/kernel",
        "Dense_11/bias",
    ]
    assert tree.paths(variables, lambda p, w: w.ndim == 2) == [p for p in want if "kernel" in p]
    # the order depends on names only: jit returns sorted dicts, the paths stay the same
    assert tree.paths(jax.jit(lambda v: v)(variables)) == want


def test_linen_paths_conv_bn_only_params():
    variables = linen_convbn()
    assert set(variables) == {"params", "batch_stats"}
    want = ["bn/bias", "bn/scale", "conv/bias", "conv/kernel", "head/bias", "head/kernel"]
    assert tree.paths(variables) == want
    assert tree.paths(variables, "**/kernel") == ["conv/kernel", "head/kernel"]


def test_nnx_paths_natural_order_only_params():
    model = nnx_net()
    want = ["bn/bias", "bn/scale", "conv/bias", "conv/kernel", "head/bias", "head/kernel"]
    want += [f"layers/{i}/{n}" for i in range(11) for n in ("bias", "kernel")]
    assert tree.paths(model) == want
    assert sorted(tree.paths(model)) == sorted(nnx_params(model))
    assert tree.paths(model, "layers/1*/kernel") == ["layers/1/kernel", "layers/10/kernel"]


def test_nnx_tied_parameter_listed_once():
    class Tied(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(2, 2, rngs=rngs)
            self.b = self.a

    assert tree.paths(Tied(nnx.Rngs(0))) == ["a/bias", "a/kernel"]


def test_get_equals_raw_values():
    variables = linen_convbn()
    got = tree.get(variables, "**/kernel")
    assert list(got) == ["conv/kernel", "head/kernel"]
    np.testing.assert_array_equal(got["conv/kernel"], variables["params"]["conv"]["kernel"])
    model = nnx_net()
    got = tree.get(model, "layers/3/*")
    np.testing.assert_array_equal(got["layers/3/kernel"], model.layers[3].kernel[...])
    np.testing.assert_array_equal(got["layers/3/bias"], model.layers[3].bias[...])


# --------------------------------------------------------------------------------------------
# linen edits equal hand edits; other collections untouched


def test_linen_scale_shift_zero_equal_hand_edits():
    variables = linen_convbn()
    p = variables["params"]
    out = tree.scale(variables, "**/kernel", 3.0)
    np.testing.assert_array_equal(out["params"]["conv"]["kernel"], p["conv"]["kernel"] * 3.0)
    np.testing.assert_array_equal(out["params"]["head"]["kernel"], p["head"]["kernel"] * 3.0)
    assert out["params"]["conv"]["bias"] is p["conv"]["bias"]
    assert out["params"]["bn"] is p["bn"]  # untouched subtrees are the same objects
    assert out["batch_stats"] is variables["batch_stats"]
    assert variables["params"] is p and p["conv"]["kernel"] is not out["params"]["conv"]["kernel"]

    delta = jnp.arange(3.0)
    out = tree.shift(variables, "conv/bias", delta)
    np.testing.assert_array_equal(out["params"]["conv"]["bias"], p["conv"]["bias"] + delta)
    out = tree.zero(variables, "head/*")
    assert not np.any(out["params"]["head"]["kernel"]) and not np.any(out["params"]["head"]["bias"])
    assert out["batch_stats"] is variables["batch_stats"]


def test_linen_frozendict_stays_frozen_other_leaves_identical():
    variables = freeze(linen_convbn())
    out = tree.scale(variables, "**/kernel", 2.0)
    assert isinstance(out, FrozenDict)
    for a, b in zip(
        jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(out["batch_stats"]), strict=True
    ):
        assert a is b
    np.testing.assert_array_equal(
        out["params"]["conv"]["kernel"], variables["params"]["conv"]["kernel"] * 2
    )


def test_linen_scan_stack_per_layer_factor():
    variables = Stack().init(KEY, jnp.ones((1, 3)))
    assert tree.paths(variables) == ["dense/bias", "dense/kernel"]
    kernel = variables["params"]["dense"]["kernel"]
    assert kernel.shape == (4, 3, 3)
    factor = jnp.arange(1.0, 5.0).reshape(4, 1, 1)
    out = tree.scale(variables, "dense/kernel", factor)
    np.testing.assert_array_equal(out["params"]["dense"]["kernel"], kernel * factor)


def test_linen_boxed_params_keep_their_box():
    dense = nn.Dense(
        4, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "m"))
    )
    variables = dense.init(KEY, jnp.ones((1, 2)))
    box = variables["params"]["kernel"]
    assert isinstance(box, nn.Partitioned)
    out = tree.scale(variables, "kernel", 2.0)
    new = out["params"]["kernel"]
    assert isinstance(new, nn.Partitioned) and new.names == (None, "m")
    np.testing.assert_array_equal(new.value, box.value * 2)
    assert tree.get(variables, "kernel")["kernel"].shape == (2, 4)


def test_linen_reinit_draws_per_path_and_keeps_dtype():
    variables = nn.Dense(3, param_dtype=jnp.bfloat16).init(KEY, jnp.ones((1, 4)))
    variables = {"params": {"a": variables["params"], "b": variables["params"]}}
    init = jaxinit.he_normal()
    key = jax.random.key(7)
    out = tree.reinit(variables, "**/kernel", init, key)
    for name in ("a", "b"):
        w = variables["params"][name]["kernel"]
        got = out["params"][name]["kernel"]
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(got, draw(init, key, f"{name}/kernel", w))
    # a parameter's draw does not depend on what else is selected
    alone = tree.reinit(variables, "b/kernel", init, key)
    np.testing.assert_array_equal(alone["params"]["b"]["kernel"], out["params"]["b"]["kernel"])
    assert not np.array_equal(out["params"]["a"]["kernel"], out["params"]["b"]["kernel"])
    # also with a raw uint32 key and a jax.nn initializer
    raw = jax.random.PRNGKey(3)
    out = tree.reinit(variables, "a/kernel", jax.nn.initializers.normal(), raw)
    w = variables["params"]["a"]["kernel"]
    want = draw(jax.nn.initializers.normal(), raw, "a/kernel", w)
    np.testing.assert_array_equal(out["params"]["a"]["kernel"], want)


def test_linen_under_jit_equals_eager():
    variables = linen_mlp()
    edit = jax.jit(
        lambda v, s, k: tree.reinit(tree.scale(v, "**/kernel", s), "**/bias", jaxinit.normal(), k)
    )
    got = edit(variables, 2.0, KEY)
    want = tree.reinit(tree.scale(variables, "**/kernel", 2.0), "**/bias", jaxinit.normal(), KEY)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# differentiability


def test_grad_of_scale_matches_closed_form():
    """A bias-free linear 2-layer net: output(s) = s² y, so loss = s⁴ L and dL/ds = 4 s³ L."""

    class Linear2(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, use_bias=False)(nn.Dense(4, use_bias=False)(x))

    model = Linear2()
    x = jax.random.normal(jax.random.key(1), (5, 2))
    variables = model.init(KEY, x)
    base = float(jnp.sum(model.apply(variables, x) ** 2))

    def loss(s):
        return jnp.sum(model.apply(tree.scale(variables, "**/kernel", s), x) ** 2)

    s = 1.3
    np.testing.assert_allclose(jax.grad(loss)(s), 4 * s**3 * base, rtol=1e-5)
    eps = 1e-3  # and a central finite difference
    fd = (loss(s + eps) - loss(s - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(loss)(s), fd, rtol=1e-2)


def test_grad_of_shift_counts_elements():
    variables = linen_mlp()
    n_bias = sum(v.size for v in tree.get(variables, "**/bias").values())
    grad = jax.grad(
        lambda d: sum(
            jnp.sum(v) for v in jax.tree.leaves(tree.shift(variables, "**/bias", d)["params"])
        )
    )(0.5)
    np.testing.assert_allclose(grad, n_bias)


def test_nnx_grad_of_scale_through_merge():
    model = nnx.Linear(2, 3, use_bias=False, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jnp.ones((1, 2))
    base = float(jnp.sum(model(x)))

    def loss(s):
        m = nnx.merge(graphdef, state, copy=True)
        tree.scale(m, "kernel", s)
        return jnp.sum(m(x))

    np.testing.assert_allclose(jax.grad(loss)(2.0), base, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# NNX edits in place


def test_nnx_edits_in_place_equal_hand_edits_others_untouched():
    model = nnx_net()
    model(jnp.ones((2, 5, 5, 1)))  # BatchNorm statistics and the dropout RNG count move
    before, others = nnx_params(model), nnx_other(model)
    assert tree.scale(model, "**/kernel", 0.5) is None
    after = nnx_params(model)
    for path, w in before.items():
        want = w * np.float32(0.5) if path.endswith("kernel") else w
        np.testing.assert_array_equal(after[path], want, err_msg=path)
    tree.shift(model, "layers/*/bias", 1.0)
    np.testing.assert_array_equal(model.layers[4].bias[...], before["layers/4/bias"] + 1)
    tree.zero(model, "head/kernel")
    assert not np.any(model.head.kernel[...])
    now = nnx_other(model)
    assert sorted(now) == sorted(others)
    assert any("mean" in p for p in now) and any("count" in p for p in now)
    for path, v in others.items():
        np.testing.assert_array_equal(now[path], v, err_msg=path)


def test_nnx_reinit_draws_per_path():
    model = nnx_net()
    before = nnx_params(model)
    init, key = jaxinit.orthogonal(), jax.random.key(5)
    tree.reinit(model, "layers/**/kernel", init, key)
    after = nnx_params(model)
    for path, w in before.items():
        want = draw(init, key, path, w) if path.startswith("layers") and "kernel" in path else w
        np.testing.assert_array_equal(after[path], want, err_msg=path)


def test_nnx_under_nnx_jit():
    model, twin = nnx_net(), nnx_net()

    @nnx.jit
    def edit(m, s):
        tree.scale(m, "**/kernel", s)

    edit(model, 3.0)
    tree.scale(twin, "**/kernel", 3.0)
    for path, w in nnx_params(twin).items():
        np.testing.assert_allclose(nnx_params(model)[path], w, rtol=1e-6, err_msg=path)


# --------------------------------------------------------------------------------------------
# errors


def test_where_matching_nothing_lists_paths():
    with pytest.raises(ValueError, match=r"where='\*\*/kernal' matches no parameter.*Dense_0/bias"):
        tree.scale(linen_mlp(), "**/kernal", 2.0)
    with pytest.raises(ValueError, match=r"\(22 in all\)"):
        tree.zero(linen_mlp(depth=11), "Dense_0")  # a module path, not a parameter path


@pytest.mark.parametrize(
    "target, match",
    [
        (3, "neither linen variables.*got int"),
        (nn.Dense(3), "linen module Dense; pass its variables"),
        ({"batch_stats": {}}, "no 'params'"),
    ],
    ids=["int", "linen-module", "no-params"],
)
def test_bad_target(target, match):
    with pytest.raises(TypeError, match=match):
        tree.paths(target)


def test_bad_arguments_are_named():
    variables = linen_mlp()
    with pytest.raises(TypeError, match="where=3 is not supported"):
        tree.paths(variables, 3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match=r"init=2\.0 is not callable"):
        tree.reinit(variables, "**/kernel", 2.0, KEY)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="key=0 is not a single PRNG key"):
        tree.reinit(variables, "**/kernel", jaxinit.normal(), 0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(
        ValueError, match=r"factor has shape \(5,\).*'Dense_0/bias' of shape \(3,\)"
    ):
        tree.scale(variables, "**/*", jnp.ones(5))
    with pytest.raises(ValueError, match=r"delta has shape \(4, 1, 1\)"):
        tree.shift(variables, "Dense_0/kernel", jnp.ones((4, 1, 1)))
    with pytest.raises(TypeError, match="factor='x'"):
        tree.scale(variables, "**/kernel", "x")
    with pytest.raises(ValueError, match="factor=nan is not finite"):
        tree.scale(variables, "**/kernel", float("nan"))
    with pytest.raises(ValueError, match="is not finite"):
        tree.shift(variables, "**/bias", jnp.array([0.0, jnp.inf, 0.0]))
    with pytest.raises(ValueError, match="init returned shape"):
        tree.reinit(variables, "**/kernel", lambda k, s, d: jnp.zeros((1,)), KEY)


# --------------------------------------------------------------------------------------------
# every layer kind of the kind table: paths are Flax's own, edits land on the right tensor


def _all_kinds_linen():
    # jitted: one compilation instead of one per operation of twelve layers' init (6 s, not 20)
    return jax.jit(AllKinds().init)(KEY, TOKENS)


def _all_kinds_nnx():
    return AllKindsNNX(nnx.Rngs(0))


def test_every_linen_layer_kind_paths_and_scale_match_flax():
    from flax.traverse_util import flatten_dict

    variables = _all_kinds_linen()
    flat = flatten_dict(variables["params"], sep="/")
    assert sorted(tree.paths(variables)) == sorted(flat)
    scaled = tree.scale(variables, "**", 3.0)
    scaled_flat = flatten_dict(scaled["params"], sep="/")
    for path, w in flat.items():
        np.testing.assert_array_equal(scaled_flat[path], 3.0 * np.asarray(w), err_msg=path)
    assert scaled["batch_stats"] is variables["batch_stats"]


def test_every_nnx_layer_kind_paths_and_scale_match_flax():
    model = _all_kinds_nnx()
    flat = {
        "/".join(str(p) for p in path): v.get_value()
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert sorted(tree.paths(model)) == sorted(flat)
    stats_before = {
        "/".join(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
    }
    tree.scale(model, "**", 3.0)
    for path, w in tree.get(model, "**").items():
        np.testing.assert_array_equal(w, 3.0 * np.asarray(flat[path]), err_msg=path)
    for p, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat)):
        np.testing.assert_array_equal(v.get_value(), stats_before["/".join(map(str, p))])
