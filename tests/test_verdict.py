"""The one map from every rank's outcome to the CLI's exit code (compile_guard.verdict), as a table;
the typed rank report's validation. In-process, no ranks."""

from __future__ import annotations

import json
import signal

import pytest

from compile_guard import verdict
from compile_guard.contracts.rank_report import RankReport, RankReportError
from compile_guard.verdict import Cli, RankOutcome
from engine.errors import EngineError, RankCode

C = RankCode


def _o(rank: int, code: int | None, *, at: float | None = None, killed: bool = False, sig: str | None = None):
    return RankOutcome(rank=rank, code=code, failed_at_s=at, killed=killed, signal=sig)


# the verdict table: one case per entry, its why, outcomes and verdict: the formatter leaves it as written
# fmt: off
TABLE = [
    # (why, outcomes, expected (cli code, label, culprit))
    ("every rank passed", [_o(0, 0), _o(1, 0)], (Cli.OK, verdict.PASS, None)),
    ("a compile divergence on both ranks", [_o(0, C.COMPILE_DIVERGENCE, at=1.0), _o(1, C.COMPILE_DIVERGENCE, at=1.1)],
     (Cli.FAIL, verdict.ASYMMETRIC, 0)),
    ("asymmetry on one rank, its peer lost it first by the clock: the cause wins over the consequence",
     [_o(0, C.PEER_LOST, at=0.5), _o(1, C.COMPILE_ASYMMETRY, at=0.9)], (Cli.FAIL, verdict.ASYMMETRIC, 1)),
    ("parity mismatch", [_o(0, C.PARITY, at=1.0), _o(1, C.PARITY, at=1.0)], (Cli.FAIL, verdict.ASYMMETRIC, 0)),
    ("input signatures differ", [_o(0, C.INPUT_SIGNATURE), _o(1, C.INPUT_SIGNATURE)],
     (Cli.FAIL, verdict.ASYMMETRIC, 0)),
    ("collective mismatch (ledger)", [_o(0, C.COLLECTIVE_MISMATCH), _o(1, C.COLLECTIVE_MISMATCH)],
     (Cli.FAIL, verdict.ASYMMETRIC, 0)),
    ("our config refused on every rank", [_o(0, C.CONFIG), _o(1, C.CONFIG)], (Cli.USAGE, verdict.INPUT_ERROR, 0)),
    ("our config refused on rank 1 only; rank 0 lost its peer", [_o(0, C.PEER_LOST, at=2.0), _o(1, C.CONFIG, at=1.0)],
     (Cli.USAGE, verdict.INPUT_ERROR, 1)),
    ("the model under test crashed (a ValueError of its own is CRASHED)", [_o(0, C.CRASHED, at=1.0),
                                                                            _o(1, C.PEER_LOST, at=1.2)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 0)),
    ("a crash before an asymmetry: the first cause decides", [_o(0, C.CRASHED, at=1.0),
                                                               _o(1, C.COMPILE_DIVERGENCE, at=1.5)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 0)),
    ("a protocol anomaly is never a divergence", [_o(0, C.PROTOCOL), _o(1, C.PROTOCOL)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 0)),
    ("torch.compile failed on one rank", [_o(0, C.PEER_LOST, at=0.1), _o(1, C.COMPILE_FAILED, at=3.0)],
     (Cli.ENGINE, verdict.COMPILE_ERROR, 1)),
    ("a stall; the frozen rank was killed by the launcher",
     [_o(0, None, killed=True, sig="SIGKILL"), _o(1, C.STALLED, at=27.0)], (Cli.STALL, verdict.STALL, 1)),
    ("a stall on every rank", [_o(0, C.STALLED, at=27.0), _o(1, C.STALLED, at=27.1)], (Cli.STALL, verdict.STALL, 0)),
    ("a rank died by a signal of its own (segfault); its peer lost it", [_o(0, C.PEER_LOST, at=0.2),
                                                                          _o(1, None, sig="SIGSEGV")],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 1)),
    ("only consequences (the culprit said nothing): the earliest", [_o(0, C.WATCHDOG, at=5.0),
                                                                    _o(1, C.PEER_LOST, at=4.0)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 1)),
    ("in place, no peer posted and this rank lost its peer", [_o(0, C.PEER_LOST), _o(1, None, killed=True)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, 0)),
    ("in place, nobody posted anything but a pass", [_o(0, 0), _o(1, None, killed=True)],
     (Cli.ENGINE, verdict.ENGINE_FAILURE, None)),
]
# fmt: on


