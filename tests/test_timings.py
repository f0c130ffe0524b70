"""Timings judged on the machine they ran on: the machine record, the local replay that times a rank without its
peers, and compile time judged cold without a flag when the cache starts empty. The rules' statistics are in
tests/test_quality.py; the NU rows (a fault of each kind, judged against a baseline written in the same run) in
tests/test_matrix.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from compile_guard.quality import compile_time, machine


def test_a_machine_record_names_its_kind_and_another_kind_is_said_apart() -> None:
    mine = machine.machine()
    assert set(mine) == set(machine.KEYS) and mine["cores"] >= 1 and mine["cpu"]
    assert machine.difference(mine, dict(mine)) is None  # the same kind: comparable
    faster = {**mine, "isa": [*mine["isa"], "avx512f"], "cpu": "Intel Xeon Platinum"}
    said = machine.difference(mine, faster)
    assert said is not None and said.startswith("baseline from Intel Xeon Platinum, avx512f")
    assert "differs: cpu, isa" in said
    assert "records no machine" in (machine.difference(mine, None) or "")
    gpu = {**mine, "gpu": "NVIDIA H100 80GB HBM3", "driver": "580.95"}
    assert "differs: gpu, driver" in (machine.difference(gpu, {**gpu, "gpu": "NVIDIA A100", "driver": "535"}) or "")


def test_an_empty_cache_is_compiled_cold_in_a_directory_of_its_own_then_merged(tmp_path, monkeypatch) -> None:
    """Upgrade day: the inductor cache is empty as the rank starts, so the rank compiles in a private empty
    directory (cold, comparable with the baseline's cold entry) and what it wrote lands in the real cache after."""
    real = tmp_path / "inductor"
    (real / "empty_subdir").mkdir(parents=True)  # directories without files: still empty
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(real))
    with compile_time.cold_if_empty(str(real)) as cold:
        private = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        assert cold and private != real and compile_time.is_empty(str(private))
        (private / "fxgraph" / "ab").mkdir(parents=True)
        (private / "fxgraph" / "ab" / "entry").write_text("compiled")
        (private / "locks").mkdir()
        (private / "locks" / "k.lock").write_text("")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(real) and not private.exists()
    assert (real / "fxgraph" / "ab" / "entry").read_text() == "compiled"
    assert not (real / "locks" / "k.lock").exists()  # inductor's locks are not copied
    with compile_time.cold_if_empty(str(real)) as cold:  # now populated: the run uses it as it is
        assert not cold and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(real)


def test_a_merge_never_replaces_what_the_cache_holds(tmp_path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "x").mkdir(parents=True)
    (target / "x").mkdir(parents=True)
    (source / "x" / "same").write_text("new")
    (source / "x" / "fresh").write_text("fresh")
    (target / "x" / "same").write_text("old")
    assert compile_time.merge_into(str(source), str(target)) == 1
    assert (target / "x" / "same").read_text() == "old" and (target / "x" / "fresh").read_text() == "fresh"
    assert sorted(p.name for p in (target / "x").iterdir()) == ["fresh", "same"]  # no temp file left


def test_the_local_replay_times_a_rank_while_its_peer_waits_longer_than_the_group_timeout(run_ranks, tmp_path) -> None:
    """Topology: 2 ranks, gloo, CPU, a subgroup of both, every group's timeout 3 s. Each in turn
    (quality.speed.alone) serves every collective locally while the other waits: all-reduces by group object and
    by name and an all-gather return at once, buffers unchanged (no peer answered them). Each turn then lasts 5 s,
    longer than the groups' timeout, as a cold compile alone outlasts it (tp2 on torch 2.14.1: a waiting rank's
    barrier timed out at 30 s); the peer waits on the store and goes on. Swapped back, a real all-reduce sums
    1 + 2 = 3."""
    result = run_ranks(["local_replay", "--out", str(tmp_path), "--timeout-s", "3", "--turn-s", "5"], deadline_s=90)
    assert result.outcome == "ok", result.summary()
    for rank in (0, 1):
        said = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert said["unchanged"] and said["functional_unchanged"] and said["why"] == "", said
        assert said["local_s"] < 2.0, said  # no wait on the peer (a collective would have waited out 3 s)
        assert said["real_sum"] == 3.0, said


def test_an_empty_cache_at_start_is_judged_cold_without_a_flag(cli, tmp_path) -> None:
    """Topology: TP=2, gloo, CPU, inductor, the quality example. A baseline with a cold entry (refreshed with
    --compile-time cold), then `check` with no flag and an empty inductor cache: its compile time is judged as
    cold (the state it is in, against the baseline's cold entry, written in this test on this machine); the
    cache it leaves behind serves the next check warm (not judged: the baseline has no warm entry)."""
    target = ["--target", "docs.examples.quality_block:block", "--baselines", str(tmp_path / "baselines")]
    refresh = cli("baseline", "refresh", *target, "--compile-time", "cold")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    cache = tmp_path / "inductor"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}  # absent: empty
    first = cli("check", *target, "--json", str(tmp_path / "first.json"), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    data = json.loads((tmp_path / "first.json").read_text())
    cold = [data["timings"][rank]["compile_time"]["cold"] for rank in ("rank0", "rank1")]
    assert all(c["judged"] and c["mde"] > 0 for c in cold), cold
    assert not compile_time.is_empty(str(cache))  # the cold compile's entries were merged into the cache
    second = cli("check", *target, "--json", str(tmp_path / "second.json"), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = {r["metric"] for r in json.loads((tmp_path / "second.json").read_text())["rows"]}
    assert "compile time (warm)" in rows and "compile time (cold)" not in rows
