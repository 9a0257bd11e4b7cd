"""Param conversion by annotation: the one function that turns a --param string, a zenbuild.toml
[params] value or a Python API value into what the pipeline's annotation asks for (int, float,
bool, str, Path, Optional, Union, list/tuple/set/dict, Literal, Enum, dataclasses, NamedTuples,
pydantic models, datetime dates, datetimes and times), or raises ParamMismatch naming the
value and the expected type."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import PurePath
from typing import Any, Callable, Dict, List, Sequence, Tuple

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
NONE_WORDS = frozenset({"none", "null"})
# A Python API value's containers longer than this are checked by their type only (cheap).
API_DEEP_LIMIT = 10_000


class ParamMismatch(Exception):
    """A value that does not fit its annotation. ``where`` is the path inside the value
    ("[2]", ".lr") when the mismatch is nested."""

    def __init__(self, value: Any, expected: str, why: str = "", where: str = "") -> None:
        super().__init__(expected)
        self.value = value
        self.expected = expected
        self.why = why
        self.where = where

    def text(self, name: str) -> str:
        """"cannot convert to int: got 'abc' (not an integer)", with the place inside the
        value when nested ("cannot convert cfg.lr to float: ...")."""
        loc = f" {name}{self.where}" if self.where else ""
        why = f" ({self.why})" if self.why else ""
        return f"cannot convert{loc} to {self.expected}: got {_show(self.value)}{why}"


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def type_name(ann: Any) -> str:
    """How an annotation is named in a message: int, list[str], Optional[int], Color (an Enum
    with its members), Literal['a', 'b']."""
    if ann is None or ann is type(None):
        return "None"
    if ann is Any:
        return "any value"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(type_name(a) for a in rest)
        return f"{inner} or none" if len(rest) < len(args) else inner
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    if isinstance(ann, type):
        import enum

        if issubclass(ann, enum.Enum):
            return f"{ann.__name__} (one of {', '.join(ann.__members__)})"
        return ann.__name__
    return str(ann)


def hints(fn: Callable[..., Any], raw: Dict[str, Any]) -> Dict[str, Any]:
    """The parameter annotations of ``fn`` with string annotations (``from __future__ import
    annotations``) resolved; one that cannot be resolved (a name only imported under
    TYPE_CHECKING) is left out, so it is not checked."""
    if not any(isinstance(v, str) for v in raw.values()):
        return {k: v for k, v in raw.items() if k != "return"}
    try:
        got = typing.get_type_hints(fn)
    except Exception:  # one unresolvable name: resolve the others one by one
        got = {}
        g = getattr(fn, "__globals__", {})
        for k, v in raw.items():
            if not isinstance(v, str):
                got[k] = v
                continue
            try:
                ann: Any = v
                for _ in range(2):  # "'int'": a quoted annotation under the future import
                    if isinstance(ann, str):
                        ann = eval(ann, dict(g))  # noqa: S307 - the user's own annotation
                got[k] = ann
            except Exception:
                pass
    got.pop("return", None)
    return got


# -- the conversion --------------------------------------------------------------------------
def from_text(raw: str, ann: Any) -> Any:
    """Convert a --param string by the annotation ``ann`` (``Any`` for none). Raises
    ParamMismatch."""
    return _Conv(api=False).conv(ann, raw, True, "")


def from_value(value: Any, ann: Any, api: bool = False) -> Any:
    """Check (and convert where the annotation says how: an int for a float, a table for a
    dataclass, a name for an Enum) a value from zenbuild.toml, or from the Python API when
    ``api``. Raises ParamMismatch."""
    return _Conv(api=api).conv(ann, value, False, "")


def toml_literal(raw: str) -> Any:
    """``raw`` parsed as a TOML literal (3, 4.5, true, "x", [1, 2], {k = 2}), else ``raw``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _structured(raw: str, ann: Any) -> Any:
    """A JSON or TOML text (``["b","c"]``, ``{"k": 2}``, ``{k = 2}``) parsed; else a mismatch."""
    import json

    try:
        return json.loads(raw)
    except ValueError:
        pass
    got = toml_literal(raw)
    if got is raw:
        raise ParamMismatch(raw, type_name(ann), "not valid JSON or a TOML inline value")
    return got


