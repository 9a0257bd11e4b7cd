"""The closure digest of a function the call trace saw run (reached dynamically: getattr,
import_module, globals()[name], a library holding a project object): what its code refers to,
as CodeFingerprinter computes a step's code component (the project globals, constants and
aliases it refers to, library identities and, when tracked, package versions). So a traced
call is checked by what its names point to, not by its def's text only. Computed where the
record is built and again on every verify, in a process where the function may never have
been made, so everything is found from the recorded (file, qualname, first line) and the
module of that file (imported as the static walk imports project modules):

- a function a name path reaches (``f``, ``Cls.method``): the live function's closure;
- a method (a qualname that names a class): also its class as the static key counts a class
  (its statement, its attributes as they are now: ``self.FACTOR``; its project base classes),
  and the own attributes of its subclasses in the same module (``self`` may be one that only
  sets a constant), so a constant read through ``self`` by a pandas accessor or a Hydra
  ``_target_`` counts;
- code no name reaches (a nested def, a lambda, a method of a class made in a function, the
  original of a decorated function whose name holds something else): its own definition
  found in the source by qualname (the nearest to the recorded line) and digested with its
  module's globals (a stand-in function, never called, carries the code's file, line and
  name), plus the closure of the nearest enclosing function a name reaches (a nested def's
  free variables are computed by it) and of its class.

Memoized per process (the fingerprinter memoizes per object; the source cache keeps a no-op
from parsing unchanged files: it also keeps where a nested definition was found)."""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from zenbuild import imported
from zenbuild.digest import digest_bytes
from zenbuild.fingerprint import live
from zenbuild.fingerprint.code import CodeFingerprinter, CodeInfo

_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})
_QUALNAME = sys.version_info >= (3, 11)  # code objects carry co_qualname
# a definition in a file: qualname -> [(first line as the code object has it, kind)], kind
# "def", "lambda", "class" or "comp"
_Index = Dict[str, List[Tuple[int, str]]]
_Parts = Tuple[Dict[str, str], Dict[str, str]]  # (items, packages)


