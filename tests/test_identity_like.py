"""zero_hadamard (ZerO, Zhao et al. 2022) and id_init (IDInit, Pan et al. 2025).

References are independent of jaxinit: scipy.linalg.hadamard for the Sylvester matrix, and the
authors' ZerO_Init_on_matrix (example_mnist.ipynb) re-typed in NumPy on the PyTorch
``(out, in)`` layout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from _stats import assert_var

from jaxinit.identity_like import id_init, zero_hadamard

KEY = jax.random.key(0)


def zero_reference(n_out: int, n_in: int) -> np.ndarray:
    """ZerO_Init_on_matrix of the authors' notebook, in float64, PyTorch layout (out, in)."""
    if n_out <= n_in:
        return np.eye(n_out, n_in)
    clog_m = math.ceil(math.log2(n_out))
    p = 2**clog_m
    return np.eye(n_out, p) @ (scipy.linalg.hadamard(p) / 2 ** (clog_m / 2)) @ np.eye(p, n_in)


# ---------------------------------------------------------------------------------------------
# zero_hadamard


@pytest.mark.parametrize("shape", [(8, 3), (3, 8), (6, 13)], ids=str)
def test_zero_hadamard_matches_authors_code(shape):
    """The Flax kernel (in, out) is the transpose of the authors' (out, in) matrix, exactly in
    float64 (values +-2^(-m/2) are exact binary fractions times sqrt(2) at most once)."""
    n_in, n_out = shape
    with jax.enable_x64(True):
        w = np.asarray(zero_hadamard()(None, shape, jnp.float64))
    np.testing.assert_array_equal(w, zero_reference(n_out, n_in).T)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((6, 13), jnp.float32), ((3, 8), jnp.bfloat16), ((2, 3, 4, 7), jnp.float16)],
    ids=str,
)
def test_zero_hadamard_values_only_zero_and_plus_minus_c(shape, dtype):
    """Widening layers: every centre-tap entry is exactly +-c in the output dtype, with
    c = scale / sqrt(2^ceil(log2 out)); every other tap is exactly 0."""
    scale = 1.5
    w = np.asarray(zero_hadamard(scale)(None, shape, dtype).astype(jnp.float32))
    p = 2 ** math.ceil(math.log2(shape[-1]))
    c = float(jnp.asarray(scale / math.sqrt(p), dtype).astype(jnp.float32))
    assert set(np.unique(w).tolist()) <= {0.0, c, -c}
    centre = w[tuple((k - 1) // 2 for k in shape[:-2])]
    assert set(np.unique(np.abs(centre)).tolist()) == {c}
    assert np.count_nonzero(w) == centre.size


@pytest.mark.parametrize("p", [2, 16])
def test_hadamard_block_is_exactly_orthogonal(p):
    """For out = p a power of two, W / c is the Sylvester matrix H_p cut to (in, p): its rows
    are rows of H_p (scipy), so (W/c)(W/c)^T = p I exactly in float64."""
    n_in = p // 2
    with jax.enable_x64(True):
        w = np.asarray(zero_hadamard()(None, (n_in, p), jnp.float64))
    h = w * math.sqrt(p)
    ref = scipy.linalg.hadamard(p).astype(np.float64)
    np.testing.assert_array_equal(ref.T @ ref, p * np.eye(p))
    np.testing.assert_array_equal(h, ref[:n_in])
    np.testing.assert_array_equal(h @ h.T, p * np.eye(n_in))


def test_zero_hadamard_identity_and_partial_identity():
    """Square: identity, so x @ W == x; narrowing: the first `out` inputs pass unchanged."""
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(x @ np.asarray(zero_hadamard()(None, (6, 6))), x)
    np.testing.assert_array_equal(x @ np.asarray(zero_hadamard()(None, (6, 4))), x[:, :4])


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (2, 4, 8, 4)], ids=str)
def test_zero_hadamard_conv_centre_tap(shape):
    """Conv kernel: the dense ZerO matrix on the tap (k-1)//2 of each spatial axis (the tap
    Flax's SAME padding aligns with the output position), zeros on every other tap."""
    w = np.asarray(zero_hadamard()(None, shape))
    n_in, n_out = shape[-2:]
    ref = np.zeros(shape, np.float32)
    ref[tuple((k - 1) // 2 for k in shape[:-2])] = zero_reference(n_out, n_in).T
    np.testing.assert_array_equal(w, ref)


def test_zero_hadamard_variance_law_is_mean_square():
    """init.variance(fan_in, fan_out, shape=shape) is the kernel's exact mean square, from the
    authors' matrices: 1/in when narrowing, 1/(taps * 2^ceil(log2 out)) when widening."""
    init = zero_hadamard()
    for shape in [(6, 6), (8, 3), (6, 13), (3, 3, 4, 8), (2, 4, 8, 4)]:
        n_in, n_out = shape[-2:]
        taps = math.prod(shape[:-2])
        mean_square = (zero_reference(n_out, n_in) ** 2).sum() / (taps * n_in * n_out)
        law = init.variance(taps * n_in, taps * n_out, shape=shape)
        np.testing.assert_allclose(law, mean_square, rtol=1e-12)


def test_zero_hadamard_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"zero_hadamard: scale=0\.0 must be finite and > 0"):
        zero_hadamard(0.0)
    with pytest.raises(ValueError, match=r"zero_hadamard needs rank >= 2.*got shape \(5,\)"):
        zero_hadamard()(None, (5,))


# ---------------------------------------------------------------------------------------------
# id_init


def idi_reference(n_in: int, n_out: int) -> np.ndarray:
    """IDI_tau (tau=1) written with loops: W[i, j] = 1 iff i = j mod min(in, out)."""
    n = min(n_in, n_out)
    w = np.zeros((n_in, n_out))
    for i in range(n_in):
        for j in range(n_out):
            w[i, j] = float(i % n == j % n)
    return w


@pytest.mark.parametrize("shape", [(4, 4), (3, 7), (7, 3)], ids=str)
def test_id_init_padded_identity_structure(shape):
    """The padded identity-like matrix: repeated identity along the longer side, values in
    {0, tau}, exactly max(in, out) non-zeros, full rank min(in, out); the variance law is its
    mean square."""
    n_in, n_out = shape
    init = id_init(2.0)
    w = np.asarray(init(None, shape), np.float64)
    np.testing.assert_array_equal(w, 2.0 * idi_reference(n_in, n_out))
    assert np.count_nonzero(w) == max(shape)
    assert np.linalg.matrix_rank(w) == min(shape)
    np.testing.assert_allclose(init.variance(n_in, n_out), (w**2).mean(), rtol=1e-12)


def test_id_init_widening_copies_narrowing_sums():
    """Widening: output j copies input j mod in; narrowing: output j sums inputs j + k*out."""
    x = np.array([[1.0, 10.0, 100.0]])
    wide, narrow = (np.asarray(id_init(2.0)(None, s)) / 2 for s in [(3, 7), (7, 3)])
    np.testing.assert_array_equal(x @ wide, [[1, 10, 100, 1, 10, 100, 1]])
    x7 = 10.0 ** np.arange(7)[None, :]
    np.testing.assert_array_equal(x7 @ narrow, [[1 + 1e3 + 1e6, 10 + 1e4, 100 + 1e5]])


def test_id_init_conv_centre_and_zero_preserving_eps():
    """Conv: the IDI matrix on the centre tap, zeros elsewhere; IDIZ_eps = id_init(1e-6)."""
    w = np.asarray(id_init(1e-6)(None, (3, 3, 2, 4)))
    centre = np.float32(1e-6) * idi_reference(2, 4).astype(np.float32)
    np.testing.assert_array_equal(w[1, 1], centre)
    assert np.count_nonzero(w) == 4


def test_id_init_noise():
    """noise > 0: the IDI matrix plus N(0, noise^2) noise, iid over elements (sample variance
    of W - IDI equals noise^2), different for different keys; noise = 0 ignores the key."""
    noise = 0.01
    init = id_init(1.0, noise)
    w = np.asarray(init(KEY, (64, 128)), np.float64)
    assert_var(w - idi_reference(64, 128), noise**2, "Var[W - IDI]")
    assert not np.array_equal(w, np.asarray(init(jax.random.key(1), (64, 128))))
    assert init.variance(64, 128) == pytest.approx(1 / 64 + noise**2)
    np.testing.assert_array_equal(id_init()(KEY, (3, 7)), id_init()(None, (3, 7)))


def test_id_init_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"id_init: noise=-1\.0 must be finite and >= 0"):
        id_init(noise=-1.0)
    with pytest.raises(ValueError, match=r"id_init: scale=nan must be finite"):
        id_init(float("nan"))
