"""jaxinit.lsuv: exactness, robustness, compilation and training, on linen and NNX models.

Every check of the normalized statistics uses an independent forward pass (linen
``capture_intermediates`` / ``nnx.capture`` via tests/_models.py), never the report.
"""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compiles import log_compilations
from _models import (
    BF16,
    BlockNet,
    NNXBlockNet,
    NNXRemat,
    NNXScanned,
    NNXShared,
    NoKernel,
    Remat,
    Scanned,
    Shared,
    linen_outputs,
    nnx_outputs,
    std_mean,
)
from flax import nnx

import jaxinit
from jaxinit import models, probe

# For affine layers LSUV is exact algebra; what remains is float32 rounding of the rescaled
# parameters and of the forward pass, ~1e-6 relative. 1e-4 leaves two decades of margin and is
# still ten times tighter than the default tol.
EXACT = 1e-4
# RBG keys: XLA's RngBitGenerator compiles in a fraction of the time of threefry, which
# dominates the test time of model initialization on CPU. (LSUV itself takes any key.)
KEY = jax.random.key(0, impl="rbg")


def rngs(seed=0):
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def normal(shape, seed=1):
    return jax.random.normal(jax.random.key(seed, impl="rbg"), shape)


_INITS: dict = {}


def init(module, x, **kwargs):
    """``module.init`` compiled as one program (eager init compiles every operation), cached
    per module and input shape: lsuv never mutates its input, so tests can share them."""
    try:
        key = (module, x.shape, x.dtype, tuple(sorted(kwargs.items())))
        hash(key)
    except TypeError:
        key = None
    if key is None or key not in _INITS:
        variables = jax.jit(functools.partial(module.init, **kwargs))(KEY, x)
        if key is None:
            return variables
        _INITS[key] = variables
    return _INITS[key]


# A small MLP shared by the tests of options, errors and the report (one compilation).
SMALL, SMALL_X = models.MLP(depth=3, width=16), (32, 8)


def small_nnx():
    return models.NNXMLP(8, depth=3, width=16, rngs=rngs())


# ---------------------------------------------------------------------------------------------
# five models, linen and NNX

CASES = {
    # name: (linen module, NNX factory, input shape, apply kwargs, NNX train mode, center)
    "mlp50": (models.MLP(), lambda r: models.NNXMLP(512, rngs=r), (32, 512), {}, False, False),
    "convnet": (
        models.ConvNet(),
        lambda r: models.NNXConvNet(rngs=r),
        (8, 32, 32, 3),
        {},
        False,
        True,
    ),
    "resnet": (
        models.ResNet(widths=(8, 16, 32)),
        lambda r: models.NNXResNet(widths=(8, 16, 32), rngs=r),
        (8, 16, 16, 3),
        {},
        False,
        True,
    ),
    "resnet_bn": (
        models.ResNet(widths=(8, 16, 32), batch_norm=True),
        lambda r: models.NNXResNet(widths=(8, 16, 32), batch_norm=True, rngs=r),
        (8, 16, 16, 3),
        {"train": True},
        True,
        False,  # its convs have no bias (BatchNorm follows), so they cannot be centred
    ),
    "transformer": (
        models.TransformerBlock(dim=32, num_heads=4),
        lambda r: models.NNXTransformerBlock(dim=32, num_heads=4, rngs=r),
        (4, 8, 32),
        {},
        False,
        True,
    ),
}


# The 50-layer MLP and the two ResNets take about 60 s together on the 2-core machine: slow set. The
# convnet and the transformer keep conv, attention and centring in the default suite.
def _case_params(*fast: str) -> list:
    """Every case, those not named in ``fast`` marked slow: by default linen runs the convnet and
    NNX the transformer; the slow set runs every model in both."""
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in CASES]


def rel_change(a, b) -> float:
    """Largest relative change ||a - b|| / ||b|| of a layer's parameters (kernel and bias
    together), over the layers. Per layer, not per leaf: a bias that LSUV centred is ~0, and its
    float32 rounding noise (~1e-7 of the layer's output scale) would read as a large relative
    change of a near-zero vector."""
    out = 0.0
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = jax.tree.leaves(b)
    layers: dict[str, list[float]] = {}
    for (path, x), y in zip(flat_a, flat_b, strict=True):
        names = [getattr(k, "key", None) for k in path]
        params = ("kernel", "bias", "scale", "mean", "var")
        cut = max((i for i, n in enumerate(names) if n in params), default=len(path) - 1)
        layer = jax.tree_util.keystr(path[:cut])
        d, n = layers.setdefault(layer, [0.0, 0.0])
        layers[layer] = [d + float(jnp.sum((x - y) ** 2)), n + float(jnp.sum(y**2))]
    for d, n in layers.values():
        out = max(out, (d / n) ** 0.5 if n > 0 else d**0.5)
    return out


