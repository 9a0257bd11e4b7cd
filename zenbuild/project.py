"""The front door: find the project, import ``module:attr`` (project modules compiled from their
source, never from a stale .pyc), convert params, bind and trace, under one error policy. Every
command, the watch child and the Python API (``pipeline().run()``) come in through
open_pipeline() or run_from_api().

The error policy: a mistake in the user's config, code (import or pipeline body) or params is a
ZenbuildError (exit 2) with one paragraph naming the file and line, followed by the user's own
frames only; an exception raised by zenbuild's own code propagates unchanged (a bug: exit 1 with
its traceback)."""

from __future__ import annotations

import importlib
import importlib.machinery
import marshal
import os
import sys
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from zenbuild import imported
from zenbuild.config import Config, config_where, find_project, load_config, resolve_pipeline_spec
from zenbuild.errors import ConfigError, ParamError, PipelineError, ZenbuildError
from zenbuild.paths import SKIP_DIRS, shown

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.dsl import BoundPipeline, Pipeline
    from zenbuild.graph import Graph
    from zenbuild.result import RunResult

PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))  # zenbuild's own code
_PACKAGE_DIRS = tuple({PACKAGE_DIR, os.path.dirname(os.path.abspath(__file__))})


# -- finding the project ------------------------------------------------------------------------
def locate(project_dir: Optional[str] = None, start: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(root, config file or None): ``project_dir`` itself when it holds zenbuild.toml, else the
    nearest folder upwards from it (or from ``start``, or the cwd) holding zenbuild.toml or a
    pyproject.toml with [tool.zenbuild]."""
    begin = os.path.abspath(project_dir or start or os.getcwd())
    if project_dir is not None and not os.path.isdir(begin):
        raise ConfigError(f"--project-dir {project_dir}: no such folder")
    if project_dir is not None and os.path.isfile(os.path.join(begin, "zenbuild.toml")):
        return begin, os.path.join(begin, "zenbuild.toml")
    return find_project(begin)


def load_project(project_dir: Optional[str] = None) -> Config:
    """Find zenbuild.toml (walking up from ``project_dir`` or the cwd) and load it."""
    return load_config(*locate(project_dir))


def project_for_code(fn: Callable[..., Any]) -> Optional[Config]:
    """The project the file defining ``fn`` belongs to: the nearest folder above it holding a
    config file. None when the code has no file or no config above it."""
    filename = getattr(getattr(fn, "__code__", None), "co_filename", "")
    if not filename or not os.path.isfile(filename):
        return None
    root, source = find_project(os.path.dirname(os.path.abspath(filename)))
    return load_config(root, source) if source is not None else None


# -- which files are the project's own source ---------------------------------------------------
def project_predicate(root: str, store: str) -> Callable[[str], bool]:
    """Is a file the project's own source (under the root; not a virtualenv, the store or
    zenbuild itself)? The one predicate every command and watch use."""
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
                and not real.startswith(PACKAGE_DIR + os.sep)
                and not any(p in SKIP_DIRS for p in os.path.relpath(real, root).split(os.sep))
            )
            memo[filename] = hit
        return hit

    return is_project


def source_predicate(root: str, store: str) -> Callable[[str], bool]:
    """project_predicate, and the source outside the root that the fingerprint counts as the
    project's too (fingerprint.project: not the interpreter's, an installed distribution's or
    zenbuild's; a shared folder on PYTHONPATH, an editable install elsewhere): what watch must
    watch and must never keep warm (an edit there reruns the steps that use it)."""
    from zenbuild.fingerprint.project import CELL, ProjectLocator

    inside = project_predicate(root, store)
    locator = ProjectLocator(root, store, warn=False)

    def is_source(filename: str) -> bool:
        return inside(filename) or locator.project_file(filename) not in (None, CELL)

    return is_source


def module_file(mod: Any) -> Optional[str]:
    f = getattr(mod, "__file__", None)
    return f if isinstance(f, str) else None


def is_project_module(mod: Any, is_project: Callable[[str], bool]) -> bool:
    """Is a module object the project's own (a namespace package by its folders)?"""
    f = module_file(mod)
    if f is not None:
        return is_project(f)
    paths = getattr(mod, "__path__", None)  # a namespace package has no __file__
    try:
        return any(is_project(os.path.join(p, "x.py")) for p in (paths or []))
    except TypeError:
        return False


