"""jaxinit initializers in Flax linen and NNX layers, and sharded initialization on a mesh."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import as_f64, assert_mean, assert_second_moment
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit

KEY = jax.random.key(0)
EPS32 = float(jnp.finfo(jnp.float32).eps)


def unbox(tree):
    return nn.meta.unbox(tree)


def randn(shape) -> jax.Array:
    """A standard normal input, drawn flat (XLA:CPU compiles rank-4 draws slowly)."""
    return jaxinit.normal()(jax.random.key(1), (math.prod(shape),)).reshape(shape)


# ---------------------------------------------------------------------------------------------
# linen


def test_linen_dense():
    """nn.Dense(512) on 256 features with he_normal / constant: kernel (in, out) with
    E[w^2] = 2 / 256, bias 0.1."""
    layer = nn.Dense(512, kernel_init=jaxinit.he_normal(), bias_init=jaxinit.constant(0.1))
    params = layer.init(KEY, jnp.ones((2, 256)))["params"]
    assert params["kernel"].shape == (256, 512)
    assert_second_moment(params["kernel"], 2 / 256)
    assert_mean(params["kernel"], 0.0)
    np.testing.assert_array_equal(params["bias"], np.full(512, np.float32(0.1)))


def test_linen_dense_param_dtype():
    """param_dtype reaches the initializer: a bfloat16 kernel drawn in float32 and cast."""
    layer = nn.Dense(512, kernel_init=jaxinit.lecun_normal(), param_dtype=jnp.bfloat16)
    params = layer.init(KEY, jnp.ones((2, 256)))["params"]
    assert params["kernel"].dtype == jnp.bfloat16 and params["bias"].dtype == jnp.bfloat16
    assert_second_moment(params["kernel"], 1 / 256)


def test_linen_conv():
    """nn.Conv(128, (3, 3)) on 64 channels: kernel (3, 3, 64, 128), glorot_uniform with
    fan_in = 576 and fan_out = 1152; PyTorch's default bias U(+-1/sqrt(576))."""
    layer = nn.Conv(
        128,
        (3, 3),
        kernel_init=jaxinit.glorot_uniform(),
        bias_init=jaxinit.torch_bias_default(fan_in=576),
    )
    params = layer.init(KEY, jnp.ones((1, 8, 8, 64)))["params"]
    w = as_f64(params["kernel"])
    assert params["kernel"].shape == (3, 3, 64, 128)
    assert_second_moment(w, 2 / (576 + 1152))
    b = math.sqrt(6 / (576 + 1152))
    assert w.min() >= -b and w.max() < b
    assert float(jnp.abs(params["bias"]).max()) < 1 / 24


def test_linen_conv_identity_same_padding():
    """nn.Conv with the identity kernel, zero bias and padding SAME is the identity map."""
    layer = nn.Conv(8, (3, 3), padding="SAME", kernel_init=jaxinit.identity())
    x = randn((2, 5, 5, 8))
    variables = layer.init(KEY, x)
    np.testing.assert_array_equal(layer.apply(variables, x), x)


def test_linen_dense_general():
    """nn.DenseGeneral((8, 64), axis=(-2, -1)) on (16, 16) features: Flax calls the initializer
    with the flattened (256, 512) shape, so the default axes give fan_in = 256."""
    layer = nn.DenseGeneral((8, 64), axis=(-2, -1), kernel_init=jaxinit.lecun_normal())
    params = layer.init(KEY, jnp.ones((2, 16, 16)))["params"]
    assert params["kernel"].shape == (16, 16, 8, 64)
    assert_second_moment(params["kernel"], 1 / 256)


def test_linen_prior_bias_classifier():
    """A classifier head with a zero kernel and prior_bias predicts the class frequencies."""
    counts = [10, 5, 5, 100, 100]
    layer = nn.Dense(5, kernel_init=jaxinit.zeros(), bias_init=jaxinit.prior_bias(counts))
    x = randn((4, 32))
    probs = jax.nn.softmax(layer.apply(layer.init(KEY, x), x), axis=-1)
    np.testing.assert_allclose(probs, np.broadcast_to(np.array(counts) / 220, (4, 5)), rtol=1e-6)


def test_linen_factory_without_parentheses():
    """kernel_init=jaxinit.he_normal (the factory, not an initializer) fails with a message
    saying to call it."""
    layer = nn.Dense(4, kernel_init=jaxinit.he_normal)
    with pytest.raises(
        TypeError,
        match=r"he_normal is a factory, not an initializer.*"
        r"kernel_init=jaxinit\.he_normal\(\)",
    ):
        layer.init(KEY, jnp.ones((1, 3)))
    layer = nn.Dense(4, bias_init=jaxinit.zeros)
    with pytest.raises(TypeError, match=r"zeros is a factory, not an initializer"):
        layer.init(KEY, jnp.ones((1, 3)))


