"""fingerprint.traced: the closure digest of a traced call, found again from (file, qualname,
first line) in a process where the function may never have been made (r2 findings 3 and 7)."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple

import pytest

from zenbuild.digest import digest_bytes, digest_file
from zenbuild.fingerprint import source as source_mod
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.source import SourceCache
from zenbuild.fingerprint.traced import ClosureDigests, definitions

_counter = itertools.count()

GEO = '''
class Unit:
    UNIT = 1


class Geo(Unit):
    FACTOR = 2

    def area(self, w):
        return w * self.FACTOR * self.UNIT

    def other(self):
        return 0


class Wide(Geo):
    FACTOR = 5


def plain(x):
    return x
'''

LIN = '''
import functools
from {pkg}.consts import SCALE, OFFSET


def make(offset):
    def inner(x):
        return x * SCALE + offset
    return inner


def make_cls():
    class Model:
        def predict(self, x):
            return x * SCALE
    return Model


OPS = {{"f": lambda x: x * SCALE}}
PAIR = [lambda x: x * SCALE, lambda x: x + OFFSET]
REG = {{}}


def register(fn):
    REG[fn.__name__] = fn


@register
def hidden(x):
    return x * SCALE


@functools.lru_cache(maxsize=None)
def cached(x):
    return x * SCALE
'''


@pytest.fixture
def proj(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    """A package of its own under tmp_path, importable while the test runs."""
    pkg = f"trpkg_{next(_counter)}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "consts.py").write_text("SCALE = 2\nOFFSET = 1\n")
    (tmp_path / pkg / "geo.py").write_text(textwrap.dedent(GEO))
    (tmp_path / pkg / "lin.py").write_text(LIN.format(pkg=pkg))
    sys.path.insert(0, str(tmp_path))
    try:
        yield pkg, tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[name]


def _line(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def _digest(root: Path, file: str, qualname: str, line: int,
            cache: Optional[SourceCache] = None) -> Optional[str]:
    """As a new run computes it: a new fingerprinter and ClosureDigests."""
    fp = CodeFingerprinter(str(root), track_packages=False, source_cache=cache)
    return ClosureDigests(fp, str(root))(file, qualname, line)


def _changes(root: Path, file: str, qualname: str, line: int, edit: Callable[[], Any],
             undo: Callable[[], Any]) -> None:
    before = _digest(root, file, qualname, line)
    assert before is not None
    assert _digest(root, file, qualname, line) == before  # stable
    edit()
    try:
        assert _digest(root, file, qualname, line) != before
    finally:
        undo()
    assert _digest(root, file, qualname, line) == before


@pytest.mark.parametrize("owner,attr,value", [("Geo", "FACTOR", 10), ("Unit", "UNIT", 3),
                                              ("Wide", "FACTOR", 7)],
                         ids=["own", "base", "subclass in the module"])
def test_a_method_covers_its_class_attributes(proj, owner: str, attr: str, value: int) -> None:
    """Geo.area reads self.FACTOR and self.UNIT: its class's attribute, its base's, or those of
    the subclass in its module that self may be (a Hydra target that only sets a constant)."""
    pkg, root = proj
    geo = importlib.import_module(f"{pkg}.geo")
    file = f"{pkg}/geo.py"
    line = _line(root / pkg / "geo.py", "def area")
    cls = getattr(geo, owner)
    was = vars(cls)[attr]
    _changes(root, file, "Geo.area", line, lambda: setattr(cls, attr, value),
             lambda: setattr(cls, attr, was))


def test_a_top_level_function_keeps_its_digest(proj) -> None:
    """A function a name reaches is digested as before (its closure only): records made by
    the previous version stay valid, and a class edit does not touch it."""
    pkg, root = proj
    geo = importlib.import_module(f"{pkg}.geo")
    line = _line(root / pkg / "geo.py", "def plain")
    fp = CodeFingerprinter(str(root), track_packages=False)
    info = fp.code(geo.plain)
    text = "\n".join(f"{k}\0{v}" for k, v in sorted(info.items.items())) + "\n"
    assert _digest(root, f"{pkg}/geo.py", "plain", line) == digest_bytes(text.encode())
    geo.Geo.FACTOR = 3
    assert _digest(root, f"{pkg}/geo.py", "plain", line) == digest_bytes(text.encode())


@pytest.mark.parametrize("qualname,text", [
    ("make.<locals>.inner", "def inner"),
    ("make_cls.<locals>.Model.predict", "def predict"),
    ("<lambda>", "OPS = "),
    ("hidden", "def hidden"),
    ("cached", "def cached"),
], ids=["nested def", "method of a class made in a function", "lambda",
        "decorator returning None", "lru_cache"])
def test_code_no_name_reaches_covers_the_globals_it_reads(proj, qualname: str,
                                                          text: str) -> None:
    """None of these functions is reached by its qualname (make and make_cls were never even
    called here): the definition found in the source, with its module's globals, is."""
    pkg, root = proj
    lin = importlib.import_module(f"{pkg}.lin")
    line = _line(root / pkg / "lin.py", text)
    _changes(root, f"{pkg}/lin.py", qualname, line, lambda: setattr(lin, "SCALE", 10),
             lambda: setattr(lin, "SCALE", 2))