# -- importing project code from its source -----------------------------------------------------
class SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a project module from its source bytes; never trusts a .pyc by mtime.

    CPython trusts a .pyc whose recorded source mtime (whole seconds) and size match the .py,
    so an edit within the same second that keeps the size (``1`` -> ``2``) would run stale
    code. Instead the compiled code is kept per module file in ``code_cache`` with the digest
    of the source it came from, checked on every import (a checked hash-based pyc)."""

    code_cache = ""  # folder for compiled code; "" = compile every time
    root = ""  # the project root: "" = do not record the files a module reads at import
    store_dir = ""

    def exec_module(self, module: types.ModuleType) -> None:
        """Run the module's top-level code, recording the project files it reads (its own
        reads only: a module it imports records its own)."""
        if not self.root:
            super().exec_module(module)
            return
        from zenbuild.trace import recording_imports

        rec = recording_imports(self.root, self.store_dir)
        try:
            with rec:
                super().exec_module(module)
        finally:
            if rec.trace is not None and rec.trace.reads:
                imported.note_reads(self.path, self.root, rec.trace.reads)
            if rec.trace is not None and rec.trace.env:  # they count for its top-level
                imported.note_env(self.path, rec.trace.env)  # statements (fingerprint/code.py)

    def get_code(self, fullname: str) -> types.CodeType:
        from zenbuild.digest import digest_bytes, stat_key

        path = self.get_filename(fullname)
        try:
            before: Optional[Tuple[int, int, int, int]] = stat_key(os.stat(path))
        except OSError:
            before = None
        source = self.get_data(path)
        digest = digest_bytes(source)
        imported.note_source(path, digest, before)
        if self.root:  # a step that loads it uses it (runpy.run_module: no sys.modules entry)
            from zenbuild import trace

            if any(not r.isolated for r in trace._ACTIVE):  # a step's recording under way
                from zenbuild.trace.modules import note_loaded

                note_loaded(path)
        cached = ""
        tag = f"{digest}:{sys.version}".encode()
        if self.code_cache:
            cached = os.path.join(self.code_cache, digest_bytes(os.fsencode(path)))
            try:
                with open(cached, "rb") as f:
                    head, _, body = f.read().partition(b"\n")
                # the header names the source and Python it came from, and the digest of
                # the body: damaged code (a flipped bit that still unmarshals) is compiled
                # again, never run
                if head == tag + b":" + digest_bytes(body).encode():
                    return marshal.loads(body)  # type: ignore[no-any-return]
            except (OSError, ValueError, EOFError, TypeError):
                pass
        code = self.source_to_code(source, path)
        if cached:
            tmp = f"{cached}.{os.getpid()}.tmp"
            try:
                os.makedirs(self.code_cache, exist_ok=True)
                body = marshal.dumps(code)
                with open(tmp, "wb") as f:
                    f.write(tag + b":" + digest_bytes(body).encode() + b"\n" + body)
                os.replace(tmp, cached)
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return code  # type: ignore[no-any-return]


    def source_to_code(  # type: ignore[override]  # (as FileLoader defines it)
            self, data: Any, path: Any, *, _optimize: int = -1) -> types.CodeType:
        """The module's code, compiled from its parsed AST, which is offered to the
        fingerprint (fingerprint/source.py note_compiled) so it is not parsed twice."""
        import ast

        from zenbuild.digest import digest_bytes
        from zenbuild.fingerprint.source import note_compiled

        tree = ast.parse(data, path)
        code = compile(tree, path, "exec", dont_inherit=True, optimize=_optimize)
        if isinstance(path, str) and isinstance(data, bytes):
            note_compiled(path, digest_bytes(data), tree)
        return code


class SourceFinder:
    """A meta path finder that puts SourceLoader on the project's own source modules and
    defers on everything else (skipping at once a search that cannot reach the project)."""

    def __init__(self, is_project: Callable[[str], bool], code_cache: str = "", root: str = "",
                 store_dir: str = "") -> None:
        self.is_project = is_project
        self.code_cache = code_cache
        self.root = root
        self.store_dir = store_dir

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[types.ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        search = sys.path if path is None else path
        if not any(self.is_project(os.path.join(p or ".", "x.py")) for p in search):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if (spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader
                or not spec.origin or not self.is_project(spec.origin)):
            return None
        loader = SourceLoader(fullname, spec.origin)
        loader.code_cache = self.code_cache
        loader.root, loader.store_dir = self.root, self.store_dir
        spec.loader = loader
        return spec


def install_source_imports(is_project: Callable[[str], bool], code_cache: str = "",
                           root: str = "", store_dir: str = "") -> SourceFinder:
    """Import the project's modules from source from now on (once per process: a second call
    replaces the first finder). With ``root``, the project files each module reads while it is
    imported are recorded (imported.import_reads())."""
    for f in [f for f in sys.meta_path if isinstance(f, SourceFinder)]:
        sys.meta_path.remove(f)
    finder = SourceFinder(is_project, code_cache, root, store_dir)
    sys.meta_path.insert(0, finder)
    return finder


def source_imports_for(config: Config) -> SourceFinder:
    return install_source_imports(project_predicate(config.root, config.store),
                                  os.path.join(config.store, "pycode"), config.root, config.store)


# -- the error policy ---------------------------------------------------------------------------
def _own(filename: str) -> bool:
    return filename.startswith(_PACKAGE_DIRS)


def _machinery(filename: str) -> bool:
    return "<frozen" in filename or os.sep + "importlib" + os.sep in filename


def user_traceback(e: BaseException) -> str:
    """The exception's traceback with zenbuild's and the import machinery's frames removed."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not _own(f.filename) and not _machinery(f.filename)]
    text = "".join(traceback.format_list(frames)) if frames else ""
    return text + "".join(traceback.format_exception_only(type(e), e))


