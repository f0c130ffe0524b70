"""compile_guard.quality in one process: the statistics, the accuracy rule, the judging against a baseline, the
state a measurement keeps. The multi-rank parts (parity, the NU rows) run as matrix rows (tests/test_matrix.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from compile_guard.contracts.rank_report import QualityReport
from compile_guard.health import policy
from compile_guard.health.policy import OK, REGRESSION
from compile_guard.quality import accuracy, rules, stats
from compile_guard.quality import rows as quality_rows
from compile_guard.quality.measure import copy_value, in_fp64
from compile_guard.quality.options import Judging, Measure, QualityOptionError


def test_quantiles_interpolate_like_numpy() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0


def test_the_log_median_and_its_error_are_robust_to_one_outlier() -> None:
    center, se = stats.log_median_se([1.0, 1.1, 1.2, 1.1, 1.0, 9.0])
    assert center == pytest.approx(math.log(1.1))
    # logs minus their median: |0 - .0953| x2, 0 x2, |.1823 - .0953|, |2.197 - .0953|; MAD = their median, .0870 (the
    # mean of .0870 and .0953); se = 1.2533 x 1.4826 x MAD / sqrt(6)
    assert se == pytest.approx(1.2533 * 1.4826 * ((0.0953 + 0.0870) / 2) / math.sqrt(6), rel=0.02)
    assert stats.log_median_se([1.0, 2.0])[1] == math.inf  # too few samples: nothing can be concluded


def test_the_growth_test_by_hand() -> None:
    # y = ln(1.10) = .0953; se = sqrt(2 x (.01^2 + .01^2)) = .02; z = 4.77: p = 9.3e-7; threshold =
    # max(ln(1.05) / 2 = .0244, 3.090 x .02 = .0618); mde = exp(.0618 + 1.2816 x .02) - 1 = 9.1 %
    side = math.hypot(0.01, 0.01)
    g = stats.growth(math.log(1.10), side, 0.0, side, alpha=0.001, factor=1.05)
    assert g.se == pytest.approx(0.02) and g.p == pytest.approx(9.3e-7, rel=0.05)
    assert g.threshold == pytest.approx(0.0618, abs=1e-3) and g.mde == pytest.approx(0.091, abs=1e-3)
    assert g.regressed
    assert not stats.growth(math.log(1.10), math.inf, 0.0, 0.01, alpha=0.001, factor=1.05).regressed


def test_a_few_runs_spread_is_pooled_with_the_assumed_noise() -> None:
    # logs 0, .01, .02, .03, .04: variance .00025 over 4 degrees of freedom; assumed .035 weighs 4:
    # sqrt((4 x .035^2 + 4 x .00025) / 8) = sqrt(.0059 / 8) = .02716
    assert stats.moderated_noise([0.0, 0.01, 0.02, 0.03, 0.04], 0.035) == pytest.approx(0.02716, rel=1e-3)
    many = [0.01 * (i % 2) for i in range(41)]  # 40 degrees of freedom of a ~0.5 % spread: the measurement rules
    assert stats.moderated_noise(many, 0.035) < 0.012


def test_the_growth_test_does_not_call_two_draws_of_one_distribution_different() -> None:
    """Two runs of one machine whose figures move by `noise` between runs: false alarms at most alpha's share."""
    rng = random.Random(7)
    alarms = 0
    for _ in range(2000):
        run, base = rng.gauss(0, 0.02), rng.gauss(0, 0.02)
        alarms += stats.growth(run, 0.02, base, 0.02, alpha=0.01, factor=1.0).regressed
    assert alarms <= 2000 * 0.01 * 2  # 20 expected at alpha 0.01; twice that leaves room for chance


