"""The run spec: everything one run of the engine (or a user's target) is, in one frozen value.

The parent builds it once — from a named scenario, `--target` and flags, a matrix row, or a
topology's own command line — and hands it to every rank whole, as canonical JSON. The rank
side turns it into `ModelConfig` / `CompileConfig` / `DistConfig` here and nowhere else, and
puts every field into the env parity handshake. Its `config_hash` (over the fields that
define the compiled program) is the baseline's config hash.

No torch import: the parent's light commands (`--help`, `check --list`) build specs too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.errors import ConfigError

TOPOLOGIES = ("tp", "pp0", "pp1")
COMPILE_MODES = ("off", "eager", "aot_eager", "inductor")
RECOMPUTE = ("r1", "r0a")
SCHEDULES = ("healthy", "serial")
# The fields that define the compiled program. The stream's hard cut, idle time, timeouts and
# where dumps go change no graph; PP0's queue depths and schedule change no graph either.
HASHED = ("topology", "nprocs", "compile", "layers", "chunks", "recompute_every", "env", "target")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid; expected an int >= 1")


@dataclass(frozen=True, kw_only=True)
class PP0Spec:
    """PP0's pipeline shape (rank0 = stage 0, rank1 = stage 1)."""

    d_in: int = 2  # envelopes in flight toward stage 1 (sent, result not yet decoded)
    d_out: int = 2  # results waiting for decode
    recompute: str = "r1"  # "r1": off; "r0a": on, rank0 supplies the context from its decode of chunk k-1
    schedule: str = "healthy"  # "healthy": send k+1 before decoding k; "serial": the overlap bug
    decoder_width: int = 192  # stage 0's decode cost knob (192: ~20 ms)

    def __post_init__(self) -> None:
        for name in ("d_in", "d_out", "decoder_width"):
            _positive(name, getattr(self, name))
        if self.recompute not in RECOMPUTE:
            raise ConfigError(f"recompute={self.recompute!r} is invalid; pick one of {list(RECOMPUTE)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} is invalid; pick one of {list(SCHEDULES)}")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    name: str  # scenario id: command line, baseline file names
    description: str = ""  # one line for `check --list`
    topology: str = "tp"  # tp: every rank in one TP group; pp0: two stages; pp1: rank0 drives a mesh of nprocs-1
    nprocs: int = 2  # ranks (tp: the TP degree; pp1: 1 + the mesh size)
    compile: str = "inductor"  # compile backend of the generator region (or of the target), "off" = eager
    layers: int = 4  # transformer blocks (4 = serving shape)
    chunks: int = 3  # chunks after the warmup chunk
    recompute_every: int = 2  # every k-th chunk recomputes the previous chunk's KV; 0 = never
    hard_cut_at: int = -1  # chunk index that starts a new stream (-1: none)
    idle_after: int = -1  # rank0 idles (NOOP heartbeats) after this chunk (-1: never)
    idle_s: float = 0.0  # how long it idles
    steady: int = 3  # --target: times the input steps run again after warmup
    env: dict[str, str] = field(default_factory=dict)  # knobs every rank gets from the launcher
    target: str | None = None  # "pkg.module:factory": a user's own model instead of the engine
    pp0: PP0Spec = field(default_factory=PP0Spec)  # PP0's pipeline shape (topology pp0 only)
    device: str = "auto"  # auto: cuda when available, else cpu (a factor of the baseline, not of the hash)
    dist_backend: str = "auto"  # auto: nccl on cuda, gloo on cpu; gloo with cuda tensors is allowed
    timeout_s: float = 30.0  # every process group's timeout (a frozen peer is seen after this)
    deadline_s: float = 600.0  # the parent's hard limit for the whole run (a cold inductor compile included)
    stall_s: float = 0.0  # agreements: no progress from a peer for this long = a stall (0: a margin under timeout_s)
    agree_inputs: bool = True  # --target: ranks agree on each step's input signature before it runs
    agree_compiles: bool = True  # every compiled graph agreed across its group before its first run
    eager_ledger: bool = False  # ranks agree on every eager c10d collective before it is issued
    gate_health: bool = True  # the post-warmup compile-health gather (off only for benchmarks' bare runs)
    # what the harness measures after the run beside compile health (compile_guard.quality.options.Measure as
    # JSON, validated there; {}: its defaults). Changes no graph: not hashed
    quality: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ConfigError(f"topology={self.topology!r} is invalid; pick one of {list(TOPOLOGIES)}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile={self.compile!r} is invalid; pick one of {list(COMPILE_MODES)}")
        for name in ("nprocs", "layers", "chunks", "steady"):
            _positive(name, getattr(self, name))
        if self.recompute_every < 0:
            raise ConfigError(f"recompute_every={self.recompute_every} is invalid; expected >= 0")
        if self.topology == "pp0" and self.nprocs != 2:
            raise ConfigError(f"topology pp0 runs on 2 ranks (stage 0 + stage 1), got nprocs={self.nprocs}")
        if self.topology == "pp1" and self.nprocs < 2:
            raise ConfigError(f"topology pp1 needs rank0 plus a mesh: nprocs >= 2, got {self.nprocs}")
        if self.target is not None and self.topology != "tp":
            raise ConfigError(f"--target runs on topology tp (TP over every rank), got {self.topology!r}")
        if not 0 < self.timeout_s <= 600:
            raise ConfigError(f"timeout_s={self.timeout_s} is invalid; expected seconds in (0, 600]")
        if not 0 <= self.stall_s <= 24 * 3600:
            raise ConfigError(f"stall_s={self.stall_s} is invalid; expected seconds >= 0 (0: under timeout_s)")
        for name in ("agree_inputs", "agree_compiles", "eager_ledger", "gate_health"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; expected true or false")
        if not self.deadline_s > 0:
            raise ConfigError(f"deadline_s={self.deadline_s} is invalid; expected seconds > 0")
        if not isinstance(self.quality, dict):
            raise ConfigError(f"quality={self.quality!r} is invalid; expected a dict of quality options")
        if not isinstance(self.env, dict) or not all(isinstance(v, str) for v in self.env.values()):
            raise ConfigError(f"env={self.env!r} is invalid; expected a dict of str -> str")

    # -- the wire: canonical JSON, parsed as data ---------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ConfigError(f"a run spec is a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"run spec has unknown field(s) {unknown}; parent and ranks run different versions?")
        if isinstance(raw.get("pp0"), dict):
            raw["pp0"] = PP0Spec(**raw["pp0"])
        return cls(**raw)

    def config_hash(self) -> str:
        """Hash of the fields that define the compiled program (not names, timeouts or deadlines)."""
        factors = {k: v for k, v in asdict(self).items() if k in HASHED}
        return hashlib.sha256(json.dumps(factors, sort_keys=True).encode()).hexdigest()[:16]

    def parity_items(self) -> dict[str, Any]:
        """Every field, flat, for the env parity handshake (`spec.pp0.d_in`, ...)."""
        flat: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dict) and key == "pp0":
                flat.update({f"spec.pp0.{k}": v for k, v in value.items()})
            else:
                flat[f"spec.{key}"] = value
        return flat

    # -- the one place a spec becomes the engine's configs ------------------------------------
    def model_config(self) -> Any:
        from engine.config import ModelConfig

        return ModelConfig(num_layers=self.layers)

    def compile_config(self) -> Any:
        from engine.compile import CompileConfig

        compiled = self.compile != "off"
        return CompileConfig(enabled=compiled, backend=self.compile if compiled else "inductor")

    def dist_config(self) -> Any:
        from engine.config import DistConfig

        return DistConfig(device=self.device, backend=self.dist_backend, timeout_s=self.timeout_s)

    def stream_config(self) -> Any:
        from engine.control.stream import StreamConfig

        if self.topology == "pp0":  # R0a: every chunk carries rank0's context
            every = 1 if self.pp0.recompute == "r0a" else 0
            return StreamConfig(chunks=self.chunks, recompute_every=every, hard_cut_at=self.hard_cut_at)
        return StreamConfig(chunks=self.chunks, recompute_every=self.recompute_every, hard_cut_at=self.hard_cut_at)
