"""jaxinit.mup and jaxinit.coord_check against microsoft/mup's own test criteria
(``mup/test/__main__.py``): roles, bitwise SP at base width, the init-scaling rules and the
coordinate check of μP against SP."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit.recipes import coord_check as cc_module
from jaxinit.recipes import mup
from jaxinit.recipes.coord_check import coord_check


class MLP(nn.Module):
    """mup's test MLP (``_generate_MLP``): Linear(d, w), ReLU, Linear(w, w), ReLU, readout."""

    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


class CNN(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def _shapes(module, x):
    return jax.eval_shape(module.init, jax.random.key(0), x)


def _roles(make, base, target, x):
    return mup.roles(_shapes(make(base), x), _shapes(make(base + 1), x), _shapes(make(target), x))


@pytest.fixture(scope="module")
def digits_batch():
    d = jaxinit.data.digits()
    x = jnp.asarray(d.x[:32].reshape(32, -1), jnp.float32)
    return (x - x.mean()) / x.std(), jnp.asarray(d.y[:32])


def test_roles_of_an_mlp_and_a_cnn():
    x = jnp.ones((2, 30))
    r = _roles(MLP, 64, 256, x)
    assert {p: r[p].role for p in r} == {
        "Dense_0/bias": "vector",
        "Dense_0/kernel": "input",
        "Dense_1/bias": "vector",
        "Dense_1/kernel": "hidden",
        "Dense_2/bias": "fixed",
        "Dense_2/kernel": "output",
    }
    assert (r["Dense_1/kernel"].m_in, r["Dense_1/kernel"].m_out) == (4.0, 4.0)
    assert (r["Dense_2/kernel"].m_in, r["Dense_2/kernel"].m_out) == (4.0, 1.0)
    table = r.table()
    assert "Dense_1/kernel  hidden" in table and "256x256" in table
    c = _roles(CNN, 8, 32, jnp.ones((2, 8, 8, 3)))
    assert c["Conv_0/kernel"].role == "input" and c["Conv_1/kernel"].role == "hidden"
    assert c["Dense_0/kernel"].role == "output"
    forced = mup.roles(
        _shapes(MLP(64), x), _shapes(MLP(65), x), patterns={"Dense_2/bias": "vector"}
    )
    assert forced["Dense_2/bias"].role == "vector"


def test_roles_errors_name_the_argument():
    x = jnp.ones((2, 30))
    with pytest.raises(ValueError, match="patterns key 'nothing/\\*\\*' matches no parameter"):
        mup.roles(_shapes(MLP(64), x), _shapes(MLP(65), x), patterns={"nothing/**": "hidden"})
    with pytest.raises(ValueError, match="a role is one of"):
        mup.roles(_shapes(MLP(64), x), _shapes(MLP(65), x), patterns={"**": "middle"})
    with pytest.raises(ValueError, match="delta has different parameters"):
        mup.roles(_shapes(MLP(64), x), _shapes(CNN(65), jnp.ones((2, 8, 8, 3))))
    with pytest.raises(ValueError, match="parametrization='ntk'"):
        mup.init_factors(_roles(MLP, 64, 64, x), "ntk")


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_mup_at_base_width_is_sp_bit_for_bit(kind):
    """mup's ``test_MLP_CNN_at_base_width``: parameters equal; here the first update too."""
    x = jax.random.normal(jax.random.key(1), (8, 30))
    r = _roles(MLP, 64, 64, x)
    sp = jax.jit(MLP(64).init)(jax.random.key(2), x)
    mu = mup.parametrize(sp, r, "mup")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), sp, mu))
    rng = np.random.default_rng(3)
    grads = jax.tree.map(lambda w: jnp.asarray(rng.standard_normal(w.shape), w.dtype), sp["params"])
    updates = []
    for p in ("sp", "mup"):
        opt = mup.optimizer(r, sp["params"], p, kind, learning_rate=0.1, weight_decay=1e-3)
        updates.append(opt.update(grads, opt.init(sp["params"]), sp["params"])[0])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), *updates))


@pytest.mark.slow
def test_init_scaling_with_width():
    """Hidden-weight std strictly decreases with width; the input weights' std (fan-in fixed at
    3072, as for mup's CIFAR-10 MLP) changes by less than 3e-3 relative. Each sample std is
    also checked against the closed form 1/sqrt(fan_in) of Flax's LeCun-normal default,
    within 5 standard errors (the std of a sample std is std/sqrt(2N))."""
    x = jnp.ones((2, 3072))
    stds = {}
    widths = (256, 512, 1024)
    for w in widths:
        v = mup.parametrize(
            jax.jit(MLP(w).init)(jax.random.key(0), x), _roles(MLP, 256, w, x), "mup"
        )
        for name, fan_in in (("Dense_0", 3072), ("Dense_1", w)):
            k = np.asarray(v["params"][name]["kernel"], np.float64)
            stds[name, w] = k.std()
            assert abs(k.std() * np.sqrt(fan_in) - 1) < 5 / np.sqrt(2 * k.size)
    hidden = [stds["Dense_1", w] for w in widths]
    assert hidden[0] > hidden[1] > hidden[2]
    inputs = [stds["Dense_0", w] for w in widths]
    assert max(abs(s / inputs[0] - 1) for s in inputs) < 3e-3


