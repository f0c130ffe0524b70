"""The statistics a timing rule needs, torch-free: median, quartiles, the one-sided Mann-Whitney U test.

asv and torch's HUD judge speed by a factor; asv adds a Mann-Whitney test so one noisy run cannot fail a
build. The test here is the normal approximation with the tie correction, exact enough from 8 samples a side
(the default is 20).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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


def _ranks(values: list[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) of `values`, and the size of each group of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks, ties, i = [0.0] * len(values), [], 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_less(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value that `a` is stochastically smaller than `b` (H1: P(a < b) > 1/2), normal approximation
    with tie and continuity corrections. 1.0 when either side is empty or every value is equal."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _ranks([*a, *b])
    u_a = sum(ranks[:n1]) - n1 * (n1 + 1) / 2  # pairs where a beats (is above) b, ties counting half
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u_a - n1 * n2 / 2 + 0.5) / math.sqrt(variance)  # small u_a: a sits below b
    return 0.5 * math.erfc(-z / math.sqrt(2))
