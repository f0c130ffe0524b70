"""Baseline I/O: round trip, corrupt and foreign files, and concurrent refreshes."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
from pathlib import Path

import pytest

from compile_guard.health import baseline as bl
from compile_guard.health.schema import BASELINE_KEYS, default_of

FACTORS = {
    "scenario": "tp2",
    "torch": "2.13.0+cpu",
    "device_type": "cpu",
    "compile_backend": "inductor",
    "dist_backend": "gloo",
    "world_size": 2,
    "config_hash": "abc",
}
METRICS = {
    **{key: default_of(key) for key in BASELINE_KEYS},  # every metric of the schema, today's and future ones
    "unique_graphs": 1,
    "graph_breaks": 0,
    "recompiles": 0,
    "steady_recompiles": 0,
    "break_reasons": {},
    "graph_fingerprints": ["f1"],
    "collectives_in_graphs": 20,
    "guard_count": 10,
    "graph_ops": 5,
    "graph_nodes": 9,
    "schedule_digest": "d1",
    "effective_backend": {"attn_impl": "sdpa"},
}


def _baseline(**metrics) -> bl.Baseline:
    return bl.Baseline(factors=bl.Factors(**FACTORS), metrics={**METRICS, **metrics}, break_sites=[])


def test_round_trip_is_stable_and_diff_friendly(tmp_path):
    path = tmp_path / bl.file_name(FACTORS)
    bl.write(path, _baseline())
    assert bl.load(path) == _baseline()
    text = path.read_text()
    assert text == bl.dumps(_baseline())  # byte-stable: same facts, same file
    assert '  "graph_breaks": 0,\n' in text  # one fact a line, sorted keys
    assert path.name == "tp2__torch-2.13.0_cpu__cpu__inductor__gloo__ws2.json"
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "schema 'list' is not 1"),
        ('{"schema": 7}', "schema 7 is not 1"),
        ('{"schema": 1, "factors": {}, "metrics": {}, "break_sites": []}', "'factors' lacks"),
    ],
)
def test_corrupt_or_wrong_schema_names_file_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(bl.BaselineError, match=message) as info:
        bl.load(path)
    assert str(path) in str(info.value)  # names the file
    assert "baseline refresh" in str(info.value)  # and the fix


def test_missing_file(tmp_path):
    with pytest.raises(bl.BaselineError, match="no such file"):
        bl.load(tmp_path / "nope.json")


def test_find_prefers_exact_then_other_torch_versions(tmp_path):
    assert bl.find(tmp_path, FACTORS) is None
    foreign = {**FACTORS, "torch": "2.14.1+cu130"}
    bl.write(
        tmp_path / bl.file_name(foreign), bl.Baseline(factors=bl.Factors(**foreign), metrics=METRICS, break_sites=[])
    )
    path, exact = bl.find(tmp_path, FACTORS)
    assert not exact and "2.14.1" in path.name  # compared across versions, flagged as such
    bl.write(tmp_path / bl.file_name(FACTORS), _baseline())
    assert bl.find(tmp_path, FACTORS) == (tmp_path / bl.file_name(FACTORS), True)
    other_backend = {**FACTORS, "compile_backend": "aot_eager"}
    assert bl.find(tmp_path, other_backend) is None  # never matched across backends


def _writer(path: str, breaks: int, rounds: int) -> None:
    for _ in range(rounds):
        bl.write(Path(path), _baseline(graph_breaks=breaks))


def test_concurrent_refreshes_never_tear_the_file(tmp_path):
    """4 writer processes race 50 writes each while this process keeps reading."""
    path = tmp_path / "race.json"
    bl.write(path, _baseline())
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(path), i, 50)) for i in range(4)]
    for w in writers:
        w.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        seen.add(bl.load(path).metrics["graph_breaks"])  # raises on a torn file
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert json.loads(path.read_text())["metrics"]["graph_breaks"] in range(4)
    assert not list(tmp_path.glob(".*tmp"))
    assert seen  # the reader did read while writers wrote


def test_a_metric_newer_than_the_file_loads_with_its_default_and_a_note(tmp_path):
    path = tmp_path / "old.json"
    raw = _baseline().to_json()
    del raw["metrics"]["graph_nodes"]
    path.write_text(json.dumps(raw))
    loaded = bl.load(path)
    assert loaded.metrics["graph_nodes"] == 0  # the schema's default
    assert loaded.notes == ("old.json predates metric 'graph_nodes': read as 0 (refresh to record it)",)


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("metrics", "graph_breaks", "0", "metrics.graph_breaks is str '0', expected int"),
        ("metrics", "break_reasons", [], "metrics.break_reasons is list [], expected dict"),
        ("metrics", "unique_graphs", True, "metrics.unique_graphs is bool True, expected int"),
        ("factors", "world_size", "2", "factors.world_size is str '2', expected int"),
        ("factors", "torch", 2.13, "factors.torch is float 2.13, expected str"),
    ],
)
def test_every_field_is_type_checked(tmp_path, section, key, value, expected):
    raw = _baseline().to_json()
    raw[section][key] = value
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(bl.BaselineError, match=re.escape(expected)) as info:
        bl.load(path)
    assert str(path) in str(info.value)


def test_a_fifo_or_an_oversized_file_is_refused_not_read(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(bl.BaselineError, match="not a regular file"):
        bl.load(fifo)  # would block forever if opened
    big = tmp_path / "big.json"
    big.write_text(" " * (bl.MAX_BYTES + 1))
    with pytest.raises(bl.BaselineError, match="over the 1048576"):
        bl.load(big)


def test_written_files_are_world_readable(tmp_path):
    path = tmp_path / bl.file_name(FACTORS)
    bl.write(path, _baseline())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_foreign_versions_are_ordered_as_versions(tmp_path):
    for version in ("2.9.0+cpu", "2.12.0+cpu", "2.10.1+cpu"):
        factors = {**FACTORS, "torch": version}
        bl.write(
            tmp_path / bl.file_name(factors),
            bl.Baseline(factors=bl.Factors(**factors), metrics=METRICS, break_sites=[]),
        )
    path, exact = bl.find(tmp_path, {**FACTORS, "torch": "2.13.0+cpu"})
    assert not exact and "torch-2.12.0_cpu" in path.name  # not 2.9.0, which sorts last as text


def test_baseline_diff_renames_a_break_only_across_torch_releases(capsys):
    """`baseline diff`/refresh compare B as A keys it: a title renamed by a release (same sites, same counts) is
    one break across releases, and stays a new reason on one torch (there, the program changed)."""
    from compile_guard.commands.baseline import _as_in

    def side(torch_version: str, title: str) -> bl.Baseline:
        return bl.Baseline(
            factors=bl.Factors(**{**FACTORS, "torch": torch_version}),
            metrics={**METRICS, "graph_breaks": 1, "break_reasons": {title: 1}},
            break_sites=[{"reason": "?", "key": title, "site": "m.py:3", "count": 1}],
        )

    old = side("2.7.1+cu126", "Tensor.item")
    assert _as_in(old, side("2.8.0+cu128", "Unsupported Tensor.item() call"))[0]["break_reasons"] == {"Tensor.item": 1}
    assert "renamed by the torch release" in capsys.readouterr().out
    assert _as_in(old, side("2.7.1+cu126", "Unsupported Tensor.item() call"))[0]["break_reasons"] == {
        "Unsupported Tensor.item() call": 1
    }