@pytest.mark.parametrize("why, outcomes, expected", TABLE, ids=[row[0] for row in TABLE])
def test_the_table(why, outcomes, expected):
    decided = verdict.decide(outcomes)
    assert (decided.code, decided.label, decided.culprit) == expected, why
    # the order ranks arrive in never changes the verdict (in place, each rank reads them in its own order)
    assert verdict.decide(list(reversed(outcomes))) == decided


def test_deadline_and_interruption_come_first():
    ranks = [_o(0, C.COMPILE_DIVERGENCE, at=1.0), _o(1, None, killed=True)]
    assert verdict.decide(ranks, deadline=True) == verdict.Verdict(
        code=Cli.ENGINE, label=verdict.DEADLINE, culprit=None
    )
    interrupted = verdict.decide(ranks, interrupted_by=signal.SIGTERM)
    assert interrupted.code == 128 + 15 and interrupted.label == verdict.INTERRUPTED


def test_every_rank_code_has_a_cli_code_and_only_config_is_input():
    """Each RankCode maps to exactly one CLI code; 2 comes from CONFIG alone, 1 from the asymmetry codes alone."""
    for code in RankCode:
        cli = verdict.cli_code(code)
        assert cli in (0, 1, 2, 3, 4), code
        assert (cli == Cli.USAGE) == (code == C.CONFIG), code
        assert (cli == Cli.FAIL) == (code in verdict.ASYMMETRY), code
        assert (cli == Cli.STALL) == (code == C.STALLED), code
    # every error class names a code of the enum, and no two classes share one
    classes = EngineError.__subclasses__() + [c for k in EngineError.__subclasses__() for c in k.__subclasses__()]
    own = {c: c.exit_code for c in classes if "exit_code" in c.__dict__}
    assert all(isinstance(code, RankCode) for code in own.values())
    assert len(set(own.values())) == len(own), own


def _mesh_report(**changes):
    from compile_guard.health.schema import CompileHealth, Observations, symmetric_view

    final = CompileHealth.measure(
        Observations(graph_count=0, graphs=[], schedules=[], break_reasons={}, break_sites=[], compiles=[])
    ).to_json()
    fields = {
        "scenario": "tp2",
        "rank": 0,
        "role": "mesh",
        "run": {"generator_calls": 3},
        "effective_backend": {"torch": "2.13.0"},
        "warmup": symmetric_view(final),
        "final": final,
    }
    return {**fields, **changes}


def test_rank_report_round_trips_as_canonical_json():
    report = RankReport.from_dict(_mesh_report(), what="rank 0's report")
    text = report.to_json()
    assert RankReport.from_json(text, what="x") == report
    assert json.loads(text) == {**_mesh_report(), "quality": {}}  # the typed report writes what it read
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"rank": "0"}, "report.rank is str '0', expected int"),
        ({"role": "leader"}, "field role is 'leader'"),
        (
            {"final": {**_mesh_report()["final"], "graph_breaks": "2"}},
            "report.final.graph_breaks is str '2', expected int",
        ),
        (
            {"final": {k: v for k, v in _mesh_report()["final"].items() if k != "unique_graphs"}},
            "field final.unique_graphs is missing",
        ),
        ({"extra": 1}, "unknown field(s) ['extra']"),
    ],
)
def test_rank_report_of_the_wrong_shape_names_the_field(changes, named):
    with pytest.raises(RankReportError, match="rank 1's report") as info:
        RankReport.from_dict(_mesh_report(**changes), what="rank 1's report")
    assert named in str(info.value)


def test_rank_report_missing_a_field_and_not_json_are_named():
    raw = _mesh_report()
    del raw["run"]
    with pytest.raises(RankReportError, match=r"missing field\(s\) \['run'\]"):
        RankReport.from_dict(raw, what="rank 0's report")
    with pytest.raises(RankReportError, match="is not JSON"):
        RankReport.from_json("{", what="rank 0's report")


def test_a_driver_reports_no_compile_health():
    driver = RankReport.from_dict(
        {"scenario": "pp1", "rank": 0, "role": "driver", "run": {"chunks_done": [0]}}, what="rank 0's report"
    )
    assert not driver.is_mesh and driver.final is None and driver.run.chunks_done == [0]
    assert json.loads(driver.to_json())["final"] == {}  # on the wire as every 0.1 version wrote it
