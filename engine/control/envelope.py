"""Envelope v1: the one message per chunk, as bytes and int64s only (no pickle anywhere).

Header: a fixed int64[HEADER_LEN] tensor, the first thing sent:
    [magic, version, action, call_id, chunk_index, cache_epoch, control_epoch,
     meta_len, tensor_count, reason]
Version 2 = version 1 plus a reason code on the terminal ERROR action (the last slot, 0
otherwise): PP1's mesh leader tells non-leaders and rank0 *why* it stopped the job.
Meta: canonical JSON (sorted keys, no spaces, ASCII, no NaN) holding the plan, free-form
`extras`, and the `tensor_specs` manifest sorted by (key, index). Tensors follow in
manifest order; the receiver allocates strictly from the manifest.

Everything here is pure (no collectives), so the decode path can be fuzzed: every
malformed input raises ProtocolError before any allocation beyond the limits below.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import PreflightError, ProtocolError

MAGIC = 0x43475631  # "CGV1"
ENVELOPE_VERSION = 2
HEADER_LEN = 10

# Limits the receiver enforces before allocating anything.
MAX_META_BYTES = 64 * 1024
MAX_TENSORS = 16
MAX_DIMS = 6
MAX_TENSOR_ELEMENTS = 1 << 24
MAX_TOTAL_BYTES = 256 * 1024 * 1024

# Wire dtypes: what every backend can broadcast. torch.bool is not one (gloo/NCCL
# disagree on it), so it must be rejected at preflight, never discovered mid-send.
WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
}
_DTYPE_NAMES = {v: k for k, v in WIRE_DTYPES.items()}


class Reason(enum.IntEnum):
    NONE = 0
    PLAN_REJECTED = 1  # the leader (or the mesh agreement) refused the plan
    WRONG_GROUP = 2  # a collective was about to run on the wrong process group
    CALL_COUNT = 3  # mesh ranks planned different generator-call counts
    INTERNAL = 9  # anything else: see the sender's log


class Action(enum.IntEnum):
    NOOP = 0  # heartbeat while idle
    INFER = 1  # one chunk: meta + tensors follow
    SHUTDOWN = 2  # clean end of the job
    ERROR = 3  # terminal: the sender is going down, receivers exit cleanly
    RESULT = 4  # PP0 return channel only: a stage-1 result (meta + tensors follow)


@dataclass(frozen=True, kw_only=True)
class Header:
    action: Action
    call_id: int  # strictly increasing over all actions
    chunk_index: int  # increasing over INFER; -1 = warmup
    cache_epoch: int  # bumped by a hard cut (init_cache)
    control_epoch: int  # bumped when the control plane restarts
    meta_len: int = 0  # bytes of meta that follow (INFER only)
    tensor_count: int = 0  # tensors that follow (INFER only)
    reason: Reason = Reason.NONE  # why, for ERROR
    version: int = ENVELOPE_VERSION

    def ids(self) -> dict[str, int]:
        return {
            "call_id": self.call_id,
            "chunk_index": self.chunk_index,
            "cache_epoch": self.cache_epoch,
            "control_epoch": self.control_epoch,
        }

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [
                MAGIC,
                self.version,
                int(self.action),
                self.call_id,
                self.chunk_index,
                self.cache_epoch,
                self.control_epoch,
                self.meta_len,
                self.tensor_count,
                int(self.reason),
            ],
            dtype=torch.int64,
        )


def decode_header(raw: torch.Tensor) -> Header:
    """int64[HEADER_LEN] -> Header; ProtocolError on anything envelope v1 does not allow."""
    if raw.dtype != torch.int64 or tuple(raw.shape) != (HEADER_LEN,):
        raise ProtocolError(f"header must be int64[{HEADER_LEN}], got {raw.dtype}{list(raw.shape)}")
    magic, version, action, call_id, chunk, cache_epoch, control_epoch, meta_len, count, reason = raw.tolist()
    if magic != MAGIC:
        raise ProtocolError(f"header magic {magic:#x} != {MAGIC:#x}: not an envelope (desynced stream?)")
    if version != ENVELOPE_VERSION:
        raise ProtocolError(f"envelope version {version} is not supported; this build speaks {ENVELOPE_VERSION}")
    if action not in Action._value2member_map_:
        raise ProtocolError(f"unknown action {action}; known: {[a.name for a in Action]}")
    act = Action(action)
    if call_id < 0 or chunk < -1 or cache_epoch < 0 or control_epoch < 0:
        raise ProtocolError(
            f"negative id in header: call_id={call_id} chunk_index={chunk} "
            f"cache_epoch={cache_epoch} control_epoch={control_epoch}"
        )
    if act in (Action.INFER, Action.RESULT):
        if not 0 < meta_len <= MAX_META_BYTES:
            raise ProtocolError(f"meta_len={meta_len} outside (0, {MAX_META_BYTES}]")
        if not 0 <= count <= MAX_TENSORS:
            raise ProtocolError(f"tensor_count={count} outside [0, {MAX_TENSORS}]")
    elif meta_len != 0 or count != 0:
        raise ProtocolError(f"{act.name} carries no payload, got meta_len={meta_len} tensor_count={count}")
    if reason not in Reason._value2member_map_ or (reason != 0 and act is not Action.ERROR):
        raise ProtocolError(f"reason {reason} is invalid for {act.name}; only ERROR carries one of {list(Reason)}")
    return Header(
        action=act,
        call_id=call_id,
        chunk_index=chunk,
        cache_epoch=cache_epoch,
        control_epoch=control_epoch,
        meta_len=meta_len,
        tensor_count=count,
        reason=Reason(reason),
        version=version,
    )


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    key: str  # tensor name, e.g. "latents"
    index: int  # position among tensors of the same key
    dtype: str  # a WIRE_DTYPES name
    shape: tuple[int, ...]

    def numel(self) -> int:
        return math.prod(self.shape)

    def nbytes(self) -> int:
        return self.numel() * WIRE_DTYPES[self.dtype].itemsize

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "index": self.index, "dtype": self.dtype, "shape": list(self.shape)}

    def allocate(self, device: torch.device) -> torch.Tensor:
        return torch.empty(self.shape, dtype=WIRE_DTYPES[self.dtype], device=device)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def check_json_value(value: Any, path: str) -> None:
    """Raise PreflightError naming the first key path whose value is not plain JSON."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PreflightError("meta_encode", path, f"non-finite float {value!r}; JSON has no NaN/inf")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PreflightError("meta_encode", f"{path}.{key!r}", "dict keys must be str")
            check_json_value(item, f"{path}.{key}")
        return
    raise PreflightError("meta_encode", path, f"{type(value).__name__} is not JSON-serialisable; send primitives only")


