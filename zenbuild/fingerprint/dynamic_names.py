"""What a definition reads that its text does not name, found from its text when it is parsed
(kept in the source cache with its reference chains, so a no-op parses nothing) and resolved
when the fingerprint is computed:

- its whole module, when the code reads its module's namespace by computed name:
  ``globals()[f"LR_{size}"]``, ``sys.modules[__name__]`` (``getattr(...)``, ``vars(...)``),
  ``sys.modules.get(__name__)``, ``import_module(__name__)``, ``inspect.getmodule(...)``,
  ``.f_globals``, ``.__globals__``, and ``eval``/``exec`` (and ``numexpr.evaluate``) of a
  string that is not a literal, without a globals mapping of its own. Then every top-level
  name of the module joins the key, as if the code named it: constants by value, classes as
  helpers, library objects by identity (project functions and modules are left to the call
  trace and the module record, which see them when the step uses them);
- the names inside evaluated strings: a literal passed to ``eval``/``exec``/
  ``numexpr.evaluate``/``DataFrame.query``/``DataFrame.eval``/``pd.eval`` is parsed and its
  names are references; a module constant passed instead (``eval(FORMULA)``) is parsed when
  the fingerprint is computed; ``@NAME`` in any string constant (pandas resolves it from the
  caller's frame) is a reference to ``NAME``;
- the values of defaults evaluated when the definition was made, when a default is not a
  literal (``def f(dev=os.environ.get("DEV", "cpu"))``): the function's ``__defaults__`` /
  ``__kwdefaults__`` entry, encoded as constants are (a function whose defaults are all
  literals gets nothing, so its key is unchanged). A step's own defaults are its params;
- the same for class fields made from a non-literal expression that the class's live
  attributes do not hold (fingerprint/live.py): a pydantic model field's default and
  default_factory (``device: str = os.getenv("DEV", "cpu")``), an attrs or dataclass field's,
  an Enum member's value.

Markers are chains whose first element is one of MARKERS; code.py hands them to resolve()."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from zenbuild.digest import digest_bytes
from zenbuild.fingerprint.source import SOURCE_CACHE_VERSION
from zenbuild.graph import StepDef
from zenbuild.lazyre import LazyPattern

if TYPE_CHECKING:  # pragma: no cover
    import ast

GLOBALS = "<module globals>"  # (GLOBALS,): every top-level name of the module
DEFAULTS = "<defaults>"  # (DEFAULTS, member or "", "INDEX:NAME" | "k:NAME", ...)
FIELDS = "<fields>"  # (FIELDS, NAME, ...): class fields made from a non-literal expression
EVAL_NAME = "<eval name>"  # (EVAL_NAME, mode, NAME): a module string evaluated as code
MARKERS = frozenset({GLOBALS, DEFAULTS, FIELDS, EVAL_NAME})

_MAX_TEXT = 20_000  # longer strings are not parsed as code (a SQL script, a document)
_AT_NAME = LazyPattern(r"(?<![\w@.])@([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
# calls that make a class field: their default must be a literal, anything else (a factory,
# an alias, a validator) is code the statement names
_FIELD_CALLS = frozenset({"Field", "field", "ib", "attrib", "PrivateAttr", "Factory"})
_DEFAULT_FIRST = frozenset({"Field", "ib", "attrib", "PrivateAttr"})  # arg 0 is the default


def is_marker(chain: Sequence[str]) -> bool:
    return bool(chain) and chain[0] in MARKERS


# -- parse time ---------------------------------------------------------------------------
def extra_chains(node: ast.AST, kind: str) -> List[Tuple[str, ...]]:
    """The markers and extra reference chains of a definition's (docstring-free) node. kind:
    "step" (a step function: its defaults are its params), "function" or "class"."""
    import ast

    out: Dict[Tuple[str, ...], None] = {}
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            _call(n, out)
        elif isinstance(n, ast.Subscript):
            if _is_modules(n.value) and _is_dunder_name(n.slice):  # sys.modules[__name__]
                out[(GLOBALS,)] = None
        elif isinstance(n, ast.Attribute):
            if n.attr in ("f_globals", "__globals__"):
                out[(GLOBALS,)] = None
        elif isinstance(n, ast.Name) and n.id == "globals" and isinstance(n.ctx, ast.Load):
            out[(GLOBALS,)] = None  # globals() or the function itself (`get = globals`)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and "@" in n.value:
            for chain in at_names(n.value):
                out[chain] = None
    if kind == "function" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)):
        slots = _default_slots(node.args)
        if slots:
            out[(DEFAULTS, "", *slots)] = None
    elif kind == "class" and isinstance(node, ast.ClassDef):
        fields: List[str] = []
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                slots = _default_slots(stmt.args)
                if slots:
                    out[(DEFAULTS, stmt.name, *slots)] = None
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                if isinstance(stmt.target, ast.Name) and not _static_field(stmt.value):
                    fields.append(stmt.target.id)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                if isinstance(stmt.targets[0], ast.Name) and not _static_field(stmt.value):
                    fields.append(stmt.targets[0].id)
        if fields:
            out[(FIELDS, *fields)] = None
    return list(out)


def at_names(text: str) -> List[Tuple[str, ...]]:
    """``@NAME`` and ``@NAME.attr`` in a string (pandas query/eval's local variables)."""
    if len(text) > _MAX_TEXT:
        return []
    return [tuple(m.split(".")) for m in _AT_NAME.findall(text)]


def code_names(text: str, mode: str) -> List[Tuple[str, ...]]:
    """The global chains a string evaluated as code reads (mode "eval", "exec", or "pandas":
    an expression whose ``@NAME`` are names); [] when it does not parse."""
    import ast

    from zenbuild.fingerprint.scopes import global_references

    if len(text) > _MAX_TEXT:
        return []
    chains: Dict[Tuple[str, ...], None] = {}
    if mode == "pandas":
        for c in at_names(text):
            chains[c] = None
        text = text.replace("@", "")
    try:
        tree = ast.parse(text.strip() if mode != "exec" else text,
                         mode="exec" if mode == "exec" else "eval")
    except (SyntaxError, ValueError):
        return list(chains)
    for c in global_references(tree):
        chains[tuple(c)] = None
    return list(chains)


def _name_of(func: ast.AST) -> str:
    import ast

    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_modules(n: Optional[ast.AST]) -> bool:
    import ast

    return isinstance(n, ast.Attribute) and n.attr == "modules"


def _is_dunder_name(n: Optional[ast.AST]) -> bool:
    import ast

    return isinstance(n, ast.Name) and n.id == "__name__"


def _arg(call: ast.Call, i: int, *names: str) -> Optional[ast.AST]:
    if len(call.args) > i:
        return call.args[i]
    for kw in call.keywords:
        if kw.arg in names:
            return kw.value
    return None


def _call(n: ast.Call, out: Dict[Tuple[str, ...], None]) -> None:
    import ast

    name = _name_of(n.func)
    bare = isinstance(n.func, ast.Name)
    first = n.args[0] if n.args else None
    if name == "globals" and bare and not n.args:
        out[(GLOBALS,)] = None
    elif name in ("import_module", "__import__") and _is_dunder_name(first):
        out[(GLOBALS,)] = None
    elif name == "get" and _is_modules(getattr(n.func, "value", None)) and _is_dunder_name(first):
        out[(GLOBALS,)] = None  # sys.modules.get(__name__)
    elif name == "getmodule":  # inspect.getmodule(obj): a module object
        out[(GLOBALS,)] = None
    elif (name in ("eval", "exec") and (bare or _is_builtins(n.func))) or (
            name == "evaluate" and (bare or _is_numexpr(n.func))):
        mode = "exec" if name == "exec" else "eval"
        if name == "evaluate":  # numexpr.evaluate(ex, local_dict, global_dict)
            expr = _arg(n, 0, "ex")
            own = _arg(n, 1, "local_dict") is not None or _arg(n, 2, "global_dict") is not None
        else:
            expr = _arg(n, 0, "source", "expression")
            own = _arg(n, 1, "globals") is not None
        _evaluated(expr, mode, out, whole=not own)
    elif name in ("query", "eval") and isinstance(n.func, ast.Attribute):
        _evaluated(_arg(n, 0, "expr"), "pandas", out, whole=False)  # df.query, df/pd.eval


def _is_numexpr(func: ast.AST) -> bool:
    import ast

    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in ("ne", "numexpr"))


