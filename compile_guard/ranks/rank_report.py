"""Moved (0.1.0): the rank report contract is compile_guard.contracts.rank_report (both sides own it)."""

from compile_guard import moved

__getattr__ = moved.shim(
    "compile_guard.ranks.rank_report",
    "compile_guard.contracts.rank_report",
    ["DRIVER", "MESH", "RankReport", "RankReportError"],
)
