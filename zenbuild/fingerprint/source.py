"""Finding a definition's source: the parsed-source cache, the module AST (from the file, or
from linecache for notebook cells), the node of a function, lambda or class in use, and the
normalization (docstrings, decorators) that makes cosmetic edits invisible."""

from __future__ import annotations

import os
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import ast

# ast and inspect are imported only when a definition must be parsed: a no-op run finds every
# definition's normalized digest and references in the source cache, keyed by file content.

# Bump when the analysis that fills the source cache changes, so old entries are not reused.
SOURCE_CACHE_VERSION = "v5"  # v4: dynamic_names markers; v5: every top-level import
# First element of an import chain (see scopes.py): an import inside a definition.
IMPORT = "<import>"


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


# The AST a module's import was compiled from (project.SourceLoader), by file name, with the
# digest of the source bytes it was parsed from: the fingerprint reuses it instead of parsing
# the file again when the file still holds those bytes (a cold run parses a module once, not
# once to import it and once to fingerprint it). Only the latest parse of each file is kept.
_COMPILED: Dict[str, Tuple[str, ast.Module]] = {}


def note_compiled(filename: str, digest: str, tree: ast.Module) -> None:
    """Offer ``tree``, parsed from source bytes of digest ``digest``, to Sources.module_ast."""
    _COMPILED[filename] = (digest, tree)


class Sources:
    """Module ASTs by file name, parsed at most once per process."""

    def __init__(self) -> None:
        self._asts: Dict[str, Optional[ast.Module]] = {}

    def lines(self, filename: str) -> List[str]:
        import linecache

        if os.path.exists(filename):
            linecache.checkcache(filename)
        return linecache.getlines(filename)

    def module_ast(self, filename: str) -> Optional[ast.Module]:
        import ast

        if filename not in self._asts:
            tree: Optional[ast.Module] = None
            try:
                if os.path.exists(filename):
                    with open(filename, "rb") as f:
                        data = f.read()
                    got = _COMPILED.pop(filename, None)
                    if got is not None:
                        from zenbuild.digest import digest_bytes

                        if got[0] == digest_bytes(data):  # the bytes the import compiled
                            tree = got[1]
                    if tree is None:
                        tree = ast.parse(data, filename)
                else:  # a notebook cell: its source is only in linecache
                    text = "".join(self.lines(filename))
                    tree = ast.parse(text, filename) if text else None
            except (OSError, SyntaxError, ValueError):
                tree = None
            self._asts[filename] = tree
        return self._asts[filename]

    def function_node(self, fn: Any) -> Optional[ast.AST]:
        """The definition of a function as it was compiled: found from its code object (file
        and first line), never through __wrapped__, so a wrapper is its own code."""
        import ast
        import inspect
        import textwrap

        code: types.CodeType = fn.__code__
        if code.co_name == "<lambda>":
            return self._lambda_node(code)
        lines = self.lines(code.co_filename)
        start = code.co_firstlineno - 1
        if 0 <= start < len(lines):
            try:
                block = inspect.getblock(lines[start:])
                tree = ast.parse(textwrap.dedent("".join(block)))
                if tree.body and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
                    return tree.body[0]
            except (SyntaxError, IndentationError, ValueError, IndexError, TypeError):
                pass
        tree2 = self.module_ast(code.co_filename)
        if tree2 is None:
            return None
        for n in ast.walk(tree2):
            if (
                isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and n.name == code.co_name
                and def_line(n) == code.co_firstlineno
            ):
                return n
        return None

    def _lambda_node(self, code: types.CodeType) -> Optional[ast.AST]:
        """The lambda compiled into ``code``: among the lambdas starting on its first line, the
        one whose span holds its first instruction's position; all of them if unsure."""
        import ast

        tree = self.module_ast(code.co_filename)
        if tree is None:
            return None
        found = [
            n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno
        ]
        if len(found) > 1:
            positions = getattr(code, "co_positions", None)  # Python >= 3.11: else all of them
            pos = [(ln, col) for ln, _, col, _ in (positions() if positions else ())
                   if ln is not None and col is not None]
            if pos:
                ln, col = pos[-1]
                inside = [
                    n
                    for n in found
                    if (n.body.lineno, n.body.col_offset) <= (ln, col)
                    and (ln, col) <= (n.end_lineno or ln, n.end_col_offset or col)
                ]
                if inside:
                    found = inside[-1:]
        if not found:
            return None
        return found[0] if len(found) == 1 else ast.Tuple(elts=list(found), ctx=ast.Load())

    def class_nodes(self, cls: type, filename: str) -> List[ast.AST]:
        """The class statement(s) that made ``cls``. A class defined twice in one module is
        told apart by the lines of its own methods; when nothing tells them apart, every
        candidate is returned (a fingerprint over all of them is never stale)."""
        import ast

        tree = self.module_ast(filename)
        if tree is None:
            return []
        parts = [p for p in cls.__qualname__.split(".") if p != "<locals>"]
        scopes: List[ast.AST] = [tree]
        for part in parts:
            nxt: List[ast.AST] = []
            for sc in scopes:
                for n in ast.walk(sc):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part:
                        if n is not sc:
                            nxt.append(n)
            scopes = nxt
            if not scopes:
                return []
        candidates = [n for n in scopes if isinstance(n, ast.ClassDef)]
        if len(candidates) > 1:
            lines = method_lines(cls, filename)
            chosen = [
                n for n in candidates
                if any(n.lineno <= ln <= (n.end_lineno or n.lineno) for ln in lines)
            ]
            if chosen:
                candidates = chosen[:1]
        return list(candidates)


