"""The error tree: every user-facing error carries a message a person can act on."""

from __future__ import annotations


class ZenbuildError(Exception):
    """Base of every error zenbuild raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ZenbuildError):
    """zenbuild.toml / [tool.zenbuild] is missing, unreadable or invalid."""


class PipelineError(ZenbuildError):
    """A pipeline cannot be loaded, traced or validated (bad import, cycle, duplicate output)."""


class MisuseError(PipelineError, TypeError):
    """zenbuild's API called with arguments it does not take (register_value_type(M, "x"),
    @value_type on a class without save()): the project's mistake, exit 2 with the place in
    its code; still a TypeError for code that catches one."""


class ParamError(ZenbuildError):
    """A parameter cannot be parsed, converted or encoded deterministically."""


class PathError(ZenbuildError):
    """A File/Dir/Output path is invalid (escapes the project root, overlaps another output)."""


class StoreError(ZenbuildError):
    """The store cannot be used (newer format, locked, unwritable)."""


class StoreLocked(StoreError):
    """Another zenbuild run holds the workspace lock and we were told not to wait."""


class CorruptBlob(StoreError):
    """A blob's bytes do not match its digest (the blob has been removed), or the value it
    holds does not decode (``why``)."""

    def __init__(self, digest: str, why: str = "") -> None:
        super().__init__(f"store blob {digest} is corrupt ("
                         + (f"its value does not decode: {why}" if why else
                            "its bytes do not match its digest") + ")")
        self.digest = digest


class StepFailed(ZenbuildError):
    """A step raised. Carries the user's traceback with zenbuild's own frames trimmed."""

    exit_code = 1

    def __init__(self, step: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"step {step} failed: {message}")
        self.step = step
        self.traceback_text = traceback_text