class ClosureDigests:
    """(file, qualname, firstlineno) -> closure digest, or None (nothing to digest: a notebook
    cell, a module that no longer imports, code that cannot be found)."""

    def __init__(self, fp: CodeFingerprinter, root: str) -> None:
        self.fp = fp
        self.root = os.path.abspath(root)
        self._memo: Dict[Tuple[str, str], Optional[str]] = {}
        self._by_file: Dict[str, types.ModuleType] = {}
        # id(class) -> (the class, kept alive so the id stays its own; what it adds)
        self._classes: Dict[int, Tuple[type, _Parts]] = {}
        self._index: Dict[str, _Index] = {}  # module file -> its definitions (parsed once)
        self._stand_ins: List[Any] = []  # stand-in functions the fingerprinter memoizes by id

    def __call__(self, file: str, qualname: str, firstlineno: int) -> Optional[str]:
        key = (file, qualname)
        if key in self._memo:
            return self._memo[key]
        got: Optional[str] = None
        try:
            parts = self._parts(file, qualname, firstlineno)
            if parts is not None:
                items, packages = parts
                text = "\n".join(f"{k}\0{v}" for k, v in sorted(items.items()))
                text += "\n" + "\n".join(f"{k}\0{v}" for k, v in sorted(packages.items()))
                got = digest_bytes(text.encode("utf-8", "surrogatepass"))
        except Exception:  # the function cannot be analyzed: the AST digest still checks it
            got = None
        self._memo[key] = got
        return got

    # -- what the digest covers ---------------------------------------------------------------
    def _parts(self, file: str, qualname: str, line: int) -> Optional[_Parts]:
        mod = self._module(file)
        if mod is None:
            return None
        names = qualname.split(".")
        chain = _name_path(mod, names)
        items: Dict[str, str] = {}
        packages: Dict[str, str] = {}
        found = False

        def add(got: Optional[_Parts]) -> None:
            nonlocal found
            if got is not None:
                found = True
                items.update(got[0])
                packages.update(got[1])

        named = len(chain) == len(names)
        fn = _function(chain[-1], qualname, names[-1], mod) if named else None
        if fn is not None:
            add(self._code(fn))  # the function itself, by the name that reaches it
        elif named and isinstance(chain[-1], type):
            add(self._code(chain[-1]))  # a class body (a class statement run by the step)
        else:
            # no name reaches this code: its definition, with its module's globals ...
            add(self._stand_in(mod, qualname, names[-1], line))
            # ... and the function a name reaches around it, or that the name now holds (a
            # wrapper, which holds the original): what made it, and its free variables
            outer = next((o for o in reversed(chain) if not isinstance(o, type)), None)
            if outer is not None:
                outer = _function(outer, None, None, mod) or outer
                if isinstance(outer, types.FunctionType):
                    add(self._code(outer))
        owner = next((o for o in reversed(chain) if isinstance(o, type)), None)
        if owner is not None:  # a method, or code in one: its class (self.X reads it)
            add(self._class(owner))
        return (items, packages) if found else None

    def _code(self, obj: Any) -> _Parts:
        info: CodeInfo = self.fp.code(obj)
        return info.items, info.packages

    def _class(self, cls: type) -> Optional[_Parts]:
        """The class as the static key counts a class it names (its statement, its attributes
        as they are now: fingerprint/live.py, what they refer to), with its project base
        classes (also one the statement does not name: a base made by a function call) and
        the own attributes of its subclasses in its module (``self`` may be one). Once per
        class per process."""
        memo = self._classes.get(id(cls))
        if memo is not None and memo[0] is cls:
            return memo[1]
        items: Dict[str, str] = {}
        packages: Dict[str, str] = {}
        for c in getattr(cls, "__mro__", (cls,)):
            if c is object or not self.fp._is_project(c):
                continue
            got = self._code(c)
            items.update(got[0])
            packages.update(got[1])
        if not items:
            return None
        for sub in _named_subclasses(cls):
            # self may be one of them: one that only sets a constant (chosen by a Hydra
            # _target_ or a registry) runs this class's methods with its own attributes
            enc = self.fp._encoder(f"{sub.__module__}.{sub.__qualname__}")
            state = live.class_attributes(sub, enc)
            items[f"{enc.key} (attributes)"] = digest_bytes(state)
            if self.fp.track_packages:
                packages.update(enc.packages)
        self._classes[id(cls)] = (cls, (items, packages))
        return items, packages

    def _stand_in(self, mod: types.ModuleType, qualname: str, name: str,
                  line: int) -> Optional[_Parts]:
        """The definition of code no name reaches (a def or a lambda; a comprehension's and a
        class body's code is its enclosing definition's), found in its module's source by
        qualname, the nearest to ``line`` (an edit above it moves it), digested by a
        stand-in function: a code object with that file, line and name, and the module's
        globals, which the fingerprinter parses and resolves as it does a step's. Its free
        variables are not known here (the enclosing function's closure stands for them)."""
        if name in _COMPREHENSIONS:
            return None
        path = getattr(mod, "__file__", None)
        if not isinstance(path, str):
            return None
        where = self._where(path, qualname, line)
        if where is None or where[1] not in ("def", "lambda"):
            return None
        # no positions: of several lambdas on one line (one record), the fingerprinter takes all
        code = _TEMPLATE.replace(co_filename=path, co_firstlineno=where[0], co_name=name,
                                 co_linetable=b"")
        if _QUALNAME:
            code = code.replace(co_qualname=qualname)
        fn = types.FunctionType(code, vars(mod), name)
        fn.__qualname__ = qualname
        self._stand_ins.append(fn)
        return self._code(fn)

    def _where(self, path: str, qualname: str, line: int) -> Optional[Tuple[int, str]]:
        """(first line, kind) of the definition of ``qualname`` in the file at ``path``
        nearest to ``line``; kept in the source cache by the file's content, so a no-op does
        not parse the file."""
        fp = self.fp
        cache = fp.source_cache
        key = fp._cache_key(path, "traced definition", qualname, line) if cache else None
        if key is not None and cache is not None:
            hit = cache.get(key)
            if hit is not None:
                first, _, kind = hit[0].partition(":")
                return (int(first), kind) if kind else None
        got = self._index_of(path).get(qualname)
        where = min(got, key=lambda x: (abs(x[0] - line), x[0])) if got else None
        if key is not None and cache is not None:
            cache.put(key, f"{where[0]}:{where[1]}" if where else "0:", [])
        return where

    def _index_of(self, path: str) -> _Index:
        got = self._index.get(path)
        if got is None:
            got = self._index[path] = definitions(self.fp.sources.module_ast(path))
        return got

    # -- the module of a file -----------------------------------------------------------------
    def _module(self, file: str) -> Optional[types.ModuleType]:
        if file.startswith("<") or not file.endswith(".py"):
            return None
        full = os.path.join(self.root, *file.split("/"))
        mod = self._by_file.get(full)
        if mod is not None:
            return mod
        for m in list(sys.modules.values()):
            f = getattr(m, "__file__", None)
            if isinstance(f, str) and isinstance(m, types.ModuleType):
                self._by_file.setdefault(os.path.abspath(f), m)
        mod = self._by_file.get(full)
        if mod is not None:
            return mod
        name = file[:-3].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if (name in sys.modules or not self.fp.locator.top_is_project(name)
                or not imported.imports_allowed()):  # (a record from an unsigned remote)
            return None
        import importlib

        try:  # imported as the step imported it (the fingerprinter imports project modules too)
            mod = importlib.import_module(name)
        except Exception:
            return None
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str) or os.path.abspath(f) != full:
            return None
        self._by_file[full] = mod
        return mod


_TEMPLATE = (lambda: None).__code__  # the stand-ins' code: never run, only named


