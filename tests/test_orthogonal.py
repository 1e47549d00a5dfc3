"""orthogonal and delta_orthogonal: orthogonality to the dtype's precision, Haar distribution,
delta structure, validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import assert_mean, assert_second_moment

import jaxinit

KEY = jax.random.key(0)
EPS32 = float(jnp.finfo(jnp.float32).eps)
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64]


def dtype_id(dt) -> str:
    return np.dtype(dt).name


def as_matrix(w, column_axis: int = -1) -> np.ndarray:
    """The weight as the matrix orthogonal() promises to be orthonormal: ``column_axis`` last,
    every other axis flattened into rows; in complex128, so the check adds no rounding."""
    x = np.asarray(jnp.asarray(w).astype(jnp.complex64)).astype(np.complex128)
    x = np.moveaxis(x, column_axis, -1)
    return x.reshape(-1, x.shape[-1])


def orthogonality_error(m: np.ndarray, scale: float = 1.0) -> float:
    """max |G - scale^2 I| for the Gram matrix G of the orthonormal side (columns if tall)."""
    if m.shape[0] < m.shape[1]:
        m = m.T
    g = m.conj().T @ m
    return float(np.abs(g - scale**2 * np.eye(g.shape[0])).max())


def tolerance(dtype, n: int, scale: float = 1.0) -> float:
    """How far from scale^2 I the Gram matrix of a weight returned in ``dtype`` may be.

    * The Haar matrix is computed in float32 by Householder QR, whose loss of orthogonality is
      a few ulps times sqrt(n) in practice (the worst-case bound, O(n^2) ulps, is never met for
      Gaussian matrices): 2 sqrt(n) eps32 (measured: ~0.2 sqrt(n) eps32).
    * Rounding to ``dtype`` perturbs each entry by a relative u = eps / 2, which moves each Gram
      entry by at most 2u + u^2 (Cauchy-Schwarz over unit columns): eps(dtype), with 1% slack
      (measured for bf16/fp16: ~0.2 eps).
    """
    return scale**2 * (1.01 * float(jnp.finfo(dtype).eps) + 2 * math.sqrt(n) * EPS32)


SHAPES = {
    "tall": ((256, 128), -1),
    "wide": ((128, 256), -1),
    "square": ((64, 64), -1),
    "conv": ((3, 3, 64, 128), -1),
    "torch_conv_column_axis_0": ((128, 64, 3, 3), 0),
    "column_axis_1": ((16, 32, 8), 1),
}


# Every shape in float32; tall and conv in every dtype; the other dtype/shape pairs under
# -m slow (a wide matrix is the transpose of the tall one drawn with the same key).
ORTHO_CASES = [
    pytest.param(
        case,
        dtype,
        marks=[] if dtype == jnp.float32 or case in ("tall", "conv") else [pytest.mark.slow],
        id=f"{case}-{dtype_id(dtype)}",
    )
    for case in sorted(SHAPES)
    for dtype in DTYPES
]


@pytest.mark.parametrize("case,dtype", ORTHO_CASES)
def test_orthogonal_to_dtype_precision(case, dtype):
    shape, column_axis = SHAPES[case]
    w = jaxinit.orthogonal(column_axis=column_axis)(KEY, shape, dtype)
    assert w.shape == shape and w.dtype == dtype
    m = as_matrix(w, column_axis)
    err = orthogonality_error(m)
    assert err <= tolerance(dtype, max(m.shape)), (err, tolerance(dtype, max(m.shape)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=dtype_id)
def test_orthogonal_scale(dtype):
    """W^T W = scale^2 I (here scale = gain("relu") = sqrt 2)."""
    scale = jaxinit.gain("relu")
    w = jaxinit.orthogonal(scale)(KEY, (256, 128), dtype)
    m = as_matrix(w)
    assert orthogonality_error(m, scale) <= tolerance(dtype, 256, scale)


def test_orthogonal_complex_is_unitary_not_real():
    """complex64 gives a unitary matrix with genuinely complex entries (E[w^2] = 0: circular)."""
    w = as_matrix(jaxinit.orthogonal()(KEY, (64, 64), jnp.complex64))
    assert orthogonality_error(w) <= tolerance(jnp.complex64, 64)
    assert_mean(w.real**2 - w.imag**2, 0.0, "E[Re^2 - Im^2]")
    assert_second_moment(w.imag, 1 / 128, "E[Im w^2]")


def _traces(qs) -> np.ndarray:
    return np.asarray(jnp.trace(qs, axis1=-2, axis2=-1)).astype(np.complex128)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64], ids=dtype_id)
def test_haar_trace(dtype):
    """Haar check (Mezzadri 2007): for Q Haar on O(n) or U(n), n >= 2, E[tr Q] = 0 and
    E|tr Q|^2 = 1. Over 2000 draws of 8x8, both means are checked within Z standard errors
    estimated from the sample (about 0.11 and 0.16).

    Unsigned QR (Q from LAPACK without the sign correction) fails: Householder makes
    diag(R) negative, so the diagonal of Q is biased (mean trace about -2.6 for n = 8); the
    same Gaussian matrices are used to show that this test detects it.
    """
    n, draws = 8, 2000
    keys = jax.random.split(jax.random.key(11), draws)
    init = jaxinit.orthogonal()
    traces = _traces(jax.vmap(lambda k: init(k, (n, n), dtype))(keys))
    assert_mean(traces.real, 0.0, "E[Re tr Q]")
    assert_mean(traces.imag, 0.0, "E[Im tr Q]")
    assert_mean(np.abs(traces) ** 2, 1.0, "E|tr Q|^2")

    if dtype != jnp.float32:
        return
    # The same matrices without the sign correction: the test would fail.
    a = jax.vmap(lambda k: jax.random.normal(k, (n * n,), dtype).reshape(n, n))(keys)
    unsigned = _traces(jnp.linalg.qr(a)[0])
    x = unsigned.real
    tol = 5.0 * x.std(ddof=1) / math.sqrt(draws)
    assert abs(x.mean()) > 4 * tol, f"unsigned QR mean trace {x.mean():.3g} is not biased"


def test_haar_entries():
    """Entries of a Haar n x n matrix times sqrt(n) have mean 0 and variance 1, in every
    position (unsigned QR biases the diagonal)."""
    n, draws = 8, 2000
    keys = jax.random.split(jax.random.key(12), draws)
    qs = np.asarray(jax.vmap(lambda k: jaxinit.orthogonal()(k, (n, n)))(keys)) * math.sqrt(n)
    for i, j in [(0, 0), (n - 1, n - 1), (0, n - 1)]:
        assert_mean(qs[:, i, j], 0.0, f"E[q_{i}{j}]")
        assert_second_moment(qs[:, i, j], 1.0, f"E[q_{i}{j}^2]")


def test_orthogonal_validation():
    with pytest.raises(ValueError, match=r"orthogonal: scale=0\.0 must be finite and > 0"):
        jaxinit.orthogonal(0.0)
    with pytest.raises(ValueError, match=r"orthogonal: scale=nan must be finite"):
        jaxinit.orthogonal(math.nan)
    with pytest.raises(TypeError, match=r"orthogonal: column_axis=1\.0 must be an int"):
        jaxinit.orthogonal(column_axis=1.0)
    with pytest.raises(ValueError, match=r"orthogonal: column_axis=2 is out of range for shape"):
        jaxinit.orthogonal(column_axis=2)(KEY, (4, 5))
    with pytest.raises(ValueError, match=r"orthogonal needs rank >= 2, got shape \(5,\)\. For "):
        jaxinit.orthogonal()(KEY, (5,))
    with pytest.raises(TypeError, match=r"orthogonal: dtype=int32 is not supported"):
        jaxinit.orthogonal()(KEY, (4, 4), jnp.int32)


# ---------------------------------------------------------------------------------------------
# delta_orthogonal


@pytest.mark.parametrize(
    "shape,dtype",
    [
        pytest.param(
            shape,
            dtype,
            marks=[] if shape == (3, 3, 16, 32) or dtype == jnp.float32 else [pytest.mark.slow],
            id=f"{shape}-{dtype_id(dtype)}",
        )
        for shape in [(3, 3, 16, 32), (5, 16, 16), (3, 3, 3, 8, 8)]
        for dtype in DTYPES
    ],
)
def test_delta_orthogonal_structure(shape, dtype):
    """Zero everywhere except the centre tap, which is an (in, out) matrix with orthonormal
    rows (in <= out), to the dtype's precision (tolerance as for orthogonal)."""
    scale = 1.5
    w = jaxinit.delta_orthogonal(scale)(KEY, shape, dtype)
    assert w.shape == shape and w.dtype == dtype
    x = np.asarray(w.astype(jnp.complex64))
    centre = tuple(k // 2 for k in shape[:-2])
    c = x[centre].astype(np.complex128)
    rest = x.copy()
    rest[centre] = 0
    assert not rest.any(), "non-zero weight outside the centre tap"
    g = c @ c.conj().T  # (in, in)
    err = float(np.abs(g - scale**2 * np.eye(shape[-2])).max())
    assert err <= tolerance(dtype, shape[-1], scale)


def test_delta_orthogonal_conv_is_an_isometry():
    """A SAME conv with a delta-orthogonal kernel maps each pixel's channel vector by an
    isometry: ||y[p]|| = ||x[p]|| at every position (dynamical isometry at initialization)."""
    w = jaxinit.delta_orthogonal()(KEY, (3, 3, 8, 16))
    x = jaxinit.normal()(jax.random.key(1), (72, 8)).reshape(2, 6, 6, 8)  # rank 2: fast compile
    y = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_delta_orthogonal_validation():
    with pytest.raises(ValueError, match=r"shape=\(2, 2, 4, 4\) has an even spatial size"):
        jaxinit.delta_orthogonal()(KEY, (2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"shape=\(3, 4, 4, 4\) has an even spatial size"):
        jaxinit.delta_orthogonal()(KEY, (3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"has in=8 > out=4; an orthogonal centre needs in <= out"):
        jaxinit.delta_orthogonal()(KEY, (3, 3, 8, 4))
    with pytest.raises(ValueError, match=r"rank 3 to 5, got shape \(4, 4\)\. Use orthogonal\(\)"):
        jaxinit.delta_orthogonal()(KEY, (4, 4))
    with pytest.raises(ValueError, match=r"rank 3 to 5, got shape \(3, 3, 3, 3, 4, 4\)"):
        jaxinit.delta_orthogonal()(KEY, (3, 3, 3, 3, 4, 4))
    with pytest.raises(ValueError, match=r"delta_orthogonal: scale=-1\.0 must be finite and > 0"):
        jaxinit.delta_orthogonal(-1.0)


@pytest.mark.slow
def test_haar_trace_big_sample():
    """20000 draws of 4x4: E[tr Q] = 0 and E[tr Q^2] = 1 to Z standard errors (~0.035)."""
    keys = jax.random.split(jax.random.key(13), 20000)
    traces = _traces(jax.vmap(lambda k: jaxinit.orthogonal()(k, (4, 4)))(keys)).real
    assert_mean(traces, 0.0, "E[tr Q]")
    assert_mean(traces**2, 1.0, "E[tr Q^2]")


_MANY_QR = """
import jax, jax.numpy as jnp, jaxinit
init = jaxinit.orthogonal()
shapes = [(64, 256), (256, 256), (256, 10)] * 2
keys = jax.random.split(jax.random.key(0), 4)
draw = lambda k: [init(jax.random.fold_in(k, i), s) for i, s in enumerate(shapes)]
batched = jax.jit(jax.vmap(draw))(keys)
single = [jax.jit(draw)(k) for k in keys]
for j in range(4):
    assert all(bool(jnp.array_equal(b[j], s)) for b, s in zip(batched, single[j]))
print("ok")
"""


@pytest.mark.slow  # 16 s on 2 cores
def test_many_orthogonal_layers_under_jit_vmap_run_and_equal_the_loop():
    """jit(vmap) over keys of 6 orthogonal draws in one program: on XLA CPU, batched LAPACK QR
    calls could hang the thread pool; the draws are QR'd one key at a time instead. Run in a
    subprocess so that a hang fails the test (timeout) instead of stalling the suite."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-c", _MANY_QR], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