def _gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def test_accuracy_passes_reassociation_noise_and_fails_another_gelu() -> None:
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    eager, fp64 = _gelu(x, "tanh"), _gelu(x.double(), "tanh")
    noisy = eager + eager.abs() * 2e-7  # a few ulps: what fusion and reassociation leave
    healthy = accuracy.rule_output("out", noisy, eager, eager.clone(), fp64)
    assert healthy["status"] == accuracy.PASS, healthy
    erf = accuracy.rule_output("out", _gelu(x, "none"), eager, eager.clone(), fp64)
    assert erf["status"] == accuracy.FAIL and erf["ratio"] > 100, erf  # erf vs tanh: ~1e-4 from fp64, eager ~1e-7
    assert erf["worst"]["index"] and "rmse from fp64" in erf["detail"]


def test_accuracy_more_accurate_than_eager_passes_though_not_close() -> None:
    # compiled equal to the fp64 reference: far from a bad eager, closer to the truth: same() passes it too
    fp64 = torch.linspace(-1, 1, 100, dtype=torch.float64)
    eager = (fp64 + 1e-3).float()
    assert accuracy.rule_output("o", fp64.float(), eager, eager.clone(), fp64)["status"] == accuracy.PASS


def test_accuracy_states_nondeterministic_eager_and_judges_without_fp64() -> None:
    a = torch.ones(4)
    said = accuracy.rule_output("o", a, a, a + 1, None)
    assert said["status"] == accuracy.NONDETERMINISTIC
    assert accuracy.rule_output("o", a + 1e-3, a, a.clone(), None)["status"] == accuracy.FAIL  # eager only: 1e-4
    assert (
        accuracy.rule_output("o", torch.tensor([1, 2]), torch.tensor([1, 3]), torch.tensor([1, 3]), None)["status"]
        == accuracy.FAIL
    )  # integers: exact


def test_fp64_reference_restores_the_same_storages() -> None:
    module = torch.nn.Linear(4, 4)
    before = [(p, p.data.data_ptr(), p.dtype) for p in module.parameters()]
    with in_fp64(module):
        assert all(p.dtype == torch.float64 for p in module.parameters())
    assert [(p, p.data.data_ptr(), p.dtype) for p in module.parameters()] == before


def test_copies_keep_strides_so_no_guard_fails() -> None:
    base = torch.randn(4, 8)
    view = base[:, 2:6]
    copied = copy_value((view, [view], {"k": 3}))
    assert copied[0].stride() == view.stride() and torch.equal(copied[0], view)
    assert copied[0].data_ptr() != view.data_ptr() and copied[2] == {"k": 3}


def test_options_refuse_out_of_range_values_naming_them() -> None:
    with pytest.raises(QualityOptionError, match="--compile-time 'warmish'"):
        Measure(compile_time="warmish")
    with pytest.raises(QualityOptionError, match="--repeats 4"):
        Measure(repeats=4)  # two ABBA samples: fewer than the test needs
    with pytest.raises(QualityOptionError, match="--speed-factor 0.9"):
        Judging(speed_factor=0.9)
    with pytest.raises(QualityOptionError, match="--speed-noise 1.5"):
        Judging(speed_noise=1.5)
    with pytest.raises(QualityOptionError, match="--timings 'always'"):
        Judging(timings="always")
    assert Measure.from_dict(Measure(repeats=8).to_dict()) == Measure(repeats=8)


