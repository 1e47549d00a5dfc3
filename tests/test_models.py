"""jaxinit.app.models: the ResNet's blocks per stage, the scanned MLP's layout, the transformers."""

from functools import partial
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinit.app import models

X = jnp.ones((2, 8, 8, 3))


def test_resnet_blocks_per_stage_linen_and_nnx():
    # Two blocks per stage: the first of stages 2 and 3 halves the resolution.
    def init(model):  # shapes only: no computation
        return jax.eval_shape(model.init, jax.random.key(0), X)["params"]

    params = init(models.ResNet(widths=(4, 8, 16), blocks=2))
    names = sorted(k for k in params if "block" in k)
    assert names == [f"stage{i}_block{b}" for i in range(3) for b in range(2)]
    assert "proj" in params["stage1_block0"] and "proj" not in params["stage1_block1"]
    nnx_model = nnx.eval_shape(
        lambda: models.NNXResNet(3, widths=(4, 8, 16), blocks=2, rngs=nnx.Rngs(0))
    )
    assert len(nnx_model.blocks) == 6
    # One block per stage keeps the names block0 ... block2.
    one = init(models.ResNet(widths=(4, 8, 16)))
    assert sorted(k for k in one if "block" in k) == ["block0", "block1", "block2"]
    with pytest.raises(ValueError, match=r"ResNet: blocks=0 must be an int >= 1"):
        init(models.ResNet(blocks=0))


# ---- pre-activation ResNet (v2)


def _flat(tree, nnx_blocks=False):
    """``{path: shape}`` of a parameter tree; NNX's ``blocks/{j}`` written as linen's
    ``block{j}``."""
    out = {}
    for path, a in jax.tree_util.tree_leaves_with_path(tree):
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if nnx_blocks and keys[0] == "blocks":
            keys = [f"block{keys[1]}", *keys[2:]]
        out["/".join(keys)] = a.shape
    return out


@pytest.mark.parametrize("batch_norm", [False, True], ids=["no-bn", "bn"])
def test_preact_resnet_linen_and_nnx_have_the_same_parameters(batch_norm):
    kw = {"widths": (4, 8), "batch_norm": batch_norm, "preact": True}
    lin = _flat(jax.eval_shape(models.ResNet(**kw).init, jax.random.key(0), X)["params"])
    nm = nnx.eval_shape(lambda: models.NNXResNet(3, rngs=nnx.Rngs(0), **kw))
    assert _flat(nnx.to_pure_dict(nnx.state(nm, nnx.Param)), nnx_blocks=True) == lin
    # He et al. 2016's v2: no norm on the stem or the projection, bn1 on the block's input,
    # a final norm after the last block; convs lose their bias with BatchNorm.
    want = {"stem/kernel": (3, 3, 3, 4), "block1/proj/kernel": (1, 1, 4, 8)}
    want |= {"block0/conv2/kernel": (3, 3, 4, 4), "head/kernel": (8, 10)}
    if batch_norm:
        want |= {"block1/bn1/scale": (4,), "block1/bn2/scale": (8,), "bn_final/scale": (8,)}
    else:
        want |= {"block1/conv1/bias": (8,), "block1/proj/bias": (8,)}
    assert want.items() <= lin.items()
    assert not any(k.startswith(("stem_bn", "block1/bn_proj")) for k in lin)
    assert any(k.startswith("block1/bn") for k in lin) == batch_norm