def _unwrap(ann: Any) -> Any:
    """Annotated[X, ...] -> X, NewType -> its base, a TypeVar -> Any, "str" forms of simple
    names -> the type."""
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif callable(ann) and hasattr(ann, "__supertype__"):
            ann = ann.__supertype__
        elif isinstance(ann, typing.TypeVar):
            return Any
        elif isinstance(ann, str):
            return _SIMPLE.get(ann, Any)
        else:
            return ann


def _simple_names() -> Dict[str, Any]:
    from pathlib import Path

    return {"int": int, "float": float, "bool": bool, "str": str, "Path": Path,
            "pathlib.Path": Path, "Any": Any, "object": Any}


_SIMPLE = _simple_names()


class _Conv:
    """One conversion: ``textual`` says whether a value is a string from the command line
    (to be parsed) or an object (from TOML, JSON or the API: to be checked)."""

    def __init__(self, api: bool) -> None:
        self.api = api

    def conv(self, ann: Any, v: Any, textual: bool, where: str) -> Any:
        try:
            return self._conv(_unwrap(ann), v, textual, where)
        except ParamMismatch as e:
            if not e.where:
                e.where = where
            raise

    def _conv(self, ann: Any, v: Any, textual: bool, where: str) -> Any:
        if ann is Any or ann is object:
            return toml_literal(v) if textual else v
        if ann is None or ann is type(None):
            if v is None or _none_word(v):
                return None
            raise ParamMismatch(v, "none")
        origin = typing.get_origin(ann)
        if origin is typing.Literal:
            return self._literal(ann, v, textual)
        if origin in (typing.Union, getattr(types, "UnionType", None)):
            return self._union(ann, v, textual, where)
        if origin is not None:
            return self._generic(ann, origin, v, textual, where)
        if not isinstance(ann, type):
            return toml_literal(v) if textual else v  # a form zenbuild does not check
        return self._class(ann, v, textual, where)

    # -- scalars ---------------------------------------------------------------------------
    def _class(self, ann: type, v: Any, textual: bool, where: str) -> Any:
        import enum

        if ann is bool:
            if textual:
                low = v.strip().lower()
                if low in TRUE:
                    return True
                if low in FALSE:
                    return False
                raise ParamMismatch(v, "bool", "use true or false")
            if isinstance(v, bool):
                return v
            raise ParamMismatch(v, "bool")
        if ann is int:
            if textual:
                try:
                    return int(v.strip())
                except ValueError:
                    raise ParamMismatch(v, "int", "not an integer") from None
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            raise ParamMismatch(v, "int")
        if ann is float:
            if textual:
                try:
                    return float(v.strip())
                except ValueError:
                    raise ParamMismatch(v, "float", "not a number") from None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)  # 1 and 1.0 are one value, with one fingerprint
            raise ParamMismatch(v, "float")
        if ann is str:
            if textual or isinstance(v, str):
                return v
            raise ParamMismatch(v, "str")
        if issubclass(ann, PurePath):
            if isinstance(v, ann):
                return v
            if isinstance(v, (str, PurePath)):
                return ann(v)
            raise ParamMismatch(v, f"{ann.__name__} (a path string)")
        if issubclass(ann, enum.Enum):
            return self._enum(ann, v, textual)
        if ann.__module__ == "datetime" and ann.__name__ in ("date", "datetime", "time"):
            return self._datetime(ann, v)
        if ann in (list, tuple, set, frozenset, dict):
            return self._generic(ann, ann, v, textual, where)
        if _is_dataclass(ann) or _is_namedtuple(ann) or _is_pydantic(ann):
            if isinstance(v, ann):
                return v
            if textual:
                v = _structured(v, ann)
            return self._record(ann, v, where)
        # a class zenbuild has no rule for: an instance passes, a string is kept as the
        # documented TOML literal; nothing else is checked
        if textual:
            return toml_literal(v)
        return v

    def _datetime(self, ann: Any, v: Any) -> Any:
        """A date, datetime or time: a TOML date / datetime / time as it is, or an ISO 8601
        string (the command line, JSON; not a Python API value) parsed by fromisoformat."""
        import datetime as dt

        name = ann.__name__
        iso = {"date": "2024-03-05", "datetime": "2024-03-05T10:00:00+01:00",
               "time": "10:30:00"}[name]
        if isinstance(v, str) and not self.api:
            try:
                got = ann.fromisoformat(v.strip())
            except ValueError:
                raise ParamMismatch(v, f"{name} (ISO 8601, like {iso})",
                                    "not an ISO 8601 " + name) from None
            v = got
        # datetime is a subclass of date: a date param given a time of day is refused, not cut
        fits = (isinstance(v, dt.date) and not isinstance(v, dt.datetime) if ann is dt.date
                else isinstance(v, ann))
        if fits:
            return v
        why = ""
        if ann is dt.datetime and isinstance(v, dt.date):
            why = "a date without a time of day; write it as " + iso
        elif ann is dt.date and isinstance(v, dt.datetime):
            why = "a datetime, not a date; write just the date, like " + iso
        raise ParamMismatch(v, f"{name} (ISO 8601, like {iso})", why)

    def _enum(self, ann: Any, v: Any, textual: bool) -> Any:
        if isinstance(v, ann):
            return v
        members = ann.__members__
        if isinstance(v, str) and v in members:
            return members[v]
        for m in members.values():  # by value: Color("red"), Level(2) from "2"
            mv = m.value
            if (not textual and type(v) is type(mv) and v == mv) or (textual and str(mv) == v):
                return m
        values = ", ".join(repr(m.value) for m in members.values())
        raise ParamMismatch(v, type_name(ann), f"names or values: {values}")

    def _literal(self, ann: Any, v: Any, textual: bool) -> Any:
        options = typing.get_args(ann)
        for opt in options:
            if textual:
                if isinstance(opt, bool):
                    low = v.strip().lower()
                    if (opt and low in TRUE) or (not opt and low in FALSE):
                        return opt
                elif str(opt) == v or repr(opt) == v:
                    return opt
            elif type(v) is type(opt) and v == opt:
                return opt
        raise ParamMismatch(v, type_name(ann))

    def _union(self, ann: Any, v: Any, textual: bool, where: str) -> Any:
        args = typing.get_args(ann)
        if type(None) in args and (v is None or _none_word(v)):
            return None  # TOML has no null: "none" is None in [params] too
        rest = [a for a in args if a is not type(None)]
        if not textual:
            for a in rest:  # an exact fit first: Union[int, str] keeps "3" a string
                if isinstance(a, type) and type(v) is a:
                    return v
        for a in rest:
            try:
                return self.conv(a, v, textual, where)
            except ParamMismatch:
                continue
        raise ParamMismatch(v, type_name(ann))

    # -- containers and records ------------------------------------------------------------
    def _generic(self, ann: Any, origin: Any, v: Any, textual: bool, where: str) -> Any:
        import collections.abc as abc

        args = typing.get_args(ann)
        if origin in (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence,
                      abc.Set, abc.MutableSet, abc.Collection, abc.Iterable):
            return self._sequence(ann, origin, args, v, textual, where)
        if origin in (dict, abc.Mapping, abc.MutableMapping):
            if textual:
                v = _structured(v, ann)
            if not isinstance(v, dict):
                raise ParamMismatch(v, type_name(ann))
            if self.api and len(v) > API_DEEP_LIMIT:
                return v
            kt, vt = (args + (Any, Any))[:2] if args else (Any, Any)
            out = {}
            for k, x in v.items():
                parse = isinstance(k, str) and _unwrap(kt) not in (str, Any)  # JSON keys: text
                key = self.conv(kt, k, parse, f"{where}[{k!r}]")
                out[key] = self.conv(vt, x, False, f"{where}[{k!r}]")
            return out
        if isinstance(v, str) and textual:
            return toml_literal(v)
        return v  # Callable[...], Type[...] and other forms: not checked

    def _sequence(self, ann: Any, origin: Any, args: Tuple[Any, ...], v: Any, textual: bool,
                  where: str) -> Any:
        import collections.abc as abc

        items: Sequence[Any]
        if textual:
            s = v.strip()
            if s.startswith("["):
                parsed = _structured(s, ann)
                if not isinstance(parsed, list):
                    raise ParamMismatch(v, type_name(ann))
                items, textual = parsed, False
            else:  # cols=b,c (and cols= for an empty list)
                items = [p.strip() for p in s.split(",")] if s else []
        elif isinstance(v, (list, tuple, set, frozenset)) and not isinstance(v, str):
            items = list(v) if isinstance(v, (set, frozenset)) else v
        else:
            raise ParamMismatch(v, type_name(ann))
        if self.api and len(items) > API_DEEP_LIMIT:
            return v
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ParamMismatch(v, type_name(ann), f"{len(args)} items, got {len(items)}")
            return tuple(self.conv(a, x, textual, f"{where}[{i}]")
                         for i, (a, x) in enumerate(zip(args, items)))
        elem = args[0] if args else Any
        got = [self.conv(elem, x, textual, f"{where}[{i}]") for i, x in enumerate(items)]
        if origin is tuple:
            return tuple(got)
        if origin in (set, abc.Set, abc.MutableSet):
            return set(got)
        if origin is frozenset:
            return frozenset(got)
        if not textual and isinstance(v, tuple) and origin in (abc.Sequence, abc.Collection,
                                                                abc.Iterable):
            return tuple(got)
        return got

    def _record(self, ann: Any, v: Any, where: str) -> Any:
        """A dataclass, NamedTuple or pydantic model from a table / JSON object."""
        if _is_pydantic(ann):
            if not isinstance(v, dict):
                raise ParamMismatch(v, f"{ann.__name__} (a table of its fields)")
            try:
                return ann.model_validate(v) if hasattr(ann, "model_validate") else ann(**v)
            except Exception as e:  # pydantic's ValidationError, worded by pydantic
                first = str(e).strip().splitlines()
                raise ParamMismatch(v, ann.__name__, " ".join(first[:3])) from None
        fields, required = _fields_of(ann)
        if isinstance(v, (list, tuple)) and _is_namedtuple(ann):
            if len(v) > len(fields):
                raise ParamMismatch(v, ann.__name__, f"at most {len(fields)} items")
            v = dict(zip(fields, v))
        if not isinstance(v, dict):
            raise ParamMismatch(v, f"{ann.__name__} (a table of its fields: "
                                   f"{', '.join(fields)})")
        for k in v:
            if k not in fields:
                raise ParamMismatch(v, ann.__name__, f"it has no field {k!r}{did_you_mean(str(k), list(fields))}")
        missing = [f for f in required if f not in v]
        if missing:
            raise ParamMismatch(v, ann.__name__, f"missing field {', '.join(missing)}")
        kwargs = {k: self.conv(fields[k], x, False, f"{where}.{k}") for k, x in v.items()}
        try:
            return ann(**kwargs)
        except (TypeError, ValueError) as e:  # the class's own __post_init__ refusing it
            raise ParamMismatch(v, ann.__name__, str(e)) from None