def check_outputs(outputs, report, center):
    assert report.all_converged, str(report)
    for path in report.paths:
        s, m = std_mean(outputs[path][0])
        assert abs(s - 1.0) <= EXACT, f"{path}: std {s}"
        if center:
            assert abs(m) <= EXACT, f"{path}: mean {m}"


@pytest.mark.parametrize("name", _case_params("convnet"))
def test_linen_models(name):
    module, _, shape, kwargs, _, center = CASES[name]
    x = normal(shape)
    variables = init(module, x, **({"train": False} if kwargs else {}))
    before = jax.tree.map(np.array, variables)
    new, report = jaxinit.lsuv(module, variables, x, center=center, **kwargs)
    # input untouched; only params change
    jax.tree.map(np.testing.assert_array_equal, variables, before)
    mutable = ["batch_stats"] if kwargs else False
    assert report.paths == probe.layer_paths(module, variables, x, mutable=mutable, **kwargs)
    for col in set(new) - {"params"}:
        jax.tree.map(np.testing.assert_array_equal, new[col], variables[col])
    if name == "resnet_bn":  # BatchNorm in training mode does update its statistics
        apply = jax.jit(functools.partial(module.apply, mutable=["batch_stats"], **kwargs))
        _, updated = apply(variables, x)
        assert rel_change(updated["batch_stats"], variables["batch_stats"]) > 0
    check_outputs(linen_outputs(module, new, x, **kwargs), report, center)
    # a second pass finds nothing to do
    again, _ = jaxinit.lsuv(module, new, x, center=center, **kwargs)
    assert rel_change(again["params"], new["params"]) < 1e-3


@pytest.mark.parametrize("name", _case_params("transformer"))
def test_nnx_models(name):
    _, factory, shape, _, train, center = CASES[name]
    x = normal(shape)
    model = factory(rngs())
    model.train() if train else model.eval()
    # BatchNorm running averages (train mode: the pass updates them on its private copy)
    others = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.Param)))
    report = jaxinit.lsuv(model, x, center=center)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.Not(nnx.Param)), others)
    check_outputs(nnx_outputs(model, x), report, center)
    params = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    jaxinit.lsuv(model, x, center=center)
    assert rel_change(nnx.state(model, nnx.Param), params) < 1e-3


# ---------------------------------------------------------------------------------------------
# compilation


def _lsuv_programs(names):
    return [n for n in names if "lsuv" in n]


def test_second_call_does_not_recompile():
    module, x = SMALL, normal(SMALL_X)
    variables = init(module, x)
    jaxinit.lsuv(module, variables, x)
    with log_compilations() as compiled:
        jaxinit.lsuv(module, variables, x)
        jaxinit.lsuv(models.MLP(depth=3, width=16), variables, x, target_std=2.0, tol=0.01)
    assert compiled == []  # equal module, same shapes; options are not static
    with log_compilations() as compiled:
        jaxinit.lsuv(module, variables, normal((64, 8)))
    assert len(_lsuv_programs(compiled)) == 1, compiled  # a new batch size: one new program
    model = small_nnx()
    jaxinit.lsuv(model, x)
    with log_compilations() as compiled:
        jaxinit.lsuv(model, x, target_std=0.5)
    assert compiled == []


def test_linen_lsuv_under_jit_and_vmap_over_seeds():
    module, x = SMALL, normal(SMALL_X)
    keys = jax.random.split(KEY, 3)
    stacked = jax.jit(jax.vmap(lambda k: module.init(k, x)))(keys)
    new, report = jax.jit(jax.vmap(lambda v: jaxinit.lsuv(module, v, x)))(stacked)
    assert report.std_after.shape == (3, 3)
    for i in range(3):
        one = jax.tree.map(lambda a, i=i: a[i], stacked)
        want, _ = jaxinit.lsuv(module, one, x)
        got = jax.tree.map(lambda a, i=i: a[i], new)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_unhashable_module_is_cached_by_identity():
    module = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(4)])  # holds a list
    x = normal((16, 8))
    variables = init(module, x)
    _, report = jaxinit.lsuv(module, variables, x)
    with log_compilations() as compiled:
        jaxinit.lsuv(module, variables, x)
    assert compiled == []
    assert report.paths == ("layers_0", "layers_2")


