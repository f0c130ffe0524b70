"""argparse types for numbers: a bad value is a usage error (exit 2) naming the value, not a crash later."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _integer(text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number >= {minimum}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is invalid; give a whole number >= {minimum}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, minimum=1)


def non_negative_int(text: str) -> int:
    return _integer(text, minimum=0)


def _number(text: str, *, ok: Callable[[float], bool], expected: str) -> float:
    """A finite float that `ok` accepts; an ArgumentTypeError naming the value and `expected` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {expected}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text} is invalid; give {expected}")
    return value


def positive_seconds(text: str) -> float:
    return _number(text, ok=lambda v: v > 0, expected="a finite number of seconds > 0")


def factor(text: str) -> float:
    """A factor >= 1 (a speed or compile-time rule's)."""
    return _number(text, ok=lambda v: v >= 1, expected="a finite factor >= 1, e.g. 1.15")


def fraction(text: str) -> float:
    """A number in (0, 1): a significance level, a tolerance."""
    return _number(text, ok=lambda v: 0 < v < 1, expected="a number in (0, 1), e.g. 0.01")