def user_location(e: BaseException) -> Optional[Tuple[str, int]]:
    """(file, line) of the innermost user frame of ``e`` (a SyntaxError: where it is)."""
    import traceback

    if isinstance(e, SyntaxError) and e.filename and e.lineno:
        return e.filename, e.lineno
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not _own(f.filename) and not _machinery(f.filename)]
    return (frames[-1].filename, frames[-1].lineno or 0) if frames else None


def _raised_by_zenbuild(e: BaseException) -> bool:
    """Whether the innermost frame (the import machinery aside) is zenbuild's own code."""
    import traceback

    stack = traceback.extract_tb(e.__traceback__)
    if stack and _machinery(stack[-1].filename):
        return False  # the import system refusing a user's import (no such module...)
    frames = [f for f in stack if not _machinery(f.filename)]
    return bool(frames) and _own(frames[-1].filename)


class UserCodeError(PipelineError):
    """The user's code raised while zenbuild imported it or traced a pipeline body. Carries
    the place and the user's frames (for --json and the watch report)."""

    def __init__(self, message: str, filename: str = "", lineno: int = 0,
                 error_type: str = "", traceback_text: str = "") -> None:
        super().__init__(message)
        self.filename = filename
        self.lineno = lineno
        self.error_type = error_type
        self.traceback_text = traceback_text


def guard(what: str, root: str, call: Callable[[], Any]) -> Any:
    """Run ``call`` (user code: an import, a pipeline body) under the error policy. ``what``
    words the message ("importing pipe", "the body of pipeline demo")."""
    try:
        return call()
    except ZenbuildError as e:
        where = user_location(e)
        if where is not None and not isinstance(e, UserCodeError):
            e.message = f"{e.message.rstrip()} (in {what}, at {shown(where[0], root)}:{where[1]})"
            e.args = (e.message,)
        raise
    except Exception as e:
        if not isinstance(e, SyntaxError) and _raised_by_zenbuild(e):
            raise  # zenbuild's own bug: the whole traceback, exit 1 (a SyntaxError is the
            # user's even though zenbuild's source loader is the one that compiles)
        where = user_location(e)
        place = f"{shown(where[0], root)}:{where[1]}" if where else "(no line of your code)"
        tb = user_traceback(e)
        hint = ""
        if isinstance(e, TypeError) and "not callable" in str(e):
            hint = (" A value that is not a step was called where a step was expected (a --param "
                    "value is a string, never a step); call the step itself in the pipeline body.")
        raise UserCodeError(
            f"{what} raised {type(e).__name__} at {place}: {e}.{hint} Fix the code there and run "
            f"again; your frames:\n{tb.rstrip()}",
            where[0] if where else "", where[1] if where else 0, type(e).__name__, tb,
        ) from e