def test_report_is_a_pytree_and_a_table():
    module, x = SMALL, normal(SMALL_X)
    _, report = jaxinit.lsuv(module, init(module, x), x)
    same = jax.jit(lambda r: r)(report)
    assert same.paths == report.paths
    assert len(jax.tree.leaves(report)) == 9
    text = str(report)
    assert "Dense_2" in text and "std after" in text and "3/3 layers converged" in text
    row = report.layer("Dense_0")
    assert row["iterations"] == 1 and row["converged"] is True
    with pytest.raises(KeyError, match="nope"):
        report.layer("nope")


# ---------------------------------------------------------------------------------------------
# options


def test_center_without_bias_is_reported():
    module = nn.Sequential([nn.Dense(16, use_bias=False), nn.relu, nn.Dense(16)])
    x = normal((32, 8)) + 3.0
    new, report = jaxinit.lsuv(module, init(module, x), x, center=True)
    out = linen_outputs(module, new, x)
    assert not report.converged[0] and report.converged[1]
    s, m = std_mean(out["layers_0"][0])
    assert abs(s - 1) <= EXACT and abs(m) > 0.1
    assert abs(m - float(report.mean_after[0])) < 1e-4
    assert abs(std_mean(out["layers_2"][0])[1]) <= EXACT


def test_target_std():
    module, x = SMALL, normal(SMALL_X)
    new, report = jaxinit.lsuv(module, init(module, x), x, target_std=0.25)
    out = linen_outputs(module, new, x)
    for p in report.paths:
        assert abs(std_mean(out[p][0])[0] / 0.25 - 1) <= EXACT


def _assert_orthogonal(m):
    """Columns (rows, if wider than tall) orthogonal and of equal norm: the orthogonal init
    times the LSUV scale."""
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram / jnp.mean(jnp.diag(gram)), jnp.eye(len(gram)), atol=1e-5)


@pytest.mark.slow  # the scanned orthogonal test below covers orthogonal_init by default
def test_orthogonal_init():
    # linen, with Dense and DenseGeneral kernels (the attention projections)
    module, _, shape, *_ = CASES["transformer"]
    x = normal(shape)
    new, report = jaxinit.lsuv(module, init(module, x), x, orthogonal_init=True, key=KEY)
    p = new["params"]
    _assert_orthogonal(p["mlp_in"]["kernel"])  # (32, 128): orthogonal rows
    _assert_orthogonal(p["mlp_out"]["kernel"])  # (128, 32)
    _assert_orthogonal(p["attn"]["query"]["kernel"].reshape(32, 32))  # (32, 4, 8)
    _assert_orthogonal(p["attn"]["out"]["kernel"].reshape(32, 32))  # (4, 8, 32)
    # distinct keys: the same-shaped query and key kernels are different matrices
    q, k = (p["attn"][n]["kernel"] for n in ("query", "key"))
    assert float(jnp.abs(q / jnp.linalg.norm(q) - k / jnp.linalg.norm(k)).max()) > 0.05
    check_outputs(linen_outputs(module, new, x), report, center=False)
    # NNX, with a threefry key (the default kind)
    x = normal(SMALL_X)
    model = small_nnx()
    report = jaxinit.lsuv(model, x, orthogonal_init=True, key=jax.random.key(3))
    for layer in model.layers:
        _assert_orthogonal(layer.kernel[...])
    check_outputs(nnx_outputs(model, x), report, center=False)


def test_select_pattern_leaves_others_alone():
    module, _, shape, *_ = CASES["convnet"]
    x = normal(shape)
    variables = init(module, x)
    new, report = jaxinit.lsuv(module, variables, x, select="conv*")
    assert report.paths == ("conv0", "conv1", "conv2", "conv3")
    jax.tree.map(np.testing.assert_array_equal, new["params"]["head"], variables["params"]["head"])


@pytest.mark.parametrize("framework", ["linen", pytest.param("nnx", marks=pytest.mark.slow)])
def test_selected_blocks_are_normalized_post_activation(framework):
    x = normal(SMALL_X)

    def run(act, **opts):
        if framework == "linen":
            module = BlockNet(act)
            new, report = jaxinit.lsuv(module, init(module, x), x, select="block*", **opts)
            return report, linen_outputs(module, new, x)
        model = NNXBlockNet(8, act, rngs())
        report = jaxinit.lsuv(model, x, select=lambda p, m: p.startswith("blocks/") and
                              p.count("/") == 1, **opts)  # fmt: skip
        return report, nnx_outputs(model, x)

    # ReLU is positively homogeneous: one rescaling step is exact
    report, out = run("relu")
    assert report.all_converged and list(report.iterations) == [1, 1, 1]
    for p in report.paths:
        assert abs(std_mean(out[p][0])[0] - 1) <= 1e-3
    # tanh needs iterations; centring the block output shifts the inner bias
    report, out = run("tanh", target_std=0.5, center=True, max_iters=50)
    assert report.all_converged, str(report)
    assert int(report.iterations.max()) > 1
    for p in report.paths:
        s, m = std_mean(out[p][0])
        assert abs(s / 0.5 - 1) <= 1e-3 and abs(m) <= 0.5e-3


