"""Claim 9 (experiments/mutransfer.py): μTransfer, the best learning rate across widths under SP
and μP, on an MLP and a byte-level transformer.

The quick run (marked slow, as the other claims' quick runs over a few seconds are) checks the
pipeline: the outputs, the roles, that μP and SP are the same runs at the base width, the
divergence accounting and the verdict's arithmetic. Its budget (a few steps, three learning
rates) cannot show the claim; the full run's numbers are in experiments/results/mutransfer.md.
The parts the claim rests on (the learning rate as the last factor, the divergence accounting,
the roles) are also tested directly, without training.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _experiments import experiments_importable
from test_experiments import _check_outputs, _expected_data

import jaxinit


@pytest.fixture(scope="module")
def mt():
    with experiments_importable() as import_module:
        yield import_module("mutransfer")


@pytest.fixture(scope="module")
def quick(mt, tmp_path_factory):
    out = tmp_path_factory.mktemp("mutransfer")
    result = mt.main(["--quick", "--out", str(out)])
    return result, out


# --------------------------------------------------------------------------- the quick run


@pytest.mark.slow  # 20-50 s on 2 cores: 8 programs to compile
def test_claim9_quick_outputs(quick):
    result, out = quick
    _check_outputs(result, out)
    assert result["data"] == _expected_data()
    assert result["widths"] == (64, 256) and result["base_width"] == 64
    for name, chance in (("mlp", math.log(10)), ("transformer", math.log(256))):
        task = result[name]
        assert task["optimizer"] == "adam" and len(task["log2_lrs"]) == 3
        for p in ("sp", "mup"):
            for width in (64, 256):
                val = np.asarray(task[p]["val_loss"][width])
                assert val.shape == (3, 2)  # (learning rates, seeds)
                # Nothing diverges at the quick size, and each width's best rate has learned
                # something on every seed (below the loss of a uniform guess).
                assert np.all(np.isfinite(val)), (name, p, width, val)
                best = task["log2_lrs"].index(task[p]["best_log2_lr"][width])
                assert np.all(val[best] < chance), (name, p, width, val)
            assert task[p]["diverged_total"] == 0


@pytest.mark.slow  # shares the quick run
def test_claim9_mup_is_sp_at_the_base_width(quick):
    # Every μP factor is 1 at width 64 (the attention scale included), so the two
    # parametrizations are the same runs there: equal to the last bit, per learning rate and
    # seed, final validation and training losses alike.
    result, _ = quick
    for name in ("mlp", "transformer"):
        sp, mup = result[name]["sp"], result[name]["mup"]
        for what in ("val_loss", "final_train_loss"):
            np.testing.assert_array_equal(mup[what][64], sp[what][64])
        # ... and not at 256, where μP rescales.
        assert not np.array_equal(mup["val_loss"][256], sp["val_loss"][256])


@pytest.mark.slow  # shares the quick run
def test_claim9_verdict_follows_the_best_learning_rates(quick):
    result, _ = quick
    held = []
    for name in ("mlp", "transformer"):
        task = result[name]
        lrs = task["log2_lrs"]
        for p in ("sp", "mup"):
            mean = np.stack([task[p]["mean_val_loss"][w] for w in (64, 256)])
            best = [lrs[int(np.argmin(m))] for m in mean]
            assert [task[p]["best_log2_lr"][w] for w in (64, 256)] == best
            assert task[p]["span"] == abs(lrs.index(best[0]) - lrs.index(best[1]))
        held += [task["mup"]["span"] <= 1, task["sp"]["span"] > 1]
    assert result["held"] == all(held)
    assert list(result["checks"].values()) == held


@pytest.mark.slow  # shares the quick run
def test_claim9_quick_transformer_sp_and_mup_at_width_256(quick):
    # At the quick size the transformer's μP optimum is the middle rate, 2^-7, at both widths,
    # with the neighbours 0.2-0.3 nats worse on every seed (the seeds differ by < 0.1).
    result, _ = quick
    lm = result["transformer"]
    assert lm["mup"]["best_log2_lr"][64] == lm["mup"]["best_log2_lr"][256] == -7
    # The largest quick rate, 2^-5, is past SP's stable step at width 256 (worse than a uniform
    # guess on every seed: about 6.5 nats against ln 256 = 5.5), not μP's (about 3.7).
    assert np.all(np.asarray(lm["sp"]["val_loss"][256])[2] > math.log(256))
    assert np.all(np.asarray(lm["mup"]["val_loss"][256])[2] < math.log(256))


# --------------------------------------------------------------------------- without training


def test_roles_of_the_two_models(mt):
    # Heads fixed, head dimension growing: every attention kernel grows along fan-in and
    # fan-out (the width, or the head dimension), 16x from width 64 to 1024.
    lm = mt.lm_task(argparse.Namespace(quick=True, lm_steps=1))
    shape = {w: mt.abstract(lm, "mup", w) for w in (64, 65, 1024)}
    roles = jaxinit.mup.roles(shape[64], shape[65], shape[1024])
    for part in ("query", "key", "value", "out"):
        r = roles[f"block0_attn/{part}/kernel"]
        assert r.role == "hidden" and (r.m_in, r.m_out) == (16.0, 16.0), roles.table()
    assert roles["readout/kernel"].role == "output"
    assert roles["readout/bias"].role == "fixed"
    assert roles["embed/embedding"].role == "embedding"
    assert roles["block0_mlp_in/kernel"].role == roles["block0_mlp_out/kernel"].role == "hidden"
    mlp = {
        w: jax.eval_shape(mt.WidthMLP(w).init, jax.random.key(0), jnp.zeros((1, 49)))
        for w in (64, 65, 256)
    }
    roles = jaxinit.mup.roles(mlp[64], mlp[65], mlp[256])
    assert [roles[f"{k}/kernel"].role for k in ("dense0", "dense1", "readout")] == [
        "input",
        "hidden",
        "output",
    ]


def test_zero_init_selects_the_readout_and_the_queries(mt):
    # --zero-init zeros exactly these kernels under μP (Tensor Programs V; mup's
    # readout_zero_init and query_zero_init), nothing else
    # shapes suffice to select by path: no init is run
    v = jax.eval_shape(mt.ByteLM(8, 4, blocks=2).init, jax.random.key(0), jnp.zeros((1, 4), int))
    assert jaxinit.tree.paths(v, mt.ZERO_INIT["transformer"]) == [
        "block0_attn/query/kernel",
        "block1_attn/query/kernel",
        "readout/kernel",
    ]
    v = jax.eval_shape(mt.WidthMLP(8).init, jax.random.key(0), jnp.zeros((1, 49)))
    assert jaxinit.tree.paths(v, mt.ZERO_INIT["mlp"]) == ["readout/kernel"]


@pytest.mark.parametrize(
    ("parametrization", "kind"),
    [("sp", "sgd"), pytest.param("mup", "adam", marks=pytest.mark.slow)],
)
def test_swept_learning_rate_is_the_last_factor(mt, kind, parametrization):
    # The sweep builds jaxinit.mup.optimizer with learning_rate=1.0 and multiplies its updates
    # by the (traced) rate; that must be the optimizer built with the rate itself, to float32
    # rounding: the rate is the chain's last factor, and Adam's state does not depend on it.
    # Jitted, XLA may fold the built rate into the other constant factors, so the two
    # products can differ in their last bit or two (2 eps relative).
    shape = {
        w: jax.eval_shape(mt.WidthMLP(w).init, jax.random.key(0), jnp.zeros((1, 8)))
        for w in (64, 65, 256)
    }
    roles = jaxinit.mup.roles(shape[64], shape[65], shape[256])
    model = mt.WidthMLP(256)
    params = model.init(jax.random.key(1), jnp.zeros((1, 8)))["params"]
    x = jax.random.normal(jax.random.key(2), (16, 8))
    y = jnp.arange(16) % 10
    lr = 0.3
    one = jaxinit.mup.optimizer(roles, params, parametrization, kind, learning_rate=1.0)
    real = jaxinit.mup.optimizer(roles, params, parametrization, kind, learning_rate=lr)

    @jax.jit
    def three_steps(rate):
        p, s1, sr, out = params, one.init(params), real.init(params), []
        for _ in range(3):  # Adam's moments and count too
            g = jax.grad(lambda q: mt.cross_entropy(model.apply({"params": q}, x), y))(p)
            u1, s1 = one.update(g, s1, p)
            ur, sr = real.update(g, sr, p)
            u1 = jax.tree.map(lambda v: rate * v, u1)
            out.append((u1, ur))
            p = jax.tree.map(lambda w, v: w + v, p, u1)
        return out

    eps = float(jnp.finfo(jnp.float32).eps)
    for swept, built in three_steps(jnp.float32(lr)):
        for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(built), strict=True):
            np.testing.assert_allclose(a, b, rtol=2 * eps, atol=0)


def _sweep(mt, val, train=None):
    val = np.asarray(val, np.float64)
    train = np.ones((*val.shape, 4)) if train is None else np.asarray(train, np.float64)
    return mt.Sweep(val, train, None)


def test_diverged_runs_are_counted_and_never_best(mt):
    inf, nan = math.inf, math.nan
    # width 0: the lowest loss (lr 1) has one diverged seed, so lr 2 is best; width 1: every
    # run of lr 0 diverged (one NaN, one inf); a NaN training step with a finite final loss
    # (lr 2, seed 0) counts as diverged too.
    train = np.ones((3, 2, 4))
    train[2, 0, 1] = nan
    w0 = _sweep(mt, [[1.0, 1.2], [0.1, nan], [0.5, 0.7]])
    w1 = _sweep(mt, [[nan, inf], [0.6, 0.8], [0.4, 0.6]], train)
    g = mt.grid([w0, w1])
    np.testing.assert_array_equal(g.diverged, [[0, 1, 0], [2, 0, 1]])
    assert g.mean[0, 1] == inf and g.mean[1, 0] == inf and g.mean[1, 2] == inf
    np.testing.assert_allclose(g.mean[0, [0, 2]], [1.1, 0.6])
    np.testing.assert_allclose(g.std[0, 0], np.std([1.0, 1.2], ddof=1))
    assert np.isnan(g.std[0, 1])  # one seed left: no spread
    np.testing.assert_array_equal(g.best, [2, 1])
    assert mt.span(g) == 1
    assert mt.cell(g, 1, 0, 2) == "diverged (2/2)"
    assert mt.cell(g, 0, 1, 2) == "inf (1/2 diverged)"
    assert mt.cell(g, 0, 2, 2).startswith("**0.6")  # the best, in bold
    # A width where everything diverged has no best learning rate, and no span.
    g = mt.grid([w0, _sweep(mt, np.full((3, 2), nan))])
    assert g.best[1] == -1 and mt.span(g) is None


def test_text_split_is_fixed_and_disjoint(mt):
    train, val = mt.text_split()
    assert train.size + val.size == mt.LM_BYTES
    assert train.size == int(mt.LM_TRAIN_FRACTION * mt.LM_BYTES)
    again, _ = mt.text_split()
    np.testing.assert_array_equal(again, train)


def test_bad_steps_are_argparse_errors(mt, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        mt.main(["--quick", "--mlp-steps", "0", "--out", str(tmp_path)])
    assert err.value.code == 2
    assert "--mlp-steps and --lm-steps must be positive" in capsys.readouterr().err
