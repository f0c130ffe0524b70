"""The run modes, in process: which one the CLI picks, who writes the output, what a launched mode's leader runs.
(Both modes running a real rank program: tests/test_in_place.py, tests/test_check.py.)"""

from __future__ import annotations

import dataclasses

import pytest

from compile_guard.launch import modes
from compile_guard.launch.modes import InPlace, Launched, Output
from compile_guard.ranks import check


@pytest.mark.parametrize(
    ("env", "expected", "leader"),
    [
        ({}, Launched, True),  # nobody set RANK: this process launches the ranks and speaks for them
        ({"RANK": "0", "WORLD_SIZE": "2"}, InPlace, True),  # torchrun's rank 0 speaks for the job
        ({"RANK": "1", "WORLD_SIZE": "2"}, InPlace, False),  # the other ranks judge the same data, quietly
    ],
)
def test_the_mode_is_chosen_once_from_the_launcher_env(monkeypatch, env, expected, leader):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mode = modes.chosen()
    assert type(mode) is expected and mode.out.leader is leader and mode.launches is (expected is Launched)


def test_only_the_leader_prints_and_writes(capsys):
    written: list[str] = []
    for leader in (False, True):
        out = Output(leader=leader)
        out.print("to stdout")
        out.print("to stderr", err=True)
        out.write(written.append, f"leader={leader}")
    captured = capsys.readouterr()
    assert captured.out == "to stdout\n" and captured.err == "to stderr\n"  # once: the leader's
    assert written == ["leader=True"]


def test_a_launched_mode_runs_the_leaders_command_itself():
    assert Launched().leader_runs("matrix", lambda: 7, timeout_s=1.0) == 7


def test_a_rank_program_is_frozen_data():
    program = modes.RankProgram(module=check, argv=("--spec", "{}"), report="r{rank}.json", nprocs=2, deadline_s=60.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.nprocs = 3  # type: ignore[misc]