def test_readout_zero_init_gives_an_exact_zero_output_and_log10_loss(digits_batch):
    x, y = digits_batch
    cc = coord_check(MLP, x, y, widths=(64, 256), seeds=2, steps=1, readout_zero_init=True)
    assert np.all(cc.values[:, :, 0, -1] == 0)
    np.testing.assert_allclose(cc.loss[:, :, 0], np.log(10), rtol=1e-6)


def _check_ratios(cc, *, zero_readout):
    ratio = cc.ratio()  # (steps, layers)
    for t in range(cc.steps):
        for j, layer in enumerate(cc.layers):
            if t == 0 and j == len(cc.layers) - 1 and zero_readout:
                assert np.all(cc.values[:, :, 0, j] == 0), layer
                continue
            assert 1 / 1.2 < ratio[t, j] < 1.2, (cc.optimizer, t + 1, layer, ratio[t, j])


@pytest.mark.parametrize(("kind", "lr"), [("sgd", 0.1), ("adam", 1e-3)])
def test_coord_check_mup_holds_small_widths(digits_batch, kind, lr):
    """The criterion of mup's ``CoordCheckCase`` at widths 128 and 512 (the widths 1000/4000
    of that test, and SP's failure, are the slow test below): under μP every layer's mean |x|
    ratio lies in (1/1.2, 1.2) at steps 1-3, and the zero-initialized readout is exactly 0
    at step 1."""
    x, y = digits_batch
    common = dict(widths=(128, 512), seeds=3, steps=3, optimizer=kind, learning_rate=lr)
    cc = coord_check(MLP, x, y, readout_zero_init=True, **common)
    _check_ratios(cc, zero_readout=True)
    assert cc.values.shape == (2, 3, 3, 3) and cc.layers == ("Dense_0", "Dense_1", "Dense_2")
    assert np.all(np.isfinite(cc.exponents()[1:]))


@pytest.mark.slow  # 13 s: four CNN trainings; the default suite keeps the MLP criteria
def test_coord_check_cnn_at_mup_s_widths_holds_under_mup_and_not_sp(digits_batch):
    """The CNN criterion of mup's ``CoordCheckCase`` at its widths 128 and 512, with Adam (2
    seeds; 4 seeds and SGD are in the slow test below): under μP every layer's mean |x| ratio
    lies in (1/1.2, 1.2) at steps 1-3; under SP the hidden conv and the output leave it at
    step 2."""
    x, y = digits_batch
    images = x.reshape(32, 8, 8, 1)
    common = dict(widths=(128, 512), seeds=2, steps=3, optimizer="adam", learning_rate=1e-3)
    cnn = coord_check(CNN, images, y, readout_zero_init=True, **common)
    assert cnn.layers == ("Conv_0", "Conv_1", "Dense_0")
    _check_ratios(cnn, zero_readout=True)
    sp = coord_check(CNN, images, y, parametrization="sp", **common)
    assert sp.ratio()[1, 1] > 1.2 and sp.ratio()[1, 2] > 1.2


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "lr"), [("sgd", 0.1), ("adam", 1e-3)])
def test_coord_check_mup_criteria_mlp_1000_4000_and_cnn_128_512(digits_batch, kind, lr):
    x, y = digits_batch
    common = dict(seeds=4, steps=3, optimizer=kind, learning_rate=lr)
    mlp = coord_check(MLP, x, y, widths=(1000, 4000), readout_zero_init=True, **common)
    _check_ratios(mlp, zero_readout=True)
    images = x.reshape(32, 8, 8, 1)
    cnn = coord_check(CNN, images, y, widths=(128, 512), readout_zero_init=True, **common)
    _check_ratios(cnn, zero_readout=True)
    sp = coord_check(MLP, x, y, widths=(1000, 4000), parametrization="sp", **common)
    assert sp.ratio()[1, -1] > 1.2  # the output layer, at step 2
    if kind == "adam":
        assert sp.ratio()[1, 1] > 1.2  # the hidden layer, at step 2


