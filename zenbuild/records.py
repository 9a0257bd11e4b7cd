"""A small stand-in for dataclasses on the start-up path: `dataclasses` imports `inspect`
(with ast, dis and tokenize), ~8 ms of every `zenbuild run`. Generates __init__, __repr__,
__eq__ (and, when frozen, __hash__ and read-only fields) from a class's annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

if TYPE_CHECKING:  # type checkers treat @record classes as dataclasses (PEP 681)
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**kwargs: Any) -> Any:
        return lambda f: f


_MISSING: Any = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is made fresh for every instance (a list, a dict)."""
    return _Factory(default_factory)


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


@dataclass_transform(field_specifiers=(field,))
def record(cls: Optional[type] = None, *, frozen: bool = False) -> Any:
    """``@record`` or ``@record(frozen=True)``, like ``@dataclass``."""

    def wrap(c: type) -> type:
        names: List[str] = list(c.__dict__.get("__annotations__", {}))
        params: List[str] = []
        body: List[str] = []
        env: Dict[str, Any] = {"_MISSING": _MISSING, "_set": object.__setattr__}
        for n in names:
            default = c.__dict__.get(n, _MISSING)
            if isinstance(default, _Factory):
                env[f"_make_{n}"] = default.make
                params.append(f"{n}=_MISSING")
                value = f"_make_{n}() if {n} is _MISSING else {n}"
                delattr(c, n)
            elif default is _MISSING:
                params.append(n)
                value = n
            else:
                env[f"_default_{n}"] = default
                params.append(f"{n}=_default_{n}")
                value = n
            body.append(f"_set(self, {n!r}, {value})" if frozen else f"self.{n} = {value}")
        src = f"def __init__(self, {', '.join(params)}):\n    " + ("\n    ".join(body) or "pass")

        def make_init() -> Any:
            ns: Dict[str, Any] = {}
            exec(src, env, ns)  # one small function per class, as dataclasses does
            made = ns["__init__"]
            made.__qualname__ = f"{c.__qualname__}.__init__"
            type.__setattr__(c, "__init__", made)
            return made

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            # compiled by the class's first instance: compiling costs ~0.4M instructions a
            # class, and a run makes instances of few of them
            make_init()(self, *args, **kwargs)

        init.__qualname__ = f"{c.__qualname__}.__init__"
        fields = tuple(names)

        def __repr__(self: Any) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in fields)

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in fields))

        methods: Dict[str, Any] = {
            "__init__": init,
            "__repr__": __repr__,
            "__eq__": __eq__,
            "__record_fields__": fields,
            # like dataclasses: frozen records hash by value; mutable ones are unhashable
            "__hash__": __hash__ if frozen else None,
        }
        if frozen:
            methods["__setattr__"] = _frozen_setattr
        for name, value in methods.items():
            type.__setattr__(c, name, value)
        return c

    return wrap(cls) if cls is not None else wrap