def _quality(
    *,
    status: str = "pass",
    speed: list[float] | None = None,
    compile_s: float = 10.0,
    calibration_s: float = 0.03,
    calibration_spread: float = 0.0,
    state: str = "cold",
    machine: dict | None = None,
) -> QualityReport:
    """One rank's quality as the rank report carries it (typed, compile_guard.contracts.rank_report)."""
    samples = speed or [1.1] * 20
    graphs = [
        {"name": "0/0 forward", "wall_s": compile_s, "cache": "miss", "ratio": round(compile_s / calibration_s, 2)}
    ]
    return QualityReport(
        accuracy={
            "reference": "fp64",
            "why": "",
            "outputs": [
                {
                    "name": "call0",
                    "status": status,
                    "ratio": 1.1 if status == "pass" else 400.0,
                    "dtype": "float32",
                    "shape": [2],
                    "tolerance": 1e-4,
                    "detail": "" if status == "pass" else "rmse from fp64 ...",
                    "worst": {"index": [1], "compiled": 0.5, "reference": 0.6},
                }
            ],
        },
        machine=machine or MACHINE,
        speed={
            "basis": "local",
            "speedup": stats.median(samples),
            "spread": [stats.quantile(samples, 0.25), stats.quantile(samples, 0.75)],
            "samples": samples,
            "repeats": len(samples),
            "eager_ms": 1.0,
            "compiled_ms": 1.0 / stats.median(samples),
        },
        compile_time={
            state: {
                "state": state,
                "basis": "cpu",
                "total_s": compile_s,
                "calibration_s": calibration_s,
                "calibration_spread": calibration_spread,
                "ratio": round(compile_s / calibration_s, 2),
                "graphs": graphs,
            }
        },
        memory={"measured": False, "why": "n/a on cpu"},
    )


MACHINE = {"cpu": "AMD EPYC", "isa": ["avx2", "fma"], "cores": 2, "gpu": "", "driver": ""}


def _judged(base: dict, run: dict, judging: Judging = Judging()) -> dict[str, str]:
    base_q = {"rank0": rules.baseline_entry(base), "rank1": rules.baseline_entry(base)} if base else {}
    rows, _lines, _timings = quality_rows.rows(base_q, [("rank0", run), ("rank1", run)], judging)
    return {r.metric: r.verdict for r in rows}


def test_a_baseline_without_quality_reports_and_never_fails() -> None:
    verdicts = _judged({}, _quality(status="fail", speed=[0.5] * 20, compile_s=60))
    assert set(verdicts.values()) == {OK}


def test_accuracy_pass_to_fail_is_a_regression_fail_to_fail_is_not() -> None:
    assert _judged(_quality(), _quality(status="fail"))["accuracy"] == REGRESSION
    assert _judged(_quality(status="fail"), _quality(status="fail"))["accuracy"] == OK


def _around(center: float, sd: float, n: int = 20, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(center, sd) for _ in range(n)]


def test_speed_needs_significance_and_more_than_half_its_factor() -> None:
    """Each half of the speed rule decides a case alone: remove either and one of these verdicts flips."""
    metric = rules.SPEEDUP
    base = _quality(speed=_around(1.50, 0.005))
    assert _judged(base, _quality(speed=_around(1.50, 0.005, seed=4)))[metric] == OK
    assert _judged(base, _quality(speed=_around(1.50 / 1.20, 0.005)))[metric] == REGRESSION  # 20 %: both halves
    # 2 % slower, significant with a quiet machine's noise (se ~0.3 %) but under half the factor (2.4 %): passes;
    # without the cut it would fail
    quiet = Judging(speed_noise=0.001)
    slightly = _quality(speed=_around(1.50 / 1.02, 0.002))
    assert _judged(base, slightly, quiet)[metric] == OK
    assert _judged(base, slightly, Judging(speed_noise=0.001, speed_factor=1.02))[metric] == REGRESSION
    # 10 % slower by the median, but samples spread over x2: not significant, passes; without the test it would fail
    noisy = _quality(speed=[1.0, 2.0, 1.36, 0.8, 2.2, 1.36, 1.0, 1.9])
    assert stats.median(noisy.speed["samples"]) == pytest.approx(1.36)
    assert _judged(base, noisy)[metric] == OK
    assert _judged(base, noisy, Judging(alpha=0.45))[metric] == REGRESSION


