"""`neo-db check`: run the gates (core/gates.py) on the live DB: local filesystem, present, access,
no other holder, no hot journal, structure, integrity_check. Fails closed."""

from __future__ import annotations

from ..config import Config
from ..core.gates import GateReport, run_gates


def run(cfg: Config, *, allow_missing: bool) -> GateReport:
    return run_gates(cfg, allow_missing=allow_missing)