# ---------------------------------------------------------------------------------------------
# robustness


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_batch_is_an_error_before_any_work(bad):
    module = SMALL
    x = np.array(normal(SMALL_X))
    variables = init(module, x)
    x[3, 1] = bad
    model = small_nnx()
    with log_compilations() as compiled:
        with pytest.raises(ValueError, match=r"x contains 1 non-finite value"):
            jaxinit.lsuv(module, variables, x)
        with pytest.raises(ValueError, match=r"x contains 1 non-finite value"):
            jaxinit.lsuv(model, x)
    assert _lsuv_programs(compiled) == []  # rejected before the pass is traced


def test_dead_layer_is_reported_and_left_finite():
    module = models.MLP(depth=3, width=16, kernel_init=nn.initializers.zeros)
    x = normal(SMALL_X)
    variables = init(module, x)  # every output is exactly 0 (zero kernels and biases)
    new, report = jaxinit.lsuv(module, variables, x)
    assert bool(report.dead.all()) and not bool(report.converged.any())
    assert list(report.iterations) == [0, 0, 0]
    assert "dead" in str(report)
    jax.tree.map(np.testing.assert_array_equal, new, variables)
    model = models.NNXMLP(8, depth=3, width=16, kernel_init=nn.initializers.zeros, rngs=rngs())
    report = jaxinit.lsuv(model, x)
    assert bool(report.dead.all())
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(nnx.state(model)))


def test_non_convergence_is_reported_not_a_hang():
    module = BlockNet("tanh")
    x = normal(SMALL_X)
    variables = init(module, x)
    # tanh outputs have std < 1, so a target of 2 is unreachable
    new, report = jaxinit.lsuv(module, variables, x, select="block*", target_std=2.0, max_iters=7)
    assert not bool(report.converged.any())
    assert list(report.iterations) == [7, 7, 7]
    assert "NOT CONVERGED" in str(report)
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(new))
    # the best iterate is kept, and the report's "after" is what the network now does
    out = linen_outputs(module, new, x)
    for i, p in enumerate(report.paths):
        assert abs(std_mean(out[p][0])[0] - float(report.std_after[i])) < 1e-4


def test_no_selectable_layer_names_select():
    x = normal(SMALL_X)
    with pytest.raises(ValueError, match=r"select=None matched no layer"):
        jaxinit.lsuv(NoKernel(), init(NoKernel(), x), x)
    with pytest.raises(ValueError, match=r"select='conv\*' matched no layer.*Dense_0"):
        jaxinit.lsuv(SMALL, init(SMALL, x), x, select="conv*")
    t, _, shape, *_ = CASES["transformer"]
    xt = normal(shape)
    with pytest.raises(ValueError, match=r"select='ln1' selects 'ln1', which owns no kernel"):
        jaxinit.lsuv(t, init(t, xt), xt, select="ln1")


def test_nested_selection_is_an_error():
    module = BlockNet()
    x = normal(SMALL_X)
    with pytest.raises(ValueError, match=r"selects both 'block0' and 'block0/dense'"):
        jaxinit.lsuv(module, init(module, x), x, select=["block0", "block0/dense"])


@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_shared_layer_and_uncalled_layer(framework):
    x = normal((32, 8))
    if framework == "linen":
        module = Shared()
        variables = init(module, x, method=Shared.all_layers)
        new, report = jaxinit.lsuv(module, variables, x)
        out = linen_outputs(module, new, x)
        np.testing.assert_array_equal(
            new["params"]["unused"]["kernel"], variables["params"]["unused"]["kernel"]
        )
    else:
        model = NNXShared(8, rngs())
        unused = np.array(model.unused.kernel[...])
        report = jaxinit.lsuv(model, x)
        out = nnx_outputs(model, x)
        np.testing.assert_array_equal(model.unused.kernel[...], unused)
    # normalized once, at its first call; the second call runs with the rescaled weights
    assert report.paths == ("first", "shared", "head")
    assert len(out["shared"]) == 2
    assert abs(std_mean(out["shared"][0])[0] - 1) <= EXACT
    assert abs(std_mean(out["head"][0])[0] - 1) <= EXACT  # its input is the second call


