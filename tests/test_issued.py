"""The issued schedule (compile_guard.health.issued), the settings compared (health.settings), and how both are judged
across ranks (agreement.compare) and against a baseline (health.policy). In-process, no rank, no compile."""

from __future__ import annotations

import enum

import pytest

from compile_guard.agreement import proofs
from compile_guard.agreement.entries import Frame, Statement
from compile_guard.health import issued, policy, settings
from compile_guard.health.sites import BreakSites

RANKS = {"2": [0, 1]}
# A wrapper as inductor writes it on CPU (trimmed): allocations, a view, a reuse, a collective per kernel with the
# graph nodes it came from, a bucket (no comment), waits, a coalesced call and a point-to-point send.
WRAPPER = """
    def call(self, args):
        assert_size_stride(arg0_1, (8, 64), (64, 1), 'input')
        buf0 = empty_strided_cpu((8, 64), (64, 1), torch.float32)
        # Topologically Sorted Source Nodes: [tensor], Original ATen: [_c10d_functional.all_reduce]
        torch.ops._c10d_functional.all_reduce_.default(buf0, 'sum', '2')
        buf3 = empty_strided_cpu((192, 128), (128, 1), torch.bfloat16)
        buf5 = reinterpret_tensor(buf3, (1, 192, 128), (24576, 128, 1), 0)  # alias
        # Topologically Sorted Source Nodes: [tanh, tensor_1], Original ATen: [aten.tanh, _c10d_functional.all_reduce]
        torch.ops._c10d_functional.all_reduce_.default(buf5, 'sum', '2')
        torch.ops._c10d_functional.wait_tensor.default(buf0)
        buf7 = buf0; del buf0  # reuse
        buf9 = empty_strided_cpu((1024, ), (1, ), torch.float32)
        torch.ops._c10d_functional.all_reduce_.default(buf9, 'sum', '2')
        buf10 = torch.ops._c10d_functional.all_gather_into_tensor_coalesced.default([buf7, arg0_1], 2, '2')
        torch.ops.c10d.send.default([buf7], 1, '2')
"""


def _dispatch(*shapes: list[int], node: str = "tensor") -> list[dict]:
    return [
        {
            "op": "all_reduce",
            "group": {"name": "2", "ranks": [0, 1]},
            "shape": s,
            "dtype": "torch.float32",
            "reduce_op": "sum",
            "site": f"model.py:{10 + i}",
            "node": f"{node}_{i}" if i else node,
        }
        for i, s in enumerate(shapes)
    ]


def test_the_wrapper_is_read_call_by_call_in_the_order_it_issues():
    found = issued.parse(WRAPPER, RANKS.get, {"tensor": 0, "tensor_1": 1})
    assert [c["op"] for c in found] == [
        "all_reduce",
        "all_reduce",
        "all_reduce",
        "all_gather_into_tensor_coalesced",
        "send",
    ]
    assert found[0] == {
        "op": "all_reduce",
        "group": {"name": "2", "ranks": [0, 1]},
        "shape": [8, 64],
        "dtype": "torch.float32",
        "reduce_op": "sum",
        "from": [0],
    }
    assert found[1]["shape"] == [1, 192, 128] and found[1]["dtype"] == "torch.bfloat16"  # the view of buf3
    assert found[1]["from"] == [1]  # the comment names a fused kernel's nodes; the collective's is tensor_1
    assert found[2]["from"] is None  # no comment: a bucket inductor made
    assert found[3]["shape"] == [[8, 64], [8, 64]] and found[3]["dtype"] == "torch.float32"  # reuse, then an input
    assert found[4]["op"] == "send" and found[4]["group"]["ranks"] == [0, 1]


def test_a_bucket_names_what_it_merged_by_its_size():
    dispatch = _dispatch([16, 32], [16, 32])  # 512 + 512 elements = the 1024-element bucket
    found = issued.issued_schedule([WRAPPER], dispatch, cpp_wrapper=False, group_ranks=RANKS.get)
    assert found["by"] == "inductor" and found["total"] == 5
    assert found["collectives"][2]["merged"] == [0, 1]
    assert "a bucket of dispatch #0+#1 at model.py:10, model.py:11" in issued.describe(
        found["collectives"][2], dispatch
    )


