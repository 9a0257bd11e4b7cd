"""One `zenbuild watch` rebuild in a fresh process: import the project from source, run, report.

The report (JSON, in the watcher's temp folder) lists the project modules and declared inputs
the pipeline depends on, its Outputs, and the non-project modules a warm server may preload."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import marshal
import os
import sys
import traceback
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from zenbuild.errors import ZenbuildError

_SKIP_PARTS = frozenset({"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox"})
_ZENBUILD_DIR = os.path.dirname(os.path.realpath(__file__))


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a project module from its source on every import; never reads or writes .pyc.

    CPython trusts a .pyc whose recorded source mtime (whole seconds) and size match the .py, so
    an edit within the same second that keeps the size (``1`` -> ``2``) would run stale code.
    Instead, compiled code is cached under a digest of the source bytes themselves (in the
    watcher's temp folder, for the session), which cannot go stale. Third-party and
    standard-library modules keep their .pyc: they do not change under watch.
    """

    code_cache = ""  # folder for content-keyed compiled code; "" = compile every time

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        cached = ""
        if self.code_cache:
            from zenbuild.digest import digest_bytes

            key = digest_bytes(b"\0".join([path.encode(), sys.version.encode(), source]))
            cached = os.path.join(self.code_cache, key)
            try:
                with open(cached, "rb") as f:
                    return marshal.loads(f.read())  # type: ignore[no-any-return]
            except (OSError, ValueError, EOFError, TypeError):
                pass
        code = self.source_to_code(source, path)
        if cached:
            try:
                tmp = f"{cached}.{os.getpid()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(marshal.dumps(code))
                os.replace(tmp, cached)
            except OSError:
                pass
        return code  # type: ignore[no-any-return]


class FreshSourceFinder(importlib.abc.MetaPathFinder):
    """Puts FreshSourceLoader on the project's own source modules; defers on everything else."""

    def __init__(self, is_project: Callable[[str], bool], code_cache: str = "") -> None:
        self.is_project = is_project
        self.code_cache = code_cache

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[types.ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if (spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader
                or not spec.origin or not self.is_project(spec.origin)):
            return None
        loader = FreshSourceLoader(fullname, spec.origin)
        loader.code_cache = self.code_cache
        spec.loader = loader
        return spec


def project_predicate(root: str, store: str) -> Callable[[str], bool]:
    """Is a file the project's own source (under the root; not a virtualenv, the store or
    zenbuild itself)?"""
    root = os.path.realpath(root)
    store = os.path.realpath(store) if store else ""
    memo: Dict[str, bool] = {}

    def is_project(filename: str) -> bool:
        hit = memo.get(filename)
        if hit is None:
            real = os.path.realpath(filename)
            hit = (
                real.startswith(root + os.sep)
                and not (store and real.startswith(store + os.sep))
                and not real.startswith(_ZENBUILD_DIR + os.sep)
                and not any(p in _SKIP_PARTS for p in os.path.relpath(real, root).split(os.sep))
            )
            memo[filename] = hit
        return hit

    return is_project


def install_fresh_imports(is_project: Callable[[str], bool], code_cache: str = "") -> FreshSourceFinder:
    finder = FreshSourceFinder(is_project, code_cache)
    sys.meta_path.insert(0, finder)
    sys.dont_write_bytecode = True  # belt and braces: this process writes no .pyc at all
    return finder


def _module_file(mod: Any) -> Optional[str]:
    f = getattr(mod, "__file__", None)
    return f if isinstance(f, str) else None


def _is_project_module(mod: Any, is_project: Callable[[str], bool]) -> bool:
    f = _module_file(mod)
    if f is not None:
        return is_project(f)
    paths = getattr(mod, "__path__", None)  # a namespace package has no __file__
    try:
        return any(is_project(os.path.join(p, "x.py")) for p in (paths or []))
    except TypeError:
        return False


def collect_modules(is_project: Callable[[str], bool], baseline: Set[str]) -> Dict[str, List[str]]:
    """The project's module files in sys.modules, and the other modules this process imported
    beyond ``baseline`` (what a warm server could pre-import next time)."""
    project: List[str] = []
    tops: Set[str] = set()
    new = [(n, m) for n, m in list(sys.modules.items()) if n not in baseline and m is not None]
    for name, mod in new:  # what was there before holds no project module (see serve())
        if _is_project_module(mod, is_project):
            tops.add(name.split(".")[0])
            f = _module_file(mod)
            if f:
                project.append(f)
    preload = [
        name for name, mod in new
        if name.split(".")[0] not in tops and name not in ("__main__", "__mp_main__")
        and not _is_project_module(mod, is_project)
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


def run_child(req: Dict[str, Any]) -> int:
    """Run the pipeline once as ``zenbuild run`` would; write the report; return an exit code:
    0 succeeded, 1 a step failed, 2 the user's mistake (config, import, params), 3 anything
    else, 130 interrupted."""
    baseline = set(req.get("baseline") or sys.modules)
    sys.argv = ["zenbuild", "watch"]  # not the server's or the spawn's own arguments
    root = req["root"]
    report: Dict[str, Any] = {"root": root, "loaded": False, "store": "", "config_source": None,
                              "modules": [], "files": [], "dirs": [], "outputs": [],
                              "status": "error", "counts": {}, "watch": None, "preload": []}
    is_project = project_predicate(root, os.path.join(root, ".zenbuild"))
    finder: Optional[FreshSourceFinder] = None
    code = 3
    extra: List[str] = []
    try:
        from zenbuild.events import ConsoleReporter
        from zenbuild.project import bind_pipeline, load_pipeline, load_project, parse_cli_params
        from zenbuild.run import run_bound

        config = load_project(root)
        report.update(store=config.store, config_source=config.source, watch=dict(config.watch))
        is_project = project_predicate(config.root, config.store)
        finder = install_fresh_imports(is_project, str(req.get("code_cache") or ""))
        _spec, pipe = load_pipeline(config, req.get("pipeline"))
        bound = bind_pipeline(pipe, config, parse_cli_params(pipe, list(req.get("params", []))))
        graph = bound.trace(config.root)
        bound.trace = lambda root: graph  # type: ignore[method-assign]  # run_bound: trace once
        for node in graph.nodes.values():
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
        result = run_bound(bound, config=config, reporter=reporter, log=log)
        counts: Dict[str, int] = {}
        for r in result.steps.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        report.update(status=result.status, counts=counts)
        code = 0 if result.status == "succeeded" else 1
    except ZenbuildError as e:
        _flush()
        print(f"Error: {e.message.rstrip()}", file=sys.stderr)
        extra = _error_files(e, is_project)
        code = e.exit_code
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        code = 130
    except BaseException as e:  # noqa: B902 - a pipeline body raising (or exiting) is reported too
        from zenbuild.project import _user_traceback

        _flush()
        print(f"Error: the pipeline could not run:\n{_user_traceback(e).rstrip()}", file=sys.stderr)
        extra = _error_files(e, is_project)
        code = 3
    finally:
        try:
            found = collect_modules(is_project, baseline)
            report["modules"] = sorted(set(found["modules"]) | set(extra))
            report["preload"] = found["preload"]
            _write_json(req["report"], report)
        except BaseException as e:  # noqa: B902 - the report is best effort; say so
            print(f"Warning: zenbuild watch could not write its report: {e}", file=sys.stderr)
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        _flush()
    return code


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
    return run_child(json.loads(args[0]))


if __name__ == "__main__":
    sys.exit(main())
