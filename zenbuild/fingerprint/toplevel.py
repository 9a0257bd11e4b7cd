"""Which top-level statements of a module can set process state that its code sees when it runs
later: ``np.random.seed(SEED)``, ``torch.set_default_dtype(...)``, ``decimal.getcontext().prec
= 8``, ``pd.set_option(...)``, ``os.environ["X"] = ...``, ``torch.backends.cudnn.deterministic
= True``, a registration call. Such a statement binds no name a step could reference, so the
name-based walk of code.py never reaches it: the selection here becomes one item per module
(``<module>.<top-level statements>``) in the key of every step whose code lives in, or reads
from, the module.

Selected: expression statements (calls; not a docstring or other constant), assignments to an
attribute or subscript, augmented assignments, ``del``, ``global``, and compound statements
(``if``/``for``/``while``/``with``/``try``/``match``) whose bodies hold a selected statement
(then the whole statement, its tests and headers included). A plain ``NAME = value``
assignment is left out (it matters only when referenced, and then by its value), unless its
value is a call of a state setter (``g = torch.manual_seed(0)``, ``old = np.seterr(...)``,
``_ = random.seed(1)``: a call named ``seed``, ``manual_seed*``, ``set_*``, ``seterr``,
``setLevel`` or ``use_deterministic_algorithms``, or any call bound to ``_``). Imports,
``def`` and ``class`` statements are left out, and so is the body of ``if __name__ ==
"__main__":`` (it never runs under zenbuild; its ``else`` does). Imports ast: parse time only."""

from __future__ import annotations

import ast
from typing import List, Sequence, Tuple

from zenbuild.fingerprint.scopes import global_references
from zenbuild.fingerprint.source import dump, strip_docstrings
from zenbuild.lazyre import LazyPattern

_SETTER = LazyPattern(r"^(seed|manual_seed\w*|set_\w+|seterr|setLevel|use_deterministic_algorithms)$")
EFFECT_IMPORT = "<effect import>"  # first element of an effect_imports() entry
STATEMENT = "<statement>"  # first element of a statement's group in statements()
CALL = "<call>"  # a call statement's target roots: [CALL, name its function starts from]
_DEFS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
         ast.Pass)


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _plain_target(t: ast.expr) -> bool:
    if isinstance(t, ast.Name):
        return True
    if isinstance(t, ast.Starred):
        return _plain_target(t.value)
    if isinstance(t, (ast.Tuple, ast.List)):
        return all(_plain_target(e) for e in t.elts)
    return False


def _setter_call(value: ast.AST) -> bool:
    """A call of a state setter (possibly chained: ``torch.manual_seed(0).seed()``)."""
    while isinstance(value, ast.Call):
        f = value.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if _SETTER.match(name):
            return True
        value = f.value if isinstance(f, ast.Attribute) else f
    return False


def _bodies(stmt: ast.stmt) -> List[Sequence[ast.stmt]]:
    out: List[Sequence[ast.stmt]] = []
    for name in ("body", "orelse", "finalbody"):
        part = getattr(stmt, name, None)
        if isinstance(part, list):
            out.append(part)
    for h in getattr(stmt, "handlers", None) or []:
        out.append(h.body)
    for c in getattr(stmt, "cases", None) or []:
        out.append(c.body)
    return out


