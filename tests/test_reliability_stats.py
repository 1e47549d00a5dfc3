"""jaxinit.layer_stats / measure: per-seed results for every key implementation however the
seeds are chunked or sharded, models in training mode, multi-process runs, and bad
arguments. References are computed independently: an unbatched ``model.init`` per seed and
Flax's own ``capture_intermediates``."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import linen_outputs, std_mean
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxinit

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
# float32: a different vmap width may change how XLA sums a matmul, nothing else
F32 = dict(rtol=1e-5, atol=1e-6)


class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(3)(x)


X = jax.random.normal(jax.random.key(1), (6, 4))


def _fields(st):
    return {f: np.asarray(getattr(st, f)) for f in ("mean", "std", "in_std", "grad_std", "loss")}


def _assert_close(a, b, **tol):
    for f in a:
        np.testing.assert_allclose(a[f], b[f], err_msg=f, **(tol or F32))


# --------------------------------------------------------------------------------------------
# key implementations x chunking


@jax.jit
def _one_seed(k):
    m = jaxinit.measure(Small(), Small().init(k, X[:1]), X, stats=("std",))
    return jnp.stack([m[p]["std"] for p in m.paths])


def _reference(impl, seeds):
    """Per seed, unbatched: init from jax.random.split's i-th key, then jaxinit.measure."""
    keys = jax.random.split(jax.random.key(0, impl=impl), seeds)
    return np.stack([np.asarray(_one_seed(k)) for k in keys])


_REFS: dict = {}
_UNCHUNKED: dict = {}


def _unchunked(impl, seeds):
    if (impl, seeds) not in _UNCHUNKED:
        st = jaxinit.layer_stats(
            Small(), X, seeds=seeds, key=jax.random.key(0, impl=impl), chunk_size=None
        )
        _UNCHUNKED[impl, seeds] = _fields(st)
    return _UNCHUNKED[impl, seeds]


@pytest.mark.parametrize(
    "impl", [pytest.param(i, marks=pytest.mark.slow) if i != "rbg" else i for i in IMPLS]
)
@pytest.mark.slow
def test_every_key_impl_gives_each_seed_its_own_unbatched_init(impl):
    st = jaxinit.layer_stats(Small(), X, seeds=5, key=jax.random.key(0, impl=impl), chunk_size=2)
    np.testing.assert_allclose(np.asarray(st.std), _reference(impl, 5), **F32)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(impl=st.sampled_from(IMPLS), seeds=st.integers(2, 3), chunk=st.integers(1, 4))
def test_chunking_never_changes_a_seed(impl, seeds, chunk):
    key = jax.random.key(0, impl=impl)
    st = jaxinit.layer_stats(Small(), X, seeds=seeds, key=key, chunk_size=chunk)
    _assert_close(_fields(st), _unchunked(impl, seeds))


@pytest.mark.slow
def test_default_impl_from_config_with_an_int_key():
    prev = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
    try:
        a = jaxinit.layer_stats(Small(), X, seeds=4, key=3, chunk_size=None)
        b = jaxinit.layer_stats(Small(), X, seeds=4, key=3, chunk_size=3)
        c = jaxinit.layer_stats(Small(), X, seeds=4, key=3, chunk_size=1)
    finally:
        jax.config.update("jax_default_prng_impl", prev)
    _assert_close(_fields(a), _fields(b))
    _assert_close(_fields(a), _fields(c))


