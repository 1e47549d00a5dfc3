"""``experiments/spp_resnet.py``: its three ResNets against a NumPy re-implementation of their
blocks, its mean-field predictions against the closed forms (``l + 2``, ``1 + l alpha^2``,
``2^l``, the ReLU arc-cosine kernel), and its ``--quick`` run (slow)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from _experiments import experiments_importable


@pytest.fixture(scope="module")
def spp():
    with experiments_importable() as import_module:
        yield import_module("spp_resnet")


def _args(spp, *extra):
    return spp.arguments(["--quick", "--out", "/tmp/unused-spp", *extra])


def _conv_wrap(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """3x3 convolution with circular padding: ``y[n,i,j,o] = sum x[n,i+a-1,j+b-1,c] k[a,b,c,o]``
    (indices modulo the image size)."""
    y = np.zeros((*x.shape[:3], k.shape[-1]))
    for a in range(3):
        for b in range(3):
            shifted = np.roll(x, (1 - a, 1 - b), axis=(1, 2))
            y += np.einsum("nhwc,co->nhwo", shifted, k[a, b])
    return y


def _bn(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(axis=(0, 1, 2))
    return (x - mu) / np.sqrt(x.var(axis=(0, 1, 2)) + eps)


def _reference(kind: str, params, x: np.ndarray, alpha: float, blocks: int) -> np.ndarray:
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    k = {name: np.asarray(p["kernel"], np.float64) for name, p in params.items() if "kernel" in p}
    h = _conv_wrap(x, k["stem"])
    for i in range(blocks):
        p = params[f"block{i}"]
        beta = math.sqrt(1 + i * alpha**2) if kind == "nf" else 1.0
        u = _bn(h) if kind == "bn" else h / beta
        u = _conv_wrap(relu(u), np.asarray(p["conv1"]["kernel"], np.float64))
        u = _bn(u) if kind == "bn" else u
        u = _conv_wrap(relu(u), np.asarray(p["conv2"]["kernel"], np.float64))
        h = h + (alpha if kind == "nf" else 1.0) * u
    return h


@pytest.mark.parametrize("kind", [pytest.param("bn", marks=pytest.mark.slow), "nf", "he"])
def test_model_matches_numpy_blocks(spp, kind):
    args = _args(spp, "--blocks", "2", "--width", "4", "--alpha", "0.5")
    model = spp.model_for(kind, args)
    x = np.asarray(jax.random.normal(jax.random.key(0), (3, 5, 6, 1)))
    variables = model.init(jax.random.key(1), x)  # eager: cheaper than compiling init here
    y = model.apply(variables, x, mutable=["batch_stats"])[0]
    want = _reference(kind, variables["params"], x.astype(np.float64), 0.5, 2)
    np.testing.assert_allclose(np.asarray(y), want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def _kappa(c: float) -> float:
    """``E[relu(u) relu(v)]`` for unit-variance ``u``, ``v`` of correlation ``c``: the
    arc-cosine kernel (Cho and Saul 2009; neural-tangents' ReLU NNGP)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / (2 * math.pi)


def test_predictions_match_closed_forms(spp):
    args = _args(spp, "--blocks", "2", "--alpha", "0.3")
    blocks = np.arange(1, 3)
    he = spp.predict("he", args, samples=10_000)
    np.testing.assert_allclose(he["q"], 2.0**blocks, rtol=1e-9)
    # first block from the stem's c = 0: relu -> c 1/pi after conv1, the branch's cross
    # moment 2 kappa(1/pi), the skip's 0
    assert he["mean_sq"][0] == pytest.approx(2 * _kappa(1 / math.pi), rel=1e-9)
    assert he["skip_var"][0] == pytest.approx(1.0, rel=1e-12)
    nf = spp.predict("nf", args, samples=10_000)
    np.testing.assert_allclose(nf["q"], 1 + blocks * 0.3**2, rtol=1e-9)
    # first block: the branch is He's times alpha
    assert nf["mean_sq"][0] == pytest.approx(0.09 * 2 * _kappa(1 / math.pi), rel=1e-9)
    bn = spp.predict("bn", args, samples=10_000)
    eps, c = 1e-5, -1 / (10_000 - 1)  # every BatchNorm leaves c = -1 / (samples - 1)
    q, q_out, q12, branch_var = 1.0, [], 0.0, []
    for _ in blocks:
        b1 = q / (q + eps)  # BN; relu, conv(sqrt 2) keep it
        b2 = b1 / (b1 + eps)  # the second BN; relu, conv(sqrt 2) keep it
        q12 += 2 * b2 * _kappa(c)  # the branch's cross moment adds to the skip's
        branch_var.append(b2 * (1 - 2 * _kappa(c)))
        q += b2
        q_out.append(q)
    np.testing.assert_allclose(bn["q"], q_out, rtol=1e-9)
    np.testing.assert_allclose(bn["branch_var"], branch_var, rtol=1e-9)
    assert bn["mean_sq"][-1] == pytest.approx(q12, rel=1e-9)


def test_betas_and_slopes(spp):
    np.testing.assert_allclose(spp.betas(4, 0.2), np.sqrt(1 + 0.04 * np.arange(4)), rtol=1e-15)
    y = np.array([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_allclose(spp.slopes(y), [2.0, 0.0], atol=1e-12)


@pytest.mark.slow
def test_quick_run(spp, tmp_path):
    r = spp.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "spp_resnet.md").is_file() and (tmp_path / "spp_resnet_spp.png").is_file()
    assert set(r["measured"]) == set(spp.KINDS) == set(r["predicted"])
    for label in spp.KINDS:
        m, p = r["measured"][label], r["predicted"][label]
        for field in ("q", "mean_sq", "var", "branch_var", "skip_var"):
            assert np.asarray(m[field]).shape == (4,) == np.asarray(p[field]).shape
            assert np.all(np.asarray(m[field]) > 0)
        # q is the sum of its parts, measured and predicted
        np.testing.assert_allclose(m["q"], np.add(m["mean_sq"], m["var"]), rtol=1e-6)
        np.testing.assert_allclose(p["q"], np.add(p["mean_sq"], p["var"]), rtol=1e-9)
        # each block's skip is the previous block's output
        np.testing.assert_allclose(m["skip_var"][1:], m["var"][:-1], rtol=1e-5)
    assert len(r["checks"]) == 6