def _is_builtins(func: ast.AST) -> bool:
    import ast

    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in ("builtins", "__builtins__"))


def _evaluated(expr: Optional[ast.AST], mode: str, out: Dict[Tuple[str, ...], None],
               whole: bool) -> None:
    """A string evaluated as code: a literal is parsed now; a name may be a module constant
    (parsed when the fingerprint is computed); anything else, evaluated in the caller's
    globals (``whole``), may read any of them."""
    import ast

    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        for chain in code_names(expr.value, mode):
            out[chain] = None
        return
    if isinstance(expr, ast.Name):
        out[(EVAL_NAME, mode, expr.id)] = None
    if whole and expr is not None:
        out[(GLOBALS,)] = None


def _literal(n: ast.AST) -> bool:
    """A default written as a literal (numbers, strings, None, containers and arithmetic of
    them): its value is its text."""
    import ast

    ok = (ast.Constant, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.Tuple, ast.List,
          ast.Set, ast.Dict, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)
    return all(isinstance(x, ok) for x in ast.walk(n))


def _default_slots(args: ast.arguments) -> List[str]:
    pos = args.posonlyargs + args.args
    n = len(args.defaults)
    slots = [f"{i}:{pos[len(pos) - n + i].arg}" for i, d in enumerate(args.defaults)
             if not _literal(d)]
    slots += [f"k:{a.arg}" for a, d in zip(args.kwonlyargs, args.kw_defaults)
              if d is not None and not _literal(d)]
    return slots


