"""The statistics a study reports: a mean with its 95 % interval, and a paired t-test.

Written out (no SciPy): Student's t distribution through the regularised incomplete beta
function, evaluated by its continued fraction (Press et al., *Numerical Recipes*, §6.4).
"""

import math
from collections.abc import Sequence

import attrs


@attrs.frozen
class Summary:
    """A mean over seeds and the half-width of its 95 % confidence interval (t-based)."""

    mean: float
    half_width: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.half_width:.4f}" if self.n > 1 else f"{self.mean:.4f}"


def summarise(values: Sequence[float]) -> Summary:
    """Mean and 95 % interval of ``values`` (no interval from a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(mean, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(mean, t_quantile(0.975, n - 1) * sd / math.sqrt(n), n)


@attrs.frozen
class Paired:
    """A paired comparison over seeds: mean difference (variant - baseline) and its p-value."""

    difference: float
    p_value: float
    n: int

    @property
    def within_noise(self) -> bool:
        """No difference beyond seed noise at the 5 % level (or too few seeds to tell)."""
        return not (self.p_value < 0.05)


def paired_t_test(variant: Sequence[float], baseline: Sequence[float]) -> Paired:
    """Two-sided paired t-test of ``variant - baseline`` (one pair per seed)."""
    diffs = [v - b for v, b in zip(variant, baseline, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return Paired(mean, math.nan, n)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return Paired(mean, 0.0 if mean != 0 else 1.0, n)
    t = mean / (sd / math.sqrt(n))
    return Paired(mean, 2 * (1 - t_cdf(abs(t), n - 1)), n)


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * incomplete_beta(df / 2, 0.5, x)
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The t with ``t_cdf(t, df) == p``, by bisection."""
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _continued_fraction(a, b, x) / a
    return 1 - front * _continued_fraction(b, a, 1 - x) / b


def _continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's method for the incomplete beta function's continued fraction."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return result
