"""Accuracy of one compiled call, judged like torch's own gate (torch._dynamo.utils.same, benchmarks/dynamo).

Per output leaf: the compiled result against eager in the same dtype and, where the code can be cast, an fp64
eager reference. It passes when it is allclose to eager at the dtype's tolerance, or, failing that, when its
root-mean-square error from fp64 is at most `MULTIPLIER` times eager's own plus a tenth of the tolerance (the
compiled code may be *more* accurate than eager and still differ from it). Without an fp64 reference only the
first test applies, and the report says so. Eager runs twice: an eager that differs from itself is stated as
nondeterministic and not judged. Integer and bool outputs must be equal.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# torch's benchmarks: 1e-4 for fp32 runs, 1e-3..1e-2 for half precision; fp64 is the reference's own dtype
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-7}
MULTIPLIER = 3.0  # same(): rmse(fp64, compiled) <= 3 x rmse(fp64, eager) + tol / 10 (2.0 before torch 2.2)
SMALL_MULTIPLIER, SMALL_NUMEL = 10.0, 10  # same()'s larger multiplier for tiny tensors (one-element losses)
PASS, FAIL, NONDETERMINISTIC = "pass", "fail", "nondeterministic"


def tolerance(dtype: torch.dtype, override: float = 0.0) -> float:
    return override if override > 0 else TOLERANCE.get(dtype, 1e-4)


def _rmse(ref: torch.Tensor, res: torch.Tensor) -> float:
    return math.sqrt(torch.mean(torch.square(ref.double() - res.double())).item()) if ref.numel() else 0.0


def _worst(res: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """The element farthest from the reference: where, and both values."""
    diff = (res.double() - ref.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)  # a NaN is the worst of all
    flat = int(torch.argmax(diff.reshape(-1)).item())
    index = list(torch.unravel_index(torch.tensor(flat), res.shape)) if res.dim() else []
    return {
        "index": [int(i) for i in index],
        "compiled": float(res.reshape(-1)[flat].double().item()),
        "reference": float(ref.reshape(-1)[flat].double().item()),
        "abs_error": float(diff.reshape(-1)[flat]),
    }


def rule_output(
    name: str, compiled: Any, eager: Any, eager_again: Any, fp64: Any | None, *, tol_override: float = 0.0
) -> dict[str, Any]:
    """One output leaf's verdict, with the numbers that explain it."""
    if not isinstance(compiled, torch.Tensor):
        equal = compiled == eager
        return {
            "name": name,
            "status": PASS if equal else FAIL,
            "kind": type(compiled).__name__,
            "ratio": None,
            "detail": "" if equal else f"compiled {compiled!r} != eager {eager!r}",
        }
    compiled, eager, eager_again = (t.detach().cpu() for t in (compiled, eager, eager_again))
    base = {"name": name, "dtype": str(compiled.dtype).removeprefix("torch."), "shape": list(compiled.shape)}
    if not torch.equal(eager, eager_again) and not (
        eager.is_floating_point()
        and torch.equal(eager.isnan(), eager_again.isnan())
        and torch.equal(eager.nan_to_num(), eager_again.nan_to_num())
    ):
        return {**base, "status": NONDETERMINISTIC, "ratio": None, "detail": "eager differs from itself: not judged"}
    if compiled.shape != eager.shape or compiled.dtype != eager.dtype:
        return {
            **base,
            "status": FAIL,
            "ratio": None,
            "detail": f"compiled {compiled.dtype} {list(compiled.shape)} != eager {eager.dtype} {list(eager.shape)}",
        }
    if not compiled.is_floating_point():
        equal = torch.equal(compiled, eager)
        return {
            **base,
            "status": PASS if equal else FAIL,
            "ratio": None,
            "detail": "" if equal else f"differs from eager; worst {_worst(compiled, eager)}",
        }
    tol = tolerance(compiled.dtype, tol_override)
    close = torch.allclose(compiled, eager, atol=tol, rtol=tol, equal_nan=True)
    result = {
        **base,
        "tolerance": tol,
        "reference": "fp64" if fp64 is not None else "eager",
        "max_abs_vs_eager": float((compiled.double() - eager.double()).abs().nan_to_num(math.inf).max())
        if compiled.numel()
        else 0.0,
    }
    if fp64 is None:
        worst = _worst(compiled, eager)
        return {
            **result,
            "status": PASS if close else FAIL,
            "ratio": None,
            "worst": worst,
            "detail": "" if close else f"not within {tol:g} of eager (no fp64 reference)",
        }
    fp64 = fp64.detach().cpu()
    res_err, ref_err = _rmse(fp64, compiled), _rmse(fp64, eager)
    multiplier = SMALL_MULTIPLIER if compiled.numel() <= SMALL_NUMEL else MULTIPLIER
    passes = close or res_err <= multiplier * ref_err + tol / 10
    ratio = res_err / ref_err if ref_err > 0 else (1.0 if res_err == 0 else math.inf)
    detail = (
        ""
        if passes
        else (
            f"rmse from fp64 {res_err:.3g} > {multiplier:g} x eager's {ref_err:.3g} + {tol / 10:g},"
            f" and not within {tol:g} of eager"
        )
    )
    return {
        **result,
        "status": PASS if passes else FAIL,
        "ratio": round(ratio, 4) if math.isfinite(ratio) else None,
        "rmse": res_err,
        "eager_rmse": ref_err,
        "worst": _worst(compiled, fp64),
        "detail": detail,
    }