def _none_word(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in NONE_WORDS


def _is_dataclass(t: type) -> bool:
    return isinstance(getattr(t, "__dataclass_fields__", None), dict)


def _is_namedtuple(t: type) -> bool:
    return issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple)


def _is_pydantic(t: type) -> bool:
    if "pydantic" not in sys.modules:
        return False
    import pydantic

    return issubclass(t, pydantic.BaseModel)


def _fields_of(cls: Any) -> Tuple[Dict[str, Any], List[str]]:
    """({init field: resolved annotation}, [required fields]) of a dataclass or NamedTuple."""
    try:
        resolved = typing.get_type_hints(cls)
    except Exception:
        resolved = {}
    if _is_dataclass(cls):
        import dataclasses

        fs = [f for f in dataclasses.fields(cls) if f.init]
        fields = {f.name: resolved.get(f.name, Any) for f in fs}
        required = [f.name for f in fs if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        return fields, required
    names: Tuple[str, ...] = cls._fields
    defaults = getattr(cls, "_field_defaults", {})
    return ({n: resolved.get(n, Any) for n in names}, [n for n in names if n not in defaults])


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """" (did you mean 'epochs'?)" for the closest known name, or ""."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# public names for typed.edits (a field of a structured param changed from the command line)
fields_of = _fields_of
is_dataclass_type = _is_dataclass
is_namedtuple_type = _is_namedtuple
is_pydantic_type = _is_pydantic
