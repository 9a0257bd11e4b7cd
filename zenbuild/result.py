"""What a run returns: every step's name, status, fingerprint, duration, reasons (records) and,
on demand, value."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from zenbuild.errors import StepFailed
from zenbuild.reasons import Reason
from zenbuild.records import field, record
from zenbuild.states import StepStatus


@record
class StepResult:
    name: str
    status: StepStatus  # a plain string (its value) is accepted and compares equal
    fingerprint: Optional[str] = None
    duration: float = 0.0
    reasons: List[Reason] = field(default_factory=list)
    value_digest: Optional[str] = None
    error: Optional[str] = None
    store_path: str = ""

    @property
    def output(self) -> Any:
        """The step's return value, loaded from the store. Raises StoreError when its stored
        bytes are damaged or gone: the entries using them are removed, so that the next run
        executes the step again."""
        if self.value_digest is None:
            raise LookupError(f"step {self.name} has no stored output (status {self.status})")
        from zenbuild.errors import CorruptBlob, StoreError
        from zenbuild.serialize import loads
        from zenbuild.store.db import Store

        store = Store(self.store_path, create=False)
        try:
            try:
                data = store.map_blob(self.value_digest)  # mapped copy-on-write: no copy
            except (CorruptBlob, KeyError) as e:
                fps = store.actions_using(self.value_digest)
                store.delete_actions(fps)
                gone = "missing" if isinstance(e, KeyError) else "corrupt"
                raise StoreError(
                    f"the stored value of step {self.name} (blob {self.value_digest}) is "
                    f"{gone}; the {len(fps)} cache entr{'y' if len(fps) == 1 else 'ies'} "
                    f"using it {'was' if len(fps) == 1 else 'were'} removed, so the next run "
                    "executes the step again") from None
            return loads(data)
        finally:
            store.close()


@record
class RunResult:
    pipeline: str
    run_id: str
    status: str  # succeeded | failed
    steps: Dict[str, StepResult]
    duration: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for s in self.steps.values():
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def executed(self) -> List[str]:
        return [s.name for s in self.steps.values() if s.status == StepStatus.EXECUTED]

    def cached(self) -> List[str]:
        return [s.name for s in self.steps.values() if s.status == StepStatus.CACHED]

    def __getitem__(self, name: str) -> StepResult:
        return self.steps[name]

    def raise_for_status(self) -> None:
        for s in self.steps.values():
            if s.status == StepStatus.FAILED:
                last = (s.error or "").strip().splitlines()[-1:]
                raise StepFailed(s.name, last[0] if last else "", s.error or "")
