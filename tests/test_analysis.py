"""jaxinit.layer_stats: equal to a per-seed loop, chunked, sharded; statistics vs predict."""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compiles import log_compilations
from flax import nnx

import jaxinit
from jaxinit import models

F32 = dict(rtol=2e-5, atol=2e-6)  # float32: vmap/chunks/shards change summation order only
Z = 5.0


class Chain(nn.Module):
    """Dense layers with ``act`` between them (none after the last)."""

    widths: tuple[int, ...]
    act: object = nn.relu
    kernel_init: object = jaxinit.he_normal()
    bias_init: object = jaxinit.zeros()

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            if i:
                x = self.act(x)
            x = nn.Dense(w, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)
        return x


class NChain(nnx.Module):
    def __init__(self, din, widths, *, rngs):
        dims = (din, *widths)
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=jaxinit.he_normal(), rngs=rngs)
                for a, b in itertools.pairwise(dims)
            ]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(nnx.relu(x) if i else x)
        return x


def _reference(layers, x, act, loss):
    """Per-layer (mean, std, grad std) of a plain-JAX chain, independent of the probe."""

    def forward(eps):
        h, outs = x, []
        for i, (w, b) in enumerate(layers):
            h = (act(h) if i else h) @ w + b[None, :] + eps[i]
            outs.append(h)
        return loss(h), outs

    eps = [jnp.zeros((x.shape[0], w.shape[1])) for w, _ in layers]
    (value, outs), g = jax.value_and_grad(forward, has_aux=True)(eps)
    return (
        jnp.stack([o.mean() for o in outs]),
        jnp.stack([o.std() for o in outs]),
        jnp.stack([gi.std() for gi in g]),
        value,
    )


_reference_jit = jax.jit(_reference, static_argnums=(2, 3))


X = jax.random.normal(jax.random.key(1), (24, 16))
LABELS = jnp.arange(24) % 5
SEEDS, KEY = 8, 7
MODEL = Chain((32, 32, 5))


def _ce(out):
    return optax.softmax_cross_entropy_with_integer_labels(out, LABELS).mean()


@pytest.fixture(scope="module")
def plain():
    """One vmap over all seeds (``chunk_size=None``)."""
    return jaxinit.layer_stats(MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS, chunk_size=None)


@pytest.fixture(scope="module")
def chunked():
    """``lax.map`` in chunks of 3 (8 seeds: two full chunks and a remainder of 2)."""
    return jaxinit.layer_stats(MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS, chunk_size=3)


def _assert_same(a, b):
    assert a.names == b.names
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, **F32)


@pytest.mark.parametrize("which", ["plain", "chunked"])
def test_linen_equals_per_seed_loop(which, request):
    st = request.getfixturevalue(which)
    assert st.names == ("Dense_0", "Dense_1", "Dense_2")
    assert st.mean.shape == st.std.shape == st.grad_std.shape == (SEEDS, 3)
    init = jax.jit(MODEL.init)
    for i, k in enumerate(jax.random.split(jax.random.key(KEY), SEEDS)):
        p = init(k, X[:1])["params"]
        layers = [(p[f"Dense_{j}"]["kernel"], p[f"Dense_{j}"]["bias"]) for j in range(3)]
        mean, std, gstd, loss = _reference_jit(layers, X, nn.relu, _ce)
        np.testing.assert_allclose(st.mean[i], mean, **F32)
        np.testing.assert_allclose(st.std[i], std, **F32)
        np.testing.assert_allclose(st.grad_std[i], gstd, **F32)
        np.testing.assert_allclose(st.loss[i], loss, **F32)


def test_auto_chunk_reuses_the_compiled_program(plain):
    # Small model: "auto" fits every seed in one chunk, i.e. the same program as None.
    with log_compilations() as compiled:
        auto = jaxinit.layer_stats(MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS)
    assert compiled == []
    _assert_same(auto, plain)


SCANNED = models.MLP(depth=4, width=32, num_outputs=5, kernel_init=jaxinit.he_normal(), scan=True)


