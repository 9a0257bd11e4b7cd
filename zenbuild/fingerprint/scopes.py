"""Which names a definition reads from its module's globals, with Python's scoping rules:
parameters, assignments, loop and with targets, imports and nested definitions are local.
Names bound by an import inside the definition, and literal importlib.import_module("x")
calls, are reported as import chains: ("<import>", level, module to import, module the name
is bound to, attribute, ...)."""

from __future__ import annotations

import ast
from typing import Dict, List, Optional, Sequence, Set, Tuple

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
from zenbuild.fingerprint.source import IMPORT  # noqa: E402  (re-exported for callers)

# local name -> (level, module to import, module the name is bound to, attributes after it)
_ImportMap = Dict[str, Tuple[int, str, str, Tuple[str, ...]]]
_COMPS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _params(args: ast.arguments) -> Set[str]:
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    if args.vararg:
        names.add(args.vararg.arg)
    if args.kwarg:
        names.add(args.kwarg.arg)
    return names


def _bindings(body: Sequence[ast.AST]) -> Tuple[Set[str], Set[str], _ImportMap]:
    """(names bound in this scope, names declared global, names bound by imports) without
    entering nested scopes; names declared nonlocal are left to the enclosing function."""
    imports: _ImportMap = {}
    bound: Set[str] = set()
    declared: Set[str] = set()
    nonlocal_: Set[str] = set()
    stack: List[ast.AST] = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
            stack.extend(n.decorator_list)
            continue  # its body is another scope
        if isinstance(n, (ast.Lambda,) + _COMPS):
            continue
        if isinstance(n, ast.Global):
            declared.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            nonlocal_.update(n.names)  # not local here: an enclosing function's
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.add(n.id)
        elif isinstance(n, ast.Import):
            for alias in n.names:
                local = alias.asname or alias.name.split(".")[0]
                bound.add(local)
                imports[local] = (0, alias.name, alias.name if alias.asname else local, ())
        elif isinstance(n, ast.ImportFrom):
            for alias in n.names:
                if alias.name != "*":
                    local = alias.asname or alias.name
                    bound.add(local)
                    mod = n.module or ""
                    imports[local] = (n.level, mod, mod, (alias.name,))
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchAs) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchStar) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            bound.add(n.rest)
        stack.extend(ast.iter_child_nodes(n))
    for name in declared | nonlocal_:
        imports.pop(name, None)
    return bound - declared - nonlocal_, declared, imports


class _Scope:
    def __init__(
        self,
        kind: str,
        names: Set[str],
        declared: Optional[Set[str]] = None,
        imports: Optional[_ImportMap] = None,
    ) -> None:
        self.kind = kind  # function | class | comprehension
        self.names = names
        self.declared = declared or set()
        self.imports = imports or {}


class _Refs(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scopes: List[_Scope] = []
        self.chains: Dict[Tuple[str, ...], None] = {}

    def scope_of(self, name: str) -> Optional[_Scope]:
        """The enclosing scope that binds ``name``; None for a global (or builtin)."""
        for i, sc in enumerate(reversed(self.scopes)):
            if sc.kind == "class" and i > 0:
                continue  # a class body's names are not visible to nested scopes
            if name in sc.declared:
                return None  # declared global
            if name in sc.names:
                return sc
        return None

    def is_local(self, name: str) -> bool:
        return self.scope_of(name) is not None

    def use(self, chain: Tuple[str, ...]) -> None:
        """Record a read of ``chain``: a global chain, or an import chain when its first name
        was bound by an import statement in an enclosing function."""
        sc = self.scope_of(chain[0])
        if sc is None:
            self.chains[chain] = None
            return
        imp = sc.imports.get(chain[0])
        if imp is not None:
            level, target, base, attrs = imp
            self.chains[(IMPORT, str(level), target, base) + attrs + chain[1:]] = None

    # -- scopes --------------------------------------------------------------------------------
    def _function(self, node: ast.AST, args: ast.arguments, body: Sequence[ast.AST]) -> None:
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                self.visit(a.annotation)
        returns = getattr(node, "returns", None)
        if returns is not None:
            self.visit(returns)
        bound, declared, imports = _bindings(body)
        for p in _params(args):
            imports.pop(p, None)
        self.scopes.append(_Scope("function", bound | _params(args), declared, imports))
        for stmt in body:
            self.visit(stmt)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node, node.args, node.body)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node, node.args, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, node.args, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for n in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(n)
        bound, declared, imports = _bindings(node.body)
        self.scopes.append(_Scope("class", bound, declared, imports))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def _comprehension(self, node: ast.AST, parts: List[ast.AST]) -> None:
        gens: List[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self.visit(gens[0].iter)  # evaluated in the enclosing scope
        targets: Set[str] = set()
        for g in gens:
            targets |= {n.id for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self.scopes.append(_Scope("comprehension", targets))
        for i, g in enumerate(gens):
            if i:
                self.visit(g.iter)
            for cond in g.ifs:
                self.visit(cond)
        for p in parts:
            self.visit(p)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

    # -- names ---------------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.use((node.id,))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts: List[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            self.use(tuple([cur.id] + list(reversed(parts))))
            return
        self.visit(cur)

    def visit_Call(self, node: ast.Call) -> None:
        """A literal importlib.import_module("plugins.x") names the module it loads."""
        f = node.func
        is_import = (isinstance(f, ast.Name) and f.id == "import_module") or (
            isinstance(f, ast.Attribute) and f.attr == "import_module"
        )
        if is_import and node.args and isinstance(node.args[0], ast.Constant):
            name = node.args[0].value
            pkg: object = None
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                pkg = node.args[1].value
            for kw in node.keywords:
                if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                    pkg = kw.value.value
            if isinstance(name, str) and name:
                level = len(name) - len(name.lstrip("."))
                if level and isinstance(pkg, str):
                    parts = pkg.split(".")
                    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
                    name = ".".join(parts + ([name[level:]] if name[level:] else []))
                    level = 0
                if not level:
                    self.chains[(IMPORT, "0", name, name)] = None
        self.generic_visit(node)


def global_references(node: ast.AST) -> List[Tuple[str, ...]]:
    """Global names a definition may use, as dotted chains: ('utils', 'clean'), ('LIMIT',)."""
    v = _Refs()
    v.visit(node)
    return list(v.chains)