def test_compile_time_needs_significance_half_its_factor_the_floor_and_the_same_state() -> None:
    """Judged by CPU seconds against the same machine kind's; each half of the rule decides a case alone."""
    metric = "compile time (cold)"
    base = _quality(compile_s=10.0)
    steady = Judging(compile_noise=0.03)  # a machine whose compiles move 3 % between runs
    assert _judged(base, _quality(compile_s=16.0), steady)[metric] == REGRESSION  # x1.6: significant, > x1.072, +6 s
    assert _judged(base, _quality(compile_s=16.0))[metric] == OK  # the default noise (20 %): x1.6 is not significant
    assert _judged(base, _quality(compile_s=10.3), steady)[metric] == OK  # x1.03: under half of x1.15, under 1 s
    # x1.05 on a 100 s compile: +5 s and significant with little noise, but under half the factor: passes
    big = _quality(compile_s=100.0)
    assert _judged(big, _quality(compile_s=105.0), Judging(compile_noise=0.005))[metric] == OK
    assert _judged(big, _quality(compile_s=105.0), Judging(compile_noise=0.005, compile_factor=1.05))[metric] == (
        REGRESSION
    )
    # x1.3 on a machine whose compiles move 20 % between runs: not significant, passes; on a steadier one it fails
    assert _judged(base, _quality(compile_s=13.0), Judging(compile_noise=0.2))[metric] == OK
    assert _judged(base, _quality(compile_s=13.0), Judging(compile_noise=0.03))[metric] == REGRESSION
    tiny = _quality(compile_s=0.3)
    assert _judged(tiny, _quality(compile_s=0.9), steady)[metric] == OK  # x3 but +0.6 s: under the 1 s floor
    warm = _judged(base, _quality(compile_s=60.0, state="warm"), steady)
    assert warm["compile time (warm)"] == OK  # the baseline has no warm entry: not compared
    alone = _quality(compile_s=30.0)
    alone.compile_time["cold"]["alone"] = True  # measured each rank in turn: not comparable with one in-run
    assert _judged(base, alone)[metric] == rules.NOT_COMPARABLE


def test_a_baseline_of_several_runs_measures_its_machines_noise() -> None:
    """`baseline refresh --runs 20` keeps every run's speedup and compile seconds: the judge compares with their
    mean and takes their spread (pooled with the assumed 3.5 %) as this machine's noise: on a steady machine a 6 %
    loss then fails, where one run's baseline cannot see it."""
    metric = rules.SPEEDUP
    rng = random.Random(1)
    runs = [_quality(speed=_around(1.50 * (1 + rng.gauss(0, 0.003)), 0.002, seed=i)) for i in range(20)]
    pooled = rules.pool_runs([{"rank0": rules.baseline_entry(q)} for q in runs])
    assert len(pooled["rank0"]["speed"]["runs"]) == 20 and len(pooled["rank0"]["compile_time"]["cold"]["runs"]) == 20
    slower = _quality(speed=_around(1.50 / 1.06, 0.002, seed=11))
    rows, lines, timings = quality_rows.rows(pooled, [("rank0", slower)], Judging())
    assert {r.metric: r.verdict for r in rows}[metric] == REGRESSION, lines
    assert timings["rank0"]["speed"]["noise_from"] == "20 baseline runs" and timings["rank0"]["speed"]["noise"] < 0.02
    one = {"rank0": rules.baseline_entry(runs[0])}
    rows, _, timings = quality_rows.rows(one, [("rank0", slower)], Judging())
    assert {r.metric: r.verdict for r in rows}[metric] == OK  # 6 % < the MDE of an assumed 3.5 % noise
    assert timings["rank0"]["speed"]["noise_from"] == "--speed-noise"


