"""Intervals, paired tests and multiplicity corrections that hold at the seed counts papers use (3-10).

METHODS.md section 8: means and paired differences get Student-t intervals (exact for normal data at
any n), with the BCa bootstrap as an option from n = :data:`BCA_MIN_N` (20); never a plain percentile
bootstrap at small n (at n = 3 its "95%" covers about 74%). The deciding test of paired differences is
the paired t-test at every n (:func:`paired_t_p`; on log differences for a log-scale metric), so that
adding a seed never lowers power and the verdict agrees with the t interval; the Wilcoxon signed-rank
test and the exact sign-flip test are robustness columns only (:func:`paired_test` reports all three
and whether they disagree with t). p-values are Holm-adjusted across the arms compared with one
reference, per metric, and an arm is called better or worse only when its adjusted p is below the level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from lyaptune.errors import ConfigError

__all__ = [
    "INTERVAL_METHODS",
    "BCA_MIN_N",
    "mean_interval",
    "paired_interval",
    "paired_test",
    "holm_adjust",
    "paired_t_p",
    "signflip_p",
    "verdict",
]

#: Interval methods of :func:`mean_interval`: Student-t (default) and the BCa bootstrap.
INTERVAL_METHODS: tuple[str, ...] = ("t", "bca")
#: The BCa bootstrap is refused below this many values (at n = 10 it covers no better than t, about
#: 0.905 on normal data: its acceleration and bias estimates are themselves too noisy; METHODS.md
#: section 8).
BCA_MIN_N = 20

_Array = Sequence[float] | np.ndarray


def _finite(values: _Array) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level={level!r} must be a number in (0, 1), e.g. 0.95")
    return float(level)


def mean_interval(
    values: _Array, level: float = 0.95, method: str = "t", *, seed: int = 0
) -> tuple[float, float]:
    r"""Confidence interval of the mean of ``values``.

    With ``method="t"`` (default) the Student-t interval

    .. math::

        \bar x \pm t_{(1+\text{level})/2,\; n-1}\, s / \sqrt{n},
        \qquad s^2 = \tfrac{1}{n-1}\textstyle\sum_i (x_i - \bar x)^2,

    exact for normal data at any n >= 2. With ``method="bca"`` the bias-corrected and accelerated
    bootstrap (``scipy.stats.bootstrap(method="BCa")``, 10,000 resamples, seeded), only for
    n >= :data:`BCA_MIN_N` (20).

    Args:
      values: the sample (e.g. one metric over final seeds); non-finite values are dropped.
      level: nominal coverage, in (0, 1).
      method: ``"t"`` or ``"bca"``.
      seed: seed of the bootstrap resampling (``bca`` only).

    Returns:
      ``(low, high)``; ``(nan, nan)`` with fewer than two finite values; ``(mean, mean)`` when all
      values are equal.

    Raises:
      ConfigError: an unknown method, a level outside (0, 1), or ``bca`` with fewer than 20 values.

    References:
      Student (1908), "The probable error of a mean", Biometrika 6(1). Efron (1987), "Better
      bootstrap confidence intervals", JASA 82(397) (BCa).
    """
    if method not in INTERVAL_METHODS:
        raise ConfigError(f"interval method={method!r} is unknown; choices: {', '.join(INTERVAL_METHODS)}")
    level = _check_level(level)
    x = _finite(values)
    n = x.size
    if method == "bca" and n < BCA_MIN_N:
        raise ConfigError(
            f"interval method='bca' needs n >= {BCA_MIN_N} values, got n={n}; use method='t' "
            "(a bootstrap undercovers at small n)"
        )
    if n < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    if np.ptp(x) == 0.0:
        return (mean, mean)
    if method == "t":
        half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
        return (mean - half, mean + half)
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=level,
        n_resamples=10_000,
        method="BCa",
        random_state=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_interval(
    a: _Array, b: _Array, level: float = 0.95, method: str = "t", *, seed: int = 0
) -> tuple[float, float]:
    """Confidence interval of the mean paired difference ``mean(a_i - b_i)``.

    The pairs (e.g. two arms' runs on the same seed) are matched by position; a pair with a
    non-finite member is dropped. The interval is :func:`mean_interval` of the differences.

    Args:
      a, b: equal-length samples.
      level, method, seed: as :func:`mean_interval`.

    Returns:
      ``(low, high)`` (``(nan, nan)`` with fewer than two pairs).

    Raises:
      ValueError: ``a`` and ``b`` differ in length.
      ConfigError: as :func:`mean_interval`.
    """
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return mean_interval(x[keep] - y[keep], level, method, seed=seed)


def paired_test(x: _Array, reference: _Array, alpha: float = 0.05) -> dict[str, Any]:
    """Paired tests of ``x`` against ``reference`` (equal-length, matched by seed; METHODS section 8).

    The deciding test is the two-sided paired t-test at every n (:func:`paired_t_p` of the differences
    ``x_i - reference_i``: the exact sign-flip p where the differences have no spread, never p = 0).
    Two robustness tests are reported beside it: the Wilcoxon signed-rank test
    (``scipy.stats.wilcoxon``, two-sided, exact for small n; where some difference is non-zero) and
    the exact sign-flip test (:func:`signflip_p`). ``disagree`` flags a robustness test on the other
    side of ``alpha`` from t (unadjusted): read such a comparison with care (an outlier seed, a
    skewed difference).

    For a log-scale metric pass the logs of both samples: the mean difference is then the log of the
    geometric-mean ratio.

    Args:
      x, reference: equal-length samples; a pair with a non-finite member is dropped.
      alpha: the level at which ``disagree`` compares the p-values.

    Returns:
      ``{"n": pairs, "mean_diff": mean(x - reference), "p_ttest": t p, "p_wilcoxon": p,
      "p_signflip": p, "disagree": bool, "test": "t", "p": t p}`` (NaN where a test does not apply:
      fewer than 2 pairs for t, no non-zero difference for Wilcoxon).

    Raises:
      ValueError: the samples differ in length.
    """
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(reference, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    out: dict[str, Any] = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else math.nan}
    out["p_ttest"] = paired_t_p(d)
    out["p_wilcoxon"] = math.nan
    out["p_signflip"] = math.nan
    if d.size >= 2:
        out["p_signflip"] = signflip_p(d)
        if np.any(d != 0):
            out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    t_sig = math.isfinite(out["p_ttest"]) and out["p_ttest"] < alpha
    out["disagree"] = bool(
        math.isfinite(out["p_ttest"])
        and any(math.isfinite(p) and (p < alpha) != t_sig for p in (out["p_wilcoxon"], out["p_signflip"]))
    )
    out["test"] = "t"
    out["p"] = out["p_ttest"]
    return out


def signflip_p(differences: _Array) -> float:
    r"""Exact two-sided sign-flip (permutation) p-value of paired differences against 0.

    Under the null each difference's sign is a fair coin: with :math:`T = |\sum_i d_i|`,

    .. math::

        p = \frac{1}{2^n} \#\{\varepsilon \in \{\pm 1\}^n : |\textstyle\sum_i \varepsilon_i d_i| \ge T\},

    enumerated exactly up to n = 20 (2^20 sign vectors; beyond that, 100,000 seeded random flips).
    Where every difference is identical and non-zero it is :math:`2 / 2^n` (0.25 at n = 3).

    Args:
      differences: paired differences; non-finite values are dropped.

    Returns:
      The p-value in (0, 1]; ``nan`` without a difference; 1.0 when every difference is 0.

    References:
      Fisher (1935), The Design of Experiments, section 21 (the randomisation test).
    """
    d = _finite(differences)
    n = d.size
    if n == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    t_obs = abs(float(d.sum()))
    tol = 1e-12 * max(float(np.abs(d).sum()), 1e-300)
    if n <= 20:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)
    else:
        signs = np.random.default_rng(0).choice([-1, 1], size=(100_000, n))
    sums = np.abs(signs @ d)
    return float(np.mean(sums >= t_obs - tol))


def paired_t_p(differences: _Array) -> float:
    r"""Two-sided p-value of the one-sample t-test of paired differences against 0 (METHODS section 8).

    .. math::

        t = \bar d \sqrt n / s_d, \qquad p = 2\,(1 - F_{t,\,n-1}(|t|)),

    the deciding test at every n. Where the differences have no spread (all equal to a relative
    1e-12) the t statistic is undefined: the exact sign-flip p (:func:`signflip_p`, 2/2^n for identical
    non-zero differences, 1 for all-zero ones) is returned instead, never p = 0.

    Args:
      differences: paired differences (of logs, for a log-scale metric); non-finite values dropped.

    Returns:
      The p-value; ``nan`` with fewer than two differences.

    References:
      Student (1908), "The probable error of a mean", Biometrika 6(1).
    """
    d = _finite(differences)
    if d.size < 2:
        return math.nan
    scale = float(np.max(np.abs(d)))
    if scale == 0.0 or np.ptp(d) <= 1e-12 * scale:
        return signflip_p(d)
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm_adjust(pvalues: _Array) -> np.ndarray:
    r"""Holm's step-down adjusted p-values (family-wise error control).

    With the m finite p-values sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`,

    .. math::

        \tilde p_{(i)} = \min\Big(1,\; \max_{j \le i} (m - j + 1)\, p_{(j)}\Big),

    and an arm is significant at level alpha when its adjusted p is below alpha. NaN entries (tests
    that did not run) stay NaN and do not count in m.

    Args:
      pvalues: raw p-values, one per hypothesis (e.g. per arm compared with the reference).

    Returns:
      The adjusted p-values, in the input order.

    References:
      Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6(2).
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def verdict(mean_diff: float, p_adjusted: float, mode: str, n_pairs: int, alpha: float = 0.05) -> str:
    """``better`` / ``worse`` than the reference, or ``no significant difference``.

    ``better`` or ``worse`` only when ``p_adjusted < alpha``; the direction then follows the sign of
    ``mean_diff`` (arm minus reference) and the metric's mode (``max``: higher is better). Fewer than
    two pairs give ``not tested``.
    """
    if n_pairs < 2:
        return "not tested"
    if not (math.isfinite(p_adjusted) and p_adjusted < alpha and math.isfinite(mean_diff) and mean_diff != 0):
        return "no significant difference"
    return "better" if (mean_diff > 0) == (mode == "max") else "worse"