def spec_of(key: str, index: int, tensor: torch.Tensor) -> TensorSpec:
    """The manifest entry for `tensor`. Its dtype may not be a wire dtype yet: the preflight
    checks that in its own stage (check_wire_dtypes), after the meta is encoded."""
    name = _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype).removeprefix("torch."))
    return TensorSpec(key=key, index=index, dtype=name, shape=tuple(tensor.shape))


def check_wire_dtypes(specs: list[TensorSpec]) -> None:
    for spec in specs:
        if spec.dtype not in WIRE_DTYPES:
            raise PreflightError(
                "dtype",
                f"tensors.{spec.key}[{spec.index}]",
                f"dtype {spec.dtype} is not a wire dtype; cast to one of {sorted(WIRE_DTYPES)}",
            )


def encode_meta(plan: dict[str, Any], extras: dict[str, Any], specs: list[TensorSpec]) -> bytes:
    check_json_value(plan, "plan")
    check_json_value(extras, "extras")
    meta = canonical_json({"plan": plan, "extras": extras, "tensor_specs": [s.to_json() for s in specs]})
    if len(meta) > MAX_META_BYTES:
        raise PreflightError("meta_encode", "meta", f"{len(meta)} bytes > limit {MAX_META_BYTES}")
    return meta


def decode_meta(raw: bytes, tensor_count: int) -> tuple[dict[str, Any], dict[str, Any], list[TensorSpec]]:
    """Canonical JSON bytes -> (plan, extras, manifest); ProtocolError on any deviation."""
    if len(raw) > MAX_META_BYTES:
        raise ProtocolError(f"meta is {len(raw)} bytes > limit {MAX_META_BYTES}")
    try:
        meta = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting recurses
        raise ProtocolError(f"meta is not ASCII JSON: {exc}") from None
    if not isinstance(meta, dict) or set(meta) != {"plan", "extras", "tensor_specs"}:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise ProtocolError(f"meta must hold exactly plan, extras, tensor_specs; got {keys}")
    if canonical_json(meta) != raw:
        raise ProtocolError("meta is not in canonical form (sorted keys, no spaces): sender bug or tampering")
    plan, extras, raw_specs = meta["plan"], meta["extras"], meta["tensor_specs"]
    if not isinstance(plan, dict) or not isinstance(extras, dict) or not isinstance(raw_specs, list):
        raise ProtocolError("meta plan/extras must be objects and tensor_specs a list")
    if len(raw_specs) != tensor_count:
        raise ProtocolError(f"manifest lists {len(raw_specs)} tensors, header says {tensor_count}")
    specs = [_decode_spec(s, i) for i, s in enumerate(raw_specs)]
    order = [(s.key, s.index) for s in specs]
    if order != sorted(set(order)):
        raise ProtocolError(f"manifest must be sorted by (key, index) without duplicates: {order}")
    total = sum(s.nbytes() for s in specs)
    if total > MAX_TOTAL_BYTES:
        raise ProtocolError(f"manifest totals {total} bytes > limit {MAX_TOTAL_BYTES}")
    return plan, extras, specs


def _decode_spec(raw: Any, position: int) -> TensorSpec:
    where = f"tensor_specs[{position}]"
    if not isinstance(raw, dict) or set(raw) != {"key", "index", "dtype", "shape"}:
        raise ProtocolError(f"{where} must hold exactly key, index, dtype, shape")
    key, index, dtype, shape = raw["key"], raw["index"], raw["dtype"], raw["shape"]
    if not isinstance(key, str) or not key or len(key) > 64:
        raise ProtocolError(f"{where}.key must be a non-empty str of <= 64 chars")
    if type(index) is not int or not 0 <= index < MAX_TENSORS:
        raise ProtocolError(f"{where}.index={index!r} outside [0, {MAX_TENSORS})")
    if dtype not in WIRE_DTYPES:
        raise ProtocolError(f"{where}.dtype={dtype!r} is not a wire dtype {sorted(WIRE_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or any(type(d) is not int or d < 0 for d in shape):
        raise ProtocolError(f"{where}.shape={shape!r} must be <= {MAX_DIMS} non-negative ints")
    spec = TensorSpec(key=key, index=index, dtype=dtype, shape=tuple(shape))
    if spec.numel() > MAX_TENSOR_ELEMENTS:
        raise ProtocolError(f"{where} has {spec.numel()} elements > limit {MAX_TENSOR_ELEMENTS}")
    return spec
