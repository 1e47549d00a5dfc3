"""Layer-aware fans: ``compute_fans(einsum=)`` and ``for_layer`` on every Flax layer kind whose
``kernel_init`` sees a layout other than ``(*spatial, in, out)``.

Each statistical check compares the sample variance of a drawn kernel with ``gain**2 /
true_fan_in``, the true fan written out by hand from the layer's definition (independent of
jaxinit's fan code), within the sample-derived tolerance of ``tests/_stats.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxinit
from jaxinit import tree
from tests._stats import assert_var

KEY = jax.random.key(7)
LECUN = jaxinit.lecun_normal()
HE = jaxinit.he_normal()
EQ = "bhd,hdk->bhk"  # per-head projection: heads 6, d 64 -> k 32
H, D, K = 6, 64, 32


def _linen_kernel(layer: nn.Module, x: jax.Array) -> np.ndarray:
    return np.asarray(layer.init(KEY, x)["params"]["kernel"])


def test_compute_fans_from_an_einsum_equation():
    assert jaxinit.compute_fans((H, D, K), einsum=EQ) == (D, K)
    assert jaxinit.compute_fans((D, 4, 8), einsum="btd,dnh->btnh") == (D, 32)
    assert jaxinit.compute_fans((K, D), einsum="kd,btd->btk", operand=0) == (D, K)
    with pytest.raises(ValueError, match=r"einsum='bhd,hdk->bhk' sets the axes"):
        jaxinit.compute_fans((H, D, K), in_axis=0, einsum=EQ)
    with pytest.raises(ValueError, match=r"has 3 labels, but the shape has rank 2"):
        jaxinit.compute_fans((D, K), einsum=EQ)
    with pytest.raises(ValueError, match=r"operand=2 must be 0 or 1"):
        jaxinit.compute_fans((H, D, K), einsum=EQ, operand=2)
    with pytest.raises(ValueError, match=r"einsum='ab->b' is not an equation of two operands"):
        jaxinit.compute_fans((2, 3), einsum="ab->b")


def test_einsum_linen_and_nnx():
    x = jnp.ones((1, H, D))
    init = jaxinit.for_layer(LECUN, EQ)
    # Flax's own default counts the heads in the fan: std is 1/sqrt(H) of lecun's.
    assert_var(_linen_kernel(nn.Einsum((H, D, K), EQ), x), 1 / (H * D), "flax default")
    assert_var(_linen_kernel(nn.Einsum((H, D, K), EQ, kernel_init=init), x), 1 / D)
    layer = nnx.Einsum(EQ, (H, D, K), kernel_init=init, rngs=nnx.Rngs(0))
    assert_var(np.asarray(layer.kernel.get_value()), 1 / D, "nnx")
    # the same initializer through tree.reinit, at the parameter's own shape
    model = nnx.Einsum(EQ, (H, D, K), rngs=nnx.Rngs(0))
    tree.reinit(model, "kernel", jaxinit.for_layer(HE, model), KEY)
    assert_var(np.asarray(model.kernel.get_value()), 2 / D, "reinit")


def test_conv_local_positions_are_not_in_the_fan():
    x = jnp.ones((1, 6, 6, 8))
    init = jaxinit.for_layer(HE, "conv_local")
    w = _linen_kernel(nn.ConvLocal(32, (3, 3), padding="VALID", kernel_init=init), x)
    assert w.shape == (4, 4, 72, 32)
    assert_var(w, 2 / 72)  # fan_in = 3 * 3 * 8 = 72; the 16 positions are independent
    default = _linen_kernel(nn.ConvLocal(32, (3, 3), padding="VALID"), x)
    assert_var(default, 1 / (16 * 72), "flax default")  # 16x too small
    init = jaxinit.for_layer(HE, nn.ConvLocal(32, (3, 3)))
    w = _linen_kernel(nn.ConvLocal(32, (3, 3), padding="VALID", kernel_init=init), x)
    assert_var(w, 2 / 72, "from the module")


def test_dense_general_with_batch_dims_linen_and_nnx():
    # kernel (7, 64, 3, 5): 7 independent maps from 64 inputs to 3 x 5 outputs
    spec = nn.DenseGeneral((3, 5), batch_dims=(0,))
    init = jaxinit.for_layer(LECUN, spec, batch_size=7)
    w = _linen_kernel(
        nn.DenseGeneral((3, 5), batch_dims=(0,), kernel_init=init), jnp.ones((7, 2, D))
    )
    assert w.shape == (7, D, 3, 5)
    assert_var(w, 1 / D)
    lg = nnx.LinearGeneral(
        D,
        (3, 5),
        batch_axis={0: 7},
        kernel_init=jaxinit.for_layer(LECUN, "dense_general", batch_size=7),
        rngs=nnx.Rngs(0),
    )
    assert_var(np.asarray(lg.kernel.get_value()), 1 / D, "nnx")
    model = nnx.LinearGeneral(D, (3, 5), batch_axis={0: 7}, rngs=nnx.Rngs(0))
    tree.reinit(model, "kernel", jaxinit.for_layer(LECUN, model), KEY)
    assert_var(np.asarray(model.kernel.get_value()), 1 / D, "reinit")
    with pytest.raises(ValueError, match=r"pass batch_size="):
        nn.DenseGeneral((3, 5), batch_dims=(0,), kernel_init=jaxinit.for_layer(LECUN, spec)).init(
            KEY, jnp.ones((7, 2, D))
        )


def test_attention_q_k_v_out():
    d_model, heads, qkv = 64, 4, 96  # head_dim 24
    x = jnp.ones((1, 3, d_model))
    init = jaxinit.for_layer(HE, nn.MultiHeadDotProductAttention(num_heads=heads))
    params = nn.MultiHeadDotProductAttention(
        num_heads=heads, qkv_features=qkv, out_features=d_model, kernel_init=init
    ).init(KEY, x)["params"]
    model = nnx.MultiHeadAttention(
        num_heads=heads,
        in_features=d_model,
        qkv_features=qkv,
        out_features=d_model,
        kernel_init=init,
        decode=False,
        rngs=nnx.Rngs(0),
    )
    for sub, fan_in in (("query", d_model), ("key", d_model), ("value", d_model), ("out", qkv)):
        assert_var(np.asarray(params[sub]["kernel"]), 2 / fan_in, f"linen {sub}")
        assert_var(np.asarray(getattr(model, sub).kernel.get_value()), 2 / fan_in, f"nnx {sub}")
    # at the parameters' own 3-D shapes, e.g. through tree.reinit
    q = jaxinit.for_layer(HE, model, param="query/kernel")(KEY, (d_model, heads, qkv // heads))
    assert_var(np.asarray(q), 2 / d_model, "query 3-D")
    o = jaxinit.for_layer(HE, model, param="out/kernel")(KEY, (heads, qkv // heads, d_model))
    assert_var(np.asarray(o), 2 / qkv, "out 3-D")


@pytest.mark.slow
def test_orthogonal_per_head_and_plain_layers_unchanged():
    w = np.asarray(jaxinit.for_layer(jaxinit.orthogonal(), EQ)(KEY, (2, 8, 8)), np.float64)
    for head in w:
        np.testing.assert_allclose(head.T @ head, np.eye(8), atol=1e-5)
    assert not np.allclose(w[0], w[1])  # a key per head
    for layer, shape in (
        (nn.Dense(4), (8, 4)),
        (nn.Conv(4, (3, 3)), (3, 3, 8, 4)),
        ("conv", (3, 3, 8, 4)),
    ):
        drawn = jaxinit.for_layer(HE, layer)(KEY, shape)
        assert bool((drawn == HE(KEY, shape)).all())


def test_for_layer_errors_name_the_argument():
    with pytest.raises(TypeError, match=r"init=3 is not callable"):
        jaxinit.for_layer(3, EQ)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"layer='bogus' is not accepted"):
        jaxinit.for_layer(HE, "bogus")
    with pytest.raises(TypeError, match=r"layer=Sequential is not a Flax layer"):
        jaxinit.for_layer(HE, nn.Sequential([nn.relu]))
    with pytest.raises(ValueError, match=r"param='weight' is not a parameter of a dense"):
        jaxinit.for_layer(HE, nn.Dense(3), param="weight")
    with pytest.raises(ValueError, match=r"param='bias' of a dense layer is a vector"):
        jaxinit.for_layer(HE, nn.Dense(3), param="bias")
    with pytest.raises(ValueError, match=r"batch_size=0 must be an int >= 1"):
        jaxinit.for_layer(HE, "dense_general", batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size=5 does not divide"):
        jaxinit.for_layer(HE, "dense_general", batch_size=5)(KEY, (12, 3))