def test_bf16_parameters_stay_bf16():
    module = BF16()
    x = normal(SMALL_X)
    variables = init(module, x)
    new, report = jaxinit.lsuv(module, variables, x)
    assert {v.dtype for v in jax.tree.leaves(new)} == {jnp.dtype(jnp.bfloat16)}
    # bf16 keeps 8 significant bits: rounding the rescaled kernel and the layer output each
    # moves the std by at most 2^-9 relative, so 2^-7 bounds the error with margin
    out = linen_outputs(module, new, x)
    for p in report.paths:
        assert abs(std_mean(out[p][0])[0] - 1) <= 2**-7, p


def test_bf16_report_states_what_the_returned_parameters_give():
    module = nn.Sequential(
        [nn.Dense(64, param_dtype=jnp.bfloat16, dtype=jnp.float32) for _ in range(6)]
    )
    x = normal((256, 64))
    new, report = jaxinit.lsuv(module, init(module, x), x)
    out = linen_outputs(module, new, x)
    measured = np.array([std_mean(out[p][0])[0] for p in report.paths])
    # the report measures what the rounded bf16 parameters give (float32 moments: 1e-6)
    np.testing.assert_allclose(report.std_after, measured, rtol=1e-5)
    np.testing.assert_array_equal(report.converged, np.abs(measured - 1) <= 1e-3)
    # and the rounding is big enough here that some layers miss tol=1e-3
    assert not report.all_converged


def test_a_tol_finer_than_float32_resolves_is_refused():
    module, x = SMALL, normal(SMALL_X)
    with pytest.raises(ValueError, match=r"lsuv: tol=1e-12 is below 1e-05"):
        jaxinit.lsuv(module, init(module, x), x, tol=1e-12)


def test_remat_layers():
    # per-layer values travel in Flax state, not Python lists, so nothing leaks out of remat
    x = normal(SMALL_X)
    module = Remat()
    new, report = jaxinit.lsuv(module, init(module, x), x)
    assert len(report.paths) == 3
    out = linen_outputs(module, new, x)
    for p in report.paths:
        assert abs(std_mean(out[p][0])[0] - 1) <= EXACT
    model = NNXRemat(rngs())
    report = jaxinit.lsuv(model, x)
    assert report.paths == ("a", "b")
    h = model.a(x)
    assert abs(std_mean(h)[0] - 1) <= EXACT
    assert abs(std_mean(model.b(nnx.relu(h)))[0] - 1) <= EXACT


def _unrolled_copy(scanned_params, depth):
    """The parameters of ``models.MLP(scan=True)`` laid out for ``models.MLP(scan=False)``."""
    p = dict(scanned_params)
    stacked = p.pop("layers")["dense"]
    for i in range(depth - 1):
        p[f"Dense_{i + 1}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return {"params": p}


@pytest.mark.parametrize("center", [pytest.param(False, marks=pytest.mark.slow), True])
def test_scanned_lsuv_equals_the_unrolled_lsuv_of_the_same_weights(center):
    depth, x = 5, normal((64, 16))
    scanned = models.MLP(depth=depth, width=16, num_outputs=3, scan=True)
    unrolled = models.MLP(depth=depth, width=16, num_outputs=3)
    variables = scanned.init(KEY, x)
    new, report = jaxinit.lsuv(scanned, variables, x, center=center)
    want, want_report = jaxinit.lsuv(
        unrolled, _unrolled_copy(variables["params"], depth), x, center=center
    )
    assert report.paths == (
        "Dense_0",
        *(f"layers/dense[{i}]" for i in range(depth - 1)),
        "head",
    )
    assert report.all_converged
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
        _unrolled_copy(new["params"], depth),
        want,
    )
    for field in ("std_before", "mean_before", "std_after", "mean_after"):
        np.testing.assert_allclose(
            getattr(report, field), getattr(want_report, field), rtol=2e-5, atol=1e-6
        )
    # Independent of the report: the unrolled model with the scanned result's weights.
    out = linen_outputs(unrolled, _unrolled_copy(new["params"], depth), x)
    for i in range(depth):
        assert abs(std_mean(out[f"Dense_{i}"][0])[0] - 1) <= EXACT