@pytest.mark.slow  # test_measure's scanned test covers the per-iteration values by default
def test_scanned_layers_are_measured_per_iteration():
    # MLP(scan=True): Dense_0, then layers/dense as one nn.scan over 3 iterations, then head.
    # Each iteration is its own column, equal to the plain-JAX chain with the same weights,
    # gradients included (the output perturbation reaches each iteration as its own slice).
    # Chunks of 3 over 4 seeds: a lax.map chunk and a vmapped remainder.
    st = jaxinit.layer_stats(SCANNED, X, seeds=4, key=KEY, labels=LABELS, chunk_size=3)
    names = ("Dense_0", "layers/dense[0]", "layers/dense[1]", "layers/dense[2]", "head")
    assert st.names == names
    assert st.grad_std.shape == (4, 5)
    init = jax.jit(SCANNED.init)
    for i, k in enumerate(jax.random.split(jax.random.key(KEY), 4)):
        p = init(k, X[:1])["params"]
        stack = p["layers"]["dense"]
        layers = [
            (p["Dense_0"]["kernel"], p["Dense_0"]["bias"]),
            *((stack["kernel"][j], stack["bias"][j]) for j in range(3)),
            (p["head"]["kernel"], p["head"]["bias"]),
        ]
        mean, std, gstd, loss = _reference_jit(layers, X, nn.relu, _ce)
        np.testing.assert_allclose(st.mean[i], mean, **F32)
        np.testing.assert_allclose(st.std[i], std, **F32)
        np.testing.assert_allclose(st.grad_std[i], gstd, **F32)
        np.testing.assert_allclose(st.loss[i], loss, **F32)


class _Step(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.relu(nn.Dense(16, kernel_init=jaxinit.he_normal())(x)), None


class _InputFedStack(nn.Module):
    """An nn.scan stack whose carry starts as the input itself (replicated on a mesh)."""

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(
            _Step,
            variable_axes={"params": 0, jaxinit.probe.COLLECTION: 0},
            split_rngs={"params": True},
            length=3,
        )
        return scan(name="stack")(x, None)[0]


def test_scan_fed_by_the_input_sharded_equals_unsharded():
    mesh = jax.make_mesh((8,), ("seed",), axis_types=(jax.sharding.AxisType.Auto,))
    plain = jaxinit.layer_stats(_InputFedStack(), X, seeds=8, key=KEY, chunk_size=2)
    sharded = jaxinit.layer_stats(_InputFedStack(), X, seeds=8, key=KEY, mesh=mesh)
    assert plain.names == ("stack/Dense_0[0]", "stack/Dense_0[1]", "stack/Dense_0[2]")
    _assert_same(sharded, plain)


def test_scan_without_the_probe_collection_is_a_clear_error():
    class Step(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return nn.relu(nn.Dense(16)(x)), None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(Step, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
            return scan(name="layers")(x, None)[0]

    with pytest.raises(ValueError, match=r"variable_axes.*jaxinit\.probe\.COLLECTION"):
        jaxinit.layer_stats(Stack(), X, seeds=2)


@pytest.mark.slow
def test_nnx_constructor_equals_per_seed_loop():
    def make(k):
        return NChain(16, (32, 32, 5), rngs=nnx.Rngs(k))

    proj = jax.random.normal(jax.random.key(3), (24, 5))

    def project(out, labels=None):
        return jnp.sum(out * proj)

    st = jaxinit.layer_stats(make, X, seeds=4, key=2, loss=project, chunk_size=3)
    assert st.names == ("layers/0", "layers/1", "layers/2")
    params = jax.jit(lambda k: [(m.kernel[...], m.bias[...]) for m in make(k).layers])
    for i, k in enumerate(jax.random.split(jax.random.key(2), 4)):
        mean, std, gstd, value = _reference_jit(params(k), X, nnx.relu, project)
        np.testing.assert_allclose(st.mean[i], mean, **F32)
        np.testing.assert_allclose(st.std[i], std, **F32)
        np.testing.assert_allclose(st.grad_std[i], gstd, **F32)
        np.testing.assert_allclose(st.loss[i], value, **F32)


@pytest.mark.slow
def test_default_loss_is_a_fixed_unit_projection_and_forward_only_agrees():
    st = jaxinit.layer_stats(MODEL, X, seeds=3)
    # d sum(out * r) / d out = r, the same standard-normal draw for every seed: equal
    # gradient stds at the output, within the sampling error of a std of 24 x 5 normals.
    head = np.asarray(st.grad_std[:, -1], np.float64)
    np.testing.assert_allclose(head, np.full(3, head[0]), rtol=1e-6)
    assert abs(head[0] - 1) <= 5 / np.sqrt(2 * 24 * 5), head[0]
    fwd = jaxinit.layer_stats(MODEL, X, seeds=3, grads=False)
    assert fwd.grad_std is None and fwd.loss is None
    np.testing.assert_allclose(fwd.std, st.std, **F32)
    np.testing.assert_allclose(fwd.mean, st.mean, **F32)


def test_sharded_over_8_devices_equals_unsharded(plain):
    assert jax.device_count() == 8, "conftest.py sets 8 host devices"
    mesh = jax.make_mesh((8,), ("seed",), axis_types=(jax.sharding.AxisType.Auto,))
    st = jaxinit.layer_stats(MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS, mesh=mesh)
    _assert_same(st, plain)
    assert st.std.sharding.is_fully_replicated  # every process reads the results directly
    assert len(st.std.sharding.device_set) == 8


@pytest.mark.slow
def test_sharded_with_padding_on_an_explicit_mesh(chunked):
    # 8 seeds over 3 devices: padded to 9, the extra seed dropped.
    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:3]), ("s",), axis_types=(jax.sharding.AxisType.Explicit,)
    )
    st = jaxinit.layer_stats(MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS, mesh=mesh, chunk_size=2)
    _assert_same(st, chunked)


