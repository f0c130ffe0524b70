"""JUnit XML for CI systems: one testcase per check metric or matrix row.

A failing case carries the diff (baseline -> per-rank values) or the row's problems as its
failure message, so a CI UI shows *what* regressed without opening the logs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from engine.atomic_json import write_text


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str  # e.g. "graph_breaks" or "OM-04"
    classname: str  # e.g. "compile_guard.check.tp2"
    time_s: float = 0.0
    failure: str | None = None  # None: passed
    message: str = ""  # one line; the failure's summary


# XML 1.0 cannot carry these at all, escaped or not (a log tail with a NUL made the file unparseable).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def write_junit(path: Path, suite: str, cases: list[Case]) -> None:
    failures = sum(c.failure is not None for c in cases)
    root = ET.Element("testsuites", name="compile_guard", tests=str(len(cases)), failures=str(failures))
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{sum(c.time_s for c in cases):.3f}",
    )
    for case in cases:
        tc = ET.SubElement(
            node, "testcase", name=_xml_text(case.name), classname=_xml_text(case.classname), time=f"{case.time_s:.3f}"
        )
        if case.failure is not None:
            message = _xml_text(case.message or case.failure.splitlines()[0])
            ET.SubElement(tc, "failure", message=message).text = _xml_text(case.failure)
    write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