def test_every_lambda_on_the_recorded_line_counts(proj) -> None:
    """Two lambdas on one line are one record (file, qualname, line): both are covered."""
    pkg, root = proj
    lin = importlib.import_module(f"{pkg}.lin")
    line = _line(root / pkg / "lin.py", "PAIR = ")
    for name, value, was in (("SCALE", 10, 2), ("OFFSET", 4, 1)):
        _changes(root, f"{pkg}/lin.py", "<lambda>", line,
                 lambda n=name, v=value: setattr(lin, n, v),
                 lambda n=name, v=was: setattr(lin, n, v))


def test_a_line_moved_by_an_edit_above_finds_the_same_definition(proj) -> None:
    """The recorded line is the one of the last run: lines added or removed above move the
    definition, the nearest of that qualname is taken (the PAIR line's lambdas are the
    nearest to a line below OPS's)."""
    pkg, root = proj
    importlib.import_module(f"{pkg}.lin")
    path = root / pkg / "lin.py"
    for qualname, text, moves in (("make.<locals>.inner", "def inner", (-2, 1)),
                                  ("<lambda>", "OPS = ", (-2, -1))):
        line = _line(path, text)
        now = _digest(root, f"{pkg}/lin.py", qualname, line)
        assert now is not None
        for by in moves:
            assert _digest(root, f"{pkg}/lin.py", qualname, line + by) == now
    line = _line(path, "PAIR = ")
    assert _digest(root, f"{pkg}/lin.py", "<lambda>", line) != _digest(
        root, f"{pkg}/lin.py", "<lambda>", line - 1)


def test_gone_code_and_comprehensions_give_no_stand_in(proj) -> None:
    pkg, root = proj
    importlib.import_module(f"{pkg}.lin")
    assert _digest(root, f"{pkg}/lin.py", "nothing.<locals>.inner", 3) is None
    assert _digest(root, f"{pkg}/lin.py", "<genexpr>", 3) is None
    assert _digest(root, "<__main__>", "f", 1) is None


def test_a_no_op_parses_nothing(proj, monkeypatch) -> None:
    """With the source cache of an earlier run, the digests of a new run are the same and no
    file is parsed (where a nested definition is, too, is in the cache)."""
    pkg, root = proj
    importlib.import_module(f"{pkg}.lin")
    importlib.import_module(f"{pkg}.geo")
    cache = SourceCache(lambda p: digest_file(p)[0])
    calls = [(f"{pkg}/lin.py", q, _line(root / pkg / "lin.py", t))
             for q, t in (("make.<locals>.inner", "def inner"), ("<lambda>", "OPS = "),
                          ("make_cls.<locals>.Model.predict", "def predict"),
                          ("hidden", "def hidden"))]
    calls.append((f"{pkg}/geo.py", "Geo.area", _line(root / pkg / "geo.py", "def area")))
    first = [_digest(root, *c, cache=cache) for c in calls]
    assert None not in first

    def no_parse(*a: Any, **k: Any) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(source_mod.Sources, "module_ast", no_parse)
    monkeypatch.setattr(source_mod.Sources, "function_node", no_parse)
    monkeypatch.setattr(source_mod.Sources, "class_nodes", no_parse)
    assert [_digest(root, *c, cache=cache) for c in calls] == first


def test_definitions_names_code_as_its_code_objects_do() -> None:
    import ast

    tree = ast.parse(textwrap.dedent('''
        def deco(f):
            return f

        @deco
        def top(a=lambda: 1):
            def inner():
                return [x for x in ()]
            class K:
                m = lambda self: 0
                def meth(self):
                    return (y for y in ())
            return inner

        F = lambda: (lambda: 2)
        '''))
    got = definitions(tree)
    assert got["top"] == [(5, "def")]  # the decorator's line, as co_firstlineno
    assert got["<lambda>"] == [(6, "lambda"), (15, "lambda")]  # a default: the module's scope
    assert got["top.<locals>.inner"] == [(7, "def")]
    assert got["top.<locals>.inner.<locals>.<listcomp>"] == [(8, "comp")]
    assert got["top.<locals>.K"] == [(9, "class")]
    assert got["top.<locals>.K.<lambda>"] == [(10, "lambda")]
    assert got["top.<locals>.K.meth.<locals>.<genexpr>"] == [(12, "comp")]
    assert got["<lambda>.<locals>.<lambda>"] == [(15, "lambda")]
