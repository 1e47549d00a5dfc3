"""jaxinit.probe: layer paths, hooks and stored values for Flax linen and NNX."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinit import probe
from jaxinit.models import MLP, NNXMLP

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (6, 3))


class MyDense(nn.Dense):
    pass


class ReluDense(nn.Dense):  # overrides __call__ and calls the base: one layer, not two
    def __call__(self, x):
        return nn.relu(super().__call__(x))


class LinenNet(nn.Module):
    """Attribute names deliberately out of call order ('z' runs first)."""

    def setup(self):
        self.z = MyDense(4)
        self.a = ReluDense(4)
        self.bn = nn.BatchNorm()
        self.shared = nn.Dense(4)
        self.unused = nn.Dense(4)
        self.head = nn.Dense(2, use_bias=False)

    def __call__(self, x, train=False):
        x = self.a(self.z(x))
        x = self.bn(x, use_running_average=not train)
        x = self.shared(self.shared(x))
        return self.head(x)


class MyLinear(nnx.Linear):
    pass


class ReluLinear(nnx.Linear):
    def __call__(self, x):
        return nnx.relu(super().__call__(x))


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.z = MyLinear(3, 4, rngs=rngs)
        self.a = ReluLinear(4, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.shared = nnx.Linear(4, 4, rngs=rngs)
        self.unused = nnx.Linear(4, 4, rngs=rngs)
        self.head = nnx.Linear(4, 2, use_bias=False, rngs=rngs)

    def __call__(self, x):
        x = self.a(self.z(x))
        x = self.bn(x)
        x = self.shared(self.shared(x))
        return self.head(x)


ORDER = ("z", "a", "shared", "head")


@pytest.fixture(scope="module")
def linen_net():
    model = LinenNet()
    return model, model.init(KEY, X)


@pytest.fixture
def nnx_net():
    return NNXNet(nnx.Rngs(0))


def test_layer_paths_forward_order_linen(linen_net):
    model, variables = linen_net
    assert probe.layer_paths(model, variables, X) == ORDER


def test_layer_paths_forward_order_nnx(nnx_net):
    # MyLinear inherits __call__ from nnx.Linear: nnx.capture would miss it; the probe must not.
    assert probe.layer_paths(nnx_net, None, X) == ORDER


@pytest.mark.parametrize(
    ("select", "want"),
    [
        ("s*", ("shared",)),
        (["z", "h?ad"], ("z", "head")),
        ("**", ("z", "a", "bn", "shared", "head", "")),
        (lambda path, m: probe.has_bias(m) and probe.owns_kernel(m), ("z", "a", "shared")),
    ],
    ids=["glob", "patterns", "everything", "predicate"],
)
def test_select(linen_net, nnx_net, select, want):
    model, variables = linen_net
    assert probe.layer_paths(model, variables, X, select=select) == want
    assert probe.layer_paths(nnx_net, None, X, select=select) == want


def test_glob_segments():
    sel = probe.compile_select(["block?/*", "**/conv"])
    got = [p for p in ("block1/a", "block1/a/b", "block12/a", "conv", "x/y/conv") if sel(p, None)]
    assert got == ["block1/a", "conv", "x/y/conv"]


def test_bad_select_names_argument():
    with pytest.raises(TypeError, match=r"select=3 is not supported"):
        probe.compile_select(3)


def test_not_a_module():
    with pytest.raises(TypeError, match="is not a Flax module"):
        probe.apply_with_hook(lambda x: x, None, X, lambda p, y: y)


def test_nnx_rejects_variables(nnx_net):
    with pytest.raises(TypeError, match="variables must be None"):
        probe.apply_with_hook(nnx_net, {"params": {}}, X, lambda p, y: y)


def _manual_linen(model, variables, x, scale):
    """The forward pass of LinenNet with each hooked output scaled by scale[path], by hand."""
    p = variables["params"]

    def dense(name, x):
        y = x @ p[name]["kernel"]
        return y + p[name]["bias"][None] if "bias" in p[name] else y

    x = nn.relu(dense("a", dense("z", x) * scale["z"])) * scale["a"]
    bn = model.bind(variables).bn
    x = bn(x, use_running_average=True)
    x = dense("shared", x) * scale["shared"]
    x = dense("shared", x) * scale["shared"]
    return dense("head", x) * scale["head"]


def test_apply_with_hook_replaces_outputs_linen(linen_net):
    model, variables = linen_net
    scale = {"z": 2.0, "a": 0.5, "shared": -1.5, "head": 3.0}
    calls = []

    def hook(path, y):
        calls.append(path)
        return y * scale[path]

    got = probe.apply_with_hook(model, variables, X, hook)
    assert calls == ["z", "a", "shared", "shared", "head"]  # shared: once per call
    want = _manual_linen(model, variables, X, scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_apply_with_hook_jit_vmap_grad_linen(linen_net):
    model, variables = linen_net
    scale = {"z": 2.0, "a": 0.5, "shared": -1.5, "head": 3.0}

    def hooked(v, x):
        return probe.apply_with_hook(model, v, x, lambda path, y: y * scale[path])

    eager = hooked(variables, X)
    np.testing.assert_allclose(jax.jit(hooked)(variables, X), eager, rtol=1e-5, atol=1e-6)
    # vmap and grad compiled: eagerly, each batched or differentiated operation compiles alone.
    per_row = jax.jit(jax.vmap(lambda x: hooked(variables, x[None])[0]))(X)
    np.testing.assert_allclose(per_row, eager, rtol=1e-5, atol=1e-6)
    g = jax.jit(jax.grad(lambda v: hooked(v, X).sum()))(variables)
    g_manual = jax.jit(jax.grad(lambda v: _manual_linen(model, v, X, scale).sum()))(variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, g_manual)


def test_apply_with_hook_linen_mutable_passes_through(linen_net):
    model, variables = linen_net
    out, updates = probe.apply_with_hook(
        model, variables, X, lambda p, y: y, train=True, mutable=["batch_stats"]
    )
    assert list(updates) == ["batch_stats"]
    ref, ref_updates = model.apply(variables, X, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, updates, ref_updates)


def test_apply_with_hook_nnx_matches_and_does_not_mutate(nnx_net):
    model = nnx_net
    model.train()
    before = jax.tree.map(np.asarray, nnx.state(model))
    got = probe.apply_with_hook(model, None, X, lambda p, y: 2 * y)
    after = jax.tree.map(np.asarray, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, after, before)  # BatchNorm stats, rngs: unchanged
    assert type(model.z) is MyLinear  # no hook class leaked into the user's model
    # the same network by hand: every selected output doubled
    ref = NNXNet(nnx.Rngs(0))
    ref.train()
    x = 2 * ref.z(X)
    x = 2 * ref.a(x)
    x = ref.bn(x)
    x = 2 * ref.shared(2 * ref.shared(x))
    np.testing.assert_allclose(got, 2 * ref.head(x), rtol=1e-5, atol=1e-6)


def test_apply_with_hook_nnx_jit_vmap_grad(nnx_net):
    model = nnx_net
    model.eval()

    def hooked(x):
        return probe.apply_with_hook(model, None, x, lambda p, y: jnp.tanh(y))

    eager = hooked(X)
    np.testing.assert_allclose(jax.jit(hooked)(X), eager, rtol=1e-5, atol=1e-6)
    per_row = jax.vmap(lambda x: hooked(x[None])[0])(X)
    np.testing.assert_allclose(per_row, eager, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda x: hooked(x).sum())(X)
    eps = 1e-2
    dx = jnp.zeros_like(X).at[0, 0].set(eps)
    fd = (hooked(X + dx).sum() - hooked(X - dx).sum()) / (2 * eps)
    np.testing.assert_allclose(g[0, 0], fd, rtol=2e-2)


def test_capture_under_remat_linen():
    class Remat(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.remat(nn.Dense)(4, name="d0")(x)
            return nn.remat(nn.Dense)(2, name="d1")(nn.relu(x))

    model = Remat()
    variables = model.init(KEY, X)
    out, got = jax.jit(lambda v, x: probe.capture(model, v, x, jnp.std))(variables, X)
    h = X @ variables["params"]["d0"]["kernel"] + variables["params"]["d0"]["bias"][None]
    assert sorted(got) == ["d0", "d1"]
    np.testing.assert_allclose(got["d0"], jnp.std(h), rtol=1e-5)
    np.testing.assert_allclose(got["d1"], jnp.std(out), rtol=1e-5)


def test_capture_under_remat_nnx():
    class Remat(nnx.Module):
        def __init__(self, rngs):
            self.d0 = nnx.Linear(3, 4, rngs=rngs)
            self.d1 = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            x = nnx.remat(lambda m, x: m(x))(self.d0, x)
            return nnx.remat(lambda m, x: m(x))(self.d1, nnx.relu(x))

    model = Remat(nnx.Rngs(0))
    out, got = jax.jit(lambda x: probe.capture(model, None, x, jnp.mean))(X)
    assert sorted(got) == ["d0", "d1"]
    np.testing.assert_allclose(got["d0"], jnp.mean(model.d0(X)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["d1"], jnp.mean(out), rtol=1e-5, atol=1e-7)


def test_run_scaled_is_exact_for_affine_and_pure(linen_net, nnx_net):
    g, c = 1.7, -0.3
    for model, variables in (linen_net, (nnx_net, None)):
        got = {}

        def on_call(call, got=got):
            y = call()
            if call.path == "z":
                got["y"], got["scaled"] = y, call.run_scaled((), g, c)
            return y

        out, _ = probe.intercept(model, variables, X, on_call)
        np.testing.assert_allclose(got["scaled"], g * got["y"] + c, rtol=1e-5, atol=1e-6)
        ref = model.apply(variables, X) if variables is not None else model(X)
        np.testing.assert_allclose(out, ref, rtol=1e-6)  # the rerun changed nothing


def test_layer_properties(nnx_net):
    assert probe.is_affine(nnx_net.z)  # inherits __call__
    assert not probe.is_affine(nnx_net.a)  # overrides it
    assert probe.owns_kernel(nnx_net.a) and probe.has_bias(nnx_net.a)
    assert not probe.has_bias(nnx_net.head)
    assert not probe.owns_kernel(nnx_net.bn)


def test_builtin_models_have_expected_layers():
    x = jnp.ones((2, 5))
    linen = MLP(depth=3, width=8, num_outputs=2)
    assert probe.layer_paths(linen, linen.init(KEY, x), x) == (
        "Dense_0",
        "Dense_1",
        "Dense_2",
        "head",
    )
    model = NNXMLP(5, depth=3, width=8, num_outputs=2, rngs=nnx.Rngs(0))
    assert probe.layer_paths(model, None, x) == ("layers/0", "layers/1", "layers/2", "head")


def test_scan_stack_is_one_path_and_stores_stacked_values():
    # MLP(scan=True): nn.scan traces its body twice (each trace has its own first call), the
    # path is listed once, and capture's values come out stacked over the 3 iterations,
    # equal to the unrolled computation with the same weights.
    model = MLP(depth=4, width=8, scan=True)
    x = jax.random.normal(jax.random.key(0), (5, 8))
    variables = model.init(jax.random.key(1), x)
    assert probe.layer_paths(model, variables, x) == ("Dense_0", "layers/dense")
    _, stds = probe.capture(model, variables, x, jnp.std)
    assert stds["layers/dense"].shape == (3,)
    p = variables["params"]
    h = nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
    want = []
    for i in range(3):
        y = h @ p["layers"]["dense"]["kernel"][i] + p["layers"]["dense"]["bias"][i][None]
        want.append(jnp.std(y))
        h = nn.relu(y)
    np.testing.assert_allclose(stds["layers/dense"], jnp.stack(want), rtol=1e-5, atol=1e-6)