def method_lines(cls: type, filename: Optional[str] = None) -> List[int]:
    """First lines of the functions defined in a class's own body (in ``filename``)."""
    out: List[int] = []
    for v in vars(cls).values():
        f = getattr(v, "__func__", v)  # classmethod / staticmethod
        if isinstance(f, property):
            f = f.fget
        code = getattr(f, "__code__", None)
        if isinstance(code, types.CodeType) and (filename is None or code.co_filename == filename):
            out.append(code.co_firstlineno)
    return out


# code made from a string by the class's machinery (dataclasses' "<string>", attrs' methods,
# which attrs puts in linecache): not the file of the class statement
_GENERATED = ("<string", "<attrs generated")


def _compiled_in(f: Any, code: types.CodeType, prefix: str) -> bool:
    """Whether function ``f`` was compiled in the body of the class whose qualname is
    ``prefix`` minus its dot: by the qualname its code was compiled with (3.11+), not the one
    it carries, which a wrapper copies (functools.wraps: the __repr__ of a dataclass has
    qualname Cfg.__repr__ and code in dataclasses.py) and namedtuple assigns (Row._make)."""
    qual = getattr(code, "co_qualname", None)
    if isinstance(qual, str):
        return qual.startswith(prefix)
    return (getattr(f, "__qualname__", "").startswith(prefix)  # 3.10: no co_qualname
            and getattr(f, "__wrapped__", None) is None)


def class_file(cls: type) -> Optional[str]:
    """The file a class statement is in: its methods' code file (works for notebook cells,
    whose __main__ has no __file__), else its module's file."""
    import sys

    for v in vars(cls).values():
        f = getattr(v, "__func__", v)
        if isinstance(f, property):
            f = f.fget
        code = getattr(f, "__code__", None)
        if isinstance(code, types.CodeType) and not code.co_filename.startswith(_GENERATED):
            if _compiled_in(f, code, cls.__qualname__ + "."):
                return code.co_filename
    mod = sys.modules.get(cls.__module__)
    return getattr(mod, "__file__", None)


def strip_docstrings(node: ast.AST) -> None:
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


def dump(node: ast.AST) -> str:
    import ast

    return ast.dump(node, annotate_fields=False, include_attributes=False)


def def_line(n: ast.AST) -> int:
    decos = getattr(n, "decorator_list", [])
    return min([d.lineno for d in decos] + [n.lineno]) if decos else n.lineno  # type: ignore[attr-defined]


def copy_without_decorators(node: ast.AST) -> ast.AST:
    import copy

    new = copy.copy(node)
    new.decorator_list = []  # type: ignore[attr-defined]
    return new


def code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for c in code.co_consts:
        parts.append(code_bytes(c) if isinstance(c, types.CodeType) else repr(c).encode())
    return b"\0".join(parts)


def absolute_module(name: str, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``package``."""
    if not level:
        return name
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(p for p in parts + ([name] if name else []) if p)


def from_imports(tree: Optional[ast.Module], package: str) -> List[List[str]]:
    """[local name, absolute module, original name] of each top-level `from X import Y`."""
    import ast

    out: List[List[str]] = []
    if tree is None:
        return out
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = absolute_module(node.module or "", node.level, package)
            for alias in node.names:
                if alias.name != "*":
                    out.append([alias.asname or alias.name, base, alias.name])
    return out