def _preact_reference(p, x):
    """The pre-activation ResNet (two stages, BatchNorm with batch statistics, ReLU, zero
    padding k // 2) typed out with jax.lax from the parameters ``p``."""

    def conv(x, q, stride):
        k = q["kernel"]
        pad = [(k.shape[0] // 2, k.shape[0] // 2)] * 2
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=dn)

    def bn(x, q):
        m, v = x.mean((0, 1, 2), keepdims=True), x.var((0, 1, 2), keepdims=True)
        return (x - m) / jnp.sqrt(v + 1e-5) * q["scale"][None, None, None] + q["bias"][
            None, None, None
        ]

    relu = jax.nn.relu
    x = conv(x, p["stem"], 1)
    b = p["block0"]  # 4 -> 4: identity shortcut
    y = relu(bn(x, b["bn1"]))
    x = x + conv(relu(bn(conv(y, b["conv1"], 1), b["bn2"])), b["conv2"], 1)
    b = p["block1"]  # 4 -> 8, stride 2: the projection takes relu(bn1(x))
    y = relu(bn(x, b["bn1"]))
    h = conv(relu(bn(conv(y, b["conv1"], 2), b["bn2"])), b["conv2"], 1)
    x = conv(y, b["proj"], 2) + h
    x = relu(bn(x, p["bn_final"])).mean((1, 2))
    return x @ p["head"]["kernel"] + p["head"]["bias"][None]


def test_preact_resnet_forward_matches_a_hand_written_one():
    kw = {"widths": (4, 8), "batch_norm": True, "preact": True, "num_classes": 3}
    nm = nnx.eval_shape(lambda: models.NNXResNet(3, rngs=nnx.Rngs(0), **kw))
    nm.train()  # batch statistics
    rng = np.random.default_rng(0)
    shapes = nnx.to_pure_dict(nnx.state(nm, nnx.Param))
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)
    nnx.update(nm, params)
    stats = nnx.to_pure_dict(nnx.state(nm, nnx.BatchStat))  # running statistics: unused
    nnx.update(nm, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats))
    graph, state = nnx.split(nm)
    lin = models.ResNet(**kw)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)), jnp.float32)
    stats = jax.eval_shape(lin.init, jax.random.key(0), x)["batch_stats"]
    stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)

    @partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})  # one compile
    def run(params, state, x):
        p = {k: v for k, v in params.items() if k != "blocks"}
        p |= {f"block{j}": b for j, b in params["blocks"].items()}
        variables = {"params": p, "batch_stats": stats}
        out, _ = lin.apply(variables, x, train=True, mutable=["batch_stats"])
        return _preact_reference(p, x), out, nnx.merge(graph, state)(x)

    want, got_linen, got_nnx = run(params, state, x)
    assert want.shape == (2, 3)
    np.testing.assert_allclose(got_linen, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_nnx, want, rtol=1e-4, atol=1e-4)


def test_resnet_preact_must_be_a_bool():
    with pytest.raises(TypeError, match=r"ResNet: preact='yes' must be True or False"):
        models.ResNet(preact="yes").init(jax.random.key(0), X)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"NNXResNet: preact=1 must be True or False"):
        models.NNXResNet(3, preact=1, rngs=nnx.Rngs(0))  # type: ignore[arg-type]


def test_scanned_mlp_stacks_layers_2_to_depth():
    x = jnp.ones((2, 5))

    def init(model):
        return jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    p = init(models.MLP(depth=4, width=8, num_outputs=3, scan=True))
    assert p["Dense_0"]["kernel"].shape == (5, 8)
    assert p["layers"]["dense"]["kernel"].shape == (3, 8, 8)
    assert p["head"]["kernel"].shape == (8, 3)
    single = init(models.MLP(depth=1, width=8, scan=True))
    assert set(single) == {"Dense_0"}


# ---- Transformer / NNXTransformer

XT = jax.random.normal(jax.random.key(0), (2, 5, 8))


def _pair(**kw):
    """An NNX Transformer (built abstractly) with random NumPy parameters, its linen twin
    and those parameters as a linen tree."""
    nm = nnx.eval_shape(lambda: models.NNXTransformer(8, num_heads=2, rngs=nnx.Rngs(0), **kw))
    shapes = nnx.to_pure_dict(nnx.state(nm, nnx.Param))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), shapes)
    nnx.update(nm, params)
    return models.Transformer(dim=8, num_heads=2, **kw), params, nm


def _apply(lin, variables, x) -> jax.Array:
    return cast(jax.Array, lin.apply(variables, x))


_jit_apply = jax.jit(_apply, static_argnums=0)  # one compile per model, not one per op
_nnx_call = nnx.jit(lambda model, x: model(x))


