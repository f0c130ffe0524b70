"""How a command runs a rank program: one interface, two run modes, chosen once by the CLI (`chosen()`).

- `Launched`: this process supervises N rank processes of its own (`launch.launcher`: own sessions, a
  deadline, the whole group killed on the first failure); each runs `python -m <program> ... --out DIR` and
  writes its report file there.
- `InPlace`: a launcher (torchrun, srun through its wrapper) already made this process one rank of N; the
  program's body runs in this very process, every rank's report is gathered over the job's world group, so
  every rank judges the same data; a failed run's exit code is settled across the ranks (`in_place.settle`).

The launch layer knows no rank program: the command that chose one passes its module in a `RankProgram`; the
module offers `main(argv)` (launched: `python -m` its `__name__`) and `in_place(argv) -> (DistConfig, body)` (in
place; the body returns the report's JSON text). No program is named by text anywhere in the harness.
Output goes through the mode's `Output`, which only the process that speaks for the job writes: commands never
ask which rank they are.
"""

from __future__ import annotations

import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from compile_guard.launch import in_place
from compile_guard.launch.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.verdict import Cli
from engine import knobs


@dataclass(frozen=True, kw_only=True)
class RankProgram:
    # the program, as its module (compile_guard.ranks.check, ranks.serve, a test's): launched, `python -m` its
    # __name__ with *argv --out DIR per rank; in place, module.in_place(argv)
    module: ModuleType
    argv: tuple[str, ...]  # the program's own arguments
    report: str  # the file each launched rank writes into DIR, e.g. "probe-rank{rank}.json"
    nprocs: int  # ranks to launch (in place: the launcher's)
    deadline_s: float  # launched: every rank killed past it
    env: dict[str, str] = field(default_factory=dict)  # launched: every rank's extra environment
    rank_env: dict[int, dict[str, str]] = field(default_factory=dict)  # launched: one rank's extra environment
    followed_rank: int = 0  # launched: whose output lines `on_line` sees
    title: str = ""  # launched: named in the lines that say the ranks start and end ("": say nothing)


@dataclass(frozen=True, kw_only=True)
class Ran:
    reports: list[str] | None  # every rank's report (JSON text) in rank order; None when the run failed
    code: int  # in place: this rank's CLI exit code, settled with its peers; launched: 0 (`result` says why)
    result: LaunchResult | None  # launched: how every rank ended; None in place (the launcher has that)
    log_dir: Path | None  # launched: the ranks' logs; None in place


@dataclass(frozen=True)
class Output:
    """A command's output: printed and written by the process that speaks for the job only (`leader`)."""

    leader: bool

    def print(self, *parts: Any, err: bool = False) -> None:
        if self.leader:
            print(*parts, file=sys.stderr if err else sys.stdout, flush=True)

    def write(self, writer: Callable[..., None], *args: Any) -> None:
        """`writer(*args)` (write_json(path, data), bl.write(path, baseline), ...) on the leader only."""
        if self.leader:
            writer(*args)


class RunMode(ABC):
    launches: bool  # whether run() starts rank processes (and so speaks of them); in place the launcher does
    out: Output

    @abstractmethod
    def run(self, program: RankProgram, *, log_dir: Path | None, on_line: Callable[[str], None] | None = None) -> Ran:
        """Run `program` on every rank; its reports come back in rank order (None when the run failed). `log_dir`:
        where launched ranks write their logs and reports (None: a new temp dir)."""

    @abstractmethod
    def leader_runs(self, name: str, command: Callable[[], int], *, timeout_s: float) -> int:
        """A command that supervises rank processes of its own (matrix, overlap): one process runs it; every
        process returns its exit code (the others wait up to `timeout_s` for it)."""


class Launched(RunMode):
    launches = True

    def __init__(self) -> None:
        self.out = Output(leader=True)

    def run(self, program: RankProgram, *, log_dir: Path | None, on_line: Callable[[str], None] | None = None) -> Ran:
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_ranks_"))
        if program.title:
            self.out.print(f"{program.title}: launching {program.nprocs} ranks (logs: {log_dir})")
        started = time.monotonic()
        argv = python_module_argv(program.module, *program.argv, "--out", str(log_dir))
        result = launch(
            LaunchSpec(
                argv=argv,
                nprocs=program.nprocs,
                deadline_s=program.deadline_s,
                log_dir=log_dir,
                env=program.env,
                rank_env=program.rank_env,
                on_line=on_line,
                followed_rank=program.followed_rank,
            )
        )
        if program.title:
            self.out.print(f"  ranks done in {time.monotonic() - started:.1f}s")
        paths = [log_dir / program.report.format(rank=r) for r in range(program.nprocs)]
        reports = [p.read_text() for p in paths] if result.ok and all(p.exists() for p in paths) else None
        return Ran(reports=reports, code=Cli.OK, result=result, log_dir=log_dir)

    def leader_runs(self, name: str, command: Callable[[], int], *, timeout_s: float) -> int:
        return command()


class InPlace(RunMode):
    launches = False

    def __init__(self) -> None:
        self.out = Output(leader=knobs.read("RANK") == 0)

    def run(self, program: RankProgram, *, log_dir: Path | None, on_line: Callable[[str], None] | None = None) -> Ran:
        """`log_dir` and `on_line` are the launcher's business here: each rank logs where the launcher put it."""
        config, body = program.module.in_place(list(program.argv))
        reports, code = in_place.run_body(config, body)
        return Ran(reports=reports, code=code, result=None, log_dir=None)

    def leader_runs(self, name: str, command: Callable[[], int], *, timeout_s: float) -> int:
        return in_place.leader_runs(name, command, timeout_s=timeout_s)


def chosen() -> RunMode:
    """In place when a launcher already set RANK and WORLD_SIZE for this process, else launched."""
    return InPlace() if knobs.under_torchrun() else Launched()
