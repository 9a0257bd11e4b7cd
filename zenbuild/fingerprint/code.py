"""Code fingerprints: normalized AST of a step plus the project's helpers and constants it
reaches, closure values and third-party package versions; params encoding. Pure."""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from zenbuild.digest import digest_bytes
from zenbuild.graph import StepDef
from zenbuild.paths import SKIP_DIRS
from zenbuild.records import field, record
from zenbuild.serialize import Unencodable, canonical

if TYPE_CHECKING:  # pragma: no cover
    import ast

# ast and inspect are imported only when a definition must be parsed: a no-op run finds every
# function's normalized digest and references in the source cache, keyed by file content.

# Bump when the analysis that fills the source cache changes, so old entries are not reused.
_SOURCE_CACHE_VERSION = "v2"

# Module metadata: where a module lives is not what it computes (and differs per checkout).
_MODULE_DUNDERS = frozenset(
    {"__file__", "__cached__", "__loader__", "__spec__", "__path__", "__builtins__",
     "__package__", "__doc__"}
)



class SourceCache:
    """Remembers each definition's normalized digest and references by the content digest of
    its source file, so an unchanged file is never parsed again. In memory by default; the
    scheduler backs it with the store."""

    def __init__(
        self,
        file_digest: Optional[Callable[[str], Optional[str]]] = None,
        load: Optional[Callable[[str], Optional[Tuple[str, List[List[str]]]]]] = None,
    ) -> None:
        self._file_digest = file_digest
        self._load = load
        self.entries: Dict[str, Tuple[str, List[List[str]]]] = {}
        self.new: Dict[str, Tuple[str, List[List[str]]]] = {}

    def file_digest(self, path: str) -> Optional[str]:
        return self._file_digest(path) if self._file_digest is not None else None

    def get(self, key: str) -> Optional[Tuple[str, List[List[str]]]]:
        hit = self.entries.get(key)
        if hit is None and self._load is not None:
            hit = self._load(key)
            if hit is not None:
                self.entries[key] = hit
        return hit

    def put(self, key: str, digest: str, chains: List[Any]) -> None:
        value = (digest, [list(c) for c in chains])
        self.entries[key] = value
        self.new[key] = value


class NoSourceWarning(UserWarning):
    """A function had no source; its bytecode was fingerprinted instead."""


@record
class CodeInfo:
    """The code component of one step: item name -> digest, and package -> version."""

    items: Dict[str, str] = field(default_factory=dict)
    packages: Dict[str, str] = field(default_factory=dict)
    # item name -> [kind, project-relative file]; kind is step|function|class|constant|module
    meta: Dict[str, List[str]] = field(default_factory=dict)
    # the fingerprint text of items (and packages, when tracked) -> rebuild.compute_components
    heads: Dict[bool, str] = field(default_factory=dict)


@record
class _Obj:
    """What one function, class or constant contributes, and what it references."""

    key: str
    digest: str
    file: str
    refs: List[Any]
    packages: Dict[str, str]
    kind: str = "function"


def _strip_docstrings(node: ast.AST) -> None:
    import ast

    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = n.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                n.body = body[1:] or [ast.Pass()]


def _dump(node: ast.AST) -> str:
    import ast

    return ast.dump(node, annotate_fields=False, include_attributes=False)