def _static_field(v: ast.AST) -> bool:
    """A class body value whose meaning is its text: a literal, or a field call
    (``Field(default=3, default_factory=list, alias="x")``) whose default is one; a factory,
    validator or alias named by a name or a lambda is code the statement's references hold."""
    import ast

    if _literal(v):
        return True
    if (isinstance(v, ast.Call) and _name_of(v.func) == "auto" and not v.args
            and not v.keywords):
        return True  # enum.auto(): its value follows from the statement
    if not (isinstance(v, ast.Call) and _name_of(v.func) in _FIELD_CALLS):
        return False
    fname = _name_of(v.func)
    parts: List[Tuple[bool, ast.AST]] = [
        (i == 0 and fname in _DEFAULT_FIRST, a) for i, a in enumerate(v.args)]
    parts += [(kw.arg == "default", kw.value) for kw in v.keywords]
    for is_default, a in parts:
        if _literal(a):
            continue
        if is_default:
            return False
        if not (isinstance(a, (ast.Name, ast.Attribute, ast.Lambda)) or _static_field(a)):
            return False
    return True


# -- fingerprint time ---------------------------------------------------------------------
def resolve(fp: Any, owner: Any, key: str, chain: Sequence[str], g: Dict[str, Any], rel: str,
            refs: List[Any], packages: Dict[str, str]) -> None:
    """Add what a marker stands for to ``refs`` (``fp`` is the CodeFingerprinter analyzing
    ``owner``, a function or class whose item is ``key``, with module globals ``g``)."""
    tag = chain[0]
    if tag == GLOBALS:
        for name in module_names(g, fp._is_project):
            fp._resolve((name,), g, refs, packages)
    elif tag == EVAL_NAME and len(chain) == 3:
        text = g.get(chain[2])
        if isinstance(text, str):
            for c in _cached_code_names(fp, text, chain[1]):
                fp._resolve(tuple(c), g, refs, packages)
    elif tag == DEFAULTS:
        for pname, value in defaults_of(owner, chain[1], chain[2:]):
            where = f"{key}.{chain[1]}" if chain[1] else key
            fp._value_ref(f"{where}.<default {pname}>", value, rel, refs, packages, "default")
    elif tag == FIELDS and isinstance(owner, type):
        for name in chain[1:]:
            found = field_default(owner, name)
            if found is not _NONE:
                fp._value_ref(f"{key}.<default {name}>", found, rel, refs, packages, "default")


def module_names(g: Dict[str, Any], is_project: Any) -> Iterator[str]:
    """The top-level names of a module that a lookup by computed name may reach and the call
    trace or module record would not see: all but module metadata, modules (the module
    record sees their use), project functions (the call trace sees them run), steps and
    zenbuild's own objects."""
    kernel = g.get("__name__") == "__main__" and "get_ipython" in g
    for name in sorted(g):
        if name.startswith("__") and name.endswith("__"):
            continue
        if kernel and (name in _KERNEL_NAMES or _KERNEL_HISTORY.match(name)):
            continue  # IPython's In, Out, _, _i3...: they change with every cell run
        v = g[name]
        if isinstance(v, (types.ModuleType, StepDef)):
            continue
        if isinstance(v, types.FunctionType) and is_project(v):
            continue
        try:
            home = getattr(v, "__module__", None)
        except Exception:
            home = None
        if _zenbuild(type(v).__module__) or _zenbuild(home):
            continue  # step, pipeline, Output, a pipeline object
        yield name