# ---------------------------------------------------------------------------------------------
# NNX


def test_nnx_linear_orthogonal():
    """nnx.Linear(256, 512) with orthogonal(): a wide kernel with orthonormal rows."""
    layer = nnx.Linear(
        256, 512, kernel_init=jaxinit.orthogonal(), bias_init=jaxinit.zeros(), rngs=nnx.Rngs(0)
    )
    w = np.asarray(layer.kernel[...], np.float64)
    assert w.shape == (256, 512)
    # Tolerance as in test_orthogonal: float32 QR, 2 sqrt(n) ulps plus one ulp of rounding.
    np.testing.assert_allclose(w @ w.T, np.eye(256), atol=(1 + 2 * math.sqrt(512)) * EPS32)
    np.testing.assert_array_equal(layer.bias[...], 0.0)


def test_nnx_conv_identity_and_he():
    """nnx.Conv with identity() returns its input (padding SAME); with he_normal the kernel
    (3, 3, 64, 128) has E[w^2] = 2 / 576."""
    conv = nnx.Conv(8, 8, (3, 3), padding="SAME", kernel_init=jaxinit.identity(), rngs=nnx.Rngs(0))
    x = randn((2, 5, 5, 8))
    np.testing.assert_array_equal(conv(x), x)
    conv = nnx.Conv(64, 128, (3, 3), kernel_init=jaxinit.he_normal(), rngs=nnx.Rngs(0))
    assert conv.kernel.shape == (3, 3, 64, 128)
    assert_second_moment(conv.kernel[...], 2 / 576)


def test_nnx_linear_general():
    """nnx.LinearGeneral((16, 16) -> (8, 64)) initializes the flattened (256, 512) kernel:
    he_uniform has bound sqrt(6 / 256) and E[w^2] = 2 / 256."""
    layer = nnx.LinearGeneral(
        (16, 16), (8, 64), axis=(-2, -1), kernel_init=jaxinit.he_uniform(), rngs=nnx.Rngs(0)
    )
    w = as_f64(layer.kernel[...])
    assert layer.kernel.shape == (16, 16, 8, 64)
    assert_second_moment(w, 2 / 256)
    assert np.abs(w).max() < math.sqrt(6 / 256)


def test_nnx_factory_without_parentheses():
    with pytest.raises(TypeError, match=r"he_normal is a factory, not an initializer"):
        nnx.Linear(3, 4, kernel_init=jaxinit.he_normal, rngs=nnx.Rngs(0))


def test_nnx_same_seed_same_params():
    """NNX layers built from the same seed get the same weights (determinism per key)."""
    a = nnx.Linear(16, 32, kernel_init=jaxinit.glorot_normal(), rngs=nnx.Rngs(3))
    b = nnx.Linear(16, 32, kernel_init=jaxinit.glorot_normal(), rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(a.kernel[...], b.kernel[...])


# ---------------------------------------------------------------------------------------------
# Sharding on an 8-device CPU mesh

needs_8 = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices (the root conftest sets XLA_FLAGS to 8 host CPU devices)",
)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("data", "model"))


class NNXModel(nnx.Module):
    """Two layers whose initializers are wrapped in nnx.with_partitioning (or not)."""

    def __init__(self, rngs: nnx.Rngs, shard: bool = True):
        def part(init, names):
            return nnx.with_partitioning(init, names) if shard else init

        self.a = nnx.Linear(
            16,
            32,
            kernel_init=part(jaxinit.he_normal(), ("data", "model")),
            bias_init=part(jaxinit.constant(0.1), ("model",)),
            rngs=rngs,
        )
        self.b = nnx.Linear(
            32,
            8,
            kernel_init=part(jaxinit.orthogonal(), ("model", None)),
            bias_init=part(jaxinit.torch_bias_default(fan_in=32), (None,)),
            rngs=rngs,
        )
        self.c = nnx.Conv(
            32,
            64,
            (3, 3),
            kernel_init=part(
                jaxinit.variance_scaling(1.0, "fan_avg", "truncated_normal"),
                (None, None, "data", "model"),
            ),
            use_bias=False,
            rngs=rngs,
        )


def _nnx_arrays(model) -> dict[str, jax.Array]:
    return {
        "a.kernel": model.a.kernel[...],
        "a.bias": model.a.bias[...],
        "b.kernel": model.b.kernel[...],
        "b.bias": model.b.bias[...],
        "c.kernel": model.c.kernel[...],
    }


