"""The issued schedule: the collectives a compiled graph will issue, in the order its compiled code issues them.

The schedule after dispatch (compile_guard.health.schedule) is what dynamo's graph asks for. What
runs is decided later by inductor's own passes: post-grad bucketing merges collectives, comm
reordering and overlap scheduling move them, comm decompositions split them, and passes that
decide from runtime estimates or benchmarks can decide differently on each rank. So for inductor
the schedule compared is read from the code inductor generated — after its last pass — as its
output-code log states it (compile_guard.compat: the logger, per release): on a compile and on a
cache hit alike. Every collective call of the generated wrapper, in source order: op, group (name,
ranks), the shape and dtype of its input buffer, reduce op, `from`: the dispatch collectives it issues
(by the graph nodes inductor's comment above the call names; two of one shape swapped are told apart
so), and `merged` for a bucket: the dispatch collectives it holds (its `from`, or, where no comment
names them, consecutive ones whose sizes add up to its size).
Waits are not collectives and are left out. For `aot_eager`, `eager` and any other backend the
dispatch schedule is the issued one (`by: "dispatch"`). A C++ wrapper (`cpp_wrapper=True`) states
no Python calls: its schedule is unread, said so, and never compared as empty.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import re
from typing import Any

# a collective call in a Python wrapper: torch.ops.<namespace>.<op>.<overload>(...)
_CALL = re.compile(r"torch\.ops\.(_c10d_functional|c10d_functional|_c10d_functional_autograd|c10d)\.(\w+)\.\w+\(")
_ALLOC = re.compile(r"^\s*(\w+) = empty_strided_\w+\(\((.*?)\), \((.*?)\), (torch\.\w+)")
_ASSERT = re.compile(r"^\s*assert_size_stride\((\w+), \((.*?)\),")
_VIEW = re.compile(r"^\s*(\w+) = reinterpret_tensor\((\w+), \((.*?)\),")
_REUSE = re.compile(r"^\s*(\w+) = (\w+); del \2\s+# reuse")
_SOURCES = re.compile(r"#\s*(?:Topologically Sorted )?Source Nodes: \[(.*?)\]")  # the graph nodes a kernel came from
_NOT_ISSUED = ("wait_tensor", "wait")  # completes a collective; issues none
_P2P = ("send", "recv", "recv_", "isend", "irecv", "batch_isend_irecv")
MAX_ISSUED = 256  # entries a statement carries (the digest covers all)
WHERE = ("site", "node")  # where a dispatch collective comes from (the user line, the graph node): said, not compared


def compared(c: dict[str, Any]) -> dict[str, Any]:
    """A dispatch collective as the ranks compare it: without where it comes from."""
    return {k: v for k, v in c.items() if k not in WHERE}


class OutputCode(logging.Handler):
    """A handler on inductor's output-code log: the wrapper source of every graph inductor compiles or loads."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.sources: list[str] = []  # in the order inductor produced them

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith("Output code: ") and record.args:
            self.sources.append(str(record.args[0] if isinstance(record.args, tuple) else record.args))

    def take(self) -> list[str]:
        taken, self.sources = self.sources, []
        return taken


def _ints(text: str) -> list[int | str]:
    return [int(p) if p.strip().lstrip("-").isdigit() else p.strip() for p in text.split(",") if p.strip()]


def _buffers(lines: list[str]) -> dict[str, dict[str, Any]]:
    """name -> {shape, dtype} of every buffer the wrapper allocates, asserts or reuses."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if m := _ALLOC.match(line):
            found[m.group(1)] = {"shape": _ints(m.group(2)), "dtype": m.group(4)}
        elif m := _ASSERT.match(line):
            found.setdefault(m.group(1), {"shape": _ints(m.group(2)), "dtype": None})
        elif (m := _VIEW.match(line)) and m.group(2) in found:
            found[m.group(1)] = {"shape": _ints(m.group(3)), "dtype": found[m.group(2)]["dtype"]}
        elif (m := _REUSE.match(line)) and m.group(2) in found:
            found[m.group(1)] = found[m.group(2)]
    return found


def _tensor(node: ast.AST, buffers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(node, ast.Name):
        return buffers.get(node.id, {"shape": None, "dtype": None})
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "reinterpret_tensor" and len(node.args) > 1:
        base = _tensor(node.args[0], buffers)
        shape = node.args[1]
        dims = (
            [d.value for d in shape.elts]
            if isinstance(shape, ast.Tuple) and all(isinstance(d, ast.Constant) for d in shape.elts)
            else None
        )
        return {"shape": dims, "dtype": base.get("dtype")}
    if isinstance(node, (ast.List, ast.Tuple)):  # a coalesced collective: a list of tensors
        parts = [_tensor(e, buffers) for e in node.elts]
        return {"shape": [p["shape"] for p in parts], "dtype": parts[0]["dtype"] if parts else None}
    return {"shape": None, "dtype": None}


def _call(line: str, start: int) -> ast.Call | None:
    text = line[start:].split("  #")[0].strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    return node if isinstance(node, ast.Call) else None


def parse(source: str, group_ranks: Any, nodes: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every collective the wrapper `source` issues, in order. group_ranks(name) -> the group's ranks or None;
    nodes: graph node name -> index in the dispatch schedule, so each issued collective names the dispatch
    collectives it issues (`from`), as inductor's source-node comment above each call states them."""
    lines = source.splitlines()
    buffers = _buffers(lines)
    issued: list[dict[str, Any]] = []
    sources: list[str] = []
    for line in lines:
        if s := _SOURCES.search(line):
            sources = [name.strip() for name in s.group(1).split(",")]
            continue
        m = _CALL.search(line)
        if m is None or m.group(2) in _NOT_ISSUED:
            continue
        op = m.group(2).rstrip("_") if m.group(2) not in _P2P else m.group(2)
        call = _call(line, m.start())
        args = call.args if call is not None else []
        constants = [a.value for a in args[1:] if isinstance(a, ast.Constant)]
        strings = [c for c in constants if isinstance(c, str)]
        group = strings[-1] if strings else None
        reduce_op = strings[0] if op.startswith(("all_reduce", "reduce_scatter")) and len(strings) > 1 else None
        tensor = _tensor(args[0], buffers) if args else {"shape": None, "dtype": None}
        came = sorted({(nodes or {})[name] for name in sources if name in (nodes or {})})
        sources = []  # a comment names the next call's nodes only
        issued.append(
            {
                "op": op,
                "group": {"name": group, "ranks": group_ranks(group) if group else None},
                "shape": tensor["shape"],
                "dtype": tensor["dtype"],
                "reduce_op": reduce_op,
                "from": came or None,
            }
        )
    return issued


