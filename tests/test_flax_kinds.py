"""The layer-kind table (jaxinit._flax.kinds) against real Flax layers, linen and NNX.

Each kind's layers are built small with known input and output sizes; their parameter names
must be the table's, and each weight's fans computed from the table's axes must be the known
(fan_in, fan_out).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxinit._flax.adapter import adapter_for
from jaxinit._flax.kinds import KINDS, einsum_weight, kind_of, weight_for

KEY = jax.random.key(0)
R = nnx.Rngs(0)

# kind -> (linen layer, linen input shape, NNX layer or None, {param: (fan_in, fan_out)})
# in = 2 features, out = 4 features; conv kernels 3x3 (receptive field 9), 5x5 inputs.
CASES = {
    "dense": (nn.Dense(4), (1, 2), lambda: nnx.Linear(2, 4, rngs=R), {"kernel": (2, 4)}),
    "dense_general": (
        nn.DenseGeneral(4),
        (1, 2),
        lambda: nnx.LinearGeneral(2, 4, rngs=R),
        {"kernel": (2, 4)},
    ),
    "conv": (
        nn.Conv(4, (3, 3)),
        (1, 5, 5, 2),
        lambda: nnx.Conv(2, 4, (3, 3), rngs=R),
        {"kernel": (18, 36)},
    ),
    "conv_transpose": (
        nn.ConvTranspose(4, (3, 3)),
        (1, 5, 5, 2),
        lambda: nnx.ConvTranspose(2, 4, (3, 3), rngs=R),
        {"kernel": (18, 36)},
    ),
    "conv_local": (nn.ConvLocal(4, (3, 3)), (1, 5, 5, 2), None, {"kernel": (18, 4)}),
    "einsum": (
        nn.Einsum((2, 3, 4), "abc,cde->abde"),
        (1, 1, 2),
        lambda: nnx.Einsum("abc,cde->abde", (2, 3, 4), (3, 4), rngs=R),
        {"kernel": (2, 12)},
    ),
    "embed": (
        nn.Embed(10, 4),
        None,
        lambda: nnx.Embed(10, 4, rngs=R),
        {"embedding": (10, 4)},
    ),
    "layer_norm": (nn.LayerNorm(), (1, 4), lambda: nnx.LayerNorm(4, rngs=R), {}),
    "rms_norm": (nn.RMSNorm(), (1, 4), lambda: nnx.RMSNorm(4, rngs=R), {}),
    "group_norm": (
        nn.GroupNorm(num_groups=2),
        (1, 4),
        lambda: nnx.GroupNorm(4, num_groups=2, rngs=R),
        {},
    ),
    "batch_norm": (
        nn.BatchNorm(use_running_average=True),
        (1, 4),
        lambda: nnx.BatchNorm(4, rngs=R),
        {},
    ),
    # 2 heads of size 3 (qkv_features 6), in 2, out 4
    "attention": (
        nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, out_features=4),
        (1, 3, 2),
        lambda: nnx.MultiHeadAttention(
            num_heads=2, in_features=2, qkv_features=6, out_features=4, decode=False, rngs=R
        ),
        {"query/kernel": (2, 6), "key/kernel": (2, 6), "value/kernel": (2, 6)}
        | {"out/kernel": (6, 4)},
    ),
}


def test_every_kind_has_a_case():
    assert sorted(CASES) == sorted(KINDS)


def _linen_shapes(name):
    layer, shape, _, _ = CASES[name]
    x = jnp.ones(shape) if shape is not None else jnp.zeros((1, 3), jnp.int32)
    variables = layer.init(KEY, x)
    return layer, {p: v.shape for p, v in adapter_for(variables).leaves()}


def _nnx_shapes(name):
    model = CASES[name][2]()
    return model, {p: v.shape for p, v in adapter_for(model).leaves()}


def _check(kind, layer, shapes, fans):
    assert sorted(shapes) == sorted(kind.params), "parameter names differ from the table"
    for param, weight in kind.params.items():
        resolved = weight_for(layer, param)
        if param in fans:
            assert resolved is not None, param
            assert resolved.fans(shapes[param]) == fans[param], (param, shapes[param])
        else:
            assert weight is None and resolved is None, f"{param} is a vector parameter"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_linen_layers_match_the_table(name):
    kind = KINDS[name]
    layer, shapes = _linen_shapes(name)
    assert kind_of(layer) is kind
    if name == "attention":  # the table's sub-layer axes (weight_for sees the sub-layer only)
        for param, fans in CASES[name][3].items():
            assert kind.params[param].fans(shapes[param]) == fans  # pyright: ignore[reportOptionalMemberAccess]
        assert sorted(shapes) == sorted(kind.params)
        return
    _check(kind, layer, shapes, CASES[name][3])


@pytest.mark.parametrize("name", sorted(k for k in KINDS if CASES[k][2] is not None))
def test_nnx_layers_match_the_table(name):
    kind = KINDS[name]
    model, shapes = _nnx_shapes(name)
    assert kind_of(model) is kind
    if name == "attention":
        ad = adapter_for(model)
        for param, fans in CASES[name][3].items():
            assert kind.params[param].fans(shapes[param]) == fans  # pyright: ignore[reportOptionalMemberAccess]
            owner = ad.owner(param)  # the LinearGeneral sub-layer reads its configuration
            assert weight_for(owner, "kernel").fans(shapes[param]) == fans  # pyright: ignore[reportOptionalMemberAccess]
        assert sorted(shapes) == sorted(kind.params)
        return
    _check(kind, model, shapes, CASES[name][3])


def test_dense_general_multi_axis_from_the_module():
    layer = nn.DenseGeneral((3, 4), axis=(-2, -1))
    variables = layer.init(KEY, jnp.ones((1, 2, 5)))
    shape = variables["params"]["kernel"].shape
    assert shape == (2, 5, 3, 4)
    assert weight_for(layer, "kernel").fans(shape) == (10, 12)  # pyright: ignore[reportOptionalMemberAccess]
    model = nnx.LinearGeneral((2, 5), (3, 4), axis=(-2, -1), rngs=R)
    assert weight_for(model, "kernel").fans(model.kernel.shape) == (10, 12)  # pyright: ignore[reportOptionalMemberAccess]


def test_subclasses_and_unknown_layers():
    class MyConv(nn.Conv):
        pass

    class MyLinear(nnx.Linear):
        pass

    assert kind_of(MyConv(3, (3,))) is KINDS["conv"]
    assert kind_of(MyLinear(2, 3, rngs=R)) is KINDS["dense"]
    assert kind_of(nn.Dropout(0.5)) is None
    assert weight_for(nn.Dropout(0.5), "kernel") is None
    assert kind_of(nn.SelfAttention(num_heads=1)) is KINDS["attention"]


def test_affine_kinds_are_the_kernel_layers():
    assert {k.name for k in KINDS.values() if k.affine} == {
        "dense",
        "dense_general",
        "conv",
        "conv_transpose",
        "conv_local",
        "einsum",
    }


def test_einsum_weight_rejects_a_bad_equation():
    with pytest.raises(ValueError, match="einsum_str='ab->b'"):
        einsum_weight("ab->b")