def test_other_backends_issue_the_dispatch_schedule_and_a_cpp_wrapper_is_unread_not_empty():
    dispatch = _dispatch([4, 4])
    assert issued.issued_schedule([], dispatch, cpp_wrapper=False, group_ranks=RANKS.get)["by"] == "dispatch"
    unread = issued.issued_schedule(["extern void call() {}"], dispatch, cpp_wrapper=True, group_ranks=RANKS.get)
    assert unread["by"] == "unread" and unread["total"] is None
    # an inductor graph whose source the output-code logger never saw (a torch that renamed it) is unread, named
    lost = issued.issued_schedule([], dispatch, cpp_wrapper=False, group_ranks=RANKS.get, inductor=True)
    assert lost["by"] == "unread" and lost["why"] == issued.UNLOGGED and "OUTPUT_CODE_LOGGER" in lost["why"]
    assert (
        proofs.issued_mismatch(
            "2",
            [0, 1],
            [{"rank": 0, "n": 0, "call": 0, "frame": {"name": "f"}}],
            {0: unread, 1: issued.issued_schedule([], dispatch, cpp_wrapper=False, group_ranks=RANKS.get)},
        )
        is None
    )


def _issued(*entries: dict, by: str = "inductor") -> dict:
    clean = [{k: v for k, v in e.items() if k != "merged"} for e in entries]
    return {"by": by, "collectives": list(entries), "total": len(entries), "digest": issued.digest(clean)}


def _ar(shape: list[int], came: list[int], op: str = "all_reduce") -> dict:
    return {
        "op": op,
        "group": {"name": "2", "ranks": [0, 1]},
        "shape": shape,
        "dtype": "torch.float32",
        "reduce_op": "sum" if op == "all_reduce" else None,
        "from": came,
    }


STATEMENTS = [
    Statement(
        rank=r,
        n=0,
        fid="f",
        call=0,
        j=0,
        slot="f.0.0",
        frame=Frame(name="forward", site="m.py:1"),
        fingerprint="f",
        schedule_digest="d",
        collectives=_dispatch([8, 64], [8, 64]),
        settings={},
    )
    for r in (0, 1)
]


def test_two_collectives_of_one_shape_swapped_on_one_rank_are_a_divergence_named_by_their_lines():
    """CD-08's shape: the same ops and sizes, issued for each other's buffers. Only `from` tells them apart."""
    in_order, swapped = _issued(_ar([8, 64], [0]), _ar([8, 64], [1])), _issued(_ar([8, 64], [1]), _ar([8, 64], [0]))
    verdict = proofs.issued_mismatch("2", [0, 1], STATEMENTS, {0: in_order, 1: swapped})
    assert verdict is not None and verdict.kind == "issued"
    assert (
        "#0: rank0 all_reduce 2[0, 1] [8, 64] torch.float32 sum = dispatch #0 at model.py:10 | rank1"
        in verdict.first_collective
        and "= dispatch #1 at model.py:11" in verdict.first_collective
    )
    assert proofs.issued_mismatch("2", [0, 1], STATEMENTS, {0: in_order, 1: dict(in_order)}) is None


def test_after_an_accepted_rank_only_break_the_issued_streams_need_only_line_up():
    whole, cut = _issued(_ar([8, 64], [0]), _ar([8, 64], [1])), _issued(_ar([8, 64], [0]))
    assert proofs.issued_mismatch("2", [0, 1], STATEMENTS, {0: whole, 1: cut}, asymmetric=True) is None
    assert proofs.issued_mismatch("2", [0, 1], STATEMENTS, {0: whole, 1: cut}) is not None
    parted = _issued(_ar([8, 64], [1]))
    assert proofs.issued_mismatch("2", [0, 1], STATEMENTS, {0: whole, 1: parted}, asymmetric=True) is not None


