"""Parity diff table: exactly the differing keys, every rank's value."""

from __future__ import annotations

from engine.control.parity import diff_table


def test_diff_table_lists_only_differing_keys():
    ranks = ({"a": 1, "b": "x", "c": True}, {"a": 1, "b": "y", "c": True}, {"a": 1, "b": "x"})
    assert diff_table(list(ranks), (0, 1, 2)) == [["b", "x", "y", "x"], ["c", True, True, "<unset>"]]


def test_equal_payloads_have_no_diff():
    assert diff_table([{"k": [1, 2]}, {"k": [1, 2]}], (0, 1)) == []
