"""How the agreement protocol scales with the group: N = 2, 8, 32, 128 ranks on one real TCPStore.

    python benchmarks/bench_protocol_scale.py [--sizes 2,8,32,128] [--graphs 5]

Each rank is a thread (and its watcher another) running the protocol's own actors
(compile_guard.agreement.protocol) through the real transport (compile_guard.agreement.channel) on
its own store connection — no model, no torch collective: only the store and the protocol. Per
graph every rank states it after a random 0-5 ms skew (ranks never compile at the same instant),
counts its call and holds until it has every peer's statement. Printed per N: the per-graph
agreement latency (from the last rank's statement to the last rank's agreement, median and worst
over the graphs), store round trips per rank per graph, and the stall report's latency (one rank
never states; its watcher alive, then silent): from the stall window's end to the last holder stopped.
Threads share one interpreter on this 2-core box, so the figures are an upper bound of the protocol's
own cost; the store server is the one shared resource a real job has too.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # a holder's timed-out store wait is a c10d warning line
import torch.distributed as dist  # noqa: E402
from tabulate import tabulate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile_guard.agreement import compare, holds, protocol  # noqa: E402
from compile_guard.agreement.channel import Transport  # noqa: E402
from compile_guard.agreement.entries import Frame, Statement  # noqa: E402
from compile_guard.agreement.ops import Inbox  # noqa: E402
from compile_guard.agreement.positions import Positions, slot_key  # noqa: E402

AR = {"op": "all_reduce", "group": {"name": "g", "ranks": None}, "shape": [16, 64], "dtype": "f32", "reduce_op": "sum"}


ISSUED = {"by": "dispatch", "collectives": [AR] * 4, "total": 4, "digest": "d"}  # what every graph's code issues


def _statement(rank: int, call: int) -> Statement:
    return Statement(
        n=call,
        rank=rank,
        slot=slot_key("F", call, 0),
        fid="F",
        call=call,
        j=0,
        frame=Frame(name="forward", site="m.py:1"),
        compile_id=f"0/{call}",
        fingerprint="f",
        constants=[[0, "args.1", 7]],
        constants_digest="c",
        collectives=[AR] * 4,
        collectives_total=4,
        schedule_digest="d",
        settings={"x": 1},
    )


def _state(me: _Rank, mine: Statement) -> None:
    """Publish the statement, then (the compile is not part of this benchmark) the issued schedule (rule 9)."""
    me.main.run(protocol.publish(me.link, mine))
    me.main.run(protocol.publish_issued(me.link, mine.slot, ISSUED))


def _hold(me: _Rank, mine: Statement) -> Any:
    return me.main.run(
        holds.hold_graph(me.link, mine, before=[], site_of=_site_of, options=compare.Options(), issued=ISSUED)
    )


def _site_of(node: int, path: str) -> dict[str, str]:
    return {"site": "?", "key": path}


class _Rank:
    def __init__(self, store: dist.Store, rank: int, n: int, prefix: str, stall_s: float) -> None:
        member = protocol.Member(
            rank=rank,
            ranks=tuple(range(n)),
            group="g",
            prefix=prefix,
            stall_s=stall_s,
            probe_s=min(1.0, stall_s / 5),
            answer_s=1.0,
        )
        self.link = protocol.Link(member, Positions(rank))
        self.main, self.watch_transport = Transport(store), Transport(store)
        self.watcher: threading.Thread | None = None

    def start_watcher(self) -> None:
        link = self.link
        self.watcher = threading.Thread(
            target=self.watch_transport.run,
            args=(protocol.watch(link, Inbox(link.m.watch_box(link.m.rank))),),
            daemon=True,
        )
        self.watcher.start()


def _agree(store: dist.Store, n: int, graphs: int, prefix: str) -> tuple[list[float], float]:
    ranks = [_Rank(store, r, n, prefix, stall_s=60.0) for r in range(n)]
    for r in ranks:
        r.start_watcher()
    stated = [[0.0] * n for _ in range(graphs)]
    agreed = [[0.0] * n for _ in range(graphs)]
    barrier = threading.Barrier(n)

    def body(me: _Rank) -> None:
        rng = random.Random(me.link.m.rank)
        record = me.link.pos.frame("F", "forward", "m.py:1")
        for g in range(graphs):
            barrier.wait()  # the benchmark's own pacing between graphs, not part of the protocol
            time.sleep(rng.uniform(0, 0.005))
            mine = _statement(me.link.m.rank, record.count)
            _state(me, mine)
            stated[g][me.link.m.rank] = time.monotonic()
            record.ran(mine.slot)
            if me.link.pos.pending:
                me.main.run(protocol.answer_due(me.link))
            out = _hold(me, mine)
            assert isinstance(out, protocol.Agreed), out
            agreed[g][me.link.m.rank] = time.monotonic()
        me.main.run(protocol.close(me.link))

    threads = [threading.Thread(target=body, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in ranks:
        r.watcher.join(timeout=5)
    latencies = [max(agreed[g]) - max(stated[g]) for g in range(graphs)]
    ops = sum(r.main.ops + r.watch_transport.ops for r in ranks) / (n * graphs)
    return latencies, ops


def _stall(store: dist.Store, n: int, prefix: str, *, silent: bool, stall_s: float) -> float:
    """Rank 0 never states graph 0 (its watcher alive, or none: silent); the others hold. From the end of the
    stall window to the last holder stopped."""
    ranks = [_Rank(store, r, n, prefix, stall_s=stall_s) for r in range(n)]
    for r in ranks[1 if silent else 0 :]:
        r.start_watcher()
    stopped = [0.0] * n
    started = time.monotonic()

    def body(me: _Rank) -> None:
        mine = _statement(me.link.m.rank, 0)
        _state(me, mine)
        me.link.pos.frame("F", "forward", "m.py:1").ran(mine.slot)
        out = _hold(me, mine)
        assert isinstance(out, protocol.Stopped) and out.verdict.error == "Stalled", out
        stopped[me.link.m.rank] = time.monotonic()

    threads = [threading.Thread(target=body, args=(r,)) for r in ranks[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(stopped) - (started + stall_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,8,32,128")
    parser.add_argument("--graphs", type=int, default=5)
    parser.add_argument("--stall-s", type=float, default=2.0)
    args = parser.parse_args()
    store = dist.TCPStore("127.0.0.1", 0, 1, True)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        latencies, ops = _agree(store, n, args.graphs, prefix=f"agree{n}")
        alive = _stall(store, n, f"stall{n}", silent=False, stall_s=args.stall_s)
        silent = _stall(store, n, f"silent{n}", silent=True, stall_s=args.stall_s)
        rows.append(
            [
                n,
                f"{statistics.median(latencies) * 1e3:.1f}",
                f"{max(latencies) * 1e3:.1f}",
                f"{ops:.1f}",
                f"{alive * 1e3:.0f}",
                f"{silent * 1e3:.0f}",
            ]
        )
        print(f"N={n} done", file=sys.stderr, flush=True)
    print(
        tabulate(
            rows,
            headers=[
                "ranks",
                "agree ms (median)",
                "agree ms (worst)",
                "store ops / rank / graph",
                "stall report ms (peer alive)",
                "stall report ms (peer silent)",
            ],
        )
    )


if __name__ == "__main__":
    main()
