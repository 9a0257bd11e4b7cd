"""Reasons as data: why a step executes (or is served), as records made where the decision is
made. Text is made from them only at the edge (console, --json, dashboard); nothing decides
anything by matching a reason's wording."""

from __future__ import annotations

from typing import Any, Dict, Optional

from zenbuild.records import record


@record(frozen=True)
class Reason:
    """One reason. ``kind`` is a stable identifier from KINDS (scripts may rely on it);
    ``subject`` names what changed (a code item, a param, a file, a step, a variable);
    ``before``/``after`` are short JSON-able displays of the old and new state, or None."""

    kind: str
    subject: str = ""
    before: Optional[Any] = None
    after: Optional[Any] = None

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "before": self.before,
                "after": self.after}
