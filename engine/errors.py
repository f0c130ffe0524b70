"""The engine's failures, each with its own exit code, so a log-less exit still says why.

A rank process maps the exception that ends it to `exit_code` (see engine.topology.tp); the
matrix runner asserts on these codes. Codes 10+ leave room for Python's 1 and argparse's 2.
"""

from __future__ import annotations


class EngineError(Exception):
    exit_code = 1


class PreflightError(EngineError):
    """Rank0 rejected a request before the header: no peer saw anything; the job goes on."""

    exit_code = 20  # only when a preflight error escapes the driver loop (it should not)

    def __init__(self, stage: str, key_path: str, detail: str) -> None:
        self.stage, self.key_path, self.detail = stage, key_path, detail
        super().__init__(f"preflight {stage} failed at {key_path}: {detail}")


class ParityMismatch(EngineError):
    """Ranks disagree on a parity key at init (FM-01/FM-03): every rank exits."""

    exit_code = 10


class DigestMismatch(EngineError):
    """Ranks computed on different broadcast inputs (Franken-model tripwire)."""

    exit_code = 11


class FingerprintMismatch(EngineError):
    """A weight shard differs from what the seed says it must be (Franken-model tripwire)."""

    exit_code = 12


class WatchdogExpired(EngineError):
    """No header within the watchdog window: the driver is gone or frozen."""

    exit_code = 13


class PlanRejected(EngineError):
    """The receiver (or the pre-generator agreement) rejected a plan after the header."""

    exit_code = 14


class ProtocolError(EngineError):
    """A header or meta that breaks envelope v1 (bad magic/version/action, IDs, limits)."""

    exit_code = 15


class PeerLost(EngineError):
    """A collective failed: a peer died or timed out."""

    exit_code = 16


class CallCountMismatch(EngineError):
    """A rank ran a different number of generator calls than the plan said (FM-02)."""

    exit_code = 17


class AdHocCollective(EngineError):
    """A tensor broadcast outside the envelope's manifest (FM-08), stopped before the call."""

    exit_code = 18


class CompileAsymmetry(EngineError):
    """Ranks of a symmetric group compiled differently: breaks, graphs, guards differ."""

    exit_code = 19


class WrongGroup(EngineError):
    """A collective was about to run on a group other than the one its call site expects."""

    exit_code = 21


class TerminatedByPeer(EngineError):
    """A peer sent the terminal ERROR action (PP1: the mesh leader, or the leader to rank0)."""

    exit_code = 22


class CompileFailed(EngineError):
    """torch.compile itself failed on this rank (dynamo, AOT or inductor): the message is dynamo's."""

    exit_code = 23


class RankCrashed(EngineError):
    """An exception nobody expected; the rank's log holds its full traceback."""

    exit_code = 24


class InputSignatureMismatch(EngineError):
    """Ranks were about to run a step on inputs of different shapes, dtypes, strides or devices."""

    exit_code = 25


class CompileDivergence(EngineError):
    """Ranks of a group compiled different graphs (or one rank compiled alone): every rank stopped before the
    graph's first run, so before its first collective."""

    exit_code = 26


class CollectiveMismatch(EngineError):
    """Ranks were about to issue different eager collectives (op, group, shape, dtype): stopped before the call."""

    exit_code = 27


class Stalled(EngineError):
    """A rank held at an agreement while a peer made no progress for the stall window: every rank's position
    reported, every rank stopped before the group's own timeout. No proof of a divergence: a stall."""

    exit_code = 28