@pytest.mark.parametrize(
    "base, run, kind, said",
    [
        ([_ar([8], [0]), _ar([8], [1])], [_ar([8], [0]), _ar([8], [1])], "same", ""),
        (
            [_ar([8], [0], "send"), _ar([8], [1], "recv_")],
            [_ar([8], [1], "recv_"), _ar([8], [0], "send")],
            "regression",
            "point-to-point ops reordered",
        ),
        ([_ar([8], [0]), _ar([8], [1])], [_ar([8], [0])], "regression", "dispatch collective(s) [1] no longer issued"),
        ([_ar([8], [0]), _ar([8], [1])], [_ar([16], [0, 1])], "changed", "first differs at #0"),  # a new bucket
        ([_ar([8], [0]), _ar([8], [1])], [_ar([8], [1]), _ar([8], [0])], "changed", "first differs at #0"),  # reordered
        ([_ar([8], None)], [_ar([4], None)], "regression", "fewer elements communicated"),
    ],
)
def test_an_issued_schedule_that_moved_since_the_baseline_is_classed(base, run, kind, said):
    """#189454: every rank hung in the same wrong p2p order — only the previous release's order tells."""
    found, text = issued.change(_issued(*base), _issued(*run))
    assert found == kind and said in text


def test_the_policy_reports_each_moved_graph_and_compares_nothing_with_an_older_baseline():
    base = [_issued(_ar([8], [0]), _ar([8], [1]))]
    rows = policy.compare({"issued_schedules": base}, [{"issued_schedules": [_issued(_ar([8], [0]))]}] * 2)
    moved = [r for r in rows if r.metric.startswith("issued: graph #0")]
    assert len(moved) == 1 and moved[0].verdict == policy.REGRESSION
    older = policy.compare({}, [{"issued_schedules": base}] * 2)
    assert [r.verdict for r in older if "issued" in r.metric] == [policy.OK]
    # unread in the run (and in the baseline: the digests agree) proves nothing: reported by name, fails --strict
    unread = {"by": "unread", "collectives": [], "total": None, "digest": "unread", "why": "a C++ wrapper"}
    rows = policy.compare({"issued_schedules": [unread]}, [{"issued_schedules": [unread]}] * 2)
    named = [r for r in rows if r.metric.startswith("issued: graph #0: unread (a C++ wrapper)")]
    assert len(named) == 1 and named[0].verdict == policy.CHANGED
    assert policy.failing(rows, allow_improvement=False, strict=True) == named
    assert policy.failing(rows, allow_improvement=False, strict=False) == []


class _Pass:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def uuid(self) -> str:
        return f"my-pass-{self.tag}"


class _Mode(enum.Enum):
    FAST = 1


def _fn() -> None:
    pass


def test_settings_compare_passes_by_identity_and_objects_without_their_address():
    assert settings.comparable(_Pass("a")) == "pass:_Pass:my-pass-a" != settings.comparable(_Pass("b"))
    assert settings.comparable(_fn) == "callable:tests.test_issued._fn"
    assert settings.comparable({"b", "a"}) == ["a", "b"] and settings.comparable(_Mode.FAST) == "_Mode.FAST"
    assert settings.comparable(object()) == settings.comparable(object())  # repr without "at 0x..."


def test_host_paths_threads_and_cache_switches_are_not_compared_but_recompile_limits_are():
    assert settings.machine_specific("inductor", "cpp.threads") and settings.machine_specific("dynamo", "base_dir")
    assert settings.machine_specific("functorch", "enable_autograd_cache")  # a cache hit on one rank: CD-06
    assert settings.machine_specific(
        "inductor", "aten_distributed_optimizations.profile_guided_estimations_profile_path"
    )
    assert not settings.machine_specific("dynamo", "cache_size_limit")  # one rank falling back to eager alone
    assert not settings.machine_specific("inductor", "bucket_all_reduces_fx")
    # keys that name a cache but change the generated code are compared: no rule by substring
    for key in ("cpp.gemm_cache_blocking", "cache_sdpa_constraint", "triton.skip_l1_cache"):
        assert not settings.machine_specific("inductor", key), key


