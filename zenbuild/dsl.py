"""@step / @pipeline, the File/Dir/Output markers, and tracing a pipeline body into a Graph."""

from __future__ import annotations

import functools
import os
import re
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from zenbuild.binding import Params, params_of
from zenbuild.durations import parse_duration
from zenbuild.errors import PathError, PipelineError
from zenbuild.graph import EnvRef, FileRef, Graph, InputRef, Node, OutputRef, StepDef
from zenbuild.lazyre import LazyPattern
from zenbuild.paths import normalize_path, plain_rel

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.result import RunResult

PathLike = Union[str, "os.PathLike[str]"]


def _path_text(kind: str, path: Any) -> str:
    """The text of a path given to File, Dir or Output (a str, a pathlib.Path, bytes, any
    os.PathLike); anything else is refused as the pipeline's mistake."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise PipelineError(f"{kind}({path!r}): a path is a str or a pathlib.Path, not "
                            f"{type(path).__name__}") from None
    return os.fsdecode(text) if isinstance(text, bytes) else text


class File:
    """A file input whose content is fingerprinted. The step receives an absolute Path."""

    def __init__(self, path: PathLike) -> None:
        self.path = path if type(path) is str else _path_text("File", path)

    def __repr__(self) -> str:
        return f"File({self.path!r})"


class Dir:
    """A folder input; files matching ``glob`` are fingerprinted. The step receives a Path."""

    def __init__(self, path: PathLike, glob: str = "**/*") -> None:
        self.path = path if type(path) is str else _path_text("Dir", path)
        if not isinstance(glob, str) or not glob:
            raise PipelineError(f"Dir({self.path!r}, glob={glob!r}): the glob is a non-empty "
                                "string such as '**/*.csv'")
        self.glob = glob

    def __repr__(self) -> str:
        return f"Dir({self.path!r}, glob={self.glob!r})"


class Env:
    """An environment variable as a declared input: the step receives its value (a str) and the
    value joins the fingerprint. Without ``default`` the variable must be set. A ``secret``
    value is fingerprinted by a keyed digest (the key lives in the store) and never shown."""

    def __init__(self, name: str, default: Optional[str] = None, secret: bool = False) -> None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise PipelineError(f"Env({name!r}): the name of an environment variable is letters, "
                                "digits and '_', not starting with a digit")
        if default is not None and not isinstance(default, str):
            raise PipelineError(f"Env({name!r}, default={default!r}): the default must be a "
                                "string, as environment variables are")
        self.name = name
        self.default = default
        self.secret = bool(secret)

    def __repr__(self) -> str:
        return f"Env({self.name!r}{', secret=True' if self.secret else ''})"


class Output:
    """A file or folder the step writes. The step receives an absolute Path."""

    def __init__(self, path: PathLike) -> None:
        self.path = path if type(path) is str else _path_text("Output", path)

    def __repr__(self) -> str:
        return f"Output({self.path!r})"


class Handle:
    """What calling a step inside a pipeline body returns: a promise of the step's output."""

    __slots__ = ("_node", "_path", "_n")

    def __init__(self, node: str, path: Tuple[Any, ...] = (), n: Optional[int] = None) -> None:
        self._node = node
        self._path = path
        self._n = n

    def __getitem__(self, key: Any) -> Handle:
        return Handle(self._node, self._path + (key,))

    def __iter__(self) -> Any:
        if self._n is None:
            raise PipelineError(
                f"cannot unpack the output of step {self._node}: declare how many values it "
                "returns with a return annotation such as -> Tuple[int, str], or index the "
                "handle (out[0], out[1])."
            )
        return iter([self[i] for i in range(self._n)])

    def _not_a_value(self, use: str, fix: str) -> PipelineError:
        return PipelineError(
            f"the output of step {self._node} was used {use} while the pipeline "
            "is traced. A handle is a promise of a value: it has no value yet, because a "
            "pipeline body only wires steps together. Use it inside a step: " + fix
        )

    def __bool__(self) -> bool:
        raise self._not_a_value("as a condition", "put the condition inside a step.")

    def __str__(self) -> str:
        raise self._not_a_value(
            "as a string (str(), an f-string, format() or %)",
            "pass it to a step and build the string there; a step that builds the string "
            "(and returns it, for the next step to use) is the fix.")

    def __format__(self, spec: str) -> str:
        return self.__str__()

    def __fspath__(self) -> str:
        raise self._not_a_value(
            "as a path", "pass it to a step that builds the path, or declare the path with "
            "Output(...) as a plain string in the pipeline body.")

    def __int__(self) -> int:
        raise self._not_a_value("as a number", "do the arithmetic inside a step.")

    __float__ = __index__ = __int__  # type: ignore[assignment]

    def __repr__(self) -> str:  # zenbuild's own display (explain, errors): never raises
        return f"<output of step {self._node}>"


