"""Shared helpers: every multi-process test goes through the launcher with a deadline,
and asserts afterwards that nothing it started is still alive.

Test tiers. A test that starts processes does it through a fixture here (`cli`, `processes`,
`run_ranks`, `run_ranks_argv`, the plugin's `rank_runner` / `compile_guard_check`); using one
marks it `ranks`, and any other test that tries to start a process fails at once saying so (so
the marker cannot be forgotten). `quick_process` is the one exception: a test that starts a
single short process which starts no rank (`--help`, an input error refused before any launch)
stays in the fast tier. `make test-fast` runs `-m "not ranks or smoke"`: every
in-process test plus the `smoke` handful, one per surface; `make test` runs everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# In-process compiles in this process compile on its own thread, as the launcher has every rank do: torch 2.6's
# inductor otherwise starts a pool of compile workers (a subprocess the fast tier's guard below refuses)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import pytest

from compile_guard.commands.pytest_plugin import launch_checked
from compile_guard.launch.launcher import LaunchResult, LaunchSpec
from compile_guard.launch.supervision import die_with_parent

REPO = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module: tests that share a benchmark's code (its survey, its browser) load it so."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A terminated test run tears down as an interrupted one: fixtures' finally blocks kill what they started, and
# subprocess.run kills its child, so nothing a test started outlives it on SIGTERM (SIGKILL: die_with_parent below)
signal.signal(signal.SIGTERM, _terminated)
RANK_PROGRAMS = str(REPO / "tests" / "rank_programs.py")
# A test waits on a CLI longer than the CLI's own hard deadline for its ranks (RunSpec.deadline_s,
# 600 s), and pytest's timeout (pyproject) is longer still: the innermost deadline always fires first.
CLI_TIMEOUT_S = 660.0
# fixtures that start processes: a test using one is marked `ranks` (the CLI may launch ranks; the rest do)
LAUNCHING = frozenset(
    {"cli", "processes", "run_ranks", "run_ranks_argv", "rank_runner", "compile_guard_check", "tp_mlp_baselines"}
)


def pytest_configure(config):
    config.addinivalue_line("markers", "ranks: starts processes (rank programs, the CLI); applied by the fixtures")
    config.addinivalue_line("markers", "smoke: one test per surface that starts ranks, kept in `make test-fast`")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LAUNCHING & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ranks)


@pytest.fixture(autouse=True)
def _only_marked_tests_start_processes(request, monkeypatch):
    """An in-process test that starts a process anyway fails at once: it belongs to the `ranks` tier."""
    if request.node.get_closest_marker("ranks") is not None or "quick_process" in request.fixturenames:
        return
    name = request.node.nodeid

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"{name} starts a process but uses no launching fixture ({sorted(LAUNCHING)}): use"
            " one, so the test is marked `ranks` and stays out of `make test-fast`"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def _run_cli(
    args: tuple[str, ...], *, env: dict[str, str] | None, timeout: float, cwd: Path
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compile_guard", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=die_with_parent(os.getpid()),  # the CLI (and through it its ranks) dies with this test process
    )


@pytest.fixture
def processes():
    """Declares that the test starts rank processes (or a CLI that does) by itself: marks it `ranks`."""


@pytest.fixture
def quick_process():
    """Declares that the test starts one short process that starts no rank: it stays in the fast tier."""


@pytest.fixture
def cli():
    """cli(*args, env=None, timeout=CLI_TIMEOUT_S) -> CompletedProcess of `python -m compile_guard ARGS` in the repo."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S, cwd: Path = REPO
    ) -> subprocess.CompletedProcess:
        return _run_cli(args, env=env, timeout=timeout, cwd=cwd)

    return run


@pytest.fixture
def run_ranks_argv(tmp_path):
    """run_ranks_argv(argv, nprocs=2, deadline_s=60, **spec) -> LaunchResult, nothing left."""

    def run(argv: list[str], *, nprocs: int = 2, deadline_s: float = 60.0, **kwargs) -> LaunchResult:
        spec = LaunchSpec(
            argv=argv,
            nprocs=nprocs,
            deadline_s=deadline_s,
            log_dir=tmp_path / "logs",
            cwd=REPO,
            **kwargs,
        )
        return launch_checked(spec)  # the pytest plugin's own helper: fails on leftovers

    return run


@pytest.fixture
def run_ranks(run_ranks_argv):
    """run_ranks(rank_program_args, ...): a program of tests/rank_programs.py on every rank."""

    def run(args: list[str], **kwargs) -> LaunchResult:
        return run_ranks_argv([sys.executable, RANK_PROGRAMS, *args], **kwargs)

    return run


@pytest.fixture(scope="session")
def tp_mlp_baselines(tmp_path_factory) -> Path:
    """A baseline directory holding the worked example's baseline (`baseline refresh --target
    docs.examples.tp_mlp:good`, 2 ranks, aot_eager), refreshed once per session for every test that checks it
    (test_target's round trip, the plugin's one-line guard). Topology: TP=2, gloo, CPU."""
    directory = tmp_path_factory.mktemp("tp_mlp_baselines")
    proc = _run_cli(
        (
            "baseline",
            "refresh",
            "--target",
            "docs.examples.tp_mlp:good",
            "--backend",
            "aot_eager",
            "--baselines",
            str(directory),
        ),
        env=None,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return directory


def _pinned_torch() -> str:
    """The torch CI installs (constraints.txt): its committed baselines must all be there."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("constraints.txt pins no torch")


def committed_baseline(scenario: str) -> Path:
    """The committed baseline of `scenario` for the installed torch. On another torch than CI's pinned one (the
    suite runs on every torch the package admits) a missing one skips the test, naming the file and the command
    that writes it; on the pinned torch a missing one fails."""
    from compile_guard.contracts.rank_job import RankJob
    from compile_guard.flow.scenarios import SCENARIOS
    from compile_guard.health import baseline as bl
    from compile_guard.health.baseline import installed_torch

    factors = bl.Factors.expected(RankJob(spec=SCENARIOS[scenario])).as_dict()
    found = bl.find(bl.DEFAULT_DIR, factors)
    if found is not None and found[1]:
        return found[0]
    missing = (
        f"no committed {scenario} baseline for torch {installed_torch()} ({bl.file_name(factors)});"
        f" write it with `python -m compile_guard baseline refresh --scenario {scenario}`"
    )
    if installed_torch().split("+")[0] == _pinned_torch():
        pytest.fail(missing)
    pytest.skip(missing)
