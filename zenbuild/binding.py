"""Binding call arguments to a function's parameters without importing inspect (which costs
~10 ms at start-up): the same rules and messages as inspect.Signature.bind."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

_VARARGS = 0x04
_VARKW = 0x08


class Params:
    """A function's parameter layout, read from its code object."""

    _simple = False

    def __init__(self, fn: Callable[..., Any]) -> None:
        code = fn.__code__
        n = code.co_argcount
        names = code.co_varnames
        self.positional: Tuple[str, ...] = names[:n]
        self.posonly = code.co_posonlyargcount
        self.kwonly: Tuple[str, ...] = names[n : n + code.co_kwonlyargcount]
        i = n + code.co_kwonlyargcount
        self.varargs: Optional[str] = None
        self.varkw: Optional[str] = None
        if code.co_flags & _VARARGS:
            self.varargs = names[i]
            i += 1
        if code.co_flags & _VARKW:
            self.varkw = names[i]
        defaults = fn.__defaults__ or ()
        self.defaults: Dict[str, Any] = dict(zip(self.positional[n - len(defaults) :], defaults))
        self.defaults.update(fn.__kwdefaults__ or {})
        self.annotations: Dict[str, Any] = dict(getattr(fn, "__annotations__", {}) or {})
        # bind() short cut: every parameter given positionally, nothing else to fill in
        self._simple = not (self.varargs or self.varkw or self.kwonly)

    @property
    def names(self) -> List[str]:
        out = list(self.positional)
        if self.varargs:
            out.append(self.varargs)
        out += self.kwonly
        if self.varkw:
            out.append(self.varkw)
        return out

    def bind(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
        """(arguments in parameter order with defaults applied, names given explicitly).
        Raises TypeError with inspect's wording."""
        if not kwargs and self._simple and len(args) == len(self.positional):
            return dict(zip(self.positional, args)), list(self.positional)
        given: Dict[str, Any] = {}
        if len(args) > len(self.positional) and not self.varargs:
            raise TypeError("too many positional arguments")
        for name, value in zip(self.positional, args):
            given[name] = value
        extra = tuple(args[len(self.positional) :])
        varkw: Dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in self.positional[self.posonly :] or key in self.kwonly:
                if key in given:
                    raise TypeError(f"multiple values for argument {key!r}")
                given[key] = value
            elif self.varkw:
                varkw[key] = value
            elif key in self.positional:
                raise TypeError(
                    f"{key!r} parameter is positional only, but was passed as a keyword"
                )
            else:
                raise TypeError(f"got an unexpected keyword argument {key!r}")
        explicit = list(given) + list(varkw)
        out: Dict[str, Any] = {}

        def take(names: Tuple[str, ...]) -> None:
            for name in names:
                if name in given:
                    out[name] = given[name]
                elif name in self.defaults:
                    out[name] = self.defaults[name]
                else:
                    raise TypeError(f"missing a required argument: {name!r}")

        take(self.positional)
        if self.varargs:
            out[self.varargs] = extra
        take(self.kwonly)
        if self.varkw:
            out[self.varkw] = varkw
        return out, explicit

    def call_args(self, arguments: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """Turn bound arguments back into (args, kwargs) for a call."""
        args: List[Any] = [arguments[n] for n in self.positional]
        if self.varargs:
            args.extend(arguments.get(self.varargs, ()))
        kwargs = {n: arguments[n] for n in self.kwonly if n in arguments}
        if self.varkw:
            kwargs.update(arguments.get(self.varkw, {}))
        return tuple(args), kwargs


class _InspectParams(Params):
    """Fallback for callables without a code object (builtins, partials, callable objects)."""

    def __init__(self, fn: Callable[..., Any]) -> None:  # noqa: D107 - same interface
        import inspect

        self.sig = inspect.signature(fn)
        P = inspect.Parameter
        ps = list(self.sig.parameters.values())
        self.positional = tuple(p.name for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD))
        self.posonly = sum(1 for p in ps if p.kind is P.POSITIONAL_ONLY)
        self.kwonly = tuple(p.name for p in ps if p.kind is P.KEYWORD_ONLY)
        self.varargs = next((p.name for p in ps if p.kind is P.VAR_POSITIONAL), None)
        self.varkw = next((p.name for p in ps if p.kind is P.VAR_KEYWORD), None)
        self.defaults = {p.name: p.default for p in ps if p.default is not P.empty}
        self.annotations = {p.name: p.annotation for p in ps if p.annotation is not P.empty}


def params_of(fn: Callable[..., Any]) -> Params:
    if hasattr(fn, "__code__") and hasattr(fn, "__defaults__"):
        return Params(fn)
    return _InspectParams(fn)
