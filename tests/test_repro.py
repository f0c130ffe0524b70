"""Repro through the CLI and the launcher. Topology: TP=2, gloo, CPU, aot_eager (graph
counts are dynamo's, the backend only changes speed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from compile_guard.launch.launcher import free_port
from compile_guard.launch.leftovers import processes_with_env
from tests.conftest import REPO

# Per forward: 4 blocks x 5 all-reduces (self q/k norm, self out, cross q norm, cross out,
# FFN down). Dynamo traces Block.forward once as a frame and reuses it across blocks, so
# break and graph counts depend on the frame structure, not on 20; we assert the cliff's
# direction (B > C) and C's exact invariant.


def test_repro_modes_show_the_cliff(tmp_path, processes):
    json_path = tmp_path / "repro.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "compile_guard",
            "repro",
            "--backend",
            "aot_eager",
            "--calls",
            "2",
            "--warmup",
            "2",
            "--deadline-s",
            "180",
            "--log-dir",
            str(tmp_path / "logs"),
            "--json",
            str(json_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(json_path.read_text())["rows"]
    by = {(r["rank"], r["mode"]): r for r in rows}
    for rank in (0, 1):
        a, b, c = by[rank, "A"], by[rank, "B"], by[rank, "C"]
        assert (c["graph_break_count"], c["graph_count"]) == (0, 1)  # funcol: no break
        assert b["graph_break_count"] > 0  # disable() around each collective: a break each
        assert b["graph_count"] > c["graph_count"]
        assert a["graph_count"] == 0  # eager: nothing compiled
    assert "mode" in proc.stdout and "graph_break_count" in proc.stdout  # the table


def test_repro_fails_when_mode_c_breaks():
    """The invariant check itself: rows with a break in mode C are reported per rank."""
    from repro.tp_compile_repro import check_rows

    good = {"mode": "C", "graph_break_count": 0, "graph_count": 1, "checksum": 1.0}
    bad = dict(good, rank=1, graph_break_count=2, graph_count=3)
    problems = check_rows([dict(good, rank=0), bad])
    assert len(problems) == 1 and problems[0].startswith("rank 1 mode C: graph_break_count=2")


def test_repro_usage_error_exits_2(quick_process):
    proc = subprocess.run(
        [sys.executable, "-m", "compile_guard", "repro", "--backend", "tvm"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'tvm'" in proc.stderr


def test_repro_runs_in_place_under_a_launcher(run_ranks_argv):
    """TP=2, gloo, eager only: with RANK/WORLD_SIZE set, `python -m compile_guard repro`
    runs the repro in place on each rank instead of spawning ranks of its own."""
    result = run_ranks_argv([sys.executable, "-m", "compile_guard", "repro", "--modes", "A", "--calls", "1"])
    assert result.ok, result.summary()
    assert "eager_inplace" in result.ranks[0].log_tail  # rank 0 printed the table
    assert "launching" not in result.ranks[0].log_tail  # and did not spawn a launcher


def test_repro_script_runs_under_torchrun(processes):
    """TP=2, gloo, via torchrun itself. torchrun puts its workers in their own sessions, so
    we bound it with SIGTERM (it forwards to workers) and then sweep by our unique port."""
    port = free_port()
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "repro/tp_compile_repro.py",
        "--modes",
        "A,C",
        "--backend",
        "eager",
        "--calls",
        "1",
    ]
    proc = subprocess.Popen(
        torchrun, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    left = sorted(processes_with_env(f"MASTER_PORT={port}"))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"torchrun workers outlived it: {left}"
    assert proc.returncode == 0, out
    assert "functional" in out