@pytest.mark.slow  # the linen partitioning test runs by default
@needs_8
def test_nnx_with_partitioning_under_jit(mesh):
    """nnx.with_partitioning-wrapped jaxinit initializers: the model created under jit on a
    (2, 4) mesh has the requested shardings and exactly the values of an unsharded init."""

    @nnx.jit
    def create():
        model = NNXModel(nnx.Rngs(0))
        state = nnx.state(model)
        nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return model

    with jax.set_mesh(mesh):
        sharded = _nnx_arrays(create())
    specs = {
        "a.kernel": P("data", "model"),
        "a.bias": P("model"),
        "b.kernel": P("model", None),
        "b.bias": P(None),
        "c.kernel": P(None, None, "data", "model"),
    }
    for name, spec in specs.items():
        s = sharded[name].sharding
        assert isinstance(s, NamedSharding) and s.spec == spec, (name, s)
        assert s.mesh.shape == {"data": 2, "model": 4}

    # Eager jaxinit calls run the same compiled program as jitted ones (test_registry), so
    # the unsharded reference is the eager init.
    unsharded = _nnx_arrays(NNXModel(nnx.Rngs(0), shard=False))
    for name in specs:
        np.testing.assert_array_equal(sharded[name], unsharded[name], err_msg=name)


class LinenModel(nn.Module):
    shard: bool = True

    @nn.compact
    def __call__(self, x):
        def part(init, names):
            return nn.with_logical_partitioning(init, names) if self.shard else init

        x = nn.Dense(
            32,
            kernel_init=part(jaxinit.he_normal(), ("embed", "mlp")),
            bias_init=part(jaxinit.constant(0.1), ("mlp",)),
        )(x)
        x = nn.Dense(
            16,
            kernel_init=part(jaxinit.orthogonal(), ("mlp", "embed")),
            bias_init=part(jaxinit.zeros(), ("embed",)),
        )(x)
        return nn.DenseGeneral(
            (4, 8), kernel_init=part(jaxinit.lecun_uniform(), ("embed", "heads", None))
        )(x)


@needs_8
def test_linen_with_logical_partitioning_under_jit(mesh):
    """nn.with_logical_partitioning-wrapped jaxinit initializers: jax.jit(init) with the
    shardings derived from the logical axis rules gives parameters with those shardings and
    exactly the values of the unsharded init."""
    model, x = LinenModel(), jnp.ones((4, 16))
    rules = (("embed", "data"), ("mlp", "model"), ("heads", "model"))
    abstract = jax.eval_shape(model.init, KEY, x)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    params = unbox(jax.jit(model.init, out_shardings=shardings)(KEY, x))["params"]

    expected = {
        ("Dense_0", "kernel"): P("data", "model"),
        ("Dense_0", "bias"): P("model"),
        ("Dense_1", "kernel"): P("model", "data"),
        ("Dense_1", "bias"): P("data"),
        ("DenseGeneral_0", "kernel"): P("data", "model", None),
    }
    for (layer, name), spec in expected.items():
        s = params[layer][name].sharding
        assert isinstance(s, NamedSharding) and s.spec == spec, (layer, name, s)

    unsharded = LinenModel(shard=False).init(KEY, x)["params"]
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        ref = unsharded
        for k in path:
            ref = ref[k.key]
        np.testing.assert_array_equal(value, ref, err_msg=str(path))


SHARDED_DRAWS = {
    "normal": (jaxinit.normal(0.3, mean=0.2), (16, 32), []),
    "uniform": (jaxinit.uniform(-0.3, 0.7), (16, 32), []),
    "truncated_normal": (jaxinit.truncated_normal(0.3), (16, 32), [pytest.mark.slow]),
    "variance_scaling_truncated": (
        jaxinit.variance_scaling(1.0, "fan_avg", "truncated_normal"),
        (16, 32),
        [],
    ),
    "orthogonal": (jaxinit.orthogonal(), (16, 32), []),
    "sparse": (jaxinit.sparse(0.5), (16, 32), [pytest.mark.slow]),
}


@needs_8
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=SHARDED_DRAWS[n][2]) for n in sorted(SHARDED_DRAWS)]
)
def test_sharded_draw_equals_unsharded(name, mesh):
    """jax.jit(init, out_shardings=P("data", "model")) on the (2, 4) mesh (explicit axes, the
    default of jax.make_mesh) returns bitwise the unsharded values."""
    init, shape, _ = SHARDED_DRAWS[name]
    sharding = NamedSharding(mesh, P("data", "model"))
    ref = init(KEY, shape)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda k: init(k, shape), out_shardings=sharding)(KEY)
    assert got.sharding.spec == P("data", "model")
    np.testing.assert_array_equal(got, ref)