TOKENS = jnp.array([[1, 2, 3, 4, 0], [5, 6, 7, 8, 9]])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_linen_and_nnx_agree_for_the_same_params(norm):
    lin, params, nm = _pair(depth=1, norm=norm, alpha=0.5, causal=True, num_outputs=3)
    # Same parameter paths (block0/attn/query/kernel, ..., ln_f, head) as linen's init.
    shapes = jax.eval_shape(lin.init, jax.random.key(0), XT)["params"]
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    want = _jit_apply(lin, {"params": params}, XT)
    assert want.shape == (2, 5, 3)
    got = _nnx_call(nm, XT)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_transformer_names_and_shapes_with_an_embedding():
    lin = models.Transformer(depth=3, dim=8, num_heads=2, vocab_size=10, num_outputs=10)
    params = jax.eval_shape(lin.init, jax.random.key(0), TOKENS)["params"]
    assert sorted(params) == ["block0", "block1", "block2", "embed", "head", "ln_f"]
    assert sorted(params["block1"]) == ["attn", "ln1", "ln2", "mlp_in", "mlp_out"]
    assert params["block0"]["mlp_in"]["kernel"].shape == (8, 32)  # mlp_ratio 4
    assert jax.eval_shape(lin.apply, {"params": params}, TOKENS).shape == (2, 5, 10)
    nm = nnx.eval_shape(
        lambda: models.NNXTransformer(
            8, depth=3, num_heads=2, vocab_size=10, num_outputs=10, rngs=nnx.Rngs(0)
        )
    )
    shapes = jax.tree.map(lambda a: a.shape, nnx.to_pure_dict(nnx.state(nm, nnx.Param)))
    assert shapes == jax.tree.map(lambda a: a.shape, params)


def _normalized(y):
    y = np.asarray(y, np.float64)
    return np.allclose(y.mean(-1), 0, atol=1e-5) and np.allclose(y.var(-1), 1, atol=1e-4)


def test_pre_and_post_layernorm_structure():
    # Post-LN ends each block with LayerNorm (scale 1, bias 0 here, as at init): every
    # token's features have mean 0 and variance 1 - O(eps). Pre-LN leaves the residual
    # stream as is: with alpha = 0 (branches off) it is the identity.
    x = 3.0 * XT + 1.0
    for norm, alpha in (("post", 0.5), ("pre", 0.0)):
        kw = {"depth": 1, "norm": norm, "alpha": alpha, "final_norm": False}
        lin, params, _ = _pair(**kw)
        params = jax.tree_util.tree_map_with_path(
            lambda path, a: (
                (jnp.ones_like(a) if path[-1].key == "scale" else a)
                if str(path[-2].key).startswith("ln")
                else a
            ),
            params,
        )
        params = jax.tree_util.tree_map_with_path(
            lambda path, a: (
                jnp.zeros_like(a)
                if str(path[-2].key).startswith("ln") and path[-1].key == "bias"
                else a
            ),
            params,
        )
        y = _jit_apply(lin, {"params": params}, x)
        if norm == "pre":
            np.testing.assert_array_equal(y, x)
        else:
            assert _normalized(y)
            assert not _normalized(x)


def test_attention_fn_is_passed_to_every_block():
    import flax.linen as nn

    calls = []

    def attention_fn(q, k, v, is_causal=False, **kwargs):  # NNX also passes is_causal
        calls.append(q.shape)
        return nn.dot_product_attention(q, k, v, **kwargs)

    lin, params, nm = _pair(depth=3, attention_fn=attention_fn)
    calls.clear()  # tracing is enough: the calls happen while the model traces
    jax.eval_shape(lambda p, x: _apply(lin, {"params": p}, x), params, XT)
    assert calls == [(2, 5, 2, 4)] * 3  # (batch, tokens, heads, head_dim)
    calls.clear()
    nnx.eval_shape(lambda m, x: m(x), nm, XT)
    assert calls == [(2, 5, 2, 4)] * 3


def test_transformer_rejects_an_unknown_norm():
    with pytest.raises(ValueError, match=r"Transformer: norm='mid' is not supported"):
        models.Transformer(norm="mid").init(jax.random.key(0), XT)
    with pytest.raises(ValueError, match=r"NNXTransformer: norm='mid' is not supported"):
        models.NNXTransformer(8, norm="mid", rngs=nnx.Rngs(0))
