"""Under a launcher the CLI runs in place: no nested launch, rank 0 writes the report, every rank
exits with the same code, nothing is left behind.

Topologies: torchrun --standalone with 2 workers (TP=2, gloo, CPU, aot_eager); two torchrun
agents of 1 worker each joined by a c10d rendezvous on 127.0.0.1 (--nnodes=2), standing in for
two nodes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest

from compile_guard.launch.launcher import free_port
from compile_guard.launch.leftovers import processes_with_env
from tests.conftest import CLI_TIMEOUT_S, REPO

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
CHECK = ["-m", "compile_guard", "check", "--scenario", "tp2-aot", "--timings", "report"]  # a committed baseline


def _run_all(commands: list[list[str]], run_id: str) -> list[subprocess.CompletedProcess]:
    """Start every command at once (own sessions), wait for all; kill every group on the way out."""
    procs = [
        subprocess.Popen(
            c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        for c in commands
    ]
    try:
        outs = [p.communicate(timeout=CLI_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    left = processes_with_env(f"TORCHELASTIC_RUN_ID={run_id}")
    assert not left, f"processes outlived torchrun: {left}"
    done = zip(commands, procs, outs, strict=True)
    return [subprocess.CompletedProcess(c, p.returncode, out, "") for c, p, out in done]


def _worker_exit_codes(text: str) -> list[int]:
    """Every worker's exit code as torchrun's failure summary lists it (`exitcode  : 2`; -15: torchrun's own SIGTERM
    to the workers still running once one has exited)."""
    return [int(code) for code in re.findall(r"exitcode\s+:\s*(-?\d+)", text)]


def _reports(text: str) -> int:
    return sum(line.startswith("scenario tp2-aot:") for line in text.splitlines())


@pytest.mark.smoke
def test_check_runs_in_place_under_torchrun(tmp_path, processes):
    run_id = uuid.uuid4().hex
    json_path, junit = tmp_path / "check.json", tmp_path / "check.xml"
    [proc] = _run_all(
        [
            [
                *TORCHRUN,
                "--standalone",
                "--nproc-per-node=2",
                f"--rdzv-id={run_id}",
                *CHECK,
                "--json",
                str(json_path),
                "--junit",
                str(junit),
            ]
        ],
        run_id,
    )
    assert proc.returncode == 0, proc.stdout
    assert "launching" not in proc.stdout  # no nested launch
    assert _reports(proc.stdout) == 1 and "PASS" in proc.stdout  # rank 0 alone printed it
    assert json_path.exists() and ET.parse(junit).getroot().find("testsuite").get("failures") == "0"


def test_check_runs_in_place_across_two_torchrun_agents(tmp_path, processes):
    run_id = uuid.uuid4().hex
    endpoint = f"127.0.0.1:{free_port()}"  # the c10d rendezvous both agents meet at
    agents = [
        [
            *TORCHRUN,
            "--nnodes=2",
            f"--node-rank={node}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}",
            *CHECK,
        ]
        for node in (0, 1)
    ]
    procs = _run_all(agents, run_id)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(p.stdout for p in procs)
    assert sum(_reports(p.stdout) for p in procs) == 1  # one report, from global rank 0


@pytest.mark.parametrize(
    "target, code, label",
    [
        ("tests.targets:wrong_on_rank1", 2, "input error"),  # rank 1 refuses its target; rank 0 loses its peer
        (
            "docs.examples.tp_divergence:guarded_value",
            1,
            "compile divergence",
        ),  # one raises, one stopped by its watcher
    ],
)
def test_every_rank_of_a_failed_in_place_run_exits_the_same_code(tmp_path, target, code, label, processes):
    """Topology: torchrun --standalone, 2 workers (TP=2, gloo, CPU, aot_eager). The ranks fail in different ways
    (a ConfigError on one and a lost peer on the other; a verdict raised in one rank's own wait and the other's
    watcher ending its process): each rank settles over every rank's code on torchrun's store, so both exit the
    culprit's CLI code (a rank torchrun kills once the first one has exited shows its SIGTERM, never another
    code)."""
    run_id = uuid.uuid4().hex
    [proc] = _run_all(
        [
            [
                *TORCHRUN,
                "--standalone",
                "--nproc-per-node=2",
                f"--rdzv-id={run_id}",
                "-m",
                "compile_guard",
                "baseline",
                "refresh",
                "--target",
                target,
                "--backend",
                "aot_eager",
                "--baselines",
                str(tmp_path),
            ]
        ],
        run_id,
    )
    assert proc.returncode != 0 and label in proc.stdout, proc.stdout
    # each rank states the code it settled on, then exits with it; torchrun's summary names the first worker that
    # failed, and the others only when it saw them end (torch 2.6-2.8 leave out one it SIGTERMed: timing)
    settled = re.findall(r"settled: this rank's code \d+, the job's cause rank \d+ code \d+ -> exit (\d+)", proc.stdout)
    assert [int(c) for c in settled] == [code, code], proc.stdout
    codes = _worker_exit_codes(proc.stdout)
    assert code in codes and set(codes) <= {code, -signal.SIGTERM}, proc.stdout
