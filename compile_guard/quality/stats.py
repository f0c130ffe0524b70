"""The statistics a timing rule needs, torch-free: quantiles, a robust standard error, and the one-sided test
that decides whether a time grew.

Both timing rules (speed, compile time) judge the growth of a time against the baseline's, in log units:
y = ln(run / baseline) (the compiled step's time relative to eager's; a compile's CPU seconds). y is compared
with its standard error, SE² = se_run² + se_base²: each side's own sampling error and the spread between runs
on one machine that no run's own samples can show (the noise: a process's memory layout, the host's
neighbours). A baseline refreshed over several runs measures that noise on its machine (`moderated_noise`:
their spread, pooled with the assumption), and its own figure is their mean; else the judge assumes a default
(compile_guard.quality.options.Judging, argued in docs/check.md). A growth is a regression when it is
significant, y > z(1-alpha)·SE, *and* larger than half the growth the gate is asked to catch,
y > ln(factor) / 2: the test keeps a noisy run from failing, the cut keeps a precise run from failing on a
growth too small to matter, and a growth of the full factor is caught whenever the run's minimum detectable
effect is below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

POWER = 0.9  # the minimum detectable effect is the growth caught with this probability
_NORMAL = NormalDist()
_MEDIAN_SE = 1.2533  # the standard error of a median is ~ this x sd / sqrt(n) (normal data)
_MAD_SD = 1.4826  # sd ~ this x the median absolute deviation (normal data)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    assert values, "a quantile of no values"
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def log_median_se(values: Sequence[float]) -> tuple[float, float]:
    """(ln of the median, the standard error of that log) of positive samples, robustly: the spread is the
    median absolute deviation of the logs, so one preempted sample cannot widen it. Fewer than 3 samples: an
    infinite error (nothing can be concluded)."""
    logs = [math.log(v) for v in values if v > 0]
    if len(logs) < 3:
        return (math.log(median(values)) if logs else 0.0), math.inf
    center = median(logs)
    mad = median([abs(v - center) for v in logs])
    return center, _MEDIAN_SE * _MAD_SD * mad / math.sqrt(len(logs))


@dataclass(frozen=True, kw_only=True)
class Growth:
    """A time's growth against the baseline's, judged."""

    log_ratio: float  # y = ln(run / baseline): > 0 slower, < 0 faster
    se: float  # its standard error (the run's, the baseline's, and 2 x noise² between runs)
    p: float  # one-sided: the chance of a growth this large or larger when nothing changed
    threshold: float  # the growth (log) above which this run fails: max(the cut, the significance bound)
    mde: float  # minimum detectable effect: the growth (a fraction, 0.05 = 5 %) caught with POWER
    regressed: bool  # y > threshold: significant (p < alpha) and above the cut

    @property
    def ratio(self) -> float:
        return math.exp(self.log_ratio)


PRIOR_DF = 4  # the assumed noise weighs as much as a spread measured over this many degrees of freedom (5 runs)


def moderated_noise(logs: Sequence[float], assumed: float) -> float:
    """The noise between runs from a few runs' log figures, pooled with the assumed one: (PRIOR_DF x assumed² +
    (n-1) x their variance) / (PRIOR_DF + n-1). Three runs' spread alone is too uncertain to trust either way
    (its variance is chi-square with 2 degrees of freedom: as likely to read half the true noise as double it),
    so a few runs move the assumption a little and many runs replace it (20 runs: 83 % of the weight)."""
    n = len(logs)
    assert n >= 2, "a spread of fewer than 2 runs"
    mean = sum(logs) / n
    variance = sum((v - mean) ** 2 for v in logs) / (n - 1)
    return math.sqrt((PRIOR_DF * assumed**2 + (n - 1) * variance) / (PRIOR_DF + n - 1))


def growth(run_log: float, run_se: float, base_log: float, base_se: float, *, alpha: float, factor: float) -> Growth:
    """The one-sided test of the module's docstring: `factor` the growth to catch (1.05: a time 5 % longer); each
    side's error includes the noise between runs."""
    y = run_log - base_log
    se = math.sqrt(run_se**2 + base_se**2)
    cut = math.log(factor) / 2
    if not math.isfinite(se) or se <= 0:
        # no spread at all cannot happen with noise > 0; an infinite one (too few samples) proves nothing
        return Growth(log_ratio=y, se=se, p=1.0, threshold=math.inf, mde=math.inf, regressed=False)
    bound = _NORMAL.inv_cdf(1 - alpha) * se
    threshold = max(cut, bound)
    return Growth(
        log_ratio=y,
        se=se,
        p=1 - _NORMAL.cdf(y / se),
        threshold=threshold,
        mde=math.exp(threshold + _NORMAL.inv_cdf(POWER) * se) - 1,
        regressed=y > threshold,
    )
