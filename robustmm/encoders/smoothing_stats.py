"""Exact binomial statistics for randomized smoothing, in float64 torch (no SciPy needed).

* :func:`clopper_pearson_lower` -- the one-sided (1 - alpha) Clopper-Pearson lower confidence bound
  on a binomial proportion: the p at which ``P(Bin(n, p) >= k) = alpha`` (0 when k = 0). It equals
  ``scipy.stats.beta.ppf(alpha, k, n - k + 1)``; it is found here by bisection on the exact binomial
  tail (computed in log space), to about 1e-12.
* :func:`binomial_test` -- the two-sided exact binomial test of ``k`` successes in ``n`` at p = 1/2
  (Cohen et al.'s PREDICT abstains when it exceeds alpha).
* :func:`check_smoothing_args` -- the one-line errors for bad sigma / n0 / n / alpha.
"""
from __future__ import annotations

import math

import torch

from ..errors import RobustMMError


def check_smoothing_args(sigma: float | None = None, n0: int | None = None, n: int | None = None,
                         alpha: float | None = None) -> None:
    """Raise a one-line :class:`RobustMMError` for a non-positive or non-finite sigma, a sample
    count below 1, or an alpha outside (0, 1). Arguments left as None are not checked."""
    if sigma is not None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
            raise RobustMMError(f"sigma must be a finite number > 0, got {sigma!r}")
    for name, v in (("n0", n0), ("n", n)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise RobustMMError(f"{name} must be an integer >= 1, got {v!r}")
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 < alpha < 1.0):
            raise RobustMMError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")


def _log_binom_tail(k: int, n: int, p: torch.Tensor) -> torch.Tensor:
    """log P(Bin(n, p) >= k) for a batch of p in (0, 1) (float64)."""
    i = torch.arange(k, n + 1, dtype=torch.float64)
    logc = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
    lp = logc[None, :] + i[None, :] * torch.log(p[:, None]) + (n - i)[None, :] * torch.log1p(-p[:, None])
    return torch.logsumexp(lp, dim=1)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) lower confidence bound on p from ``k`` successes in ``n`` trials.

    Exact (Clopper-Pearson): the returned p satisfies ``P(Bin(n, p) >= k) = alpha``, so the bound
    is below the true p with probability at least 1 - alpha. 0 for k = 0 and ``alpha ** (1/n)``
    for k = n.
    """
    check_smoothing_args(n=n, alpha=alpha)
    if not 0 <= k <= n:
        raise RobustMMError(f"k must lie in [0, n], got k={k}, n={n}")
    if k == 0:
        return 0.0
    if k == n:
        return float(alpha ** (1.0 / n))
    lo, hi = 0.0, 1.0
    log_alpha = math.log(alpha)
    for _ in range(60):  # bisection on a monotone tail: 2^-60 resolution
        mid = 0.5 * (lo + hi)
        if float(_log_binom_tail(k, n, torch.tensor([mid], dtype=torch.float64))[0]) < log_alpha:
            lo = mid
        else:
            hi = mid
    return lo


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) upper confidence bound on p (by symmetry with the lower bound)."""
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)


def binomial_test(k: int, n: int) -> float:
    """Two-sided exact binomial test p-value of ``k`` successes in ``n`` trials against p = 1/2.

    At p = 1/2 the distribution is symmetric, so the p-value is ``min(1, 2 P(X >= max(k, n-k)))``
    (what ``scipy.stats.binomtest(k, n, 0.5).pvalue`` returns). ``n = 0`` gives 1.
    """
    if n == 0:
        return 1.0
    m = max(k, n - k)
    tail = math.exp(float(_log_binom_tail(m, n, torch.tensor([0.5], dtype=torch.float64))[0]))
    return min(1.0, 2.0 * tail)


def normal_icdf(p: float) -> float:
    """Phi^-1(p), the standard normal quantile (``torch.special.ndtri`` in float64)."""
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def certified_radius(p_lower: float, sigma: float) -> float:
    """Cohen et al.'s L2 radius ``sigma * Phi^-1(p_lower)``; 0 (abstain) when ``p_lower <= 1/2``."""
    return sigma * normal_icdf(p_lower) if p_lower > 0.5 else 0.0
