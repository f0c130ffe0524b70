"""Every exit code, and the one function from "how every rank ended" to the CLI's exit code.

A CI gate is read by its exit code, so each code means one thing:

    0 pass · 1 the ranks differ, or a regression against the baseline · 2 our input (a flag, a
    baseline file, a scenario or target we cannot use) · 3 the engine or the code under test failed
    (a crash, a compile error, a peer lost, a deadline, a protocol anomaly of our own) · 4 a stall:
    no proof the ranks differ, every rank's position reported · 128+N interrupted by signal N.

The rank programs' own codes are `engine.errors.RankCode` (the engine exits with them by
itself; it imports nothing of the harness). `decide` is the only place they become a CLI code:
self-launched runs (compile_guard.flow.report), in-place runs (compile_guard.launch.in_place, the in-place
run mode: every rank decides over every rank's outcome, so they all exit the same), the matrix's check rows and
the pytest plugin (all through compile_guard.flow.check_flow.run_and_judge). tests/test_verdict.py is
its table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable

from engine.errors import RankCode


class Cli(enum.IntEnum):
    OK = 0
    FAIL = 1  # the ranks differ, or a metric regressed against the baseline
    USAGE = 2  # our input: a flag, a baseline file, a run spec or target refused (ConfigError)
    ENGINE = 3  # the engine or the code under test failed, or a deadline, or an anomaly of ours
    STALL = 4  # a rank held at an agreement while a peer made no progress: positions reported, no proof


INTERRUPTED_BASE = 128  # 128 + the signal, as a shell reports a process ended by it (130 SIGINT, 143 SIGTERM)

# rank codes that mean "the ranks differ": proof, stopped before the divergent step ran
ASYMMETRY = frozenset(
    {
        RankCode.PARITY,
        RankCode.COMPILE_ASYMMETRY,
        RankCode.INPUT_SIGNATURE,
        RankCode.COMPILE_DIVERGENCE,
        RankCode.COLLECTIVE_MISMATCH,
    }
)
# rank codes that are another rank's failure seen from here: never the culprit while a rank has a cause
CONSEQUENCES = frozenset({RankCode.PEER_LOST, RankCode.TERMINATED_BY_PEER, RankCode.WATCHDOG})

PASS, ASYMMETRIC, INPUT_ERROR, STALL, COMPILE_ERROR = (
    "pass",
    "cross-rank asymmetry",
    "input error",
    "stall",
    "compile error",
)
ENGINE_FAILURE, DEADLINE, INTERRUPTED = "engine failure", "deadline", "interrupted"


@dataclass(frozen=True, kw_only=True)
class RankOutcome:
    rank: int  # global rank
    code: int | None  # its exit status as a rank program; None when a signal ended it or it said nothing
    signal: str | None = None  # the signal that ended it ("SIGSEGV"), when one did
    killed: bool = False  # the launcher killed it (after a peer failed, or at the deadline), or it never said
    failed_at_s: float | None = None  # when it failed (its failure record), from the launch's start


@dataclass(frozen=True, kw_only=True)
class Verdict:
    code: int  # the CLI's exit code
    label: str  # one of the labels above: what the user reads first
    culprit: int | None  # the rank whose own failure decided it; None when every rank passed (or no rank failed)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", int(self.code))  # a plain int: prints as a number on Python 3.10 too


def _cause_order(outcome: RankOutcome) -> tuple[int, float, int]:
    """Who failed first *by itself*: a rank with a cause of its own, then one a signal ended, then one that saw a
    peer fail, then one that was killed; in each class the earliest failure record, then the lowest rank."""
    if outcome.killed:
        tier = 3
    elif outcome.code is None:
        tier = 1
    elif outcome.code in CONSEQUENCES:
        tier = 2
    else:
        tier = 0
    at = outcome.failed_at_s if outcome.failed_at_s is not None else float("inf")
    return tier, at, outcome.rank


def decide(outcomes: Iterable[RankOutcome], *, deadline: bool = False, interrupted_by: int | None = None) -> Verdict:
    """The CLI code, label and culprit of a run from every rank's outcome (in any order)."""
    ranks = sorted(outcomes, key=lambda o: o.rank)
    if interrupted_by is not None:
        return Verdict(code=INTERRUPTED_BASE + interrupted_by, label=INTERRUPTED, culprit=None)
    failed = [o for o in ranks if o.code != RankCode.OK]
    if not failed and not deadline:
        return Verdict(code=Cli.OK, label=PASS, culprit=None)
    if deadline:  # the launcher's hard limit: every rank still running was killed; none proved anything
        return Verdict(code=Cli.ENGINE, label=DEADLINE, culprit=None)
    culprit = min(failed, key=_cause_order)
    if culprit.killed:  # nobody said why (in place: no peer's outcome reached this rank)
        return Verdict(code=Cli.ENGINE, label=ENGINE_FAILURE, culprit=None)
    code = culprit.code
    if code in ASYMMETRY:
        return Verdict(code=Cli.FAIL, label=ASYMMETRIC, culprit=culprit.rank)
    if code == RankCode.STALLED:
        return Verdict(code=Cli.STALL, label=STALL, culprit=culprit.rank)
    if code == RankCode.CONFIG:
        return Verdict(code=Cli.USAGE, label=INPUT_ERROR, culprit=culprit.rank)
    if code == RankCode.COMPILE_FAILED:
        return Verdict(code=Cli.ENGINE, label=COMPILE_ERROR, culprit=culprit.rank)
    return Verdict(code=Cli.ENGINE, label=ENGINE_FAILURE, culprit=culprit.rank)


def cli_code(rank_code: int) -> int:
    """One rank's code on its own as the CLI's (a rank that stops before it can hear from its peers)."""
    return decide([RankOutcome(rank=0, code=rank_code)]).code
