"""Reasons as data: why a step executes (or is served), as records made where the decision is
made. Text is made from them only at the edge (console, --json, dashboard) by text(); nothing
decides anything by matching a reason's wording.

A new kind of reason is one constant in KINDS and one entry in TEMPLATES, nothing else."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from zenbuild.records import record


@record(frozen=True)
class Reason:
    """One reason. ``kind`` is a stable identifier from KINDS (scripts may rely on it);
    ``subject`` names what changed (a code item, a param, a file, a step, a variable);
    ``before``/``after`` are short JSON-able displays of the old and new state, or None;
    ``detail`` holds further JSON-able facts a text template may use (a code item's kind and
    file, the argument that reads an upstream step), or None."""

    kind: str
    subject: str = ""
    before: Optional[Any] = None
    after: Optional[Any] = None
    detail: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        """The record plus its text: what --json and the run history carry."""
        return {"kind": self.kind, "subject": self.subject, "before": self.before,
                "after": self.after, "detail": self.detail, "text": text(self)}


# -- the kinds ---------------------------------------------------------------------------------
# whether the step can be cached at all
NO_CACHE = "no_cache"  # @step(no_cache=True): an external input, always executes
CACHE_DISABLED = "cache_disabled"  # subject: what disabled it (run, config, step, pipeline)
# no entry to compare with
NEVER_BUILT = "never_built"
NO_ENTRY = "no_entry"  # a previous entry exists but none for this fingerprint, no difference known
# a component of the key differs from the step's previous entry
CODE_ADDED = "code_added"  # subject: code item key; detail: {"item": kind, "file": path}
CODE_REMOVED = "code_removed"
CODE_CHANGED = "code_changed"
PACKAGE_VERSION = "package_version"  # subject: package; before/after: versions or None
PARAM_NEW = "param_new"  # subject: argument; after: display of the value
PARAM_REMOVED = "param_removed"  # before: display of the old value
PARAM_CHANGED = "param_changed"  # before/after: displays
INPUT_ADDED = "input_added"  # subject: argument; detail: {"step": upstream step}
INPUT_REMOVED = "input_removed"
INPUT_CHANGED = "input_changed"  # before/after: the upstream value digests
FILE_NEW = "file_new"  # subject: path; after: size in bytes
FILE_REMOVED = "file_removed"  # before: size in bytes
FILE_CHANGED = "file_changed"  # before/after: sizes in bytes
DIR_SHAPE_CHANGED = "dir_shape_changed"  # subject: a Dir input whose file modes, symlink
#   targets or empty folders changed
ENV_CHANGED = "env_changed"  # zenbuild's own environment (store format, Python version)
ENV_INPUT_CHANGED = "env_input_changed"  # subject: variable declared with Env(); before/after:
#   reprs of the values, or None (unset, or secret: detail {"secret": True} hides both)
VERSION_CHANGED = "version_changed"  # @step(version=probe): before/after: the probe's values
# cache controls: an entry matches, but the step executes anyway
EXPIRED = "expired"  # subject: step; before: the entry's age, after: the limit (seconds)
FORCED_RERUN = "forced_rerun"  # subject: step named by run --rerun / run(rerun=[...])
PROBE_FAILED = "probe_failed"  # subject: step; after: "ErrorType: message" of its version probe
# an entry matches but cannot be served
BLOB_MISSING = "blob_missing"  # the stored value is gone
OUTPUT_UNUSABLE = "output_unusable"  # subject: output path; after: what is wrong with it
# served, but a real run changes the outputs on disk first (a dry run says so)
OUTPUT_RESTORE = "output_restore"  # subject: output path that differs from the stored copy
OUTPUT_REMOVE = "output_remove"  # subject: a file in an output folder the step did not make
# the neighbourhood
UPSTREAM_PENDING = "upstream_pending"  # subject: step that would execute; detail: {"arg": a}
UPSTREAM_FAILED = "upstream_failed"  # subject: the failed step
UPSTREAM_SKIPPED = "upstream_skipped"  # subject: the skipped step
EARLIER_FAILED = "earlier_failed"  # the run stopped after a failure (no --keep-going)
CANNOT_RUN = "cannot_run"  # subject: step; after: the message (a declared input is missing)
# what a step did while it ran: its result was used but not cached
INPUT_CHANGED_DURING = "input_changed_during"  # subject: path; detail: {"step": name}
DIR_CHANGED_DURING = "dir_changed_during"  # subject: folder; detail: {"step": name}
OUTPUT_SPECIAL = "output_special"  # subject: path in an Output folder; after: "a fifo"...;
#   detail: {"step": name}
SOURCE_CHANGED_DURING = "source_changed_during"  # subject: project file; detail: {"step": name}
STALE_CODE = "stale_code"  # subject: project file whose code in memory is not what it holds now
CALLS_DISPLACED = "calls_displaced"  # subject: step; a profiler of its own replaced the tracer
# it changed a file that existed before it ran and that it read (or named on a child process's
# command line, not as an output): sed -i, open(f, "r+"), read then rewrite of the same path
INPUT_REWRITTEN = "input_rewritten"  # subject: path; detail: {"step": name, "more": count}
# re-executed with exactly the key of a stored entry, it returned a different value
NOT_DETERMINISTIC = "not_deterministic"  # subject: step; before/after: the value digests
# it wrote a file inside the project that is not a declared Output (a warning, once per step)
UNDECLARED_WRITE = "undeclared_write"  # subject: path; detail: {"step": name, "more": count}
# what the step touched last time (its discovered record, discovered.py) is not the same now
READ_FILE_CHANGED = "read_file_changed"  # subject: path; before/after: sizes
READ_FILE_MISSING = "read_file_missing"  # subject: path; before: size
READ_FILE_APPEARED = "read_file_appeared"  # subject: path the step tried; after: size
LISTED_DIR_CHANGED = "listed_dir_changed"  # subject: folder the step listed
GLOB_MATCHES_CHANGED = "glob_matches_changed"  # subject: the pattern it listed (data/*.csv)
ENV_READ_CHANGED = "env_read_changed"  # subject: variable; before/after: values, None if secret
TRACED_CODE_CHANGED = "traced_code_changed"  # subject: "file:qualname"; detail: file, line
TRACED_CODE_MISSING = "traced_code_missing"  # the function is gone (renamed, removed)
USED_MODULE_CHANGED = "used_module_changed"  # subject: a project module file the step used
RECORD_UNREADABLE = "record_unreadable"  # after: what is wrong with the stored record
# the registered code that encoded the stored value (its record's "types") is not the same now
VALUE_TYPE_CODE_CHANGED = "value_type_code_changed"  # subject: "module.qualname" of the class
VALUE_TYPE_MISSING = "value_type_missing"  # subject: the class, which cannot be found now
# a class the step asked for its subclasses (Base.__subclasses__()) has other subclasses now,
# or one of them changed: subject "module.qualname" of the class; detail: {"added": [...],
# "removed": [...], "changed": [...]} ("module.qualname" of each subclass), "gone": the class
SUBCLASSES_CHANGED = "subclasses_changed"
# the verdict when nothing above applies
UP_TO_DATE = "up_to_date"

KINDS: Tuple[str, ...] = (
    NO_CACHE, CACHE_DISABLED, NEVER_BUILT, NO_ENTRY,
    CODE_ADDED, CODE_REMOVED, CODE_CHANGED, PACKAGE_VERSION,
    PARAM_NEW, PARAM_REMOVED, PARAM_CHANGED,
    INPUT_ADDED, INPUT_REMOVED, INPUT_CHANGED,
    FILE_NEW, FILE_REMOVED, FILE_CHANGED, DIR_SHAPE_CHANGED, ENV_CHANGED, ENV_INPUT_CHANGED, VERSION_CHANGED,
    EXPIRED, FORCED_RERUN, PROBE_FAILED,
    BLOB_MISSING, OUTPUT_UNUSABLE, OUTPUT_RESTORE, OUTPUT_REMOVE,
    UPSTREAM_PENDING, UPSTREAM_FAILED, UPSTREAM_SKIPPED, EARLIER_FAILED, CANNOT_RUN,
    INPUT_CHANGED_DURING, DIR_CHANGED_DURING, OUTPUT_SPECIAL, SOURCE_CHANGED_DURING, STALE_CODE, CALLS_DISPLACED,
    INPUT_REWRITTEN, NOT_DETERMINISTIC,
    UNDECLARED_WRITE,
    READ_FILE_CHANGED, READ_FILE_MISSING, READ_FILE_APPEARED, LISTED_DIR_CHANGED,
    GLOB_MATCHES_CHANGED, ENV_READ_CHANGED, TRACED_CODE_CHANGED, TRACED_CODE_MISSING,
    USED_MODULE_CHANGED, RECORD_UNREADABLE, VALUE_TYPE_CODE_CHANGED, VALUE_TYPE_MISSING,
    SUBCLASSES_CHANGED, UP_TO_DATE,
)
# Why a step's result was used but not cached (its run's history keeps the reason: explain
# shows the last one while no entry matches)
NOT_CACHED_KINDS = frozenset({INPUT_CHANGED_DURING, DIR_CHANGED_DURING, OUTPUT_SPECIAL,
                              SOURCE_CHANGED_DURING, STALE_CODE, CALLS_DISPLACED,
                              INPUT_REWRITTEN})
# The kinds of a discovered record's verification (an entry whose static key matches).
# Kinds that say "only because an upstream step would execute": a step whose every reason is one
# of these may still be served after its upstream reruns (early cutoff).
PENDING_KINDS = frozenset({UPSTREAM_PENDING})
# Kinds that make a step execute although a usable entry matches: a different value is then no
# sign of non-determinism (external state changed), and early cutoff applies downstream.
REFRESH_KINDS = frozenset({EXPIRED, FORCED_RERUN, PROBE_FAILED})
# Kinds that describe a served step whose outputs a run puts back from the store.
RESTORE_KINDS = frozenset({OUTPUT_RESTORE, OUTPUT_REMOVE})


# -- text --------------------------------------------------------------------------------------
def size_text(n: Any) -> str:
    """A byte count for people: 512 B, 2.1 KB, 3.4 MB."""
    size = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


_CODE_ITEM = {"step": "step function", "function": "helper"}


def _code_label(r: Reason) -> str:
    d = r.detail or {}
    item = str(d.get("item") or "code")
    where = d.get("file") or ""
    if item == "statements":  # fingerprint/toplevel.py: a seed, a library option
        return f"top-level statements of {where or r.subject}"
    if item == "import env":  # subject: "NAME (read when pipe.py is imported)"
        return f"environment variable {r.subject}"
    return f"{_CODE_ITEM.get(item, item)} {r.subject}" + (f" ({where})" if where else "")


def _disabled(r: Reason) -> str:
    return {
        "run": "caching disabled by --no-cache",
        "config": f"caching disabled by zenbuild.toml [steps.{(r.detail or {}).get('step', '')}] "
                  "enable_cache = false",
        "step": "caching disabled by @step(enable_cache=False)",
        "pipeline": "caching disabled by @pipeline(enable_cache=False)",
    }.get(r.subject, f"caching disabled by {r.subject}")


def _pending(r: Reason) -> str:
    arg = (r.detail or {}).get("arg")
    return (f"input {arg}: " if arg else "") + f"upstream step {r.subject} would execute"


def _env_read(r: Reason) -> str:
    how = "read by the step" + (" (it read os.environ whole)" if (r.detail or {}).get("whole")
                                else "")
    if (r.detail or {}).get("secret"):
        return f"{how}: {r.subject} changed (value hidden)"
    show = lambda v: "unset" if v is None else repr(v)  # noqa: E731
    return f"{how}: {r.subject} {show(r.before)} -> {show(r.after)}"


def _env_input(r: Reason) -> str:
    if (r.detail or {}).get("secret"):
        return f"env {r.subject}: secret value changed (value hidden)"
    show = lambda v: "unset" if v is None else str(v)  # noqa: E731
    return f"env {r.subject}: {show(r.before)} -> {show(r.after)}"


def _version(r: Reason) -> str:
    if r.before is None:
        return f"version: new ({r.after!r})"
    return f"version: {r.before!r} -> {r.after!r}"


def _expired(r: Reason) -> str:
    from zenbuild.durations import format_duration

    age, limit = format_duration(float(r.before or 0)), format_duration(float(r.after or 0))
    if age == limit:  # 10.4 s old, expiring after 10 s: both "10s" (rounded down)
        age = f"more than {limit}"
    return f"cached result is {age} old (expires after {limit})"


def _undeclared(r: Reason) -> str:
    more = int((r.detail or {}).get("more") or 0)
    also = f" (and {more} more file{'s' if more > 1 else ''})" if more else ""
    step = (r.detail or {}).get("step", "")
    return (f"step {step} wrote {r.subject}{also}, which will not be restored from the cache; "
            f'declare it with Output("{r.subject}")')


def _subclasses(r: Reason) -> str:
    d = r.detail or {}
    head = f"subclasses of {r.subject} (found by the step through __subclasses__())"
    if d.get("gone"):
        return f"{head}: the class is gone"
    parts = [f"{word} {', '.join(d[key])}" for key, word in
             (("added", "new:"), ("removed", "gone:"), ("changed", "changed:")) if d.get(key)]
    return f"{head} changed" + (f" ({'; '.join(parts)})" if parts else "")


def _rewritten(r: Reason) -> str:
    more = int((r.detail or {}).get("more") or 0)
    also = f" (and {more} more file{'s' if more > 1 else ''})" if more else ""
    step = (r.detail or {}).get("step", "")
    if (r.detail or {}).get("declared"):
        return (f"step {step} wrote into {r.subject}{also}, which it declares as its input "
                f'(File("{r.subject}")): a step must not change its inputs (when another step '
                "makes the file, zenbuild restores that step's version on the next run, and "
                "this step runs again each time); it was used but not cached. Write the "
                "changed data to an Output of its own instead (or copy the file first)")
    return (f"step {step} rewrote {r.subject}{also} in place: the file existed before it ran, "
            "and it read the file (or named it on a command line) and then changed it, so its "
            "result depends on what an earlier run left there; it was used but not cached. "
            f'If the file is what the step makes, declare it with Output("{r.subject}"); if '
            "the step edits its input, have it write the edited copy to an Output instead, "
            "or mark the step @no_cache")


def _detail(key: str) -> Callable[[Reason], Any]:
    return lambda r: (r.detail or {}).get(key, "")


# A template is a str.format string over subject, before, after and the detail's keys, or a
# function of the record.
Template = Union[str, Callable[[Reason], str]]
TEMPLATES: Dict[str, Template] = {
    NO_CACHE: "no_cache: external input, always executes",
    CACHE_DISABLED: _disabled,
    NEVER_BUILT: "never built",
    NO_ENTRY: "no cache entry for this fingerprint",
    CODE_ADDED: lambda r: f"code: now uses {_code_label(r)}",
    CODE_REMOVED: lambda r: f"code: no longer uses {_code_label(r)}",
    CODE_CHANGED: lambda r: f"code: {_code_label(r)} changed",
    PACKAGE_VERSION: lambda r: f"package {r.subject}: {r.before or 'not used'} -> "
                               f"{r.after or 'not used'}",
    PARAM_NEW: "param {subject}: new ({after})",
    PARAM_REMOVED: "param {subject}: removed",
    PARAM_CHANGED: "param {subject}: {before} -> {after}",
    INPUT_ADDED: "input {subject}: now reads the output of step {step}",
    INPUT_REMOVED: "input {subject}: no longer reads the output of step {step}",
    INPUT_CHANGED: "input {subject}: upstream step {step} produced different output",
    FILE_NEW: "file {subject}: new input",
    FILE_REMOVED: "file {subject}: no longer an input",
    FILE_CHANGED: lambda r: f"file {r.subject}: content changed ({size_text(r.before)} -> "
                            f"{size_text(r.after)})",
    DIR_SHAPE_CHANGED: "folder {subject}: file modes, symbolic links or empty folders changed",
    ENV_CHANGED: "env {subject}: {before} -> {after}",
    ENV_INPUT_CHANGED: _env_input,
    VERSION_CHANGED: _version,
    EXPIRED: _expired,
    FORCED_RERUN: "forced to execute (--rerun {subject})",
    PROBE_FAILED: "version probe of step {subject} failed ({after}); the step executes",
    BLOB_MISSING: "the cached result is missing from the store",
    OUTPUT_UNUSABLE: "{after}",
    OUTPUT_RESTORE: "output {subject}: differs from the stored result; a run restores it",
    OUTPUT_REMOVE: "output {subject}: not made by this step; a run removes it",
    UPSTREAM_PENDING: _pending,
    UPSTREAM_FAILED: "upstream step {subject} failed",
    UPSTREAM_SKIPPED: "upstream step {subject} was skipped",
    EARLIER_FAILED: "an earlier step failed",
    CANNOT_RUN: "{after}",
    INPUT_CHANGED_DURING: "input {subject} changed while step {step} ran; its result was used "
                          "but not cached",
    DIR_CHANGED_DURING: "input folder {subject} changed while step {step} ran; its result was "
                        "used but not cached",
    OUTPUT_SPECIAL: "output {subject} is {after}, which the store cannot keep (files, folders "
                    "and symbolic links only); the result of step {step} was used but not "
                    "cached, so it executes again next time",
    STALE_CODE: "the code of {subject} this process runs is not what the file holds now (it "
                "was edited after it was imported, or came from a stale .pyc); the result of "
                "step {step} was used but not cached. Re-import the module (restart the kernel) "
                "to cache it",
    CALLS_DISPLACED: "step {subject} started a profiler of its own (cProfile, torch.profiler "
                     "with stacks), which replaced the tracer that records the code a step runs "
                     "(Python < 3.12); its result was used but not cached. Profile outside the "
                     "step or use Python 3.12+ ([fingerprint] trace_calls = false also caches "
                     "it, without that check)",
    INPUT_REWRITTEN: _rewritten,
    SOURCE_CHANGED_DURING: "source {subject} changed while the run was in progress (step {step} "
                           "ran the code imported before); its result was used but not cached",
    NOT_DETERMINISTIC: "step {subject} is not deterministic: it ran again with the same code and "
                       "inputs and returned a different value; seed it or mark it @no_cache",
    UNDECLARED_WRITE: _undeclared,
    READ_FILE_CHANGED: "read by the step, not declared: {subject} changed",
    READ_FILE_MISSING: "read by the step, not declared: {subject} is gone",
    READ_FILE_APPEARED: "tried by the step, not declared: {subject} now exists",
    LISTED_DIR_CHANGED: "listed by the step: folder {subject} changed",
    GLOB_MATCHES_CHANGED: "listed by the step: the matches of {subject} changed",
    ENV_READ_CHANGED: _env_read,
    TRACED_CODE_CHANGED: "code run by the step, not seen statically: {subject} changed",
    TRACED_CODE_MISSING: "code run by the step, not seen statically: {subject} is gone",
    USED_MODULE_CHANGED: "module used by the step, not seen statically: {subject} changed",
    RECORD_UNREADABLE: "the record of what the step read last time cannot be checked ({after})",
    VALUE_TYPE_CODE_CHANGED: "the code registered to store {subject} changed since the value "
                             "was stored (its reducer, or its save() or load())",
    VALUE_TYPE_MISSING: "the stored value was encoded by the code registered for {subject}, "
                        "which cannot be found now",
    SUBCLASSES_CHANGED: _subclasses,
    UP_TO_DATE: "up to date",
}


def text(reason: Union[Reason, str]) -> str:
    """The English line for a reason (a plain string, as old run records hold, is itself)."""
    if isinstance(reason, str):
        return reason
    t = TEMPLATES.get(reason.kind)
    if t is None:  # a kind this version does not know (a newer store): say what we can
        return " ".join(str(x) for x in (reason.kind, reason.subject, reason.after) if x)
    if isinstance(t, str):
        return t.format_map(_Fields(reason))
    return t(reason)


class _Fields(dict):  # type: ignore[type-arg]
    """The names a format template may use; a missing detail key renders as ""."""

    def __init__(self, r: Reason) -> None:
        super().__init__(r.detail or {})
        self.update(subject=r.subject, before=r.before, after=r.after)

    def __missing__(self, key: str) -> str:
        return ""


def texts(reasons: Iterable[Union[Reason, str]]) -> List[str]:
    return [text(r) for r in reasons]


def kinds(reasons: Iterable[Union[Reason, str]]) -> List[str]:
    """The kinds of ``reasons`` ("" for a plain string from an old run record)."""
    return [r.kind if isinstance(r, Reason) else "" for r in reasons]


def to_json(reason: Union[Reason, str]) -> Dict[str, Any]:
    """A record for --json; a plain string from an old run record becomes a record of kind ""."""
    if isinstance(reason, str):
        return {"kind": "", "subject": "", "before": None, "after": None, "detail": None,
                "text": reason}
    return reason.to_json()


def from_json(obj: Any) -> Union[Reason, str]:
    """A reason as stored in the run history: a record dict, or a plain string (old rows)."""
    if isinstance(obj, dict) and "kind" in obj:
        return Reason(str(obj["kind"]), str(obj.get("subject") or ""), obj.get("before"),
                      obj.get("after"), obj.get("detail"))
    return str(obj)


# -- the run history's form --------------------------------------------------------------------
def pack(reason: Reason) -> Any:
    """A reason as the run history stores it, beside its text: the kind alone when nothing else
    is set (a no-op run of 1,000 steps stores "up_to_date" 1,000 times), else
    [kind, subject, before, after, detail]."""
    if not reason.subject and reason.before is None and reason.after is None \
            and reason.detail is None:
        return reason.kind
    return [reason.kind, reason.subject, reason.before, reason.after, reason.detail]


def unpack(packed: Any, shown: str) -> Dict[str, Any]:
    """The --json record of a reason stored by pack(), with the text it was shown with."""
    if isinstance(packed, str):
        packed = [packed]
    fields = list(packed) + [None] * (5 - len(packed))
    return {"kind": fields[0], "subject": fields[1] or "", "before": fields[2],
            "after": fields[3], "detail": fields[4], "text": shown}