def test_timings_against_another_machine_are_not_comparable_and_never_fail() -> None:
    """A baseline from another CPU: speed and compile time read "not comparable (baseline from ...)", even for a
    run three times slower; accuracy is judged as ever."""
    other = {**MACHINE, "cpu": "Intel Xeon", "isa": ["avx2", "avx512f", "fma"]}
    base = _quality(machine=other)
    run = _quality(status="fail", speed=[0.5] * 20, compile_s=30.0)
    rows, lines, timings = quality_rows.rows(
        {"rank0": rules.baseline_entry(base), "rank1": rules.baseline_entry(base)},
        [("rank0", run), ("rank1", run)],
        Judging(),
    )
    verdicts = {r.metric: r.verdict for r in rows}
    assert verdicts[rules.SPEEDUP] == rules.NOT_COMPARABLE
    assert verdicts["compile time (cold)"] == rules.NOT_COMPARABLE
    assert verdicts["accuracy"] == REGRESSION
    assert any("not comparable (baseline from Intel Xeon, avx512f, 2 cores" in line for line in lines), lines
    assert timings["rank0"]["speed"]["judged"] is False and "Intel Xeon" in timings["rank0"]["speed"]["why"]
    passed, problems = policy.outcome([r for r in rows if r.metric != "accuracy"], allow_improvement=False, strict=True)
    assert passed, problems  # never a failure, not even under --strict
    no_machine = {k: v for k, v in rules.baseline_entry(_quality()).items() if k != "machine"}
    rows, lines, _ = quality_rows.rows({"rank0": no_machine}, [("rank0", run)], Judging())
    assert {r.metric: r.verdict for r in rows}[rules.SPEEDUP] == rules.NOT_COMPARABLE
    assert any("records no machine" in line for line in lines)


def test_timings_report_mode_shows_them_and_judges_none() -> None:
    verdicts = _judged(_quality(), _quality(speed=[0.5] * 20, compile_s=60.0), Judging(timings="report"))
    assert verdicts[rules.SPEEDUP] == rules.REPORTED
    assert verdicts["compile time (cold)"] == rules.REPORTED


def test_every_run_states_its_minimum_detectable_effect() -> None:
    """Judged or not regressed, each rank's speed and compile time carry p and the MDE for --json."""
    base = _quality(speed=_around(1.5, 0.01))
    _rows, lines, timings = quality_rows.rows(
        {"rank0": rules.baseline_entry(base)}, [("rank0", _quality(speed=_around(1.5, 0.01, seed=9)))], Judging()
    )
    speed = timings["rank0"]["speed"]
    assert speed["judged"] and not speed["regressed"] and 0 < speed["mde"] < 1 and 0 < speed["p"] <= 1
    assert timings["rank0"]["compile_time"]["cold"]["mde"] > 0
    assert any("MDE" in line for line in lines)


def test_refresh_keeps_the_states_it_did_not_measure_from_the_same_machine_only() -> None:
    old = {"rank0": rules.baseline_entry(_quality(state="cold"))}
    new = {"rank0": rules.baseline_entry(_quality(state="warm", compile_s=2.0))}
    kept, notes = rules.keep_states(new, old)
    assert sorted(kept["rank0"]["compile_time"]) == ["cold", "warm"]
    assert kept["rank0"]["compile_time"]["warm"]["total_s"] == 2.0 and notes
    elsewhere = {"rank0": rules.baseline_entry(_quality(state="cold", machine={**MACHINE, "cores": 64}))}
    kept, notes = rules.keep_states(new, elsewhere)
    assert sorted(kept["rank0"]["compile_time"]) == ["warm"] and "another machine" in notes[0]


def test_each_failed_output_is_said_once_per_rank() -> None:
    _rows, lines, _timings = quality_rows.rows(
        {"rank0": rules.baseline_entry(_quality()), "rank1": rules.baseline_entry(_quality())},
        [("rank0", _quality(status="fail")), ("rank1", _quality(status="fail"))],
        Judging(),
    )
    said = [line for line in lines if "accuracy" in line]
    assert len(said) == 2 and said[0].startswith("rank0: ") and said[1].startswith("rank1: "), said
    assert "worst element [1]" in said[0] and "tolerance 0.0001" in said[0]


def test_a_baseline_before_quality_loads_with_a_note_and_a_bad_one_is_refused(tmp_path) -> None:
    import json

    from compile_guard.health import baseline as bl

    committed = next(bl.DEFAULT_DIR.glob("tp2-aot__torch-2.13.0*.json"))
    raw = json.loads(committed.read_text())
    assert raw["quality"]["rank0"]["speed"]["samples"], "the committed baseline records quality"
    old = {k: v for k, v in raw.items() if k != "quality"}
    path = tmp_path / committed.name
    path.write_text(json.dumps(old))
    loaded = bl.load(path)
    assert loaded.quality == {} and any("predates quality" in n for n in loaded.notes)
    path.write_text(json.dumps({**raw, "quality": {"rank0": [1, 2]}}))
    with pytest.raises(bl.BaselineError, match="'quality' must be an object of per-rank objects"):
        bl.load(path)