def has_effect(stmt: ast.stmt) -> bool:
    """Whether a (top-level) statement may set process state (the module docstring rule)."""
    if isinstance(stmt, _DEFS):
        return False
    if isinstance(stmt, ast.Expr):
        return not isinstance(stmt.value, ast.Constant)
    if isinstance(stmt, ast.Assign):
        if not all(_plain_target(t) for t in stmt.targets):
            return True
        if any(isinstance(t, ast.Name) and t.id == "_" for t in stmt.targets):
            return isinstance(stmt.value, ast.Call)
        return _setter_call(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        if stmt.value is None:
            return False
        return not isinstance(stmt.target, ast.Name) or _setter_call(stmt.value)
    if isinstance(stmt, (ast.AugAssign, ast.Delete, ast.Global, ast.Nonlocal)):
        return True
    if isinstance(stmt, ast.If) and _is_main_guard(stmt.test):
        return any(has_effect(s) for s in stmt.orelse)
    bodies = _bodies(stmt)
    return any(has_effect(s) for body in bodies for s in body)


def select(body: Sequence[ast.stmt]) -> List[ast.stmt]:
    """The statements of a module's body that may set process state, in order."""
    out: List[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and _is_main_guard(stmt.test):
            out.extend(select(stmt.orelse))
        elif has_effect(stmt):
            out.append(stmt)
    return out


def effect_imports(tree: ast.Module) -> List[List[str]]:
    """The top-level imports of a module, as [EFFECT_IMPORT, level, module, name or ""]: an
    imported project module's own statements that set process state ran for this one,
    whether the module's name is read or not (``import seeding`` for its effect, and
    ``import utils`` whose ``utils.helper()`` one step calls while another step relies on
    the ``decimal.getcontext().prec = 3`` it set): they count for every step of it."""
    found: List[Tuple[List[str], str]] = []  # (entry, the name the import binds, "" for *)
    stack: List[ast.stmt] = list(tree.body)
    while stack:
        stmt = stack.pop(0)
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                found.append(([EFFECT_IMPORT, "0", a.name, ""], a.asname or a.name.split(".")[0]))
        elif isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                found.append(([EFFECT_IMPORT, str(stmt.level), stmt.module or "",
                               "" if a.name == "*" else a.name],
                              "" if a.name == "*" else a.asname or a.name))
        elif isinstance(stmt, ast.If) and _is_main_guard(stmt.test):
            stack.extend(stmt.orelse)
        elif not isinstance(stmt, _DEFS):
            for body in _bodies(stmt):
                stack.extend(body)
    return [entry for entry, _name in found]


def _target_roots(stmt: ast.stmt) -> List[str]:
    """The names an assignment-like statement's targets start from (``model.Model.LR = 0.5``:
    model), CALL and the name a call statement's function starts from (``zenbuild.
    register_value_type(...)``: [CALL, "zenbuild"]), or [] for any other statement."""
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        # ``with open(p) as f: Limits.top = json.load(f)["top"]``: the block's own effect ends
        # with it; what stays is what its assignments set (a call in it: [], kept)
        inner: List[str] = []
        for body_stmt in stmt.body:
            got = _target_roots(body_stmt)
            if not got or got[0] == CALL:
                return []
            inner.extend(got)
        return inner
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        f: ast.expr = stmt.value.func
        while isinstance(f, ast.Attribute):
            f = f.value
        return [CALL, f.id] if isinstance(f, ast.Name) else []
    if isinstance(stmt, ast.Assign):
        targets: List[ast.expr] = list(stmt.targets)
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
        if _setter_call(stmt.value) if stmt.value is not None else False:
            return []
    elif isinstance(stmt, ast.Delete):
        targets = list(stmt.targets)
    else:
        return []
    if isinstance(stmt, ast.Assign) and _setter_call(stmt.value):
        return []  # g = torch.manual_seed(0): the call is the effect
    roots: List[str] = []
    stack = targets
    while stack:
        t = stack.pop()
        if isinstance(t, (ast.Tuple, ast.List)):
            stack.extend(t.elts)
            continue
        if isinstance(t, ast.Starred):
            stack.append(t.value)
            continue
        while isinstance(t, (ast.Attribute, ast.Subscript)):
            t = t.value
        if not isinstance(t, ast.Name):
            return []  # f().x = 1: no name says whose state it is
        roots.append(t.id)
    return roots


def statements(tree: ast.Module) -> Tuple[str, List[List[str]]]:
    """("x" when a statement was selected, else ""; for each selected statement a group
    [STATEMENT, its normalized text, the names its targets start from...] followed by the
    global names it reads, as chains; then the module's effect_imports). The fingerprinter
    leaves out an assignment whose every target starts from a project module, class or value
    the module binds (``model.Model.LR = 0.5``, ``REGISTRY["a"] = f``, ``COUNT += 1``): the
    live value of what it sets is read where a step uses it. Docstrings of definitions inside
    them are stripped; positions and comments never count."""
    chosen = select(tree.body)
    effects = effect_imports(tree)
    if not chosen:
        return "", effects
    strip_docstrings(ast.Module(body=chosen, type_ignores=[]))
    out: List[List[str]] = []
    for stmt in chosen:
        out.append([STATEMENT, dump(stmt), *_target_roots(stmt)])
        out.extend(list(c) for c in global_references(ast.Module(body=[stmt], type_ignores=[])))
    return "x", out + effects
