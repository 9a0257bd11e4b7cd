"""One `zenbuild watch` rebuild in a fresh process: open the pipeline through the front door
(project modules compiled from source), run, report.

The report (JSON, in the watcher's temp folder) lists the project modules and declared inputs
the pipeline depends on (with the files project modules read while imported), its Outputs,
and the non-project modules a warm server may preload. How the rebuild ended travels as an
Outcome (the process's exit code) and reaches the watcher as a ChildExit."""

from __future__ import annotations

import enum
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild.errors import ZenbuildError
from zenbuild.imported import import_reads
from zenbuild.project import is_project_module, module_file, source_predicate


class Outcome(enum.IntEnum):
    """How one rebuild child ended; the value is its exit code."""

    SUCCEEDED = 0
    STEP_FAILED = 1
    USER_ERROR = 2  # config, import, pipeline body, params: reported, waiting for a fix
    CRASHED = 3  # an error in zenbuild itself (its traceback is printed)
    INTERRUPTED = 130


@dataclass(frozen=True)
class ChildExit:
    """What the watcher learns when a rebuild is over: the child's Outcome, or the signal
    that killed it, or why there is no child to ask (``lost``)."""

    run_id: int
    outcome: Optional[Outcome] = None
    signal: int = 0
    lost: str = ""  # e.g. "the rebuild server process died"

    @classmethod
    def from_code(cls, run_id: int, code: int) -> ChildExit:
        """From a process exit code (negative: killed by that signal)."""
        if code < 0:
            return cls(run_id, signal=-code)
        try:
            return cls(run_id, Outcome(code))
        except ValueError:
            return cls(run_id, Outcome.CRASHED)


def collect_modules(is_project: Callable[[str], bool], baseline: Set[str]) -> Dict[str, List[str]]:
    """The project's module files in sys.modules, and the other modules this process imported
    beyond ``baseline`` (what a warm server could pre-import next time)."""
    project: List[str] = []
    tops: Set[str] = set()
    new = [(n, m) for n, m in list(sys.modules.items()) if n not in baseline and m is not None]
    for name, mod in new:  # what was there before holds no project module (see serve())
        if is_project_module(mod, is_project):
            tops.add(name.split(".")[0])
            f = module_file(mod)
            if f:
                project.append(f)
    preload = [
        name for name, mod in new
        if name.split(".")[0] not in tops and name not in ("__main__", "__mp_main__")
        and not is_project_module(mod, is_project)
    ]
    return {"modules": sorted(set(project)), "preload": preload}


def _error_files(e: BaseException, is_project: Callable[[str], bool]) -> List[str]:
    """Project files named by an exception chain: a syntax error's file, traceback frames."""
    out: List[str] = []
    seen: Set[int] = set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, SyntaxError) and cur.filename and is_project(cur.filename):
            out.append(cur.filename)
        for fs in traceback.extract_tb(cur.__traceback__):
            if fs.filename and os.path.isfile(fs.filename) and is_project(fs.filename):
                out.append(fs.filename)
        cur = cur.__cause__ or cur.__context__
    return out