def _named_subclasses(cls: type) -> List[type]:
    """The subclasses of ``cls``, at any depth, that its own module defines and names by
    their qualname (so the same whichever modules are imported, and none made at run time)."""
    mod = sys.modules.get(cls.__module__)
    out: List[type] = []
    if mod is None:
        return out
    todo: List[type] = list(type.__subclasses__(cls)) if isinstance(cls, type) else []
    seen: Dict[int, None] = {}
    while todo:
        sub = todo.pop()
        if id(sub) in seen:
            continue
        seen[id(sub)] = None
        todo += type.__subclasses__(sub)
        if sub.__module__ == cls.__module__ and _reached(mod, sub.__qualname__) is sub:
            out.append(sub)
    return sorted(out, key=lambda c: c.__qualname__)


def _reached(mod: types.ModuleType, qualname: str) -> Any:
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, "__dict__", {}).get(part)
        if obj is None:
            return None
    return obj


def _name_path(mod: types.ModuleType, names: List[str]) -> List[Any]:
    """The objects the parts of a qualname lead to from ``mod``, up to the first part no name
    reaches (``<locals>``, ``<lambda>``, a name not bound)."""
    chain: List[Any] = []
    obj: Any = mod
    for part in names:
        if part.startswith("<"):
            break
        try:
            obj = vars(obj).get(part)
        except TypeError:  # no __dict__
            obj = None
        if obj is None:
            break
        chain.append(obj)
    return chain


def _function(obj: Any, qualname: Optional[str], name: Optional[str],
              mod: types.ModuleType) -> Optional[types.FunctionType]:
    """The function of the module's file that ``obj`` is or holds: through staticmethod,
    classmethod, property (fget, fset, fdel), cached_property, ``__wrapped__`` (functools.wraps,
    lru_cache) and ``__func__``. With ``qualname``, only code of that qualified name (on 3.10,
    which has no co_qualname, of that name); without, the first project function met."""
    import functools

    path = getattr(mod, "__file__", None)
    todo: List[Any] = [obj]
    seen = 0
    while todo and seen < 20:
        x = todo.pop(0)
        seen += 1
        if x is None:
            continue
        if isinstance(x, (staticmethod, classmethod)):
            todo.append(x.__func__)
        elif isinstance(x, property):
            todo += [x.fget, x.fset, x.fdel]
        elif isinstance(x, functools.cached_property):
            todo.append(x.func)
        elif isinstance(x, types.FunctionType):
            code = x.__code__
            if qualname is None or (
                    (code.co_filename == path or _same_file(code.co_filename, path))
                    and (code.co_qualname == qualname if _QUALNAME else code.co_name == name)):
                return x
            todo.append(getattr(x, "__wrapped__", None))
        elif not isinstance(x, type):
            todo.append(getattr(x, "__wrapped__", None))
            todo.append(getattr(x, "__func__", None))
    return None


def _same_file(a: str, b: Optional[str]) -> bool:
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


def definitions(tree: Any) -> _Index:
    """qualname -> [(first line, kind)] of every def, class, lambda and comprehension in a
    module's syntax tree, the first line as its code object has it (a decorated definition's
    is its first decorator's)."""
    import ast

    out: _Index = {}
    if tree is None:
        return out
    comps = {ast.ListComp: "<listcomp>", ast.SetComp: "<setcomp>", ast.DictComp: "<dictcomp>",
             ast.GeneratorExp: "<genexpr>"}

    def visit(node: Any, prefix: str) -> None:
        child: Any
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                is_class = isinstance(child, ast.ClassDef)
                out.setdefault(qual, []).append((first, "class" if is_class else "def"))
                for d in child.decorator_list:
                    visit_one(d, prefix)
                if isinstance(child, ast.ClassDef):
                    for b in list(child.bases) + [k.value for k in child.keywords]:
                        visit_one(b, prefix)
                else:
                    visit_args(child, prefix)
                inner = qual + ("." if is_class else ".<locals>.")
                for stmt in child.body:
                    visit_one(stmt, inner)
            elif isinstance(child, ast.Lambda):
                qual = prefix + "<lambda>"
                out.setdefault(qual, []).append((child.lineno, "lambda"))
                visit_args(child, prefix)
                visit_one(child.body, qual + ".<locals>.")
            elif type(child) in comps:
                qual = prefix + comps[type(child)]
                out.setdefault(qual, []).append((child.lineno, "comp"))
                visit(child, qual + ".<locals>.")
            else:
                visit(child, prefix)

    def visit_one(node: Any, prefix: str) -> None:
        visit(ast.Module(body=[node], type_ignores=[]) if isinstance(node, ast.stmt)
              else ast.Expression(body=node), prefix)

    def visit_args(node: Any, prefix: str) -> None:  # defaults run in the enclosing scope
        args = node.args
        for d in list(args.defaults) + [k for k in args.kw_defaults if k is not None]:
            visit_one(d, prefix)
        if not isinstance(node, ast.Lambda):
            for a in args.posonlyargs + args.args + args.kwonlyargs:
                if a.annotation is not None:
                    visit_one(a.annotation, prefix)

    visit(tree, "")
    return out