def _defined_at(fn: Any, root: str) -> str:
    code = getattr(fn, "__code__", None)
    return f"{shown(code.co_filename, root)}:{code.co_firstlineno}" if code is not None else "?"


# -- import, params, bind, trace ----------------------------------------------------------------
def import_object(config: Config, spec: str) -> Any:
    """Import ``module:attribute`` with the project root first on sys.path."""
    if ":" not in spec:
        raise PipelineError(f"{spec!r} is not of the form module:attribute")
    mod_name, attr = spec.split(":", 1)
    if config.root in sys.path:
        sys.path.remove(config.root)
    sys.path.insert(0, config.root)
    try:
        module = guard(f"importing {mod_name}", config.root, lambda: importlib.import_module(mod_name))
    except UserCodeError as e:
        cause = e.__cause__
        if isinstance(cause, SyntaxError):
            where = shown(cause.filename, config.root) if cause.filename else mod_name
            raise PipelineError(
                f"cannot import {mod_name}: syntax error in {where} line {cause.lineno}: "
                f"{cause.msg}.\n    {(cause.text or '').strip()}"
            ) from None
        if (isinstance(cause, ModuleNotFoundError) and cause.name
                and (mod_name == cause.name or mod_name.startswith(cause.name + "."))):
            raise PipelineError(
                f"cannot import {mod_name}: no module named {cause.name!r} under the project "
                f"root {config.root} or on sys.path. Check the pipeline's module:attribute."
            ) from None
        raise
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PipelineError(f"module {mod_name} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def load_pipeline(config: Config, name: Optional[str]) -> Tuple[str, Pipeline]:
    from zenbuild.dsl import BoundPipeline, Pipeline

    spec = resolve_pipeline_spec(config, name)
    obj = import_object(config, spec)
    if isinstance(obj, BoundPipeline):
        obj = obj.pipeline
    if not isinstance(obj, Pipeline):
        raise PipelineError(
            f"{spec} is a {type(obj).__name__}, not a pipeline; decorate the function with @pipeline"
        )
    return spec, obj


def parse_cli_params(pipe: Pipeline, pairs: List[str]) -> Dict[str, Any]:
    """--param KEY=VALUE strings converted by the pipeline's annotations (zenbuild/typed)."""
    if not pairs:
        return {}  # a no-op run without params imports no converter
    from zenbuild.typed.pipeline import ParamTypes

    return ParamTypes(pipe.fn, pipe.params).cli_values(pairs, pipe.name)


def bind_pipeline(pipe: Pipeline, config: Config, explicit: Dict[str, Any],
                  api: bool = False) -> BoundPipeline:
    """Bind with precedence: function defaults < zenbuild.toml [params] < explicit values.
    [params] values are converted by the annotations and their names checked; with ``api``,
    the explicit values (Python API arguments) are checked too."""
    from zenbuild.dsl import BoundPipeline

    merged: Dict[str, Any] = {}
    edits: Dict[str, Any] = {}
    if explicit:  # given values were converted: the converter is imported already
        from zenbuild.typed.edits import FieldEdits

        edits = {k: v for k, v in explicit.items() if isinstance(v, FieldEdits)}
    if config.params or api or edits:
        from zenbuild.typed.pipeline import ParamTypes

        types_ = ParamTypes(pipe.fn, pipe.params)
        merged, unknown = types_.config_values(
            config.params, lambda k: config_where(config, "params", k),
            f"pipeline {pipe.name} is defined at {_defined_at(pipe.fn, config.root)}")
        if unknown and not pipe.params.varkw:
            spec = _spec_of(config, pipe)  # judged by its real parameters, not its source
            _check_names(config, "params", unknown, types_.names,
                         lambda p: None if p.params.varkw else p.params.names,
                         traced=[spec] if spec else [])
        if api:
            explicit = types_.api_values(explicit, pipe.name)
        if edits:  # --param NAME.FIELD=VALUE: on the [params] value or the default
            explicit = {**explicit, **{k: types_.edited(k, e, merged) for k, e in edits.items()}}
    merged.update(explicit)
    try:
        return BoundPipeline(pipe, (), merged)
    except PipelineError as e:
        raise PipelineError(f"{e.message} (pipeline {pipe.name} is defined at "
                            f"{_defined_at(pipe.fn, config.root)})") from None


def check_step_sections(config: Config, graph: Graph, spec: Optional[str] = None) -> None:
    """Each [steps.NAME] must name a call or a step of a configured pipeline (did-you-mean):
    the real names of ``graph`` (traced from ``spec``), else another configured pipeline's."""
    if config.steps:
        from zenbuild.typed.pipeline import step_names

        _check_names(config, "steps", list(config.steps), step_names(graph), lambda p: step_names(
            bind_pipeline(p, config, {}).trace(config.root)), traced=[spec] if spec else [])


def _spec_of(config: Config, pipe: Pipeline) -> Optional[str]:
    """The configured spec (module:attr) ``pipe`` was loaded from, if it is one of them."""
    mod = getattr(pipe.fn, "__module__", None)
    for spec in config.pipelines:
        m, _, attr = spec.partition(":")
        if m == mod and attr in (pipe.name, getattr(pipe.fn, "__name__", None)):
            return spec
    return None


def _check_names(config: Config, table: str, names: List[str], here: List[str],
                 names_of: Callable[[Pipeline], Optional[List[str]]],
                 traced: Sequence[str] = ()) -> None:
    """typed.pipeline.check_names, with the other configured pipelines imported from source
    only when their files do not declare the names (one [params] table and one set of
    [steps.NAME] sections serve them all)."""
    from zenbuild.typed.pipeline import check_names

    check_names(table, names, here, config.root, config.pipelines,
                lambda spec: names_of(load_pipeline(config, spec)[1]),
                lambda k: config_where(config, table, k), traced)


def trace(bound: BoundPipeline, config: Config) -> Graph:
    """Trace the pipeline body into its Graph, under the error policy."""
    return guard(f"the body of pipeline {bound.pipeline.name}", config.root,  # type: ignore[no-any-return]
                 lambda: bound.trace(config.root))


class Opened:
    """A pipeline through the front door: its config, spec, function, binding and graph."""

    __slots__ = ("config", "spec", "pipeline", "bound", "graph")

    def __init__(self, config: Config, spec: str, pipeline: Pipeline, bound: BoundPipeline,
                 graph: Graph) -> None:
        self.config = config
        self.spec = spec
        self.pipeline = pipeline
        self.bound = bound
        self.graph = graph


def open_pipeline(
    project_dir: Optional[str] = None,
    name: Optional[str] = None,
    params: Sequence[str] = (),
    config: Optional[Config] = None,
) -> Opened:
    """Find the project (unless ``config`` is given), import pipeline ``name`` from source,
    convert the --param ``params`` (KEY=VALUE strings), bind with [params], and trace."""
    if config is None:
        config = load_project(project_dir)
    source_imports_for(config)
    spec, pipe = load_pipeline(config, name)
    try:
        values = parse_cli_params(pipe, list(params))
    except ParamError as e:
        raise ParamError(f"{e.message} (pipeline {pipe.name} is defined at "
                         f"{_defined_at(pipe.fn, config.root)})") from None
    bound = bind_pipeline(pipe, config, values)
    graph = trace(bound, config)
    check_step_sections(config, graph, spec)
    return Opened(config, spec, pipe, bound, graph)


def run_from_api(
    bound: BoundPipeline, project_dir: Optional[Any] = None, **options: Any
) -> RunResult:
    """``BoundPipeline.run()``: find the project (``project_dir``; else the one the pipeline's
    code lives in; else from the cwd), let [params] fill what the call left unset, and run."""
    from zenbuild.run import run_bound

    config = None
    if project_dir is None:
        config = project_for_code(bound.pipeline.fn)
    if config is None:
        config = load_project(os.fspath(project_dir) if project_dir is not None else None)
    source_imports_for(config)
    explicit = {k: bound.arguments[k] for k in bound.explicit}
    bound = bind_pipeline(bound.pipeline, config, explicit, api=True)  # [params] fill the rest
    graph = trace(bound, config)
    check_step_sections(config, graph, _spec_of(config, bound.pipeline))
    from zenbuild.policy import check_api_choices

    check_api_choices(graph, options.get("targets"), options.get("steps"), options.get("rerun"))
    return run_bound(bound, config=config, graph=graph, **options)
