"""Cross-rank agreement before anything divergent runs: compiled graphs (gate) and eager collectives (ledger)."""

from compile_guard.agreement.gate import CompileAgreement, agree_on_compiles, agreement_on
from compile_guard.agreement.ledger import CollectiveLedger, ledger_on

__all__ = ["CollectiveLedger", "CompileAgreement", "agree_on_compiles", "agreement_on", "ledger_on"]
