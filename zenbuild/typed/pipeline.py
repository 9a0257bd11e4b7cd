"""A pipeline's params by its annotations: --param strings, [params] values and Python API
arguments converted and checked (zenbuild.typed does the conversion), unknown names refused
with a did-you-mean."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from zenbuild.typed import ParamMismatch, did_you_mean, from_text, from_value, hints
from zenbuild.typed.edits import UNSET, EditError, FieldEdits, apply


def default_rule(default: Any) -> Optional[Any]:
    """The annotation an unannotated param takes from its default on the command line: a
    bool, str or path default keeps its type; anything else (3, 0.5, None, a list) reads a
    TOML literal (README: ``4.5`` for a default of 3 is fine)."""
    if isinstance(default, (bool, str, PurePath)):
        return type(default)
    return None


def widen(value: Any, default: Any) -> Any:
    """An unannotated param with a float default: an int value becomes that float (1 -> 1.0),
    so one value has one fingerprint however it was given."""
    if (isinstance(default, float) and isinstance(value, int)
            and not isinstance(value, bool)):
        return float(value)
    return value


# -- a pipeline's params ---------------------------------------------------------------------
_NO_DEFAULT = object()


class ParamTypes:
    """What each parameter of a pipeline converts by: its annotation (string annotations
    resolved once), else the rule its default gives (default_rule, widen)."""

    def __init__(self, fn: Callable[..., Any], layout: Any) -> None:
        self.fn = fn
        self.layout = layout  # a binding.Params
        self.names = [n for n in layout.names if n not in (layout.varargs, layout.varkw)]
        self._hints: Optional[Dict[str, Any]] = None

    def annotation(self, name: str) -> Optional[Any]:
        """The resolved annotation; None for an unannotated param, Any for one that names
        what cannot be resolved here (not checked)."""
        raw = self.layout.annotations
        if name not in raw:
            return None
        if self._hints is None:
            self._hints = hints(self.fn, raw)
        return self._hints.get(name, Any)

    def _default(self, name: str) -> Any:
        return self.layout.defaults.get(name, _NO_DEFAULT)

    def text(self, name: str, raw: str) -> Any:
        """A --param value. Raises ParamMismatch."""
        ann = self.annotation(name) if name in self.names else Any
        default = self._default(name)
        if ann is None:
            ann = default_rule(default) or Any
        return widen(from_text(raw, ann), default)

    def value(self, name: str, value: Any, api: bool = False) -> Any:
        """A [params] value (or an API value when ``api``). Raises ParamMismatch."""
        ann = self.annotation(name) if name in self.names else Any
        if ann is None:
            return widen(value, self._default(name))
        return from_value(value, ann, api=api)

    def cli_values(self, pairs: Sequence[str], pipeline: str) -> Dict[str, Any]:
        """--param KEY=VALUE strings -> {name: value}. Raises ParamError."""
        from zenbuild.errors import ParamError

        out: Dict[str, Any] = {}
        for pair in pairs:
            if "=" not in pair:
                raise ParamError(f"--param {pair!r}: expected KEY=VALUE")
            key, raw = pair.split("=", 1)
            key = key.strip()
            if "." in key:  # NAME.FIELD=VALUE: one field changed (typed.edits), in bind
                name, *path = key.split(".")
                if not name or not all(path):
                    raise ParamError(f"--param {key}: expected NAME=VALUE or NAME.FIELD=VALUE")
                self._known(name, pipeline)
                prev = out.get(name, UNSET)  # edits so far, or a whole value they apply to
                done = prev if isinstance(prev, FieldEdits) else FieldEdits((), prev)
                out[name] = FieldEdits(done.edits + ((tuple(path), raw),), done.base)
                continue
            self._known(key, pipeline)
            try:
                out[key] = self.text(key, raw)
            except ParamMismatch as e:
                raise ParamError(f"--param {key}={raw}: {e.text(key)}") from None
        return out

    def _known(self, key: str, pipeline: str) -> None:
        from zenbuild.errors import ParamError

        if key not in self.names and not self.layout.varkw:
                known = ", ".join(self.names) or "none"
                raise ParamError(
                    f"--param {key}: pipeline {pipeline} has no parameter {key!r}"
                    f"{did_you_mean(key, self.names)} (parameters: {known})")

    def edited(self, name: str, edits: FieldEdits, configured: Dict[str, Any]) -> Any:
        """The value of param ``name`` after its --param NAME.FIELD=VALUE ``edits``, made on
        their base, else ``configured`` (the converted [params] values), else the default.
        Raises ParamError."""
        from zenbuild.errors import ParamError

        value = edits.base
        if value is UNSET:
            value = configured.get(name, self._default(name))
        for path, raw in edits.edits:
            key = ".".join((name,) + path)
            if value is _NO_DEFAULT:
                raise ParamError(
                    f"--param {key}={raw}: parameter {name} has no value to change a field of "
                    f"(no [params.{name}] table, no default); give it whole first, as in "
                    f"--param '{name}={{...}}'")
            ann = self.annotation(name) if name in self.names else None
            try:
                value = apply(value, Any if ann is None else ann, path, raw)
            except EditError as e:
                raise ParamError(f"--param {key}={raw}: {e}") from None
        return value

    def config_values(self, params: Any, where: Callable[[str], str],
                      defined: str) -> Tuple[Dict[str, Any], List[str]]:
        """([params] values this pipeline takes, converted; the keys it does not take).
        ``where(key)`` is "zenbuild.toml:LINE". Raises ConfigError."""
        out: Dict[str, Any] = {}
        unknown: List[str] = []
        for k, v in params.items():
            if k not in self.names:
                unknown.append(k)
                continue
            try:
                out[k] = self.value(k, v)
            except ParamMismatch as e:
                from zenbuild.errors import ConfigError

                raise ConfigError(f"{where(k)}: params.{k}: {e.text(k)}. Fix the value in "
                                  f"[params] ({defined})") from None
        return out, unknown

    def api_values(self, values: Dict[str, Any], pipeline: str) -> Dict[str, Any]:
        """Python API arguments, checked against their annotations (an int for a float
        becomes the float). Raises ParamError."""
        from zenbuild.errors import ParamError

        out = dict(values)
        for key, v in values.items():
            if key not in self.names or _is_step(v):
                continue
            try:
                out[key] = self.value(key, v, api=True)
            except ParamMismatch as e:
                raise ParamError(f"pipeline {pipeline}, parameter {key}: {e.text(key)}") from None
        return out


def unknown_keyword_hint(layout: Any, kwargs: Dict[str, Any]) -> str:
    """For a pipeline called with a keyword it does not take (``layout``: a binding.Params):
    " (did you mean 'n'?; parameters: n)", else ""."""
    if layout.varkw:
        return ""
    names = [n for n in layout.names if n != layout.varargs]
    bad = next((k for k in kwargs if k not in names), None)
    if bad is None:
        return ""
    return f"{did_you_mean(bad, names)} (parameters: {', '.join(names) or 'none'})"


def _is_step(v: Any) -> bool:
    """A step (or a handle to one) passed as a pipeline argument: not a param to check."""
    return type(v).__module__.startswith("zenbuild.")


def unknown_names(table: str, names: Sequence[str], known: Sequence[str],
                  where: Callable[[str], str]) -> None:
    """Raise ConfigError for the first of ``names`` (keys of [params], or NAME of
    [steps.NAME] when ``table`` is "steps") that is not ``known``, with a did-you-mean."""
    from zenbuild.errors import ConfigError

    for name in names:
        if name in known:
            continue
        listed = ", ".join(known) or "none"
        if table == "steps":
            raise ConfigError(
                f"{where(name)}: [steps.{name}] names no step or call of the configured "
                f"pipelines{did_you_mean(name, known)} (steps and calls: {listed}). Fix the "
                "section's name or remove it.")
        raise ConfigError(
            f"{where(name)}: params.{name}: no configured pipeline has a parameter "
            f"{name!r}{did_you_mean(name, known)} (parameters: {listed}). Fix the name in "
            "[params] or remove it.")


_TREES: Dict[Tuple[str, int, int], Any] = {}  # (path, mtime_ns, size) -> its parsed module


def _parsed(path: str) -> Any:
    """The parsed module at ``path`` (once a process while the file is unchanged: [params]
    and [steps] are checked against the same other pipelines), or None."""
    import ast
    import os

    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        tree = _TREES.get(key)
        if tree is None:
            with open(path, "rb") as f:
                tree = _TREES[key] = ast.parse(f.read(), path)
        return tree
    except (OSError, SyntaxError, ValueError):
        return None


def declared_names(root: str, specs: Sequence[str], table: str) -> Optional[List[str]]:
    """Names the configured pipelines' modules declare, read from their source under ``root``
    without importing them (a cheap first look before another pipeline is imported): for
    "params", the parameters of each ``def ATTR``; for "steps", every function, imported name
    and string constant (call ids) in those modules. None when a module or a pipeline
    function is not found there, or one takes **kwargs."""
    import ast
    import os

    out: Dict[str, None] = {}
    for spec in specs:
        mod, _, attr = spec.partition(":")
        base = os.path.join(root, *mod.split("."))
        tree = None
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            tree = _parsed(path)
            if tree is not None:
                break
        if tree is None:
            return None
        if table == "params":
            fn = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and n.name == attr), None)
            if fn is None or fn.args.kwarg is not None:
                return None
            a = fn.args
            out.update(dict.fromkeys(x.arg for x in a.posonlyargs + a.args + a.kwonlyargs))
            continue
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[n.name] = None
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                out.update(dict.fromkeys((a.asname or a.name).split(".")[0] for a in n.names))
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 100:
                out[n.value] = None
    return list(out)


def _automatic_base(name: str) -> str:
    """``scale_2`` (the second call of scale) -> ``scale``; other names as they are."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