@pytest.mark.slow
def test_scan_limits_are_clear_errors():
    x = normal(SMALL_X)
    module = Scanned()  # its nn.scan does not carry the probe collection
    with pytest.raises(ValueError, match=r"variable_axes=\{'params': 0, jaxinit.probe.COLLECTION"):
        jaxinit.lsuv(module, init(module, x), x)
    # a selected block around a scanned layer: its kernel is sliced inside the call
    mlp = models.MLP(depth=4, width=16, num_outputs=3, scan=True)
    x = normal((32, 16))
    with pytest.raises(NotImplementedError, match=r"'layers/dense' runs inside a lifted"):
        jaxinit.lsuv(mlp, mlp.init(KEY, x), x, select="layers")
    # the documented way out: leave them unselected
    with pytest.raises(ValueError, match="matched no layer"):
        jaxinit.lsuv(NNXScanned(rngs()), normal(SMALL_X), select="head")


class _NNXUnrolled(nnx.Module):
    """NNXScanned's three Linear layers as a plain list."""

    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(3)])

    def __call__(self, x):
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return x


@pytest.mark.parametrize("center", [False, True])
def test_nnx_scanned_lsuv_equals_the_unrolled_lsuv_of_the_same_weights(center):
    x = normal((64, 8))
    scanned, unrolled = NNXScanned(rngs()), _NNXUnrolled(rngs())
    kernel, bias = scanned.layers.kernel[...], scanned.layers.bias[...]
    for i, layer in enumerate(unrolled.layers):
        layer.kernel.set_value(kernel[i])
        layer.bias.set_value(bias[i] + 0.1)  # a bias, so that centring has work to do
    scanned.layers.bias.set_value(bias + 0.1)
    report = jaxinit.lsuv(scanned, x, center=center)
    want = jaxinit.lsuv(unrolled, x, center=center)
    assert report.paths == ("layers[0]", "layers[1]", "layers[2]")
    assert want.paths == ("layers/0", "layers/1", "layers/2")
    assert report.all_converged
    for i, layer in enumerate(unrolled.layers):
        np.testing.assert_allclose(scanned.layers.kernel[...][i], layer.kernel[...], rtol=2e-5)
        np.testing.assert_allclose(
            scanned.layers.bias[...][i], layer.bias[...], rtol=2e-5, atol=1e-6
        )
    for field in ("std_before", "mean_before", "std_after", "mean_after"):
        np.testing.assert_allclose(
            getattr(report, field), getattr(want, field), rtol=2e-5, atol=1e-6
        )
    # Independent of the report: the stack run slice by slice in plain JAX.
    h = x
    for i in range(3):
        y = h @ scanned.layers.kernel[...][i] + scanned.layers.bias[...][i][None]
        s, m = std_mean(y)
        assert abs(s - 1) <= EXACT
        if center:
            assert abs(m) <= EXACT
        h = jax.nn.relu(y)


def test_nnx_subclass_inheriting_call_is_normalized():
    class MyLinear(nnx.Linear):
        pass

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = MyLinear(8, 16, rngs=rngs)
            self.b = MyLinear(16, 16, rngs=rngs)

        def __call__(self, x):
            return self.b(nnx.relu(self.a(x)))

    model = Net(rngs())
    x = normal((32, 8))
    report = jaxinit.lsuv(model, x)
    assert report.paths == ("a", "b")
    h = model.a(x)
    assert abs(std_mean(h)[0] - 1) <= EXACT
    assert abs(std_mean(model.b(nnx.relu(h)))[0] - 1) <= EXACT


def test_frozen_variables_stay_frozen():
    module, x = SMALL, normal(SMALL_X)
    variables = flax.core.freeze(init(module, x))
    new, _ = jaxinit.lsuv(module, variables, x)
    assert isinstance(new, flax.core.FrozenDict)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"target_std": 0.0}, ValueError, r"target_std=0.0 must be finite and > 0"),
        ({"tol": float("nan")}, ValueError, r"tol=nan must be finite"),
        ({"max_iters": 0}, ValueError, r"max_iters=0 must be an int >= 1"),
        ({"center": "yes"}, TypeError, r"center='yes' must be True or False"),
        ({"orthogonal_init": True}, ValueError, r"orthogonal_init=True needs key="),
        ({"key": jax.random.key(0)}, ValueError, r"key= is only used with orthogonal_init"),
        ({"select": 3}, TypeError, r"select=3 is not supported"),
        ({"train": [1]}, TypeError, r"keyword argument train=\[1\] .* must be hashable"),
    ],
)
def test_bad_options(kwargs, err, match):
    module, x = SMALL, normal(SMALL_X)
    with pytest.raises(err, match=match):
        jaxinit.lsuv(module, init(module, x), x, **kwargs)