# every key of this torch's config modules whose name says cache, as torch 2.13.0's source comments class it:
# it changes the generated code (compared), or it is a switch in CACHE_SWITCHES. A key a new torch adds fails
# here until it is classed (the settings comparison compares it meanwhile).
CACHE_KEYS_THAT_CHANGE_CODE = {
    ("inductor", "cpp.gemm_cache_blocking"),  # a GEMM's register blocking
    ("inductor", "cache_sdpa_constraint"),  # SDPA's input buffers (one per tensor and stride order)
    ("inductor", "triton.skip_l1_cache"),  # the generated loads' eviction policy
    ("dynamo", "cache_size_limit"),  # recompile limits: a rank that hits one falls back to eager alone
    ("dynamo", "accumulated_cache_size_limit"),
    ("dynamo", "recompile_limit"),
    ("dynamo", "accumulated_recompile_limit"),
}


def test_every_cache_key_of_this_torch_is_classed():
    from compile_guard import compat

    unclassed = [
        (label, key)
        for label, module in compat.config_modules().items()
        for key in compat.portable_config(module)
        if "cache" in key.lower()
        and (label, key) not in settings.CACHE_SWITCHES
        and (label, key) not in CACHE_KEYS_THAT_CHANGE_CODE
        and not key.endswith(settings.PATH_SUFFIXES)
    ]
    assert not unclassed, f"class these in compile_guard.health.settings.CACHE_SWITCHES or here: {unclassed}"
    payload = settings.settings_payload()
    assert "inductor.cpp.gemm_cache_blocking" in payload and "functorch.enable_autograd_cache" not in payload


def test_a_setting_changed_on_this_rank_is_stated_by_name_and_the_digest_covers_it():
    import torch._inductor.config as inductor_config  # what a user changes; compile_guard reads it through compat

    before, digest = settings.stated_settings()
    # the config module's own patch: monkeypatch's undo would delete the key from the module (a ConfigModule)
    with inductor_config.patch(max_autotune_pointwise=not inductor_config.max_autotune_pointwise):
        after, changed = settings.stated_settings()
    assert after == {**before, "inductor.max_autotune_pointwise": not inductor_config.max_autotune_pointwise}
    assert changed != digest and settings.stated_settings() == (before, digest)  # restored
    assert "inductor.bucket_all_reduces_fx" in settings.settings_payload()  # the handshake compares every key


def test_the_breaks_logged_while_a_graph_was_traced_are_its_split():
    """A break of a frame dynamo skipped is reported with the next graph but did not split it."""
    import logging

    current = ["0/0"]
    sites = BreakSites(compile_id=lambda: current[0])
    record = logging.LogRecord(
        "b",
        logging.DEBUG,
        "x",
        1,
        "Graph break in user code at /w/model.py:12\nGraph Break Reason: print\n",
        None,
        None,
    )
    sites.emit(record)
    current[0] = "1/0"
    sites.emit(
        logging.LogRecord(
            "b",
            logging.DEBUG,
            "x",
            1,
            "Graph break in user code at /w/model.py:30\nGraph Break Reason: print\n",
            None,
            None,
        )
    )
    assert sites.during == {"0/0": ["model.py:12"], "1/0": ["model.py:30"]}


def test_a_wrapper_the_reader_cannot_read_is_unread_never_a_crash_or_an_empty_schedule(monkeypatch):
    def broken(*_args):
        raise ValueError("a wrapper format of another release")

    monkeypatch.setattr(issued, "parse", broken)
    found = issued.issued_schedule([WRAPPER], _dispatch([4]), cpp_wrapper=False, group_ranks=RANKS.get)
    assert found["by"] == "unread" and "ValueError: a wrapper format" in found["why"] and found["total"] is None
