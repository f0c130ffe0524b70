"""compile_guard.quality in one process: the statistics, the accuracy rule, the judging against a baseline, the
state a measurement keeps. The multi-rank parts (parity, the NU rows) run as matrix rows (tests/test_matrix.py)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from compile_guard.health.policy import OK, REGRESSION
from compile_guard.quality import accuracy, judge, stats
from compile_guard.quality.measure import copy_value, in_fp64
from compile_guard.quality.options import Judging, Measure, QualityOptionError


def test_quantiles_interpolate_like_numpy() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0


def test_mann_whitney_matches_the_normal_approximation_by_hand() -> None:
    # a = [1,2,3] below b = [4,5,6]: U_a = 0; mean n1*n2/2 = 4.5; variance 3*3*7/12 = 5.25 (no ties);
    # z = (0 - 4.5 + 0.5) / sqrt(5.25) = -1.7457; p = Phi(z) = 0.04043
    assert stats.mann_whitney_less([1, 2, 3], [4, 5, 6]) == pytest.approx(0.04043, abs=1e-4)
    assert stats.mann_whitney_less([4, 5, 6], [1, 2, 3]) > 0.95  # the other direction is not "less"
    assert stats.mann_whitney_less([1, 1, 1], [1, 1, 1]) == 1.0  # every value tied: no evidence


def test_mann_whitney_does_not_call_two_draws_of_one_distribution_different() -> None:
    rng = random.Random(7)
    false_alarms = sum(
        stats.mann_whitney_less([rng.gauss(1, 0.1) for _ in range(20)], [rng.gauss(1, 0.1) for _ in range(20)]) < 0.01
        for _ in range(500)
    )
    assert false_alarms <= 15  # alpha 0.01 of 500 = 5 expected; 15 leaves room for the approximation


def _gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def test_accuracy_passes_reassociation_noise_and_fails_another_gelu() -> None:
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    eager, fp64 = _gelu(x, "tanh"), _gelu(x.double(), "tanh")
    noisy = eager + eager.abs() * 2e-7  # a few ulps: what fusion and reassociation leave
    healthy = accuracy.judge_output("out", noisy, eager, eager.clone(), fp64)
    assert healthy["status"] == accuracy.PASS, healthy
    erf = accuracy.judge_output("out", _gelu(x, "none"), eager, eager.clone(), fp64)
    assert erf["status"] == accuracy.FAIL and erf["ratio"] > 100, erf  # erf vs tanh: ~1e-4 from fp64, eager ~1e-7
    assert erf["worst"]["index"] and "rmse from fp64" in erf["detail"]


def test_accuracy_more_accurate_than_eager_passes_though_not_close() -> None:
    # compiled equal to the fp64 reference: far from a bad eager, closer to the truth: same() passes it too
    fp64 = torch.linspace(-1, 1, 100, dtype=torch.float64)
    eager = (fp64 + 1e-3).float()
    assert accuracy.judge_output("o", fp64.float(), eager, eager.clone(), fp64)["status"] == accuracy.PASS


def test_accuracy_states_nondeterministic_eager_and_judges_without_fp64() -> None:
    a = torch.ones(4)
    said = accuracy.judge_output("o", a, a, a + 1, None)
    assert said["status"] == accuracy.NONDETERMINISTIC
    assert accuracy.judge_output("o", a + 1e-3, a, a.clone(), None)["status"] == accuracy.FAIL  # eager only: 1e-4
    assert (
        accuracy.judge_output("o", torch.tensor([1, 2]), torch.tensor([1, 3]), torch.tensor([1, 3]), None)["status"]
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
    with pytest.raises(QualityOptionError, match="--repeats 2"):
        Measure(repeats=2)
    with pytest.raises(QualityOptionError, match="--speed-factor 0.9"):
        Judging(speed_factor=0.9)
    assert Measure.from_dict(Measure(repeats=7).to_dict()) == Measure(repeats=7)


def _quality(
    *,
    status: str = "pass",
    speed: list[float] | None = None,
    compile_s: float = 10.0,
    calibration_s: float = 0.03,
    state: str = "cold",
) -> dict:
    samples = speed or [1.1] * 20
    graphs = [
        {"name": "0/0 forward", "wall_s": compile_s, "cache": "miss", "ratio": round(compile_s / calibration_s, 2)}
    ]
    return {
        "accuracy": {
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
        "speed": {
            "basis": "cpu",
            "speedup": stats.median(samples),
            "spread": [stats.quantile(samples, 0.25), stats.quantile(samples, 0.75)],
            "samples": samples,
            "repeats": len(samples),
            "eager_ms": 1.0,
            "compiled_ms": 1.0 / stats.median(samples),
        },
        "compile_time": {
            state: {
                "state": state,
                "basis": "cpu",
                "total_s": compile_s,
                "calibration_s": calibration_s,
                "ratio": round(compile_s / calibration_s, 2),
                "graphs": graphs,
            }
        },
        "memory": {"measured": False, "why": "n/a on cpu"},
    }


def _judged(base: dict, run: dict, judging: Judging = Judging()) -> dict[str, str]:
    base_q = {"rank0": judge.baseline_entry(base), "rank1": judge.baseline_entry(base)} if base else {}
    rows, _lines = judge.rows(base_q, [("rank0", run), ("rank1", run)], judging)
    return {r.metric: r.verdict for r in rows}


def test_a_baseline_without_quality_reports_and_never_fails() -> None:
    verdicts = _judged({}, _quality(status="fail", speed=[0.5] * 20, compile_s=60))
    assert set(verdicts.values()) == {OK}


def test_accuracy_pass_to_fail_is_a_regression_fail_to_fail_is_not() -> None:
    assert _judged(_quality(), _quality(status="fail"))["accuracy"] == REGRESSION
    assert _judged(_quality(status="fail"), _quality(status="fail"))["accuracy"] == OK


def test_speed_needs_both_the_factor_and_significance() -> None:
    rng = random.Random(3)
    base = _quality(speed=[rng.gauss(1.10, 0.05) for _ in range(20)])
    same = _quality(speed=[rng.gauss(1.10, 0.05) for _ in range(20)])
    slower = _quality(speed=[rng.gauss(0.85, 0.05) for _ in range(20)])  # 1.10 / 0.85 = 1.29 > 1.2
    slightly = _quality(speed=[rng.gauss(1.02, 0.01) for _ in range(20)])  # significant, but 1.10 / 1.02 < 1.2
    assert _judged(base, same)["speedup (eager/compiled)"] == OK
    assert _judged(base, slower)["speedup (eager/compiled)"] == REGRESSION
    assert _judged(base, slightly)["speedup (eager/compiled)"] == OK
    noisy = _quality(speed=[0.5, 1.9] * 2)  # median 1.2 and 4 samples of no consistent side: not significant
    assert _judged(base, noisy)["speedup (eager/compiled)"] == OK


def test_compile_time_needs_the_factor_and_the_floor_and_the_same_state() -> None:
    base = _quality(compile_s=10.0)
    metric = "compile time (cold) / calibration"
    assert _judged(base, _quality(compile_s=16.0))[metric] == REGRESSION  # x1.6 > 1.3, +6 s > 1 s
    assert _judged(base, _quality(compile_s=12.0))[metric] == OK  # x1.2 < 1.3
    # a machine twice as slow: compile and calibration both doubled, the ratio unchanged
    assert _judged(base, _quality(compile_s=20.0, calibration_s=0.06))[metric] == OK
    tiny = _quality(compile_s=0.3)
    assert _judged(tiny, _quality(compile_s=0.9))[metric] == OK  # x3 but +0.6 s: under the 1 s floor
    warm = _judged(base, _quality(compile_s=60.0, state="warm"))
    assert warm["compile time (warm) / calibration"] == OK  # the baseline has no warm entry: not compared


def test_refresh_keeps_the_states_it_did_not_measure() -> None:
    old = {"rank0": judge.baseline_entry(_quality(state="cold"))}
    new = {"rank0": judge.baseline_entry(_quality(state="warm", compile_s=2.0))}
    kept, notes = judge.keep_states(new, old)
    assert sorted(kept["rank0"]["compile_time"]) == ["cold", "warm"]
    assert kept["rank0"]["compile_time"]["warm"]["total_s"] == 2.0 and notes


def test_each_failed_output_is_said_once_per_rank() -> None:
    _rows, lines = judge.rows(
        {"rank0": judge.baseline_entry(_quality()), "rank1": judge.baseline_entry(_quality())},
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
    from compile_guard.contracts.rank_report import DRIVER, RankReport, RankReportError

    report = RankReport(scenario="s", rank=0, role=DRIVER, run={}, quality={})
    assert RankReport.from_json(report.to_json(), what="r").quality == {}
    with pytest.raises(RankReportError, match="field quality is list"):
        RankReport(scenario="s", rank=0, role=DRIVER, run={}, quality=[])  # type: ignore[arg-type]


def test_the_markdown_summary_marks_regressions_and_lists_what_failed() -> None:
    from compile_guard.flow.report import Report, markdown_summary

    rows = [
        {"metric": judge.SPEEDUP, "baseline": "1.2", "per_rank": ["0.9 p=1e-5", "0.9 p=1e-5"], "verdict": REGRESSION},
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
    old = {"rank0": judge.baseline_entry(_quality(speed=[rng.gauss(1.3, 0.02) for _ in range(10)]))}
    new = {
        "rank0": judge.baseline_entry(
            _quality(status="fail", compile_s=20.0, speed=[rng.gauss(0.9, 0.02) for _ in range(10)])
        )
    }
    said = judge.between(old, new)
    assert said[0] == "accuracy 1/1 -> 0/1 (regressed: ['call0'])"
    assert said[1].startswith("speedup 1.29") and said[1].endswith("regression)")  # 1.29 / 0.90 > 1.2, p < 0.01
    assert said[2] == "compile cold x333.33 (10.0s) -> x666.67 (20.0s)"
    assert judge.between({}, new) == ["quality: not in one of the baselines"]
