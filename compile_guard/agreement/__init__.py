"""Cross-rank agreement before anything divergent runs: compiled graphs (gate) and eager collectives (ledger)."""

from compile_guard.agreement.gate import CompileAgreement, agree_on_compiles, agreement_on

__all__ = ["CompileAgreement", "agree_on_compiles", "agreement_on"]