# Keywords that name a call instead of passing a param, unless the step's function declares
# a parameter of that name (then it is the function's, as in a plain call). ``id`` is ZenML's
# spelling; ``zen_id`` always works for a step whose function has its own ``id`` parameter.
_ID_KEYWORDS = ("id", "zen_id")
_ID_RE = LazyPattern(r"[A-Za-z_][A-Za-z0-9_-]*")


def _pop_call_id(st: Step, kwargs: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
    """(the call id given with id=/zen_id=, the keywords left for the function)."""
    if not kwargs or not ("id" in kwargs or "zen_id" in kwargs):
        return None, kwargs
    declared = set(st.params.positional) | set(st.params.kwonly)
    found = [k for k in _ID_KEYWORDS if k in kwargs and k not in declared]
    if not found:
        return None, kwargs
    if len(found) > 1:
        raise PipelineError(f"step {st.name}: give a call either id= or zen_id=, not both")
    rest = dict(kwargs)
    value = rest.pop(found[0])
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise PipelineError(
            f"step {st.name}: {found[0]}={value!r} is not a valid call id; use letters, digits, "
            "'_' and '-', starting with a letter or '_' (it names the call in [steps.NAME] "
            "and explain NAME)."
        )
    return value, rest


_TRACER: ContextVar[Optional[_Tracer]] = ContextVar("zenbuild_tracer", default=None)


def _tracer() -> Optional[_Tracer]:
    return _TRACER.get()


def _tuple_len(fn: Callable[..., Any]) -> Optional[int]:
    ann = getattr(fn, "__annotations__", {}).get("return")
    if ann is None:
        return None
    text = ann if isinstance(ann, str) else repr(ann)
    m = re.fullmatch(r"\s*(?:typing\.)?[Tt]uple\[(.*)\]\s*", text)
    if not m or "..." in m.group(1):
        return None
    depth, count = 0, 1
    for ch in m.group(1):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
    return count


class Step(StepDef):
    """A plain function made into a pipeline step. Called in a pipeline body it records an
    invocation and returns a Handle; called anywhere else it simply runs the function."""

    def __init__(self, fn: Callable[..., Any], enable_cache: Optional[bool] = None,
                 ignore: Sequence[str] = (), version: Optional[Callable[..., Any]] = None,
                 cache_expires_after: Optional[Union[str, float]] = None,
                 probe_timeout: Optional[Union[str, float]] = None) -> None:
        if not callable(fn):
            raise TypeError("@step decorates a function")
        self.fn = fn
        self.name: str = fn.__name__
        _check_plain(fn)
        self.enable_cache = enable_cache
        self.no_cache: bool = bool(getattr(fn, "__zenbuild_no_cache__", False))
        self._params: Optional[Params] = None
        self._nout = _tuple_len(fn)
        self.ignore = self._check_ignore(ignore)
        if version is not None and not callable(version):
            raise PipelineError(f"@step(version=...) of step {self.name}: the version probe "
                                f"must be a function (called with the step's params), got "
                                f"{type(version).__name__} {version!r}")
        self.version = version
        self.expires_after = self._duration("cache_expires_after", cache_expires_after)
        self.probe_timeout = self._duration("probe_timeout", probe_timeout)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _duration(self, keyword: str, text: Optional[Union[str, float]]) -> Optional[float]:
        """Seconds of a duration keyword of @step, None when not given. Raises PipelineError."""
        if text is None:
            return None
        if isinstance(text, (int, float)) and type(text) is not bool and text > 0:  # seconds
            return float(text)
        try:
            return parse_duration(text)
        except ValueError as e:  # (its message names the accepted forms)
            raise PipelineError(f"@step({keyword}={text!r}) of step {self.name} "
                                f"({_where(self.fn)}): {e}; a number is seconds") from None

    def _check_ignore(self, ignore: Sequence[str]) -> Tuple[str, ...]:
        """The ignored argument names, each checked against the function's parameters."""
        if isinstance(ignore, str):
            ignore = [ignore]
        names = list(ignore)
        layout = self.params
        known = [n for n in layout.names if n != layout.varkw]
        for n in names:
            if not isinstance(n, str) or (n not in known and layout.varkw is None):
                raise PipelineError(
                    f"@step(ignore=[{n!r}]) of step {self.name} ({_where(self.fn)}): the step "
                    f"has no parameter {n!r}; its parameters are: "
                    f"{', '.join(known) or '(none)'}. Name only parameters of the function.")
        return tuple(names)

    @property
    def params(self) -> Params:
        """The function's parameter layout (binding without importing inspect)."""
        if self._params is None:
            self._params = params_of(self.fn)
        return self._params

    @property
    def signature(self) -> Any:
        import inspect

        return inspect.signature(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call_id, kwargs = _pop_call_id(self, kwargs) if kwargs else (None, kwargs)
        tracer = _tracer()
        if tracer is None:
            return self.fn(*args, **kwargs)  # a call id only names a call in a pipeline
        return tracer.invoke(self, args, kwargs, call_id)

    def __repr__(self) -> str:
        return f"<zenbuild step {self.name}>"


# inspect's CO_COROUTINE, CO_ASYNC_GENERATOR, CO_GENERATOR (a @types.coroutine one too)
_LAZY_KINDS = ((0x80, "an async def (a coroutine function)"), (0x200, "an async generator"),
               (0x20, "a generator function (it uses yield)"))


def _check_plain(fn: Callable[..., Any]) -> None:
    """Refuse a step whose call returns a coroutine or a generator instead of its value: the
    result is what is stored and passed on, and a coroutine or generator is neither storable
    nor the work done (a run would fail with a pickling error). Raises PipelineError."""
    flags = getattr(getattr(fn, "__code__", None), "co_flags", 0)
    if not isinstance(flags, int):
        return
    for bit, what in _LAZY_KINDS:
        if flags & bit:
            raise PipelineError(
                f"@step {fn.__name__} ({_where(fn)}) is {what}: a step must return its value. "
                "zenbuild does not run event loops or consume generators for a step; make it a "
                "plain def that does it itself (`return asyncio.run(main())`, "
                "`return list(gen())`).")


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"{code.co_filename}:{code.co_firstlineno}"


@overload
def step(fn: Callable[..., Any]) -> Step: ...
@overload
def step(*, enable_cache: Optional[bool] = None, ignore: Sequence[str] = (),
         version: Optional[Callable[..., Any]] = None,
         cache_expires_after: Optional[Union[str, float]] = None,
         probe_timeout: Optional[Union[str, float]] = None) -> Callable[[Callable[..., Any]], Step]: ...
def step(fn: Any = None, *, enable_cache: Optional[bool] = None, ignore: Sequence[str] = (),
         version: Optional[Callable[..., Any]] = None,
         cache_expires_after: Optional[Union[str, float]] = None, probe_timeout: Optional[Union[str, float]] = None) -> Any:
    """Make a function a step. ``@step`` or ``@step(enable_cache=False, ignore=["verbose"],
    version=probe, cache_expires_after="6h")``: ``ignore`` names arguments left out of the key;
    ``version`` is a cheap function of the step's params whose JSON-able value stands for
    external state (an ETag, a commit) and joins the key; ``cache_expires_after`` is the age
    after which a cached result executes again; ``probe_timeout`` how long the probe may take
    (default 60s) before the step executes as if it had failed."""
    def make(f: Callable[..., Any]) -> Step:
        return Step(f, enable_cache=enable_cache, ignore=ignore, version=version,
                    cache_expires_after=cache_expires_after, probe_timeout=probe_timeout)

    if fn is None:
        return make
    if isinstance(fn, Step):
        return fn
    return make(fn)


def no_cache(obj: Any) -> Any:
    """Mark a step that reads external state: it always executes, whatever any setting says."""
    if isinstance(obj, Step):
        obj.no_cache = True
        return obj
    if callable(obj):
        obj.__zenbuild_no_cache__ = True
        return obj
    raise TypeError("@no_cache decorates a step or a function")


class _Tracer:
    def __init__(self, root: str) -> None:
        self.root = root
        self.nodes: List[Node] = []
        self.counts: Dict[str, int] = {}
        self.ids: Dict[str, str] = {}  # call id -> the step it names
        self.auto: Dict[str, str] = {}  # automatic name -> its step

    def _name(self, st: Step, call_id: Optional[str]) -> str:
        """The node name: the call id, or step, step_2, ... counting calls without an id."""
        if call_id is not None:
            if call_id in self.ids:
                raise PipelineError(
                    f"the call id {call_id!r} is given twice (calls of steps "
                    f"{self.ids[call_id]} and {st.name}). Ids name calls in [steps.NAME] and "
                    "explain NAME, so each must be unique: give one of them another id."
                )
            if call_id in self.auto:
                raise PipelineError(
                    f"the call id {call_id!r} given to a call of step {st.name} is already the "
                    f"automatic name of a call of step {self.auto[call_id]}. Choose another id "
                    "(or give that call an id too)."
                )
            self.ids[call_id] = st.name
            return call_id
        k = self.counts.get(st.name, 0) + 1
        self.counts[st.name] = k
        name = st.name if k == 1 else f"{st.name}_{k}"
        if name in self.ids:
            raise PipelineError(
                f"the call id {name!r} given to a call of step {self.ids[name]} is also the "
                f"automatic name of call {k} of step {st.name}. Choose another id (or give "
                "that call an id too)."
            )
        if name in self.auto:  # e.g. a step named scale_2 and the second call of scale
            raise PipelineError(
                f"two calls are both named {name!r} (of steps {self.auto[name]} and {st.name}). "
                "Give one of them a name with id=."
            )
        self.auto[name] = st.name
        return name

    def invoke(self, st: Step, args: Tuple[Any, ...], kwargs: Dict[str, Any],
               call_id: Optional[str] = None) -> Handle:
        name = self._name(st, call_id)
        try:
            arguments, _ = st.params.bind(args, kwargs)
        except TypeError as e:
            raise PipelineError(f"step {name}: {e}") from None
        node = Node(name=name, step=st, index=len(self.nodes), args={})
        convert = self._convert
        for arg, value in arguments.items():
            node.args[arg] = convert(node, value, name, arg)
        for arg in st.ignore:
            marker = _keyed_marker(node.args.get(arg))
            if marker is not None:
                raise PipelineError(
                    f"step {name}, argument {arg}: it is in @step(ignore=[...]) but receives "
                    f"{marker!r}, which must stay in the step's key (a declared output's or "
                    f"variable's change must rerun the step). Remove {arg!r} from ignore.")
        self.nodes.append(node)
        return Handle(name, (), st._nout)

    def _input(self, node: Node, v: Handle, arg: str) -> InputRef:
        if v._node not in node.upstream:
            node.upstream.append(v._node)
        node.arg_inputs.setdefault(arg, []).append(v._node)
        if v._path:
            node.input_paths.setdefault(arg, []).append((v._node, v._path))
        return InputRef(v._node, v._path)

    def _file(self, node: Node, path: str, name: str, arg: str, glob: Optional[str] = None) -> FileRef:
        rel = plain_rel(path) or normalize_path(
            self.root, path, f"step {name}, argument {arg}: {'File' if glob is None else 'Dir'}")
        ref = FileRef(rel, glob)
        node.files.append(ref)
        return ref

    def _output(self, node: Node, path: str, name: str, arg: str) -> OutputRef:
        rel = plain_rel(path)
        if rel is None:
            where = f"step {name}, argument {arg}"
            rel = normalize_path(self.root, path, f"{where}: Output")
            if rel == ".":
                raise PathError(f"{where}: Output cannot be the project root itself")
        node.outputs.append(rel)
        return OutputRef(rel)

    def _convert(self, node: Node, v: Any, name: str, arg: str) -> Any:
        """The traced form of one argument value (markers in place of File/Dir/Output and
        handles); ``name`` and ``arg`` only word errors."""
        t = type(v)
        if t is str or t is int or t is float or t is bool or v is None:
            return v
        if t is list:  # often a list of File inputs: those are converted without recursing
            out = []
            files = node.files
            for x in v:
                if type(x) is File:
                    rel = plain_rel(x.path)
                    if rel is not None:  # what _file() does, for the usual plain path
                        fref = FileRef(rel)
                        files.append(fref)
                        out.append(fref)
                        continue
                    out.append(self._file(node, x.path, name, arg))
                else:
                    out.append(self._convert(node, x, name, arg))
            return out
        if t is tuple:
            return tuple([self._convert(node, x, name, arg) for x in v])
        if t is dict:
            return {k: self._convert(node, x, name, arg) for k, x in v.items()}
        if isinstance(v, Handle):
            return self._input(node, v, arg)
        if isinstance(v, File):
            return self._file(node, v.path, name, arg)
        if isinstance(v, Dir):
            return self._file(node, v.path, name, arg, v.glob)
        if isinstance(v, Output):
            return self._output(node, v.path, name, arg)
        if isinstance(v, Env):
            ref = EnvRef(v.name, v.default, v.secret)
            node.envs.append(ref)
            return ref
        if isinstance(v, Step):
            raise PipelineError(
                f"step {name}, argument {arg}: a step object was passed as a value; call it to "
                "use its output"
            )
        return v


def _keyed_marker(v: Any) -> Any:
    """The first Output or Env marker inside an argument's traced value, else None."""
    if isinstance(v, (OutputRef, EnvRef)):
        return v
    t = type(v)
    if t is list or t is tuple:
        return next((m for m in map(_keyed_marker, v) if m is not None), None)
    if t is dict:
        return next((m for m in map(_keyed_marker, v.values()) if m is not None), None)
    return None


class Pipeline:
    """A function whose body wires steps together. Call it to bind its parameters."""

    def __init__(self, fn: Callable[..., Any], enable_cache: Optional[bool] = None) -> None:
        self.fn = fn
        self.name: str = fn.__name__
        self.enable_cache = enable_cache
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def params(self) -> Params:
        return params_of(self.fn)

    @property
    def signature(self) -> Any:
        import inspect

        return inspect.signature(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> BoundPipeline:
        return BoundPipeline(self, args, kwargs)

    def run(self, **params: Any) -> RunResult:
        """Shortcut for ``pipeline(**params).run()``."""
        return BoundPipeline(self, (), params).run()

    def __repr__(self) -> str:
        return f"<zenbuild pipeline {self.name}>"


class BoundPipeline:
    """A pipeline with its parameters bound: trace it into a Graph, or run it."""

    def __init__(self, pipeline: Pipeline, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        self.pipeline = pipeline
        self._layout = pipeline.params
        try:
            self.arguments, self.explicit = self._layout.bind(args, kwargs)
        except TypeError as e:
            from zenbuild.typed.pipeline import unknown_keyword_hint

            raise PipelineError(f"pipeline {pipeline.name}: {e}"
                                f"{unknown_keyword_hint(self._layout, kwargs)}") from None

    @property
    def params(self) -> Dict[str, Any]:
        return {k: v for k, v in self.arguments.items() if not isinstance(v, Step)}

    def trace(self, root: PathLike) -> Graph:
        tracer = _Tracer(os.path.abspath(os.fspath(root)))
        if _tracer() is not None:
            raise PipelineError("a pipeline cannot be traced inside another pipeline body")
        from zenbuild.trace import recording_imports

        token = _TRACER.set(tracer)
        try:
            call_args, call_kwargs = self._layout.call_args(self.arguments)
            # recorded as an import is (trace/memo.py): a memoized loader the body fills
            # first (an lru_cache'd load_config() that wires the DAG) remembers what it read,
            # and a step its cache then serves records those reads too (it was served stale)
            with recording_imports(tracer.root):
                self.pipeline.fn(*call_args, **call_kwargs)
        finally:
            _TRACER.reset(token)
        if not tracer.nodes:
            raise PipelineError(f"pipeline {self.pipeline.name} calls no step")
        return Graph(self.pipeline.name, tracer.nodes,
                     getattr(self.pipeline.fn, "__module__", None) or "")

    def run(
        self,
        enable_cache: Optional[bool] = None,
        project_dir: Optional[PathLike] = None,
        **options: Any,
    ) -> RunResult:
        """Run the pipeline: execute what changed, serve the rest from the store."""
        from zenbuild.project import run_from_api  # the one lazy edge upward (see the README)

        return run_from_api(self, project_dir=project_dir, enable_cache=enable_cache, **options)


@overload
def pipeline(fn: Callable[..., Any]) -> Pipeline: ...
@overload
def pipeline(*, enable_cache: Optional[bool] = None) -> Callable[[Callable[..., Any]], Pipeline]: ...
def pipeline(fn: Any = None, *, enable_cache: Optional[bool] = None) -> Any:
    """Make a function a pipeline. ``@pipeline`` or ``@pipeline(enable_cache=False)``."""
    if fn is None:
        return lambda f: Pipeline(f, enable_cache=enable_cache)
    return Pipeline(fn, enable_cache=enable_cache)