def test_a_rank_report_carries_quality_as_data() -> None:
    from compile_guard.contracts.rank_report import DRIVER, RankReport, RankReportError, RunSummary

    report = RankReport(scenario="s", rank=0, role=DRIVER, run=RunSummary(), quality=None)
    assert json.loads(report.to_json())["quality"] == {}  # absent, as every 0.1 version wrote it
    assert RankReport.from_json(report.to_json(), what="r").quality is None
    measured = dataclasses.replace(report, quality=_quality())
    assert RankReport.from_json(measured.to_json(), what="r") == measured  # typed both ways
    with pytest.raises(RankReportError, match=r"r\.quality is a JSON list, expected an object \(QualityReport\)"):
        RankReport.from_dict({**json.loads(report.to_json()), "quality": []}, what="r")


def test_the_markdown_summary_marks_regressions_and_lists_what_failed() -> None:
    from compile_guard.flow.report import Report, markdown_summary

    rows = [
        {"metric": rules.SPEEDUP, "baseline": "1.2", "per_rank": ["0.9 p=1e-5", "0.9 p=1e-5"], "verdict": REGRESSION},
        {"metric": "graph_breaks", "baseline": 0, "per_rank": [0, 0], "verdict": OK},
    ]
    text = markdown_summary(
        "tp2",
        Report(
            exit_code=1,
            text="",
            data={
                "rows": rows,
                "problems": ["speedup: regression"],
                "quality_lines": ["rank0: speedup 0.9 < 1.2 / 1.15"],
            },
        ),
    )
    assert "FAIL (exit 1)" in text and "| speedup (eager/compiled) | 1.2 | 0.9 p=1e-5 |" in text
    assert "**regression**" in text and "- rank0: speedup 0.9" in text
    failed_run = markdown_summary("tp2", Report(exit_code=3, text="engine failure: ...", data={}))
    assert "engine failure" in failed_run and "```" in failed_run


def test_between_says_what_a_release_did_per_metric() -> None:
    """The version matrix's and `baseline diff`'s quality column: two baselines' first rank, side by side."""
    rng = random.Random(5)
    old = {"rank0": rules.baseline_entry(_quality(speed=[rng.gauss(1.3, 0.02) for _ in range(10)]))}
    new = {
        "rank0": rules.baseline_entry(
            _quality(status="fail", compile_s=20.0, speed=[rng.gauss(0.9, 0.02) for _ in range(10)])
        )
    }
    said = rules.between(old, new)
    assert said[0] == "accuracy 1/1 -> 0/1 (regressed: ['call0'])"
    assert said[1].startswith("speedup 1.29") and said[1].endswith("regression)")  # x1.44 slower, significant
    assert said[2] == "compile cold x333.33 (10.0s) -> x666.67 (20.0s)"
    assert rules.between({}, new) == ["quality: not in one of the baselines"]
    moved = {"rank0": {**new["rank0"], "machine": {**MACHINE, "cpu": "Apple M2"}}}
    assert rules.between(old, moved)[1].startswith("timings not comparable (baseline from AMD EPYC")


def test_the_parity_row_shows_each_ranks_own_cell() -> None:
    rank0 = dataclasses.replace(_quality(), parity={"replicated": ["call0", "call1"]})
    rank1 = dataclasses.replace(_quality(), parity={"replicated": []})  # what rank 1 itself compared, not rank 0's
    rows, _lines, _timings = quality_rows.rows({}, [("rank0", rank0), ("rank1", rank1)], Judging())
    parity = next(r for r in rows if r.metric == rules.PARITY)
    assert parity.per_rank == ["2 equal", "none declared"]