def test_bad_call_forms():
    module, x = SMALL, normal(SMALL_X)
    with pytest.raises(TypeError, match=r"lsuv\(module, variables, x"):
        jaxinit.lsuv(module, x)
    with pytest.raises(ValueError, match=r"'params' collection"):
        jaxinit.lsuv(module, {"batch_stats": {}}, x)
    with pytest.raises(TypeError, match=r"lsuv\(model, x"):
        jaxinit.lsuv(small_nnx(), {}, x)
    with pytest.raises(TypeError, match="is not a Flax module"):
        jaxinit.lsuv(lambda x: x, x)


# ---------------------------------------------------------------------------------------------
# training after LSUV


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data - d.data.mean(0)) / (d.data.std(0) + 1e-6)
    return jnp.asarray(x, jnp.float32), jnp.asarray(d.target)


def _train(loss_fn, params, steps=150):
    opt = optax.adam(1e-3)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (_, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, steps))(params)
    return np.asarray(losses)


@pytest.mark.slow
def test_adam_training_after_lsuv_lowers_the_loss():
    x, y = _digits()
    module = models.MLP(depth=4, width=64, num_outputs=10)
    variables, report = jaxinit.lsuv(module, init(module, x), x, select="Dense_*")
    assert report.all_converged

    def loss_linen(params):
        logits = module.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    losses = _train(loss_linen, variables["params"])
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])

    model = models.NNXMLP(64, depth=4, width=64, num_outputs=10, rngs=rngs())
    jaxinit.lsuv(model, x, select="layers/*")
    graphdef, params = nnx.split(model)

    def loss_nnx(params):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    losses = _train(loss_nnx, params)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