def test_sharded_over_one_axis_of_a_2d_mesh(plain):
    mesh = jax.make_mesh((4, 2), ("seed", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    st = jaxinit.layer_stats(
        MODEL, X, seeds=SEEDS, key=KEY, labels=LABELS, mesh=mesh, mesh_axes="seed"
    )
    _assert_same(st, plain)


def test_layer_stats_is_a_pytree_with_static_names(plain):
    assert len(jax.tree.leaves(plain)) == 6
    again = jax.jit(lambda s: jax.tree.map(lambda a: 2 * a, s))(plain)
    assert again.names == plain.names
    np.testing.assert_allclose(again.std, 2 * plain.std)


def test_summary_and_table(plain):
    s = plain.summary()
    v = np.asarray(plain.std, np.float64)
    np.testing.assert_allclose(s["std"].mean, v.mean(0))
    np.testing.assert_allclose(s["std"].lo, np.quantile(v, 0.025, axis=0))
    np.testing.assert_allclose(s["std"].hi, np.quantile(v, 0.975, axis=0))
    m = plain.summary(0.9, interval="mean")["grad_std"]
    g = np.asarray(plain.grad_std, np.float64)
    half = 1.6448536269514722 * g.std(0, ddof=1) / math.sqrt(SEEDS)
    np.testing.assert_allclose(m.hi - m.mean, half, rtol=1e-9)
    np.testing.assert_allclose(m.mean - m.lo, half, rtol=1e-9)
    table = plain.table()
    assert table.splitlines()[0] == f"{SEEDS} seeds"
    assert all(name in table for name in plain.names) and "grad_std [95% seeds]" in table
    with pytest.raises(ValueError, match=r"level=1.5 must be in \(0, 1\)"):
        plain.summary(1.5)
    with pytest.raises(ValueError, match=r"interval='iqr' must be 'seeds' or 'mean'"):
        plain.summary(interval="iqr")


def test_table_defaults_to_the_measured_statistics():
    st = jaxinit.layer_stats(MODEL, X, seeds=2, key=KEY, grads=False)
    head = st.table().splitlines()[1]
    assert "std [95% seeds]" in head and "grad_std" not in head
    with pytest.raises(ValueError, match=r"columns=\('grad_std',\) has \['grad_std'\]"):
        st.table(columns=("grad_std",))


def test_bad_arguments_are_named():
    model = Chain((8,))
    with pytest.raises(ValueError, match=r"seeds=0 must be an int >= 1"):
        jaxinit.layer_stats(model, X, seeds=0)
    with pytest.raises(ValueError, match=r"chunk_size=0 must be an int >= 1"):
        jaxinit.layer_stats(model, X, chunk_size=0)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(24,\)"):
        jaxinit.layer_stats(model, X, labels=jnp.zeros(5, int))
    with pytest.raises(TypeError, match=r"constructor key -> model"):
        jaxinit.layer_stats(NChain(16, (8,), rngs=nnx.Rngs(0)), X)
    with pytest.raises(TypeError, match=r"model=3 must be a flax.linen Module"):
        jaxinit.layer_stats(3, X)
    with pytest.raises(TypeError, match=r"key='a' must be an int or a jax.random.key"):
        jaxinit.layer_stats(model, X, key="a")
    mesh = jax.make_mesh((8,), ("s",), axis_types=(jax.sharding.AxisType.Auto,))
    with pytest.raises(ValueError, match=r"mesh_axes='x' names axes not in the mesh"):
        jaxinit.layer_stats(model, X, mesh=mesh, mesh_axes="x")
    with pytest.raises(ValueError, match=r"no layer matched select='nothing\*'"):
        jaxinit.layer_stats(model, X, select="nothing*")


def _chain_vs_prediction(activation, depth, seeds, batch, width=2048, sigma_w=1.5, sigma_b=0.2):
    act = jaxinit.gains.activation_fn(activation)
    model = Chain(
        (width,) * depth,
        act=act,
        kernel_init=jaxinit.variance_scaling(sigma_w**2, "fan_in", "normal"),
        bias_init=jaxinit.normal(sigma_b),
    )
    x = jax.random.normal(jax.random.key(11), (batch, width))
    st = jaxinit.layer_stats(model, x, seeds=seeds, key=5, chunk_size=4)
    pred = jaxinit.predict(
        activation, depth, sigma_w=sigma_w, sigma_b=sigma_b, input_var=float(jnp.mean(x**2))
    )
    band = st.summary()
    std = np.asarray(st.std, np.float64)
    # The prediction lies inside the per-seed 95% band ...
    assert np.all((band["std"].lo <= pred.std) & (pred.std <= band["std"].hi)), (
        band["std"],
        pred.std,
    )
    # ... and the seed mean is within Z standard errors of it (plus the O(1/width) gap
    # between the finite network and the mean-field limit).
    tol = Z * std.std(0, ddof=1) / math.sqrt(seeds) + 2 / width * pred.std
    assert np.all(np.abs(std.mean(0) - pred.std) <= tol), (std.mean(0), pred.std, tol)
    # Gradients relative to the output layer's.
    rel = np.asarray(st.grad_std, np.float64) / np.asarray(st.grad_std[:, -1:], np.float64)
    tol = Z * rel.std(0, ddof=1) / math.sqrt(seeds) + 2 / width * pred.grad_std
    assert np.all(np.abs(rel.mean(0) - pred.grad_std) <= tol), (rel.mean(0), pred.grad_std)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_measured_matches_prediction_at_width_2048(activation):
    _chain_vs_prediction(activation, depth=3, seeds=12, batch=16)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu", "selu"])
def test_measured_matches_prediction_deep(activation):
    _chain_vs_prediction(activation, depth=12, seeds=64, batch=64)


def test_layer_outputs_in_forward_order_and_equal_to_a_capture():
    """Twelve layers: names sort as strings (Dense_10 before Dense_2), forward order does not.
    The values equal linen's own capture of the same initialization."""
    model = jaxinit.models.MLP(depth=12, width=8)
    x = jax.random.normal(jax.random.key(0), (4, 8))
    outs = jaxinit.layer_outputs(model, x, key=jax.random.key(3))
    variables = model.init(jax.random.key(3), x)
    _, state = model.apply(variables, x, capture_intermediates=True)
    # capture_intermediates records the layers in the order they are called.
    captured = {
        name: value["__call__"][0]
        for name, value in state["intermediates"].items()
        if name != "__call__"
    }
    assert list(outs) == list(captured) == [f"Dense_{i}" for i in range(12)]
    for name, value in captured.items():
        np.testing.assert_allclose(outs[name], value, rtol=1e-6, atol=1e-6)


def test_a_list_select_is_compiled_once():
    jaxinit.layer_stats(MODEL, X, seeds=2, key=KEY, select=["Dense_0", "Dense_2"])
    with log_compilations() as compiled:
        st = jaxinit.layer_stats(MODEL, X, seeds=2, key=KEY, select=["Dense_0", "Dense_2"])
    assert compiled == []
    assert st.names == ("Dense_0", "Dense_2")


@pytest.mark.slow
def test_more_statistics_by_name_and_function():
    dead = ("dead", lambda y: jnp.mean(y <= 0))
    st = jaxinit.layer_stats(
        MODEL, X, seeds=3, key=KEY, labels=LABELS, stats=("rms", "in_abs_max", "grad_rms", dead)
    )
    assert set(st.stats) == {"rms", "in_abs_max", "grad_rms", "dead"}
    assert all(v.shape == (3, 3) for v in st.stats.values())
    init = jax.jit(MODEL.init)
    for i, k in enumerate(jax.random.split(jax.random.key(KEY), 3)):
        variables = init(k, X[:1])
        _, state = MODEL.apply(variables, X, capture_intermediates=True)
        outs = [np.asarray(state["intermediates"][f"Dense_{j}"]["__call__"][0]) for j in range(3)]
        np.testing.assert_allclose(
            st.stats["rms"][i], [np.sqrt((o**2).mean()) for o in outs], **F32
        )
        np.testing.assert_allclose(st.stats["dead"][i], [(o <= 0).mean() for o in outs], **F32)
        np.testing.assert_allclose(st.stats["in_abs_max"][i, 0], np.abs(np.asarray(X)).max(), **F32)
    assert {"rms", "dead", "grad_rms"} <= set(st.summary())
    assert "dead [95% seeds]" in st.table(columns=("std", "dead"))
    with pytest.raises(ValueError, match=r"stats \['grad_rms'\] need gradients"):
        jaxinit.layer_stats(MODEL, X, seeds=2, grads=False, stats=("grad_rms",))
    with pytest.raises(ValueError, match=r"layer_stats: stats entry 'rmss' is not a known"):
        jaxinit.layer_stats(MODEL, X, seeds=2, stats=("rmss",))
    with pytest.raises(ValueError, match=r"columns=\('dead',\) has \['dead'\]"):
        jaxinit.layer_stats(MODEL, X, seeds=2).table(columns=("dead",))


def test_extra_statistics_keep_the_order_asked_for():
    asked = ["rms", "abs_max", "grad_rms", "in_abs_mean"]
    st = jaxinit.layer_stats(MODEL, X, seeds=2, key=KEY, stats=asked)
    assert list(st.stats) == asked