def run_child(req: Dict[str, Any]) -> Outcome:
    """Run the pipeline once as ``zenbuild run`` would; write the report; return the Outcome."""
    baseline = set(req.get("baseline") or sys.modules)
    sys.argv = ["zenbuild", "watch"]  # not the server's or the spawn's own arguments
    root = req["root"]
    report: Dict[str, Any] = {"root": root, "loaded": False, "store": "", "config_source": None,
                              "modules": [], "files": [], "dirs": [], "outputs": [],
                              "listings": [],
                              "status": "error", "counts": {}, "watch": None, "preload": []}
    # the project's source, that outside the root included (watched, never kept warm)
    is_project = source_predicate(root, os.path.join(root, ".zenbuild"))
    outcome = Outcome.CRASHED
    extra: List[str] = []
    traced: List[str] = []
    try:
        from zenbuild.events import ConsoleReporter
        from zenbuild.project import load_project, open_pipeline
        from zenbuild.run import run_bound

        config = load_project(root)
        report.update(store=config.store, config_source=config.source, watch=dict(config.watch))
        is_project = source_predicate(config.root, config.store)
        opened = open_pipeline(name=req.get("pipeline"), params=list(req.get("params", [])),
                               config=config)
        for node in opened.graph.nodes.values():
            for ref in node.files:
                if ref.is_dir:
                    report["dirs"].append([ref.path, ref.glob])
                else:
                    report["files"].append(ref.path)
            report["outputs"].extend(node.outputs)
        report["loaded"] = True
        log: List[str] = []
        reporter = ConsoleReporter(quiet=bool(req.get("quiet")), verbose=bool(req.get("verbose")),
                                   log=log)
        result = run_bound(opened.bound, config=config, reporter=reporter, log=log,
                           graph=opened.graph)
        counts: Dict[str, int] = {}
        for r in result.steps.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        report.update(status=result.status, counts=counts)
        # files the steps read without declaring them, and the source files of the project
        # functions they ran (their current entries' discovered records, whether the step
        # executed in this rebuild or was served): an edit of one invalidates its step, so a
        # save of it must start a rebuild too (a plugin reached by import_module is imported
        # by no rebuild that serves its step)
        undeclared, listings, sources = _discovered(config.store, opened.graph.pipeline)
        report["files"].extend(undeclared)
        traced = [os.path.join(config.root, f) for f in sources]
        # and the folders they listed (a listing, or a pattern's matches, with its digest): a
        # file appearing there starts a rebuild when the step's listing is no longer the same
        report["listings"] = listings
        outcome = Outcome.SUCCEEDED if result.status == "succeeded" else Outcome.STEP_FAILED
    except ZenbuildError as e:  # the user's mistake: one paragraph, the user's frames only
        _flush()
        print(f"Error: {e.message.rstrip()}", file=sys.stderr)
        extra = _error_files(e, is_project)
        outcome = Outcome.USER_ERROR if e.exit_code == 2 else Outcome.STEP_FAILED
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        outcome = Outcome.INTERRUPTED
    except BaseException as e:  # noqa: B902 - zenbuild's own bug (or the body exiting): say so
        _flush()
        traceback.print_exc()
        print("Error: the rebuild failed inside zenbuild (traceback above).", file=sys.stderr)
        extra = _error_files(e, is_project)
        outcome = Outcome.CRASHED
    finally:
        try:
            found = collect_modules(is_project, baseline)
            report["modules"] = sorted(set(found["modules"]) | set(extra) | set(traced))
            # files project modules read while imported (params.yaml loaded by config.py):
            # the fingerprint of every step using that module holds them, so watch them too
            reads = {r for rs in import_reads().values() for r in rs}
            report["files"] = sorted(set(report["files"]) | reads)
            report["preload"] = found["preload"]
            _write_json(req["report"], report)
        except BaseException as e:  # noqa: B902 - the report is best effort; say so
            print(f"Warning: zenbuild watch could not write its report: {e}", file=sys.stderr)
        _flush()
    return outcome


def _discovered(store_path: str, pipeline: str) -> Tuple[List[str], List[List[Any]], List[str]]:
    """What the current entries of ``pipeline``'s steps record: the project files read, the
    listings (WatchSet.listings: ``["list", folder, "", {}, digest]`` for a listing of
    everything, a glob spec with its digest for one through a pattern) and the source files of
    the traced calls, project-relative. Best effort: a store that cannot be read adds nothing."""
    from zenbuild.discovered import malformed
    from zenbuild.store.db import Store

    try:
        store = Store(store_path)
    except Exception:  # noqa: BLE001 - the run reported its own store problems already
        return [], [], []
    reads: List[str] = []
    listings: List[List[Any]] = []
    sources: List[str] = []
    try:
        for entry in store.step_states(pipeline).values():
            rec = entry.discovered
            if not isinstance(rec, dict) or malformed(rec) is not None:
                continue
            reads.extend(rec.get("files") or {})
            reads.extend(rec.get("modules") or {})  # project modules it used (h5)
            listings.extend(["list", d, "", {}, was] for d, was in (rec.get("listed") or {}).items())
            listings.extend(list(g) for g in rec.get("globs") or [])
            for call in rec.get("calls") or ():
                sources.append(call[0])
            sources.extend(rec.get("sources") or {})
    except Exception:  # noqa: BLE001 - as above
        return [], [], []
    finally:
        store.close()
    return reads, listings, sorted({f for f in sources if f != "<__main__>"})


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass


def _write_json(path: str, data: Dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m zenbuild.watch.child REQUEST_JSON``: one rebuild in a fresh interpreter."""
    args = sys.argv[1:] if argv is None else argv
    return int(run_child(json.loads(args[0])))


if __name__ == "__main__":
    sys.exit(main())
