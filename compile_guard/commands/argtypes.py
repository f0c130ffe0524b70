"""argparse types for numbers: a bad value is a usage error (exit 2) naming the value, not a crash later."""

from __future__ import annotations

import argparse
import math


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


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a finite number of seconds > 0")
    return value


def factor(text: str) -> float:
    """A factor >= 1 (a speed or compile-time rule's)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a factor >= 1, e.g. 1.15") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a finite factor >= 1, e.g. 1.15")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1): a significance level, a tolerance."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one in (0, 1), e.g. 0.01") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a number in (0, 1), e.g. 0.01")
    return value
