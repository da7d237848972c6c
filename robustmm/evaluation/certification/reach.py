"""What a Monte Carlo budget can certify: the largest radius, and which radii lie beyond it.

With ``n`` estimation draws at failure probability ``alpha`` the Clopper-Pearson lower bound on
the top class's probability is at most ``alpha ** (1/n)`` (every draw agrees), so no certificate
can exceed ``sigma * Phi^-1(alpha ** (1/n))``: about 1.27 sigma at n = 64 and alpha = 0.001,
0.86 sigma at n = 32. Certified accuracy at a larger radius is 0 by construction, a property of
the budget and not of the model, so records and reports mark such radii as not reachable.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from ...encoders.smoothing_stats import certified_radius, check_smoothing_args
from ...errors import RobustMMError

#: relative slack when comparing a radius with the largest certifiable one (float round-off)
REACH_RTOL = 1e-9


def max_certified_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest L2 radius any item can be certified at with ``n`` draws at ``alpha`` (noise std
    ``sigma``): ``sigma * Phi^-1(alpha ** (1/n))``, or 0 when ``alpha ** (1/n) <= 1/2`` (then no
    item can be certified at all)."""
    check_smoothing_args(sigma=sigma, n=n, alpha=alpha)
    return certified_radius(float(alpha ** (1.0 / n)), sigma)


def is_reachable(radius: float, max_radius: float) -> bool:
    """Whether a certificate at ``radius`` is possible at all under a budget whose largest
    certifiable radius is ``max_radius`` (radius 0 always is)."""
    return radius <= 0 or radius <= max_radius * (1 + REACH_RTOL)


def reachable_radii(radii: Iterable[float], max_radius: float) -> list[float]:
    """The radii of ``radii`` a budget with largest certifiable radius ``max_radius`` can reach."""
    return [float(r) for r in radii if is_reachable(float(r), max_radius)]


def min_draws_for(radius: float, sigma: float, alpha: float) -> int:
    """The fewest estimation draws with which ``radius`` is certifiable at ``sigma`` and ``alpha``
    (what to raise ``n`` to when a wanted radius is out of reach)."""
    check_smoothing_args(sigma=sigma, alpha=alpha)
    p = 0.5 * (1.0 + math.erf(radius / sigma / math.sqrt(2.0)))  # Phi(radius / sigma)
    if p >= 1.0:
        raise RobustMMError(f"radius {radius:g} is {radius / sigma:.1f} sigma: beyond any feasible number of draws")
    n = max(1, math.ceil(math.log(alpha) / math.log(p)))
    while not is_reachable(radius, max_certified_radius(sigma, n, alpha)):  # ceil's round-off
        n += 1
    return n