def step_names(graph: Any) -> List[str]:
    """The call names of a graph, then its steps' names ([steps.NAME] may use either)."""
    names = dict.fromkeys(graph.nodes)
    names.update(dict.fromkeys(n.step.name for n in graph.nodes.values()))
    return list(names)


def check_names(table: str, names: Sequence[str], here: Sequence[str], root: str,
                specs: Sequence[str], names_of: Callable[[str], Optional[List[str]]],
                where: Callable[[str], str], traced: Sequence[str] = ()) -> None:
    """Raise ConfigError (unknown_names) for a [params] key or [steps.NAME] that neither this
    pipeline (``here``: its real names, from the trace) nor another configured one
    (``specs``) has. The pipelines ``traced`` (the specs ``here`` comes from) are judged by
    ``here`` alone: their sources' every function, import and string is no evidence of a
    step. The other pipelines' sources are read first (declared_names); only when they do
    not declare a name are they loaded (``names_of(spec)``, which may import and trace).
    Anything that cannot be looked into (raises, or gives None) means nothing can be said:
    no error."""
    missing = [n for n in names if n not in here]
    if not missing:
        return
    specs = [s for s in specs if s not in traced]
    found = declared_names(root, specs, table)
    if found is not None and all(
            n in found or (table == "steps" and _automatic_base(n) in found) for n in missing):
        return
    known = dict.fromkeys(here)
    for spec in specs:
        try:
            got = names_of(spec)
        except Exception:  # fails to import, or needs params only the command line gives
            return
        if got is None:
            return
        known.update(dict.fromkeys(got))
    unknown_names(table, names, list(known), where)