@pytest.mark.slow
def test_coord_check_seed_batches_give_the_same_values(digits_batch):
    """One seed at a time (lax.map), batches of 2 with a remainder, and all 3 vmapped run the
    same per-seed computation: equal up to float32 rounding of differently blocked matmuls."""
    x, y = digits_batch
    common = dict(widths=(32, 64), seeds=3, steps=2, learning_rate=0.05)
    runs = [coord_check(MLP, x, y, seed_batch=b, **common) for b in (1, 2, 3)]
    for cc in runs[1:]:
        np.testing.assert_allclose(cc.values, runs[0].values, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(cc.loss, runs[0].loss, rtol=1e-5)
    with pytest.raises(ValueError, match="seed_batch=0"):
        coord_check(MLP, x, y, seed_batch=0, **common)


@pytest.mark.slow  # 18 s: three compiles of two widths' training
@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="coord_check's -O1 default is CPU's; run with JAX_PLATFORMS=cpu to check it",
)
def test_coord_check_programs_at_o1_compute_the_default_results_bit_for_bit(digits_batch):
    """On CPU coord_check compiles its programs with LLVM at -O1 by default, which is sound
    only if they compute what XLA's default -O3 computes: here the same check (μP init of
    every parameter, 3 steps of Adam, the statistics at widths 64 and 512) under the default
    and under -O3 gives equal values and losses, bit for bit. A control shows the comparison
    can fail: at -O0 the normal draws round differently."""
    assert cc_module._compile_options() == {"xla_backend_optimization_level": 1}
    x, y = digits_batch
    common = dict(widths=(64, 512), seeds=2, steps=3, optimizer="adam", learning_rate=1e-3)

    def run(options):
        cc = coord_check(MLP, x, y, compiler_options=options, **common)
        assert np.all(np.isfinite(cc.values)) and np.all(np.isfinite(cc.loss))
        return cc.values, cc.loss

    # -O3 named: the test session itself compiles at -O1 (conftest.py), so {} would not be
    # XLA's default here.
    default = run({"xla_backend_optimization_level": 3})
    for a, b in zip(default, run(None), strict=True):
        np.testing.assert_array_equal(a, b)
    o0 = run({"xla_backend_optimization_level": 0})
    assert any(not np.array_equal(a, b) for a, b in zip(default, o0, strict=True))


def test_coord_check_errors(digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="at least two distinct widths"):
        coord_check(MLP, x, y, widths=(64, 64))
    with pytest.raises(ValueError, match="stat='median'"):
        coord_check(MLP, x, y, widths=(64, 128), stat="median")
    with pytest.raises(ValueError, match="coord_check: labels holds 10, outside"):
        coord_check(MLP, x, y.at[0].set(10), widths=(64, 128))
    with pytest.raises(ValueError, match="coord_check: x contains 1 non-finite"):
        coord_check(MLP, x.at[0, 0].set(jnp.nan), y, widths=(64, 128))
    with pytest.raises(ValueError, match="optimizer='lamb'"):
        coord_check(MLP, x, y, widths=(64, 128), optimizer="lamb")
    with pytest.raises(ValueError, match=r"coord_check: compiler_options=.*refused by XLA"):
        coord_check(MLP, x, y, widths=(64, 128), compiler_options={"xla_no_such_option": 1})


class HeMLP(nn.Module):
    """mup's ``MLPTrainCase`` model: He (kaiming fan-in normal) init, zero biases."""

    width: int

    @nn.compact
    def __call__(self, x):
        he = jaxinit.he_normal()
        x = nn.relu(nn.Dense(self.width, kernel_init=he)(x))
        x = nn.relu(nn.Dense(self.width, kernel_init=he)(x))
        return nn.Dense(10, kernel_init=he)(x)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "lr"), [("sgd", 0.1), ("adam", 1e-3)])
def test_training_loss_improves_with_width_under_mup(kind, lr):
    """mup's ``MLPTrainCase``: widths 64/256/1024 (base 256), readout zero-init, 201 steps of
    batch 32 cycling through real data (scikit-learn's digits); the running-average training
    loss is identical across widths at step 1 and strictly decreases with width at steps 101
    and 201."""
    d = jaxinit.data.digits()
    x = np.asarray(d.x.reshape(len(d.x), -1), np.float32)
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(0).permutation(len(x))
    idx = np.resize(order, 201 * 32).reshape(201, 32)  # cycles through the data, as mup does
    cc = coord_check(
        HeMLP,
        jnp.asarray(x[idx]),
        jnp.asarray(d.y[idx]),
        widths=(64, 256, 1024),
        base_width=256,
        seeds=1,
        steps=201,
        optimizer=kind,
        learning_rate=lr,
        readout_zero_init=True,
        per_step=True,
    )
    running = np.cumsum(cc.loss[:, 0], axis=1) / np.arange(1, 202)  # mup's train_losses
    assert running[0, 0] == running[1, 0] == running[2, 0]
    for t in (100, 200):
        assert running[0, t] > running[1, t] > running[2, t], (kind, t + 1, running[:, t])