def _zenbuild(mod: object) -> bool:
    return isinstance(mod, str) and (mod == "zenbuild" or mod.startswith("zenbuild."))


_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open", "display"})
_KERNEL_HISTORY = LazyPattern(r"^_(?:_{0,2}|i{1,3}|i?\d+|[iod]h|exit_code)$")


_CODE_NAMES: Dict[Tuple[str, str], List[Any]] = {}


def _cached_code_names(fp: Any, text: str, mode: str) -> List[Any]:
    memo = _CODE_NAMES.get((mode, text))
    if memo is not None:
        return memo
    cache = getattr(fp, "source_cache", None)
    ckey = "|".join([SOURCE_CACHE_VERSION, "evaluated", mode,
                     digest_bytes(text.encode("utf-8", "surrogatepass"))])
    hit = cache.get(ckey) if cache is not None else None
    if hit is not None:
        chains = [list(c) for c in hit[1]]
    else:
        chains = [list(c) for c in code_names(text, mode)]
        if cache is not None:
            cache.put(ckey, "", chains)
    if len(_CODE_NAMES) < 4096:
        _CODE_NAMES[(mode, text)] = chains
    return chains


def defaults_of(owner: Any, member: str, slots: Sequence[str]) -> List[Tuple[str, Any]]:
    """(parameter name, live default) for the non-literal defaults the parse found."""
    fn = owner
    if member:
        fn = vars(owner).get(member) if isinstance(owner, type) else None
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
    while fn is not None and not isinstance(fn, types.FunctionType):
        fn = getattr(fn, "__wrapped__", None)  # a callable object wrapping the method
    if fn is None:
        return []
    pos = fn.__defaults__ or ()
    kw = fn.__kwdefaults__ or {}
    out: List[Tuple[str, Any]] = []
    for slot in slots:
        where, _, pname = slot.partition(":")
        if where == "k":
            if pname in kw:
                out.append((pname, kw[pname]))
        elif where.isdigit() and int(where) < len(pos):
            out.append((pname, pos[int(where)]))
    return out


_NONE = object()


def _missing(v: Any) -> bool:
    """pydantic's PydanticUndefined, attrs' NOTHING, dataclasses' MISSING: no default."""
    import dataclasses

    return v is dataclasses.MISSING or type(v).__name__ in ("PydanticUndefinedType",
                                                           "_Nothing", "UndefinedType")


def field_default(cls: type, name: str) -> Any:
    """What a class field made from a non-literal expression defaults to, where the class's
    live attributes (fingerprint/live.py) do not hold it; _NONE when they do or it has no
    field of that name."""
    import enum

    own = vars(cls)
    fields = getattr(cls, "__pydantic_fields__", None)  # pydantic 2 (inherited ones too)
    if not isinstance(fields, dict):
        fields = own.get("__fields__")  # pydantic 1
    if isinstance(fields, dict) and name in fields:
        fi = fields[name]
        default = getattr(fi, "default", None)
        factory = getattr(fi, "default_factory", None)
        return ("pydantic", None if _missing(default) else default, factory)
    for a in own.get("__attrs_attrs__", ()) or ():
        if getattr(a, "name", None) == name:
            d: Any = getattr(a, "default", None)
            if hasattr(d, "factory"):  # attrs.Factory
                return ("attrs factory", d.factory, bool(getattr(d, "takes_self", False)))
            return ("attrs", None if _missing(d) else d)
    if name in own:
        v = own[name]
        return v if isinstance(v, enum.Enum) else _NONE  # other attributes are live state
    dc = own.get("__dataclass_fields__")
    if isinstance(dc, dict) and name in dc:  # a field(default_factory=...) (no attribute)
        f = dc[name]
        factory = getattr(f, "default_factory", None)
        return ("dataclass", None if _missing(factory) else factory)
    return _NONE
