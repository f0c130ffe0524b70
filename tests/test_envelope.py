"""Envelope v1 codec: round trips, every rejection, and a fuzz of the receiver's decode path."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.control.envelope import (
    ENVELOPE_VERSION,
    HEADER_LEN,
    MAGIC,
    MAX_META_BYTES,
    MAX_TENSOR_ELEMENTS,
    MAX_TENSORS,
    Action,
    Header,
    Reason,
    TensorSpec,
    canonical_json,
    decode_header,
    decode_meta,
    encode_meta,
    spec_of,
)
from engine.errors import PreflightError, ProtocolError

SPECS = [TensorSpec(key="latents", index=0, dtype="float32", shape=(1, 3, 4, 16, 16))]


def _raw(**over) -> torch.Tensor:
    fields = dict(
        magic=MAGIC, version=ENVELOPE_VERSION, action=1, call_id=3, chunk=2, cache=1, control=0, meta=10, count=1, r=0
    )
    fields.update(over)
    return torch.tensor(list(fields.values()), dtype=torch.int64)


def test_error_carries_its_reason():
    header = Header(
        action=Action.ERROR, call_id=9, chunk_index=2, cache_epoch=1, control_epoch=0, reason=Reason.WRONG_GROUP
    )
    assert decode_header(header.to_tensor()).reason is Reason.WRONG_GROUP


def test_header_round_trip():
    header = Header(
        action=Action.INFER, call_id=7, chunk_index=-1, cache_epoch=2, control_epoch=1, meta_len=100, tensor_count=3
    )
    assert decode_header(header.to_tensor()) == header


@pytest.mark.parametrize(
    "over, message",
    [
        ({"magic": 0}, "not an envelope"),
        ({"version": 1}, "envelope version 1 is not supported"),
        ({"r": 1}, "reason 1 is invalid for INFER"),
        ({"action": 3, "meta": 0, "count": 0, "r": 77}, "reason 77 is invalid for ERROR"),
        ({"action": 9}, "unknown action 9"),
        ({"call_id": -1}, "negative id"),
        ({"chunk": -2}, "negative id"),
        ({"meta": 0}, "meta_len=0"),
        ({"meta": MAX_META_BYTES + 1}, f"meta_len={MAX_META_BYTES + 1}"),
        ({"count": MAX_TENSORS + 1}, "tensor_count"),
        ({"action": 0, "meta": 5}, "NOOP carries no payload"),
    ],
)
def test_header_rejections(over, message):
    with pytest.raises(ProtocolError, match=message):
        decode_header(_raw(**over))


def test_header_of_wrong_shape_or_dtype():
    with pytest.raises(ProtocolError, match="int64"):
        decode_header(torch.zeros(HEADER_LEN, dtype=torch.int32))
    with pytest.raises(ProtocolError, match="int64"):
        decode_header(torch.zeros(HEADER_LEN + 1, dtype=torch.int64))


def test_meta_round_trip_is_canonical():
    meta = encode_meta({"b": 1, "a": [1.5, None]}, {"note": "x"}, SPECS)
    assert meta == canonical_json(json.loads(meta))
    plan, extras, specs = decode_meta(meta, 1)
    assert plan == {"a": [1.5, None], "b": 1} and extras == {"note": "x"} and specs == SPECS


@pytest.mark.parametrize(
    "meta, count, message",
    [
        (b"\xff", 0, "not ASCII JSON"),
        (b"[]", 0, "exactly plan, extras, tensor_specs"),
        (b'{"extras":{},"plan":{},"tensor_specs":[]} ', 0, "canonical"),
        (b'{"plan":{},"extras":{},"tensor_specs":[]}', 0, "canonical"),
        (b'{"extras":{},"plan":{},"tensor_specs":[]}', 1, "header says 1"),
    ],
)
def test_meta_rejections(meta, count, message):
    with pytest.raises(ProtocolError, match=message):
        decode_meta(meta, count)


def _meta_with(specs: list) -> bytes:
    return canonical_json({"plan": {}, "extras": {}, "tensor_specs": specs})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"key": "x", "index": 0, "dtype": "bool", "shape": [1]}, "not a wire dtype"),
        ({"key": "x", "index": 0, "dtype": "float32", "shape": [-1]}, "non-negative ints"),
        ({"key": "x", "index": 0, "dtype": "float32", "shape": [1] * 7}, "<= 6"),
        ({"key": "x", "index": 0, "dtype": "float32", "shape": [MAX_TENSOR_ELEMENTS + 1]}, "elements > limit"),
        ({"key": "x", "index": True, "dtype": "float32", "shape": [1]}, "index=True"),
        ({"key": "", "index": 0, "dtype": "float32", "shape": [1]}, "non-empty"),
        ({"key": "x", "index": 0, "dtype": "float32"}, "exactly key, index, dtype, shape"),
    ],
)
def test_manifest_rejections(spec, message):
    with pytest.raises(ProtocolError, match=message):
        decode_meta(_meta_with([spec]), 1)


def test_manifest_must_be_sorted_and_unique():
    a = {"key": "a", "index": 0, "dtype": "uint8", "shape": [1]}
    b = {"key": "b", "index": 0, "dtype": "uint8", "shape": [1]}
    with pytest.raises(ProtocolError, match="sorted"):
        decode_meta(_meta_with([b, a]), 2)
    with pytest.raises(ProtocolError, match="sorted"):
        decode_meta(_meta_with([a, a]), 2)


def test_encode_names_the_key_path_of_unserialisable_meta():
    with pytest.raises(PreflightError, match=r"extras\.hooks\[1\]: function is not JSON-serialisable"):
        encode_meta({}, {"hooks": [1, lambda: None]}, [])
    with pytest.raises(PreflightError, match=r"plan\.bias: non-finite float nan"):
        encode_meta({"bias": float("nan")}, {}, [])


def test_spec_of_keeps_non_wire_dtype_for_the_dtype_stage():
    assert spec_of("mask", 0, torch.zeros(2, dtype=torch.bool)).dtype == "bool"


# Fuzz: whatever the bytes, the decode path either returns a valid value or raises
# ProtocolError; never another exception and never a spec over the allocation limits.


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=HEADER_LEN, max_size=HEADER_LEN),
    st.booleans(),
)
def test_fuzz_header(values, magic_ok):
    if magic_ok:
        values[0], values[1] = MAGIC, ENVELOPE_VERSION
    try:
        header = decode_header(torch.tensor(values, dtype=torch.int64))
    except ProtocolError:
        return
    assert 0 <= header.meta_len <= MAX_META_BYTES and 0 <= header.tensor_count <= MAX_TENSORS


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_specs = st.fixed_dictionaries(
    {
        "key": st.text(max_size=70),
        "index": st.integers(-2, 20),
        "dtype": st.sampled_from(["float32", "bool", "int64", "complex64", "uint8"]),
        "shape": st.lists(st.integers(-2, 1 << 13), max_size=8),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=256),
        st.builds(
            lambda p, e, s: canonical_json({"plan": p, "extras": e, "tensor_specs": s}),
            _json_values,
            _json_values,
            st.lists(_specs, max_size=4),
        ),
    ),
    st.integers(0, 5),
    st.integers(0, 40),
)
def test_fuzz_meta(raw, count, cut):
    for data in (raw, raw[:-cut] if cut else raw, raw + b"x" * cut):
        try:
            plan, extras, specs = decode_meta(data, count)
        except ProtocolError:
            continue
        assert isinstance(plan, dict) and isinstance(extras, dict) and len(specs) == count
        assert all(s.numel() <= MAX_TENSOR_ELEMENTS for s in specs)


def test_oversized_meta_is_rejected_before_parsing():
    with pytest.raises(ProtocolError, match="limit"):
        decode_meta(b"{" * (MAX_META_BYTES + 1), 0)


def test_deeply_nested_meta_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not ASCII JSON"):
        decode_meta(b"[" * 60_000, 0)
