"""StepStatus: the state a step is in during and after a run (its string values are what --json,
the run history and the dashboard show)."""

from __future__ import annotations

from enum import Enum


class StepStatus(str, Enum):
    """A str, so it compares equal to, hashes like, JSON-encodes and prints as its value."""

    RUNNING = "running"  # submitted to an executor, not finished (a run interrupted now fails it)
    EXECUTED = "executed"
    CACHED = "cached"  # served from the store
    FAILED = "failed"
    SKIPPED = "skipped"  # an upstream step failed or was skipped
    WOULD_EXECUTE = "would_execute"  # a dry run: a real run would execute it

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:  # printed in a list, it reads as the string it stands for
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)