class NSmall(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(4, 8, rngs=rngs)
        self.b = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.b(nnx.relu(self.a(x)))


@pytest.mark.slow
@pytest.mark.parametrize("impl", ("rbg", "unsafe_rbg"))
def test_nnx_rbg_keys_chunk_invariant(impl):
    key = jax.random.key(0, impl=impl)
    make = lambda k: NSmall(nnx.Rngs(k))  # noqa: E731
    a = jaxinit.layer_stats(make, X, seeds=4, key=key, chunk_size=None)
    b = jaxinit.layer_stats(make, X, seeds=4, key=key, chunk_size=3)
    _assert_close(_fields(a), _fields(b))
    ref = [float(jnp.std(make(k).a(X))) for k in jax.random.split(key, 4)]
    np.testing.assert_allclose(np.asarray(a.std[:, 0]), ref, **F32)


# --------------------------------------------------------------------------------------------
# training mode


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dense(16)(nn.relu(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(nn.relu(x))


XB = jax.random.normal(jax.random.key(2), (32, 8)) * 3 + 1
EPS = 1e-5  # nn.BatchNorm's default epsilon


def _is_bn(path, module):
    return isinstance(module, nn.BatchNorm)


@pytest.mark.parametrize("mutable", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_linen_batchnorm_in_training_mode_normalizes_by_the_batch(mutable):
    kwargs = {"train": True} | ({"mutable": ["batch_stats"]} if mutable else {})
    st = jaxinit.layer_stats(BNNet(), XB, seeds=2, key=5, apply_kwargs=kwargs, select=_is_bn)
    assert st.names == ("BatchNorm_0", "BatchNorm_1")
    for i, k in enumerate(jax.random.split(jax.random.key(5), 2)):
        variables = BNNet().init(k, XB[:1], train=True)
        outs = linen_outputs(BNNet(), variables, XB, train=True)
        for j, (dense, bn) in enumerate((("Dense_0", "BatchNorm_0"), ("Dense_1", "BatchNorm_1"))):
            h = np.asarray(outs[dense][0], np.float64)
            want = (h - h.mean(0)) / np.sqrt(h.var(0) + EPS)  # scale 1, bias 0 at init
            # each feature: mean 0 and std ~1 over the batch
            np.testing.assert_allclose(want.mean(0), 0, atol=1e-6)
            assert np.all(np.abs(want.std(0) - 1) < 1e-3)
            np.testing.assert_allclose(st.std[i, j], want.std(), rtol=1e-4)
            np.testing.assert_allclose(st.mean[i, j], want.mean(), atol=1e-5)
            assert std_mean(outs[bn][0])[0] == pytest.approx(float(st.std[i, j]), rel=1e-4)


@pytest.mark.slow
def test_linen_batchnorm_in_eval_mode_is_the_identity_at_init():
    st = jaxinit.layer_stats(BNNet(), XB, seeds=3, apply_kwargs={"train": False}, select="*")
    names = list(st.names)
    for dense, bn in (("Dense_0", "BatchNorm_0"), ("Dense_1", "BatchNorm_1")):
        d, b = names.index(dense), names.index(bn)
        np.testing.assert_allclose(st.std[:, b], st.std[:, d] / np.sqrt(1 + EPS), rtol=1e-5)
        np.testing.assert_allclose(st.mean[:, b], st.mean[:, d] / np.sqrt(1 + EPS), atol=1e-5)


def test_measure_runs_batchnorm_in_training_mode():
    variables = jax.jit(BNNet().init, static_argnames="train")(
        jax.random.key(0), XB[:1], train=True
    )
    m = jax.jit(
        lambda v: jaxinit.measure(
            BNNet(), v, XB, stats=("std", "grad_std"), select=_is_bn, train=True
        )
    )(variables)
    h = np.asarray(linen_outputs(BNNet(), variables, XB, train=True)["Dense_0"][0], np.float64)
    want = (h - h.mean(0)) / np.sqrt(h.var(0) + EPS)
    np.testing.assert_allclose(m["BatchNorm_0"]["std"], want.std(), rtol=1e-4)


class NBN(nnx.Module):
    def __init__(self, rngs):
        self.d = nnx.Linear(8, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.o = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.o(nnx.relu(self.bn(self.d(x))))


@pytest.mark.slow
def test_nnx_batchnorm_in_training_mode():
    def make(k):
        return NBN(nnx.Rngs(k))  # nnx.BatchNorm trains by default

    st = jaxinit.layer_stats(make, XB, seeds=2, select=lambda p, m: isinstance(m, nnx.BatchNorm))
    for i, k in enumerate(jax.random.split(jax.random.key(0), 2)):
        h = np.asarray(make(k).d(XB), np.float64)
        want = (h - h.mean(0)) / np.sqrt(h.var(0) + EPS)
        np.testing.assert_allclose(st.std[i, 0], want.std(), rtol=1e-4)

    def make_eval(k):
        model = NBN(nnx.Rngs(k))
        model.eval()
        return model

    ev = jaxinit.layer_stats(make_eval, XB, seeds=2, select="*")
    d, b = ev.names.index("d"), ev.names.index("bn")
    np.testing.assert_allclose(ev.std[:, b], ev.std[:, d] / np.sqrt(1 + EPS), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# sharded, one process (conftest.py gives 8 host devices)

needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices")


@needs_8
@pytest.mark.parametrize(
    ("seeds", "impl"),  # divides the device count, or is padded
    [pytest.param(8, "threefry2x32", marks=pytest.mark.slow), (6, "unsafe_rbg")],
)
def test_sharded_results_are_replicated_and_equal_unsharded(seeds, impl):
    mesh = jax.make_mesh((8,), ("s",), axis_types=(jax.sharding.AxisType.Auto,))
    key = jax.random.key(0, impl=impl)
    st = jaxinit.layer_stats(Small(), X, seeds=seeds, key=key, mesh=mesh, chunk_size=1)
    for a in jax.tree.leaves(st):
        assert a.sharding.is_fully_replicated, a.sharding
    _assert_close(_fields(st), _unchunked(impl, seeds))


@pytest.mark.slow
@needs_8
def test_sharded_explicit_mesh_is_replicated():
    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:4]), ("s",), axis_types=(jax.sharding.AxisType.Explicit,)
    )
    for seeds in (4, 5):
        st = jaxinit.layer_stats(Small(), X, seeds=seeds, key=jax.random.key(0), mesh=mesh)
        assert st.std.sharding.is_fully_replicated
        _assert_close(_fields(st), _unchunked("threefry2x32", seeds))


# --------------------------------------------------------------------------------------------
# two processes on this machine

_WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np, flax.linen as nn, jaxinit
    from jax.experimental import multihost_utils

    class Small(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(8)(x))  # created first: named Dense_0, as in this file
            return nn.Dense(3)(x)

    x = jax.random.normal(jax.random.key(1), (6, 4))
    mesh = jax.make_mesh((4,), ("s",), axis_types=(jax.sharding.AxisType.Auto,))
    res = {}
    for impl in ("threefry2x32", "rbg"):
        st = jaxinit.layer_stats(
            Small(), x, seeds=6, key=jax.random.key(0, impl=impl), mesh=mesh, chunk_size=1
        )
        gathered = multihost_utils.process_allgather(st.std, tiled=True)
        res[impl] = {"std": np.asarray(st.std).tolist(), "gathered": gathered.tolist(),
                     "table": st.table()}
    try:  # a different seed count on process 1
        jaxinit.layer_stats(Small(), x, seeds=6 + pid, mesh=mesh)
        res["mismatch"] = "no error"
    except ValueError as e:
        res["mismatch"] = str(e)
    try:  # a different batch on process 1
        jaxinit.layer_stats(Small(), x + pid, seeds=4, mesh=mesh)
        res["batch"] = "no error"
    except ValueError as e:
        res["batch"] = str(e)
    json.dump(res, open(out, "w"))
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_and_refuse_different_arguments(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(tmp_path / f"out{i}.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=240)[0].decode() for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    for impl in ("threefry2x32", "rbg"):
        want = _unchunked(impl, 6)["std"]
        for r in results:
            np.testing.assert_allclose(r[impl]["std"], want, **F32)
            np.testing.assert_allclose(r[impl]["gathered"], want, **F32)
            assert r[impl]["table"].startswith("6 seeds")
    for r in results:
        assert "different seeds" in r["mismatch"], r["mismatch"]
        assert "different x" in r["batch"], r["batch"]


# --------------------------------------------------------------------------------------------
# bad arguments: a clear error naming the function and argument, never a raw traceback


class Tup(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3)(x)
        return y, 2 * y


class Drop(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x)))


V = Small().init(jax.random.key(0), X)
LS = jaxinit.layer_stats

BAD = {
    "seeds=2**40": (lambda: LS(Small(), X, seeds=2**40), ValueError, "seeds="),
    "grads='no'": (lambda: LS(Small(), X, seeds=2, grads="no"), TypeError, "grads="),
    "stats=5": (lambda: LS(Small(), X, seeds=2, stats=5), ValueError, "stats="),
    "stat not a scalar": (
        lambda: LS(Small(), X, seeds=2, stats=[("v", lambda y: y)]),
        TypeError,
        "statistic 'v'",
    ),
    "grad stat not a scalar": (
        lambda: LS(Small(), X, seeds=2, stats=[("grad_v", lambda y: y[:2])]),
        TypeError,
        "statistic 'grad_v'",
    ),
    "select=5": (lambda: LS(Small(), X, seeds=2, select=5), TypeError, "select"),
    "loss not a scalar": (
        lambda: LS(Small(), X, seeds=2, loss=lambda o, y: o),
        TypeError,
        "loss returned",
    ),
    "loss a tuple": (
        lambda: LS(Small(), X, seeds=2, loss=lambda o, y: (o.sum(), 1)),
        TypeError,
        "loss returned",
    ),
    "loss an int": (
        lambda: LS(Small(), X, seeds=2, loss=lambda o, y: jnp.int32(3)),
        TypeError,
        "loss returned",
    ),
    "model a class": (lambda: LS(Small, X, seeds=2), TypeError, "model=Small"),
    "nnx constructor returns None": (
        lambda: LS(lambda k: None, X, seeds=2),
        TypeError,
        "model(key)",
    ),
    "apply_kwargs a list": (
        lambda: LS(Small(), X, seeds=2, apply_kwargs=[1]),
        TypeError,
        "apply_kwargs=",
    ),
    "compiler_options a list": (
        lambda: LS(Small(), X, seeds=2, compiler_options=[1]),
        TypeError,
        "compiler_options=",
    ),
    "mesh_axes twice": (
        lambda: LS(Small(), X, seeds=2, mesh=jax.make_mesh((1,), ("s",)), mesh_axes=("s", "s")),
        ValueError,
        "mesh_axes=",
    ),
    "measure loss not a scalar": (
        lambda: jaxinit.measure(Small(), V, X, stats=("grad_std",), loss=lambda o, y: o),
        TypeError,
        "measure: loss returned",
    ),
    "measure stat not numbers": (
        lambda: jaxinit.measure(Small(), V, X, stats=[("v", lambda y: y > 0)]),
        TypeError,
        "measure: statistic 'v'",
    ),
    "layer_stats stat not a scalar": (
        lambda: LS(Small(), X, seeds=2, stats=[("v", lambda y: y[0])]),
        TypeError,
        "layer_stats: statistic 'v'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_is_a_clear_error(case):
    call, error, words = BAD[case]
    with pytest.raises(error) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(("layer_stats:", "measure:")), msg
    assert words in msg, msg


@pytest.mark.slow
def test_dropout_rngs_in_apply_kwargs_reach_init_and_apply():
    kwargs = {"train": True, "rngs": {"dropout": jax.random.key(3)}}
    st = LS(Drop(), X, seeds=2, apply_kwargs=kwargs)
    assert np.isfinite(np.asarray(st.std)).all()
    # dropout zeroes about half of the first layer's outputs: the second layer sees them
    off = LS(Drop(), X, seeds=2)
    assert not np.allclose(st.std[:, 1], off.std[:, 1])


def test_keywords_the_model_does_not_take_variables_that_do_not_fit_and_unknown_xla_options():
    """Each named before any tracing, instead of the model's TypeError, Flax's scope error or
    XLA's runtime error from deep inside the program."""
    from jaxinit.models import MLP

    model, x = MLP(depth=3, width=8), jnp.ones((4, 8))
    variables = model.init(jax.random.key(0), x)
    takes = r"not a parameter of MLP.__call__, which takes \['x', 'train'\]"
    with pytest.raises(ValueError, match=r"measure: keyword argument foo=1 is " + takes):
        jaxinit.measure(model, variables, x, foo=1)
    with pytest.raises(ValueError, match=r"lsuv: keyword argument foo=1 is " + takes):
        jaxinit.lsuv(model, variables, x, foo=1)
    with pytest.raises(ValueError, match=r"layer_stats: keyword argument foo=1 is " + takes):
        jaxinit.layer_stats(model, x, seeds=2, apply_kwargs={"foo": 1})
    # accepted: the model's own keywords and linen's apply keywords
    jaxinit.measure(model, variables, x, train=False, mutable=False)

    class Net(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(8, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match=r"keyword argument train=True is not a parameter of"):
        jaxinit.measure(Net(), x, train=True)

    shallow = MLP(depth=2, width=8).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"measure: variables do not fit the module: Could not"):
        jaxinit.measure(model, shallow, x)
    with pytest.raises(ValueError, match=r"lsuv: variables do not fit the module: Dense_2 needs"):
        jaxinit.lsuv(model, shallow, x)
    with pytest.raises(ValueError, match=r"compiler_options=\{'no_such_option': 1\} is refused"):
        jaxinit.layer_stats(model, x, seeds=2, compiler_options={"no_such_option": 1})