@pytest.mark.slow
def test_docs_examples_run():
    """docs/lsuv.md (the README section) runs as written, blocks in order, one namespace."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "lsuv.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/lsuv.md block {i}", "exec"), namespace)


def test_a_list_select_is_compiled_once():
    module, x = SMALL, normal(SMALL_X)
    variables = init(module, x)
    jaxinit.lsuv(module, variables, x, select=["Dense_0", "Dense_1"])
    with log_compilations() as compiled:
        _, report = jaxinit.lsuv(module, variables, x, select=["Dense_0", "Dense_1"])
    assert compiled == []
    assert report.paths == ("Dense_0", "Dense_1")


def test_scanned_orthogonal_init_is_orthogonal_per_slice():
    x = normal((64, 16))
    scanned = models.MLP(depth=4, width=16, scan=True)
    new, report = jaxinit.lsuv(
        scanned, scanned.init(KEY, x), x, orthogonal_init=True, key=jax.random.key(5)
    )
    assert report.all_converged
    stacked = new["params"]["layers"]["dense"]["kernel"]
    assert stacked.shape == (3, 16, 16)
    for w in stacked:
        _assert_orthogonal(w)
    assert not np.allclose(stacked[0], stacked[1])  # a distinct key per slice


class _TokenModel(nn.Module):
    """Embed on integer tokens, then Dense, self-attention and a vocabulary head."""

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(50, 32, name="embed")(tokens)
        h = nn.relu(nn.Dense(32, name="ffn")(h))
        h = nn.MultiHeadDotProductAttention(num_heads=4, name="attn")(h)
        return nn.Dense(50, name="head")(h)


def test_token_model_with_embed_and_attention():
    tokens = jax.random.randint(jax.random.key(4), (8, 16), 0, 50)
    module = _TokenModel()
    new, report = jaxinit.lsuv(module, module.init(KEY, tokens), tokens)
    # The embedding table owns no kernel and is left as it is; the attention's four
    # projections are normalized one after another, in the order the layer calls them.
    assert report.paths == ("ffn", "attn/query", "attn/key", "attn/value", "attn/out", "head")
    assert report.all_converged
    out = linen_outputs(module, new, tokens)
    for path in report.paths:
        assert abs(std_mean(out[path][0])[0] - 1) <= EXACT, path
    np.testing.assert_array_equal(
        new["params"]["embed"]["embedding"],
        module.init(KEY, tokens)["params"]["embed"]["embedding"],
    )


def test_donated_parameters_give_the_same_result():
    module, x = SMALL, normal(SMALL_X)
    variables = init(module, x)
    want, want_report = jaxinit.lsuv(module, variables, x)
    copy = jax.tree.map(jnp.copy, variables)
    got, report = jaxinit.lsuv(module, copy, x, donate=True)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    np.testing.assert_array_equal(report.std_after, want_report.std_after)
    # NNX: the model's own arrays are reused; BatchNorm-free model, same result as undonated
    a, b = small_nnx(), small_nnx()
    jaxinit.lsuv(a, x)
    jaxinit.lsuv(b, x, donate=True)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(a), nnx.state(b))


class _WideConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(8, (3, 3), name="conv1")(nn.relu(nn.Conv(8, (3, 3), name="conv0")(x)))


@pytest.mark.parametrize("center", [False, True])
def test_outputs_above_a_million_elements_are_normalized(center):
    """Each conv writes 4 x 192 x 192 x 8 = 1.18M elements, past the size where the moments
    are two reductions rather than one of a stacked copy. ``conv0``'s bias at 100 puts its
    output mean ~100x above its std (about 1), where float32 moments taken around zero would
    lose the variance to cancellation. (Far higher, float32 cannot hold the mean to EXACT: its
    spacing at 1e4 is 1e-3.)"""
    module, x = _WideConv(), normal((4, 192, 192, 3))
    variables = init(module, x)
    conv0 = variables["params"]["conv0"]
    conv0 = {**conv0, "bias": jnp.full_like(conv0["bias"], 100.0)}
    variables = {"params": {**variables["params"], "conv0": conv0}}
    std0, mean0 = std_mean(linen_outputs(module, variables, x)["conv0"][0])
    assert abs(mean0) > 50 * std0  # the regime the test is about
    new, report = jaxinit.lsuv(module, variables, x, center=center)
    assert report.paths == ("conv0", "conv1") and report.all_converged
    out = linen_outputs(module, new, x)
    for p in report.paths:
        std, mean = std_mean(out[p][0])
        assert abs(std - 1) <= EXACT, (p, std)
        if center:
            assert abs(mean) <= EXACT, (p, mean)


@pytest.mark.parametrize("center", [False, True])
def test_scanned_layers_with_a_mean_far_above_their_std_are_normalized(center):
    """The scanned layers' biases at 100 put the first one's output mean ~100x above its std,
    where float32 moments taken around zero would lose the variance to cancellation; the sums
    are taken around a value of the output (for a stack, the mean of its first row)."""
    depth, x = 4, normal((64, 16))
    scanned = models.MLP(depth=depth, width=16, num_outputs=3, scan=True)
    unrolled = models.MLP(depth=depth, width=16, num_outputs=3)
    params = scanned.init(KEY, x)["params"]
    dense = params["layers"]["dense"]
    params = {**params, "layers": {"dense": {**dense, "bias": jnp.full_like(dense["bias"], 100.0)}}}
    new, report = jaxinit.lsuv(scanned, {"params": params}, x, center=center)
    assert report.all_converged
    out = linen_outputs(unrolled, _unrolled_copy(new["params"], depth), x)
    for i in range(1, depth):
        std, mean = std_mean(out[f"Dense_{i}"][0])
        assert abs(std - 1) <= EXACT, (i, std)
        if center:
            assert abs(mean) <= EXACT, (i, mean)
    if not center:  # the first scanned layer keeps its mean, far above its std
        assert std_mean(out["Dense_1"][0])[1] > 50


@pytest.mark.parametrize("center", [False, True])
def test_float64_models_under_x64_are_normalized(center):
    """Under ``jax_enable_x64``, float64 data and parameters give float64 outputs: each is
    rescaled in float64 and comes out normalized, measured in float64 (linen and NNX)."""
    f64 = jnp.float64
    with jax.enable_x64(True):
        x = np.random.default_rng(0).normal(size=(32, 8)) + 3.0
        module = nn.Sequential(
            [nn.Dense(16, param_dtype=f64), nn.relu, nn.Dense(4, param_dtype=f64)]
        )
        variables = module.init(KEY, x)
        new, report = jaxinit.lsuv(module, variables, x, center=center)
        assert report.paths == ("layers_0", "layers_2") and report.all_converged
        assert all(w.dtype == f64 for w in jax.tree.leaves(new))
        out = linen_outputs(module, new, x)
        model = nnx.Sequential(
            nnx.Linear(8, 16, param_dtype=f64, rngs=rngs()),
            nnx.relu,
            nnx.Linear(16, 4, param_dtype=f64, rngs=rngs(1)),
        )
        assert jaxinit.lsuv(model, x, center=center).all_converged
        outputs = [out[p][0] for p in report.paths]
        outputs += [v[0] for p, v in nnx_outputs(model, x).items() if p in ("layers/0", "layers/2")]
        assert len(outputs) == 4
        for y in outputs:
            assert y.dtype == f64
            a = np.asarray(y, np.float64)
            assert abs(a.std() - 1) <= EXACT, a.std()
            if center:
                assert abs(a.mean()) <= EXACT, a.mean()
