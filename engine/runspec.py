"""The run spec: everything one run of the engine is, in one frozen value — the engine's fields only.

The parent builds it once — from a named scenario, a matrix row, or a topology's own command
line — and hands it to every rank whole, as canonical JSON (a harness wraps it with options of
its own: compile_guard.contracts.rank_job). The rank side turns it into `ModelConfig` /
`CompileConfig` / `DistConfig` here and nowhere else, and puts every field into the env parity
handshake. Its `config_hash` (over the fields that define the compiled program, and what a
harness adds that does) is the baseline's config hash.

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
HASHED = ("topology", "nprocs", "compile", "layers", "chunks", "recompute_every", "env")


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
    env: dict[str, str] = field(default_factory=dict)  # knobs every rank gets from the launcher
    pp0: PP0Spec = field(default_factory=PP0Spec)  # PP0's pipeline shape (topology pp0 only)
    device: str = "auto"  # auto: cuda when available, else cpu (a factor of the baseline, not of the hash)
    dist_backend: str = "auto"  # auto: nccl on cuda, gloo on cpu; gloo with cuda tensors is allowed
    timeout_s: float = 30.0  # every process group's timeout (a frozen peer is seen after this)

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ConfigError(f"topology={self.topology!r} is invalid; pick one of {list(TOPOLOGIES)}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile={self.compile!r} is invalid; pick one of {list(COMPILE_MODES)}")
        for name in ("nprocs", "layers", "chunks"):
            _positive(name, getattr(self, name))
        if self.recompute_every < 0:
            raise ConfigError(f"recompute_every={self.recompute_every} is invalid; expected >= 0")
        if self.topology == "pp0" and self.nprocs != 2:
            raise ConfigError(f"topology pp0 runs on 2 ranks (stage 0 + stage 1), got nprocs={self.nprocs}")
        if self.topology == "pp1" and self.nprocs < 2:
            raise ConfigError(f"topology pp1 needs rank0 plus a mesh: nprocs >= 2, got {self.nprocs}")
        if not 0 < self.timeout_s <= 600:
            raise ConfigError(f"timeout_s={self.timeout_s} is invalid; expected seconds in (0, 600]")
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

    def config_hash(self, *, target: str | None = None) -> str:
        """Hash of the fields that define the compiled program (not names, timeouts or deadlines), and the model a
        harness runs instead of the engine's (`target`, None for the engine: the hash every baseline holds)."""
        factors = {k: v for k, v in asdict(self).items() if k in HASHED}
        factors["target"] = target
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