class CodeFingerprinter:
    """Computes code components, memoized per object for the life of one process."""

    def __init__(
        self,
        root: str,
        track_packages: bool = True,
        store_dir: str = "",
        source_cache: Optional[SourceCache] = None,
    ) -> None:
        self.source_cache = source_cache
        self.root = os.path.realpath(root)
        self._given_root = os.path.abspath(root)
        self.track_packages = track_packages
        self.store_dir = os.path.realpath(store_dir) if store_dir else ""
        self._asts: Dict[str, Optional[ast.Module]] = {}
        self._project_file: Dict[str, Optional[str]] = {}
        self._objs: Dict[int, _Obj] = {}
        self._pins: List[Any] = []  # keep memoized objects alive so ids stay unique
        self._versions: Dict[str, Optional[str]] = {}
        self._step_cache: Dict[int, CodeInfo] = {}
        self._import_maps: Dict[str, Dict[str, Tuple[str, str]]] = {}
        self._dists: Optional[Dict[str, List[str]]] = None

    # -- which files belong to the project --------------------------------------------------
    def project_file(self, filename: Optional[str]) -> Optional[str]:
        """Project-relative path of a source file of the project's own, else None."""
        if not filename:
            return None
        if filename in self._project_file:
            return self._project_file[filename]
        rel: Optional[str] = None
        real = os.path.realpath(filename)
        if real.startswith(self.root + os.sep) and real.endswith(".py"):
            r = os.path.relpath(real, self.root)
            parts = r.split(os.sep)
            if not any(p in SKIP_DIRS for p in parts) and not (
                self.store_dir and real.startswith(self.store_dir + os.sep)
            ):
                rel = r.replace(os.sep, "/")
        self._project_file[filename] = rel
        return rel

    def module_is_project(self, mod: types.ModuleType) -> bool:
        return self.project_file(getattr(mod, "__file__", None)) is not None

    # -- third-party packages ---------------------------------------------------------------
    def package_of(self, module_name: str) -> Optional[Tuple[str, str]]:
        top = module_name.split(".")[0]
        if not top or top in sys.stdlib_module_names or top in ("builtins", "zenbuild", "__main__"):
            return None
        mod = sys.modules.get(top)
        if mod is not None and self.module_is_project(mod):
            return None
        if top not in self._versions:
            self._versions[top] = self._version(top)
        v = self._versions[top]
        return (top, v) if v is not None else None

    def _version(self, top: str) -> Optional[str]:
        from importlib import metadata

        try:
            return metadata.version(top)
        except Exception:
            pass
        if self._dists is None:
            try:
                self._dists = dict(metadata.packages_distributions())
            except Exception:
                self._dists = {}
        for dist in self._dists.get(top, []):
            try:
                return f"{dist} {metadata.version(dist)}"
            except Exception:
                continue
        mod = sys.modules.get(top)
        ver = getattr(mod, "__version__", None)
        return str(ver) if isinstance(ver, str) else "unknown"

    # -- source and AST ---------------------------------------------------------------------
    def _module_ast(self, filename: str) -> Optional[ast.Module]:
        import ast

        if filename not in self._asts:
            try:
                with open(filename, "rb") as f:
                    self._asts[filename] = ast.parse(f.read(), filename)
            except (OSError, SyntaxError, ValueError):
                self._asts[filename] = None
        return self._asts[filename]

    def _find_def(self, tree: ast.Module, qualname: str, lineno: Optional[int]) -> Optional[ast.AST]:
        import ast

        parts = [p for p in qualname.split(".") if p != "<locals>"]
        scope: List[ast.AST] = [tree]
        found: Optional[ast.AST] = None
        for part in parts:
            found = None
            for sc in scope:
                for n in ast.walk(sc):
                    if (
                        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                        and n.name == part
                    ):
                        if found is None or (lineno is not None and _def_line(n) == lineno):
                            found = n
                if found is not None:
                    break
            if found is None:
                return None
            scope = [found]
        return found

    def _definition(self, obj: Any) -> Optional[ast.AST]:
        import ast
        import inspect
        import textwrap

        code = getattr(obj, "__code__", None)
        if code is not None and code.co_name != "<lambda>":
            # Fast path: tokenize and parse only the function's own lines.
            try:
                tree1 = ast.parse(textwrap.dedent(inspect.getsource(obj)))
                if tree1.body and isinstance(tree1.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
                    return tree1.body[0]
            except (OSError, TypeError, SyntaxError, IndentationError, ValueError):
                pass
        filename = inspect.getsourcefile(obj) if not isinstance(obj, type) else None
        if isinstance(obj, type):
            mod = sys.modules.get(obj.__module__)
            filename = getattr(mod, "__file__", None)
        lineno = None
        code = getattr(obj, "__code__", None)
        if code is not None:
            lineno = code.co_firstlineno
        if filename:
            tree = self._module_ast(filename)
            if tree is not None:
                qual = getattr(obj, "__qualname__", obj.__name__)
                if "<lambda>" not in qual:
                    node = self._find_def(tree, qual, lineno)
                    if node is not None:
                        return node
        try:
            src = textwrap.dedent(inspect.getsource(obj))
            tree2 = ast.parse(src)
        except (OSError, TypeError, SyntaxError, IndentationError):
            return None
        if getattr(obj, "__name__", "") == "<lambda>":
            lambdas = [n for n in ast.walk(tree2) if isinstance(n, ast.Lambda)]
            return lambdas[0] if len(lambdas) == 1 else None
        return tree2.body[0] if tree2.body else None

    # -- the object graph -------------------------------------------------------------------
    def _globals_of(self, obj: Any) -> Dict[str, Any]:
        g = getattr(obj, "__globals__", None)
        if g is None:
            mod = sys.modules.get(getattr(obj, "__module__", "") or "")
            g = vars(mod) if mod is not None else {}
        return g

    def _parse(self, obj: Any, key: str, strip_decorators: bool) -> Tuple[str, Optional[List[Tuple[str, ...]]]]:
        """(normalized digest, referenced name chains) of a definition; chains is None when
        there was no source and the bytecode was fingerprinted."""
        node = self._definition(obj)
        if node is None:
            code = getattr(obj, "__code__", None)
            if code is None:
                return digest_bytes(repr(obj).encode()), None
            warnings.warn(
                f"{key} has no source; fingerprinting its bytecode instead",
                NoSourceWarning,
                stacklevel=3,
            )
            return digest_bytes(_code_bytes(code)), None
        if strip_decorators and hasattr(node, "decorator_list"):
            node = _copy_without_decorators(node)
        _strip_docstrings(node)
        from zenbuild.fingerprint.scopes import global_references

        return digest_bytes(_dump(node).encode()), global_references(node)

    def _analyze(self, obj: Any, strip_decorators: bool) -> _Obj:
        oid = id(obj)
        memo = self._objs.get(oid)
        if memo is not None:
            return memo
        module = getattr(obj, "__module__", None) or "?"
        key = f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
        code = getattr(obj, "__code__", None)
        if isinstance(obj, type):
            src_file = getattr(sys.modules.get(module), "__file__", None)
        else:
            src_file = code.co_filename if code is not None else None
        rel = self.project_file(src_file) or ""
        refs: List[Any] = []
        packages: Dict[str, str] = {}
        cache_key = None
        cached = None
        if (
            self.source_cache is not None
            and code is not None
            and src_file
            and code.co_name != "<lambda>"
        ):
            fdigest = self.source_cache.file_digest(src_file)
            if fdigest is not None:
                cache_key = f"{_SOURCE_CACHE_VERSION}|{fdigest}|{key}|{code.co_firstlineno}|{int(strip_decorators)}"
                cached = self.source_cache.get(cache_key)
        chains: Optional[List[Any]]
        if cached is not None:
            digest, chains = cached
        else:
            digest, chains = self._parse(obj, key, strip_decorators)
            if cache_key is not None and chains is not None and self.source_cache is not None:
                self.source_cache.put(cache_key, digest, chains)
        if chains:
            g = self._globals_of(obj)
            for chain in chains:
                self._resolve(tuple(chain), g, refs, packages)
        closure = getattr(obj, "__closure__", None)
        if closure and code is not None:
            for var, cell in zip(code.co_freevars, closure):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                self._value_ref(f"{key}.<closure {var}>", value, rel, refs, packages, "closure")
        kind = "class" if isinstance(obj, type) else ("step" if strip_decorators else "function")
        result = _Obj(key, digest, rel, refs, packages, kind)
        self._objs[oid] = result
        self._pins.append(obj)
        return result

    def _value_ref(
        self,
        key: str,
        value: Any,
        rel: str,
        refs: List[Any],
        packages: Dict[str, str],
        kind: str = "constant",
    ) -> None:
        if isinstance(value, StepDef):
            value = value.fn
        if isinstance(value, (types.FunctionType, type)):
            self._callable_ref(value, refs, packages)
            return
        if isinstance(value, types.ModuleType):
            self._module_ref(value, refs, packages)
            return
        if callable(value) and getattr(value, "__module__", None) and not self._is_project_name(value):
            pkg = self.package_of(value.__module__)
            if pkg and self.track_packages:
                packages[pkg[0]] = pkg[1]
            return
        if self._is_project_name(type(value)):
            refs.append(type(value))
        refs.append(_Obj(key, _value_digest(self._relocatable(value)), rel, [], {}, kind))

    def _relocatable(self, value: Any) -> Any:
        """A path-like constant inside the project is hashed relative to the project root, so
        two checkouts at different places share fingerprints (and a remote cache)."""
        from pathlib import PurePath

        if isinstance(value, (str, PurePath)):
            text = os.fspath(value)
            for root in (self.root, self._given_root):
                if text == root or text.startswith(root + os.sep):
                    rel = "<project>" + text[len(root) :]
                    return type(value)(rel) if isinstance(value, PurePath) else rel
        return value

    def _is_project_name(self, value: Any) -> bool:
        mod = sys.modules.get(getattr(value, "__module__", "") or "")
        return mod is not None and self.module_is_project(mod)

    def _callable_ref(self, value: Any, refs: List[Any], packages: Dict[str, str]) -> None:
        mod = sys.modules.get(value.__module__ or "")
        if mod is not None and self.module_is_project(mod):
            refs.append(value)
        elif self.track_packages and value.__module__:
            pkg = self.package_of(value.__module__)
            if pkg:
                packages[pkg[0]] = pkg[1]

    def _module_ref(self, mod: types.ModuleType, refs: List[Any], packages: Dict[str, str]) -> None:
        if self.module_is_project(mod):
            refs.append(mod)
        elif self.track_packages:
            pkg = self.package_of(mod.__name__)
            if pkg:
                packages[pkg[0]] = pkg[1]

    def _resolve(
        self, chain: Tuple[str, ...], g: Dict[str, Any], refs: List[Any], packages: Dict[str, str]
    ) -> None:
        name = chain[0]
        if name not in g or name in _MODULE_DUNDERS:
            return  # a local, a builtin, module metadata, or a name that does not exist (yet)
        value = g[name]
        owner_mod = g.get("__name__", "?")
        key = f"{owner_mod}.{name}"
        i = 1
        file_of = g.get("__file__")
        while isinstance(value, types.ModuleType) and i < len(chain) and self.module_is_project(value):
            if not hasattr(value, chain[i]) or chain[i] in _MODULE_DUNDERS:
                return
            key = f"{value.__name__}.{chain[i]}"
            file_of = getattr(value, "__file__", None)
            value = getattr(value, chain[i])
            i += 1
        if isinstance(value, types.ModuleType) and self.module_is_project(value) and i < len(chain):
            refs.append(value)  # an attribute we cannot see statically: take the whole module
            return
        if i == 1 and not callable(value) and not isinstance(value, types.ModuleType):
            origin = self._imports_of(g).get(name)
            mod = sys.modules.get(origin[0]) if origin else None
            if origin and mod is not None and self.module_is_project(mod):
                key = f"{origin[0]}.{origin[1]}"  # name the constant where it is defined
                file_of = getattr(mod, "__file__", None)
        rel = self.project_file(file_of) or ""
        self._value_ref(key, value, rel, refs, packages)

    def _imports_of(self, g: Dict[str, Any]) -> Dict[str, Tuple[str, str]]:
        """name -> (module, original name) for a module's `from X import name` statements,
        kept in the source cache by the module file's content digest."""
        filename = g.get("__file__")
        if not filename or self.project_file(filename) is None:
            return {}
        memo = self._import_maps.get(filename)
        if memo is not None:
            return memo
        cache_key = None
        pairs: Optional[List[List[str]]] = None
        if self.source_cache is not None:
            fdigest = self.source_cache.file_digest(filename)
            if fdigest is not None:
                cache_key = f"{_SOURCE_CACHE_VERSION}|{fdigest}|imports|{g.get('__package__') or ''}"
                hit = self.source_cache.get(cache_key)
                pairs = hit[1] if hit is not None else None
        if pairs is None:
            pairs = _from_imports(self._module_ast(filename), g.get("__package__") or "")
            if cache_key is not None and self.source_cache is not None:
                self.source_cache.put(cache_key, "", [tuple(p) for p in pairs])
        result = {p[0]: (p[1], p[2]) for p in pairs}
        self._import_maps[filename] = result
        return result

    def code(self, fn: Any) -> CodeInfo:
        """The code component of a step function (decorators of the function itself ignored)."""
        memo = self._step_cache.get(id(fn))
        if memo is not None:
            return memo
        info = CodeInfo()
        root = self._analyze(fn, strip_decorators=True)
        seen: Dict[int, None] = {}
        stack: List[_Obj] = [root]
        while stack:
            o = stack.pop()
            info.items[o.key] = o.digest
            info.meta[o.key] = [o.kind, o.file]
            info.packages.update(o.packages)
            for r in o.refs:
                if isinstance(r, _Obj):
                    info.items[r.key] = r.digest
                    info.meta[r.key] = [r.kind, r.file]
                    continue
                if id(r) in seen:
                    continue
                seen[id(r)] = None
                if isinstance(r, types.ModuleType):
                    stack.append(self._module_obj(r))
                else:
                    stack.append(self._analyze(r, strip_decorators=False))
        self._step_cache[id(fn)] = info
        self._pins.append(fn)
        return info

    def _module_obj(self, mod: types.ModuleType) -> _Obj:
        memo = self._objs.get(id(mod))
        if memo is not None:
            return memo
        filename = getattr(mod, "__file__", None) or ""
        cache_key = None
        cached = None
        if self.source_cache is not None and filename:
            fdigest = self.source_cache.file_digest(filename)
            if fdigest is not None:
                cache_key = f"{_SOURCE_CACHE_VERSION}|{fdigest}|module"
                cached = self.source_cache.get(cache_key)
        if cached is not None:
            digest = cached[0]
        else:
            tree = self._module_ast(filename)
            if tree is None:
                digest = digest_bytes(b"?")
            else:
                _strip_docstrings(tree)
                digest = digest_bytes(_dump(tree).encode())
                if cache_key is not None and self.source_cache is not None:
                    self.source_cache.put(cache_key, digest, [])
        o = _Obj(mod.__name__, digest, self.project_file(filename) or "", [], {}, "module")
        self._objs[id(mod)] = o
        self._pins.append(mod)
        return o


def _from_imports(tree: Optional[ast.Module], package: str) -> List[List[str]]:
    """[local name, absolute module, original name] of each top-level `from X import Y`."""
    import ast

    out: List[List[str]] = []
    if tree is None:
        return out
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(p for p in parts + ([base] if base else []) if p)
            for alias in node.names:
                if alias.name != "*":
                    out.append([alias.asname or alias.name, base, alias.name])
    return out


def _def_line(n: ast.AST) -> int:
    decos = getattr(n, "decorator_list", [])
    first = min([d.lineno for d in decos] + [n.lineno]) if decos else n.lineno  # type: ignore[attr-defined]
    return first


def _copy_without_decorators(node: ast.AST) -> ast.AST:
    import copy

    new = copy.copy(node)
    new.decorator_list = []  # type: ignore[attr-defined]
    return new


def _code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for c in code.co_consts:
        parts.append(_code_bytes(c) if isinstance(c, types.CodeType) else repr(c).encode())
    return b"\0".join(parts)


def _value_digest(value: Any) -> str:
    try:
        return digest_bytes(canonical(value))
    except Unencodable:
        pass
    try:
        import pickle

        return digest_bytes(pickle.dumps(value, protocol=5))
    except Exception:
        r = repr(value)
        if " at 0x" in r:
            r = f"<{type(value).__module__}.{type(value).__qualname__}>"
        return digest_bytes(r.encode())
