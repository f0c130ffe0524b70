"""The engine's failures, each with its own exit code, so a log-less exit still says why.

`RankCode` is every exit code a rank program can end with, one meaning each; each error class
names its code. A rank process maps the exception that ends it to its code
(engine.rank_process); compile_guard.verdict maps every rank's code to the CLI's. The codes
live here, not in compile_guard, because the engine's own programs exit with them too and the
engine imports nothing of the harness. Codes 10+ leave room for Python's 1 and argparse's 2.
"""

from __future__ import annotations

import enum


class RankCode(enum.IntEnum):
    OK = 0
    CONFIG = 2  # our configuration or the target's: refused before anything ran (ConfigError)
    PARITY = 10
    DIGEST = 11
    FINGERPRINT = 12
    WATCHDOG = 13
    PLAN_REJECTED = 14
    PROTOCOL = 15
    PEER_LOST = 16
    CALL_COUNT = 17
    AD_HOC_COLLECTIVE = 18
    COMPILE_ASYMMETRY = 19
    PREFLIGHT = 20
    WRONG_GROUP = 21
    TERMINATED_BY_PEER = 22
    COMPILE_FAILED = 23
    CRASHED = 24
    INPUT_SIGNATURE = 25
    COMPILE_DIVERGENCE = 26
    COLLECTIVE_MISMATCH = 27
    STALLED = 28


class EngineError(Exception):
    exit_code: RankCode = RankCode.CRASHED


class ConfigError(EngineError, ValueError):
    """A configuration (run spec, knob, target) this run cannot use: the message names the value seen, the value
    expected and the fix. The only failure that is the user's input (CLI exit 2); any other ValueError is a crash."""

    exit_code = RankCode.CONFIG


class PreflightError(EngineError):
    """Rank0 rejected a request before the header: no peer saw anything; the job goes on."""

    exit_code = RankCode.PREFLIGHT  # only when a preflight error escapes the driver loop (it should not)

    def __init__(self, stage: str, key_path: str, detail: str) -> None:
        self.stage, self.key_path, self.detail = stage, key_path, detail
        super().__init__(f"preflight {stage} failed at {key_path}: {detail}")


class ParityMismatch(EngineError):
    """Ranks disagree on a parity key at init (FM-01/FM-03): every rank exits."""

    exit_code = RankCode.PARITY


class DigestMismatch(EngineError):
    """Ranks computed on different broadcast inputs (Franken-model tripwire)."""

    exit_code = RankCode.DIGEST


class FingerprintMismatch(EngineError):
    """A weight shard differs from what the seed says it must be (Franken-model tripwire)."""

    exit_code = RankCode.FINGERPRINT


class WatchdogExpired(EngineError):
    """No header within the watchdog window: the driver is gone or frozen."""

    exit_code = RankCode.WATCHDOG


class PlanRejected(EngineError):
    """The receiver (or the pre-generator agreement) rejected a plan after the header."""

    exit_code = RankCode.PLAN_REJECTED


class ProtocolError(EngineError):
    """A header or meta that breaks envelope v1 (bad magic/version/action, IDs, limits)."""

    exit_code = RankCode.PROTOCOL


class PeerLost(EngineError):
    """A collective failed: a peer died or timed out."""

    exit_code = RankCode.PEER_LOST


class CallCountMismatch(EngineError):
    """A rank ran a different number of generator calls than the plan said (FM-02)."""

    exit_code = RankCode.CALL_COUNT


class AdHocCollective(EngineError):
    """A tensor broadcast outside the envelope's manifest (FM-08), stopped before the call."""

    exit_code = RankCode.AD_HOC_COLLECTIVE


class CompileAsymmetry(EngineError):
    """Ranks of a symmetric group compiled differently: breaks, graphs, guards differ."""

    exit_code = RankCode.COMPILE_ASYMMETRY


class WrongGroup(EngineError):
    """A collective was about to run on a group other than the one its call site expects."""

    exit_code = RankCode.WRONG_GROUP


class TerminatedByPeer(EngineError):
    """A peer sent the terminal ERROR action (PP1: the mesh leader, or the leader to rank0)."""

    exit_code = RankCode.TERMINATED_BY_PEER


class CompileFailed(EngineError):
    """torch.compile itself failed on this rank (dynamo, AOT or inductor): the message is dynamo's."""

    exit_code = RankCode.COMPILE_FAILED


class RankCrashed(EngineError):
    """An exception nobody expected; the rank's log holds its full traceback."""

    exit_code = RankCode.CRASHED


class InputSignatureMismatch(EngineError):
    """Ranks were about to run a step on inputs of different shapes, dtypes, strides or devices."""

    exit_code = RankCode.INPUT_SIGNATURE


class CompileDivergence(EngineError):
    """Ranks of a group compiled different graphs (or one rank compiled alone): every rank stopped before the
    graph's first run, so before its first collective."""

    exit_code = RankCode.COMPILE_DIVERGENCE


class CollectiveMismatch(EngineError):
    """Ranks were about to issue different eager collectives (op, group, shape, dtype): stopped before the call."""

    exit_code = RankCode.COLLECTIVE_MISMATCH


class Stalled(EngineError):
    """A rank held at an agreement while a peer made no progress for the stall window: every rank's position
    reported, every rank stopped before the group's own timeout. No proof of a divergence: a stall."""

    exit_code = RankCode.STALLED
