"""PP0 overlap metrics (contracts.md), the overlap classifier, and a Chrome trace.

Per chunk, from rank0's monotonic stamps and stage 1's reported durations (no clock sync):
  period_k  = tEmit[k] - tEmit[k-1]
  stage0_k  = (tA1 - tA0) + (tEmit - tDec0)   # build + decode; tDec0, not tRecv: with D_out > 1 a
                                                # result may wait in the ready queue, which is not work
  stage1_k  = tB_ms
  hidden_k  = max(0, stage0_k + stage1_k - period_k)
  OverlapScore = median(hidden_k / min(stage0_k, stage1_k)) after warmup
"""

from __future__ import annotations

import statistics
from typing import Any

SERIAL_IDLE_RATIO = 0.5  # stage 1 idles >= half of stage 0's work per chunk: it waits on decode


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(records: dict[str, dict[str, Any]], *, warmup: int) -> dict[str, Any]:
    """Derived per-chunk metrics and their medians (chunks < `warmup` excluded)."""
    done = sorted((int(k), r) for k, r in records.items() if int(k) >= 0 and "tEmit" in r and "tB_ms" in r)
    rows, latency = [], []
    for (k_prev, prev), (k, r) in zip(done, done[1:], strict=False):
        if k < warmup or k != k_prev + 1:
            continue
        period = (r["tEmit"] - prev["tEmit"]) * 1e3
        stage0 = ((r["tA1"] - r["tA0"]) + (r["tEmit"] - r["tDec0"])) * 1e3
        stage1 = r["tB_ms"]
        hidden = max(0.0, stage0 + stage1 - period)
        rows.append(
            {
                "chunk_index": k,
                "period_ms": period,
                "stage0_ms": stage0,
                "stage1_ms": stage1,
                "hidden_ms": hidden,
                "overlap": hidden / min(stage0, stage1),
                "decode_ms": (r["tEmit"] - r["tDec0"]) * 1e3,
                "t_mesh_idle_ms": r["t_mesh_idle_ms"],
                "in_flight_at_send": r["in_flight_at_send"],
            }
        )
        latency.append((r["tEmit"] - r["tA0"]) * 1e3)
    med = {
        key: _median([row[key] for row in rows])
        for key in (
            "period_ms",
            "stage0_ms",
            "stage1_ms",
            "hidden_ms",
            "decode_ms",
            "t_mesh_idle_ms",
            "in_flight_at_send",
        )
    }
    p95 = sorted(latency)[max(0, round(0.95 * len(latency)) - 1)] if latency else float("nan")
    return {
        "chunks_measured": len(rows),
        "overlap_score": _median([row["overlap"] for row in rows]),
        "median": med,
        "fps_chunks": 1e3 / med["period_ms"] if rows else float("nan"),
        "latency_p50_ms": _median(latency),
        "latency_p95_ms": p95,
        "period_over_max_stage": med["period_ms"] / max(med["stage0_ms"], med["stage1_ms"]) if rows else float("nan"),
        "rows": rows,
    }


def classify(summary: dict[str, Any]) -> tuple[str, str]:
    """('healthy' | 'serialized', why): the overlap signature."""
    med = summary["median"]
    idle, work = med["t_mesh_idle_ms"], med["stage0_ms"]
    if idle >= SERIAL_IDLE_RATIO * work and med["in_flight_at_send"] <= 1:
        return "serialized", (
            f"t_mesh_idle {idle:.1f} ms tracks stage 0's {work:.1f} ms and at most "
            f"{med['in_flight_at_send']:.0f} envelope is in flight"
        )
    score = summary["overlap_score"]
    return "healthy", f"t_mesh_idle {idle:.1f} ms << stage 0's {work:.1f} ms; OverlapScore {score:.2f}"


def chrome_trace(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Chrome / Perfetto JSON: a track per stage and per queue (same host: one monotonic clock)."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "stage 0 (rank0: build, decode)"}},
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "stage 1 (rank1: generator)"}},
        {"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "queues (rank0)"}},
    ]
    stamps = [r["tA0"] for r in records.values() if "tA0" in r]
    t0 = min(stamps) if stamps else 0.0

    def us(t: float) -> float:
        return (t - t0) * 1e6

    for k, r in sorted(records.items(), key=lambda kv: int(kv[0])):
        name = f"chunk {k}"
        events.append(
            {
                "name": f"build {name}",
                "ph": "X",
                "pid": 0,
                "tid": 0,
                "ts": us(r["tA0"]),
                "dur": us(r["tA1"]) - us(r["tA0"]),
            }
        )
        if "tDec0" in r:
            events.append(
                {
                    "name": f"decode {name}",
                    "ph": "X",
                    "pid": 0,
                    "tid": 0,
                    "ts": us(r["tDec0"]),
                    "dur": us(r["tEmit"]) - us(r["tDec0"]),
                }
            )
        if "tB0" in r:
            events.append(
                {
                    "name": f"generate {name}",
                    "ph": "X",
                    "pid": 1,
                    "tid": 0,
                    "ts": us(r["tB0"]),
                    "dur": us(r["tB1"]) - us(r["tB0"]),
                }
            )
        events.append(
            {
                "name": "depth",
                "ph": "C",
                "pid": 2,
                "ts": us(r["tSend"]),
                "args": {"in_flight": r["in_flight_at_send"], "ready": r["ready_at_send"]},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}
