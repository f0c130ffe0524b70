"""Which machine a rank's timings came from, and whether two of them are comparable.

A speedup is a ratio measured in one run, so a machine twice as fast leaves it where it was; another *kind* of
machine does not (vector width and cache sizes change eager and compiled unequally, a GPU changes
everything), and a compile's CPU seconds are the machine's own. So each rank records its machine next to its
timings, a baseline keeps it, and timings are judged only against a baseline from the same kind: CPU model,
vector ISA, the cores this process may run on, and on CUDA the GPU's name and the driver. Anything else (the
host name, memory, the load) is not part of the kind.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# the CPU flags that change the code inductor generates or the speed of what it calls (its vector ISA picks
# among these; AMX and the AVX-512 extensions change matmul kernels), and the ARM ones
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)
KEYS = ("cpu", "isa", "cores", "gpu", "driver")  # what a machine record holds; all compared


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def _nvidia_driver() -> str:
    """The kernel driver's version line (Linux), e.g. 'NVRM version: ... 580.95.05'; '' where there is none."""
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""
    return " ".join(first.split())[:200]


def machine(device: Any = None) -> dict[str, Any]:
    """This rank's machine: CPU model, the ISA flags it has of ISA_FLAGS, the cores it may use, and for a CUDA
    `device` the GPU's name and the driver."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    cpu = info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()
    gpu = driver = ""
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(device)
        driver = _nvidia_driver() or f"cuda runtime {torch.version.cuda}"
    return {
        "cpu": cpu,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": _cores(),
        "gpu": gpu,
        "driver": driver,
    }


def describe(record: dict[str, Any]) -> str:
    """A machine record in a few words (for 'not comparable (baseline from ...)')."""
    isa = record.get("isa") or []
    widest = next((f for f in ("amx_tile", "avx512f", "avx2", "sve", "asimd", "avx") if f in isa), "no vector ISA")
    said = f"{record.get('cpu', '?')}, {widest}, {record.get('cores', '?')} cores"
    if record.get("gpu"):
        said += f", {record['gpu']} ({record.get('driver') or 'driver ?'})"
    return said


def difference(run: dict[str, Any] | None, base: dict[str, Any] | None) -> str | None:
    """None when the two records are the same kind of machine; else why not, in words, for the report."""
    if not base:
        return "the baseline records no machine: refresh it on this machine kind to judge timings"
    if not run:
        return "this run recorded no machine"
    differing = [k for k in KEYS if run.get(k) != base.get(k)]
    if not differing:
        return None
    return f"baseline from {describe(base)}; this run on {describe(run)} (differs: {', '.join(differing)})"
