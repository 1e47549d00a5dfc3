"""Statistical assertions with tolerances derived from the sample.

Every check compares a sample statistic with its target within ``Z`` standard errors, the
standard error being estimated from the same sample, so a test's tolerance shrinks with its
sample size and needs no hand-tuned constant. With ``Z = 5`` a correct implementation fails a
given check with probability about 5.7e-7 (two-sided normal tail), i.e. about once per 1.7
million checks; with fixed keys the outcome is deterministic anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats

Z = 5.0  # about one false failure per 1.7 million checks
KS_P_MIN = 1e-6  # Kolmogorov-Smirnov: reject the claimed distribution only if p < 1e-6


def as_f64(samples) -> np.ndarray:
    """The samples as a flat float64 NumPy array (bfloat16/float16 are cast exactly)."""
    return np.asarray(np.asarray(samples).astype(np.float64)).ravel()


def assert_mean(samples, target: float, what: str = "mean") -> None:
    """The sample mean equals ``target`` within ``Z`` standard errors of the mean.

    The standard error is ``std / sqrt(n)`` with the sample's own standard deviation (for iid
    samples the mean is asymptotically normal, so ``Z`` standard errors is a two-sided normal
    test at level ~6e-7).
    """
    x = as_f64(samples)
    tol = Z * x.std(ddof=1) / np.sqrt(x.size)
    assert abs(x.mean() - target) <= tol, (
        f"{what}={x.mean():.5g}, want {target:.5g} ± {tol:.2g} (n={x.size})"
    )


def assert_second_moment(samples, target: float, what: str = "E[|w|^2]") -> None:
    """``E[|w|^2]`` equals ``target``: :func:`assert_mean` of ``|w|^2``, so the tolerance is
    ``Z * std(|w|^2) / sqrt(n)``, estimated from the sample (works for complex samples too)."""
    w = np.asarray(samples)
    if np.iscomplexobj(w):
        sq = np.abs(w.astype(np.complex128)) ** 2
    else:
        sq = as_f64(w) ** 2
    assert_mean(sq, target, what)


def assert_var(samples, target: float, what: str = "Var[w]") -> None:
    """The sample variance (about the sample mean) equals ``target`` within ``Z`` standard
    errors. The standard error of the sample variance is ``sqrt((m4 - s^4) / n)``, i.e. the
    standard deviation of ``(w - mean)^2`` over ``sqrt(n)``, estimated from the sample."""
    x = as_f64(samples)
    d2 = (x - x.mean()) ** 2
    tol = Z * d2.std(ddof=1) / np.sqrt(x.size)
    var = x.var(ddof=1)
    assert abs(var - target) <= tol, f"{what}={var:.5g}, want {target:.5g} ± {tol:.2g} (n={x.size})"


def assert_ks(samples, cdf: str | Callable, args: tuple = (), what: str = "sample") -> None:
    """One-sample Kolmogorov-Smirnov test of ``samples`` against the continuous ``cdf``.

    Checks the whole shape of the distribution (not only its moments): the test rejects, and
    the assertion fails, only if the p-value is below ``KS_P_MIN`` = 1e-6, so a correct sampler
    fails about once per million checks. Samples rounded to bfloat16/float16 are discrete; the
    test then also measures the rounding, whose effect on the statistic (at most the largest
    probability mass of one representable value) is far below the critical distance for the
    sample sizes used here.
    """
    x = as_f64(samples)
    res = scipy.stats.kstest(x, cdf, args=args)
    assert res.pvalue > KS_P_MIN, (
        f"{what}: KS statistic {res.statistic:.3g}, p={res.pvalue:.2g} < {KS_P_MIN} (n={x.size})"
    )
