"""Which names a definition reads from its module's globals, with Python's scoping rules:
parameters, assignments, loop and with targets, imports and nested definitions are local."""

from __future__ import annotations

import ast
from typing import Dict, List, Optional, Sequence, Set, Tuple

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _params(args: ast.arguments) -> Set[str]:
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    if args.vararg:
        names.add(args.vararg.arg)
    if args.kwarg:
        names.add(args.kwarg.arg)
    return names


def _bindings(body: Sequence[ast.AST]) -> Tuple[Set[str], Set[str]]:
    """(names bound in this scope, names declared global) without entering nested scopes;
    names declared nonlocal are left to the enclosing function."""
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
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchAs) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchStar) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            bound.add(n.rest)
        stack.extend(ast.iter_child_nodes(n))
    return bound - declared - nonlocal_, declared


class _Scope:
    def __init__(self, kind: str, names: Set[str], declared: Optional[Set[str]] = None) -> None:
        self.kind = kind  # function | class | comprehension
        self.names = names
        self.declared = declared or set()


class _Refs(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scopes: List[_Scope] = []
        self.chains: Dict[Tuple[str, ...], None] = {}

    def is_local(self, name: str) -> bool:
        for i, sc in enumerate(reversed(self.scopes)):
            if sc.kind == "class" and i > 0:
                continue  # a class body's names are not visible to nested scopes
            if name in sc.declared:
                return False  # declared global
            if name in sc.names:
                return True
        return False

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
        bound, declared = _bindings(body)
        self.scopes.append(_Scope("function", bound | _params(args), declared))
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
        bound, declared = _bindings(node.body)
        self.scopes.append(_Scope("class", bound, declared))
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
        if isinstance(node.ctx, ast.Load) and not self.is_local(node.id):
            self.chains[(node.id,)] = None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts: List[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            if not self.is_local(cur.id):
                self.chains[tuple([cur.id] + list(reversed(parts)))] = None
            return
        self.visit(cur)


def global_references(node: ast.AST) -> List[Tuple[str, ...]]:
    """Global names a definition may use, as dotted chains: ('utils', 'clean'), ('LIMIT',)."""
    v = _Refs()
    v.visit(node)
    return list(v.chains)
