"""GPU smoke: the CUDA paths on one GPU, in under 5 minutes, figures printed as a table.

    python benchmarks/gpu_smoke.py [--out DIR]        # on a machine with a CUDA GPU

Three runs, each through the real launcher and the check's rank program:
  1. TP=1, inductor, CUDA (NCCL on a group of one): refresh a baseline into DIR, then `check`
     against it — the CUDA compile path, probe and policy end to end;
  2. TP=2 over gloo with CUDA tensors (both ranks share the one GPU): the control plane's
     broadcasts, the agreement's all-gathers and the functional all-reduces in the graph,
     aot_eager (dynamo's view, no kernel compile);
  3. `check` of run 2's spec against a baseline refreshed the same way.
Exit 0 when every run passes; the table has wall times, graphs, breaks and collectives.
Without a GPU it says so and exits 2: nothing here is meaningful on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import mesh
from compile_guard.flow.check_flow import run_and_judge
from compile_guard.flow.request import CheckRequest
from compile_guard.health import baseline as bl
from compile_guard.launch.modes import Launched
from compile_guard.ranks import check
from engine.runspec import RunSpec

SPECS = (
    RunSpec(
        name="smoke-tp1-cuda",
        description="TP=1, inductor, CUDA, NCCL",
        nprocs=1,
        compile="inductor",
        device="cuda",
        dist_backend="nccl",
        chunks=2,
    ),
    RunSpec(
        name="smoke-tp2-cuda-gloo",
        description="TP=2 over gloo with CUDA tensors, aot_eager",
        nprocs=2,
        compile="aot_eager",
        device="cuda",
        dist_backend="gloo",
        chunks=2,
    ),
)


def refresh_then_check(spec: RunSpec, out: Path) -> list:
    job = RankJob(spec=spec, deadline_s=240.0)
    t0 = time.monotonic()
    baselines = out / "baselines"
    refresh = CheckRequest(
        job=job, program=check, baselines=baselines, need_baseline=False, log_dir=out / spec.name / "refresh"
    )
    refreshed = run_and_judge(refresh, Launched())
    first = refreshed.run
    if first is None or first.reports is None:
        return [spec.name, "refresh", round(time.monotonic() - t0, 1), refreshed.report.text[:300]]
    stored = bl.Baseline.of(job, first.reports)
    path = baselines / bl.file_name(stored.factors)
    bl.write(path, stored)
    found = bl.find(baselines, bl.Factors.expected(job))
    assert found is not None and found[0] == path, (found, path)
    t1 = time.monotonic()
    checked = run_and_judge(
        CheckRequest(job=job, program=check, baselines=baselines, log_dir=out / spec.name / "check"), Launched()
    )
    report, second = checked.report, checked.run
    final = mesh(second.reports)[0].health.to_json() if second is not None and second.reports else {}
    return [
        spec.name,
        "PASS" if report.exit_code == 0 else f"exit {report.exit_code}",
        round(t1 - t0, 1),
        round(time.monotonic() - t1, 1),
        final.get("unique_graphs"),
        final.get("graph_breaks"),
        final.get("collectives_in_graphs"),
        final.get("effective_backend", {}).get("device_type"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="logs and baselines (default: a temp dir)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU smoke needs one (the CUDA paths stay unverified)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}; logs: {out}", flush=True)
    rows = [refresh_then_check(spec, out) for spec in SPECS]
    print(
        tabulate(
            rows,
            headers=[
                "run",
                "verdict",
                "refresh s (cold)",
                "check s (warm)",
                "graphs",
                "breaks",
                "collectives in graph",
                "device",
            ],
        )
    )
    return 0 if all(row[1] == "PASS" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