def _numel(shape: Any) -> int | None:
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


def merged(issued: list[dict[str, Any]], dispatch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each issued collective, with `merged`: the dispatch collectives (indices) a bucket of it holds, when its
    size is the sum of consecutive dispatch collectives of its op and group, and no single one's."""
    sizes = [_numel(c.get("shape")) for c in dispatch]
    out = []
    for c in issued:
        n = _numel(c.get("shape"))
        found = c["from"] if c.get("from") and len(c["from"]) > 1 else None
        if found is None and n is not None and n not in sizes:
            for i in range(len(dispatch)):
                total, j = 0, i
                while j < len(dispatch) and dispatch[j].get("op") == c["op"] and sizes[j] is not None and total < n:
                    total += sizes[j]
                    j += 1
                if total == n and j - i > 1:
                    found = list(range(i, j))
                    break
        out.append({**c, "merged": found} if found else c)
    return out


def digest(issued: list[dict[str, Any]]) -> str:
    """Over what every rank must issue alike, in order."""
    return hashlib.sha256(json.dumps(issued, sort_keys=True).encode()).hexdigest()[:16]


_KERNEL = re.compile(r"async_compile\.(?:cpp_pybinding|cpp|triton)\(")  # a kernel (group) the wrapper defines
_LOOP = re.compile(r"\bfor\s*\(")  # a C++ loop of a CPU kernel: inductor puts a graph's CPU kernels in one group
MATH = ("erf", "tanh", "exp", "log", "sigmoid", "cos", "sin", "sqrt", "rsqrt")  # calls a lowering change moves


def code_summary(sources: list[str]) -> dict[str, Any]:
    """What a graph's generated code holds, in counts: kernels defined, C++ loops (a CPU kernel group's loop nests:
    one per unfused op where nothing fused), and calls of MATH functions. Per rank and never compared across
    ranks (paths and kernel names differ by cache directory); the matrix's NU rows read it to prove a simulated
    lowering change reached the code."""
    text = "\n".join(sources)
    return {
        "read": bool(sources),
        "kernels": len(_KERNEL.findall(text)),
        "loops": len(_LOOP.findall(text)),
        "math": {name: len(re.findall(rf"\b{name}\b", text)) for name in MATH},
    }


# an inductor graph whose wrapper source never reached the output-code logger (the gate reads it from there)
UNLOGGED = (
    "inductor's output code was not logged (compile_guard.compat.OUTPUT_CODE_LOGGER said nothing; the releases it"
    " was checked on are listed there): this torch may have renamed the logger"
)


def issued_schedule(
    sources: list[str], dispatch: list[dict[str, Any]], *, cpp_wrapper: bool, group_ranks: Any, inductor: bool = False
) -> dict[str, Any]:
    """{"by", "collectives", "total", "digest"}: from inductor's wrapper sources when there are any ("inductor");
    "unread" (with `why`) for a C++ wrapper, a wrapper this reader cannot parse, or an `inductor` graph whose
    source never reached the output-code logger (a torch that renamed it: never silently the dispatch schedule);
    else, for other backends, the dispatch schedule ("dispatch")."""
    if not sources and inductor:
        return {
            "by": "unread",
            "collectives": [],
            "total": None,
            "digest": "unread",
            "why": UNLOGGED,
        }
    if not sources:
        stripped = [compared(c) for c in dispatch]
        return {
            "by": "dispatch",
            "collectives": stripped[:MAX_ISSUED],
            "total": len(stripped),
            "digest": digest(stripped),
        }
    if cpp_wrapper:
        return {
            "by": "unread",
            "collectives": [],
            "total": None,
            "digest": "unread",
            "why": "inductor generated a C++ wrapper (cpp_wrapper=True): its calls are not read",
        }
    nodes = {c["node"]: i for i, c in enumerate(dispatch) if c.get("node")}
    try:
        issued = merged([c for source in sources for c in parse(source, group_ranks, nodes)], dispatch)
    except Exception as exc:  # a wrapper this reader does not know: said, logged, never compared (nor a crash)
        logging.getLogger("compile_guard.issued").exception("reading inductor's wrapper failed")
        return {
            "by": "unread",
            "collectives": [],
            "total": None,
            "digest": "unread",
            "why": f"reading inductor's wrapper failed: {type(exc).__name__}: {exc}"[:300],
        }
    return {
        "by": "inductor",
        "collectives": issued[:MAX_ISSUED],
        "total": len(issued),
        "digest": digest([{k: v for k, v in c.items() if k != "merged"} for c in issued]),
    }


def describe(c: dict[str, Any] | None, dispatch: list[dict[str, Any]] | None = None) -> str:
    """An issued collective in one line, with the dispatch collectives it issues (and their user lines, given
    the dispatch schedule)."""
    if c is None:
        return "(none)"
    group = c.get("group") or {}
    came = c.get("merged") or c.get("from") or []
    sites = sorted({dispatch[i].get("site") or "?" for i in came if i < len(dispatch)}) if dispatch else []
    what = (
        (
            f" = {'a bucket of ' if len(came) > 1 else ''}dispatch {'+'.join(f'#{i}' for i in came)}"
            f"{' at ' + ', '.join(sites) if sites else ''}"
        )
        if came
        else ""
    )
    return (
        f"{c.get('op')} {group.get('name')}{group.get('ranks') or ''} {c.get('shape')} {c.get('dtype')}"
        f"{' ' + c['reduce_op'] if c.get('reduce_op') else ''}{what}"
    )


def _key(c: dict[str, Any]) -> tuple[Any, ...]:
    return c.get("op"), tuple((c.get("group") or {}).get("ranks") or ()), json.dumps(c.get("shape")), c.get("dtype")


def _covered(collectives: list[dict[str, Any]]) -> set[int] | None:
    """The dispatch collectives a schedule issues (None when no entry says: an older baseline, a cut list)."""
    found = [c.get("merged") or c.get("from") for c in collectives]
    return None if not found or any(f is None for f in found) else {i for f in found for i in f}


def _volume(collectives: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    """Elements communicated per (op, ranks, dtype); an entry of unknown size counts 0."""
    found: dict[tuple[Any, ...], int] = {}
    for c in collectives:
        key = (c.get("op"), tuple((c.get("group") or {}).get("ranks") or ()), c.get("dtype"))
        found[key] = found.get(key, 0) + (_numel(c.get("shape")) or 0)
    return found


def change(base: dict[str, Any], run: dict[str, Any]) -> tuple[str, str]:
    """How one graph's issued schedule moved from the baseline's: ("same" | "regression" | "changed", what).
    A regression by default: point-to-point ops in another order (#189454: every rank hung in the same wrong
    order, so only the previous release's order tells), or a collective that left (a dispatch collective no
    longer issued, or fewer elements communicated for an op and group). Anything else — an order change of
    other collectives, a bucket, a collective that appears — is a change (a regression under --strict)."""
    if base.get("digest") == run.get("digest"):
        return "same", ""
    if "unread" in (base.get("by"), run.get("by")) or base.get("by") != run.get("by"):
        return "changed", f"issued by {base.get('by')} -> {run.get('by')}"
    b, r = base.get("collectives") or [], run.get("collectives") or []
    p2p_b, p2p_r = [_key(c) for c in b if c.get("op") in _P2P], [_key(c) for c in r if c.get("op") in _P2P]
    if p2p_b != p2p_r and sorted(p2p_b) == sorted(p2p_r):
        at = next(i for i, (x, y) in enumerate(zip(p2p_b, p2p_r, strict=True)) if x != y)
        return "regression", f"point-to-point ops reordered at p2p #{at}: {p2p_b[at][0]} -> {p2p_r[at][0]}"
    before, after = _covered(b), _covered(r)
    if before is not None and after is not None and before - after:
        return "regression", f"dispatch collective(s) {sorted(before - after)} no longer issued"
    vb, vr = _volume(b), _volume(r)
    fewer = sorted(k for k in vb if vr.get(k, 0) < vb[k])
    if fewer:
        return (
            "regression",
            f"fewer elements communicated: {fewer[0][0]} on ranks {list(fewer[0][1])} {vb[fewer[0]]}"
            f" -> {vr.get(fewer[0], 0)}",
        )
    at = next((i for i in range(max(len(b), len(r))) if (b[i : i + 1] or [None])[0] != (r[i : i + 1] or [None])[0]), 0)
    first_b, first_r = (b[at : at + 1] or [None])[0], (r[at : at + 1] or [None])[0]
    return "changed", f"first differs at #{at}: {describe(first_b)} -> {describe(first_r)}"
