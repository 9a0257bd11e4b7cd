"""fingerprint/dynamic_names.py: what a definition reads that its text does not name (r2
findings 5, 8, 9): its module by computed name, names in evaluated strings, and defaults
evaluated when the definition was made."""

from __future__ import annotations

import ast
import importlib
import itertools
import sys
import textwrap
from typing import Any, Dict, Tuple

import pytest

from zenbuild.fingerprint import dynamic_names as dn
from zenbuild.fingerprint.code import CodeFingerprinter, SourceCache

_counter = itertools.count()
G = (dn.GLOBALS,)


def chains(src: str, kind: str = "function") -> set:
    node = ast.parse(textwrap.dedent(src)).body[0]
    return set(dn.extra_chains(node, kind))


def body(line: str) -> set:
    return chains(f"def f(df, s, n, ds, model, obj):\n    {line}\n")


@pytest.mark.parametrize("line,expected", [
    ('return globals()[f"LR_{n}"]', {G}),
    ("return globals().get(n)", {G}),
    ("ns = globals\n    return ns()[n]", {G}),
    ("return getattr(sys.modules[__name__], n)", {G}),
    ('return vars(sys.modules[__name__])["LR_" + n]', {G}),
    ("return sys.modules.get(__name__).X", {G}),
    ("return importlib.import_module(__name__).X", {G}),
    ("return inspect.getmodule(f).X", {G}),
    ("return inspect.currentframe().f_globals[n]", {G}),
    ("return f.__globals__[n]", {G}),
    ("return eval(s)", {G, (dn.EVAL_NAME, "eval", "s")}),
    ("return eval(compile(s, 'x', 'eval'))", {G}),
    ("exec(s)", {G, (dn.EVAL_NAME, "exec", "s")}),
    ("return eval(s, globals())", {G, (dn.EVAL_NAME, "eval", "s")}),
    ('return eval(s, {"a": 1})', {(dn.EVAL_NAME, "eval", "s")}),
    ('return eval("n * SCALE + OFFSET", {}, {"n": n})', {("n",), ("SCALE",), ("OFFSET",)}),
    ('return builtins.eval("cfg.LR * 2")', {("cfg", "LR")}),
    ('exec("y = K\\nprint(y)")', {("K",), ("print",), ("y",)}),
    ('return df.query("a > @THRESH")', {("a",), ("THRESH",)}),
    ('return df.eval("@cfg.K * a")', {("a",), ("cfg", "K")}),
    ('return pd.eval("df.a + BIAS")', {("df", "a"), ("BIAS",)}),
    ("return df.query(s)", {(dn.EVAL_NAME, "pandas", "s")}),
    ('cond = "a > @LIMIT"\n    return df.query(cond)',
     {("LIMIT",), (dn.EVAL_NAME, "pandas", "cond")}),
    ('return ne.evaluate("a * SCALE")', {("a",), ("SCALE",)}),
    ("return numexpr.evaluate(s)", {G, (dn.EVAL_NAME, "eval", "s")}),
    ("return ne.evaluate(s, local_dict={})", {(dn.EVAL_NAME, "eval", "s")}),
    ('return df.query("`a b` > 1 and c == @X")', {("X",)}),  # does not parse: @names only
    # not a namespace read by computed name
    ("return logging.getLogger(__name__)", set()),
    ('if __name__ == "__main__":\n        pass', set()),
    ('return "mail me at user@example.com"', set()),
    ("return vars(obj)[n]", set()),
    ("return model.evaluate(ds)", set()),
    ("return model.eval()", set()),
    ('return sys.modules["json"]', set()),
    ("return vars()", set()),  # in a function: its locals
])
def test_what_a_body_reads_by_computed_name(line: str, expected: set) -> None:
    assert body(line) == expected


def test_non_literal_defaults_of_functions_and_methods() -> None:
    # literals (numbers, strings, None, containers and arithmetic of them): nothing
    assert chains("def f(a, b=1, c=-2.5, d=(1, 'x'), e=1e-3 * 2, *, g=None, h={'k': [1]}):"
                  "\n    pass") == set()
    assert chains("def f(a, b=os.getenv('X'), c=1, d=LR, *, e=np.float32, k=2):\n    pass") == {
        (dn.DEFAULTS, "", "0:b", "2:d", "k:e")}
    # a step's defaults are its params (bound into the call): nothing
    assert chains("def f(b=os.getenv('X')):\n    pass", "step") == set()
    lam = ast.parse("f = lambda x=int(y): x").body[0].value  # type: ignore[attr-defined]
    assert dn.extra_chains(lam, "function") == [(dn.DEFAULTS, "", "0:x")]
    cls = chains('''
        class T:
            def __init__(self, workers=int(os.getenv("N", "1")), n=1):
                pass
            @staticmethod
            def make(dev=DEV):
                pass
            def plain(self, k=3):
                pass
        ''', "class")
    assert cls == {(dn.DEFAULTS, "__init__", "0:workers"), (dn.DEFAULTS, "make", "0:dev")}


def test_class_fields_made_from_non_literal_expressions() -> None:
    got = chains('''
        class S(BaseModel):
            a: str = "cpu"
            b: list = Field(default_factory=list)
            c: int = Field(3, alias="cc", default_factory=None)
            d: str = os.getenv("DEV", "cpu")
            e: str = Field(default=os.getenv("DEV"))
            f: int = attrs.field(factory=lambda: [1], validator=check)
            g = attrs.Factory(list)
            h: int
            CPU = "cpu"
            DEFAULT = os.getenv("DEV", "cpu")
        ''', "class")
    assert got == {(dn.FIELDS, "d", "e", "DEFAULT")}


def test_code_names_ignore_what_does_not_parse() -> None:
    assert dn.code_names("x +", "eval") == []
    assert dn.code_names("select * from t", "eval") == []
    assert dn.code_names("a > @T", "pandas") == [("T",), ("a",)]
    assert dn.code_names("x" * 30_000, "eval") == []


# -- through the fingerprinter ------------------------------------------------------------
def code_of(tmp_path, files: Dict[str, str], name: str, cache: Any = None
            ) -> Tuple[Dict[str, str], Any]:
    # one package name (a class's content names its module), a new folder each time
    tag = "dnpkg"
    tmp_path = tmp_path / f"v{next(_counter)}"
    pkg = tmp_path / tag
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (pkg / rel).write_text(textwrap.dedent(text).replace("PKG", tag))
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module(f"{tag}.{name.split(':')[0]}")
    finally:
        sys.path.remove(str(tmp_path))
    fp = CodeFingerprinter(str(tmp_path), source_cache=cache)
    info = fp.code(getattr(mod, name.split(":")[1]).fn)
    for m in [m for m in sys.modules if m == tag or m.startswith(tag + ".")]:
        del sys.modules[m]
    prefix = tag + "."
    return ({k.replace(prefix, ""): v for k, v in info.items.items()},
            {k.replace(prefix, ""): v for k, v in info.meta.items()})


GLOBALS_PIPE = '''
    import sys
    from zenbuild import step
    LR_SMALL = 0.1
    LR_BIG = 1.0
    _PRIVATE = {"k": 1}

    def helper():
        return 1

    class Cfg:
        DEPTH = 3

    @step
    def a(size: str = "small") -> float:
        return globals()[f"LR_{size.upper()}"]

    @step
    def b(size: str = "small") -> float:
        return getattr(sys.modules[__name__], f"LR_{size.upper()}")

    @step
    def plain(size: str = "small") -> float:
        return LR_SMALL
    '''


def test_a_namespace_read_by_name_covers_the_module_constants(tmp_path) -> None:
    items, info = code_of(tmp_path, {"pipe.py": GLOBALS_PIPE}, "pipe:a")
    assert {"pipe.LR_SMALL", "pipe.LR_BIG", "pipe._PRIVATE", "pipe.Cfg"} <= set(items)
    # project functions are the call trace's, modules the module record's, zenbuild's own
    # objects (step) none of the step's
    assert not {"pipe.helper", "pipe.sys", "sys", "pipe.b", "pipe.plain"} & set(items), items
    assert not any(k.startswith("zenbuild") for k in items), items
    assert info["pipe.LR_BIG"][0] == "constant"
    b_items, _ = code_of(tmp_path, {"pipe.py": GLOBALS_PIPE}, "pipe:b")
    assert "pipe.LR_BIG" in b_items
    edited = GLOBALS_PIPE.replace("LR_BIG = 1.0", "LR_BIG = 2.0")
    after, _ = code_of(tmp_path, {"pipe.py": edited}, "pipe:a")
    assert {k for k in items if items[k] != after.get(k)} == {"pipe.LR_BIG"}
    # a step that names its constant keeps its key: no LR_BIG
    plain, _ = code_of(tmp_path, {"pipe.py": GLOBALS_PIPE}, "pipe:plain")
    assert "pipe.LR_BIG" not in plain


def test_a_helper_in_another_module_reading_its_own_globals(tmp_path) -> None:
    files = {
        "lrs.py": '''
            from PKG.consts import SCALE
            LR_SMALL = 0.1
            def lr_for(size):
                return globals()[f"LR_{size.upper()}"]
            ''',
        "consts.py": "SCALE = 2\n",
        "pipe.py": '''
            from zenbuild import step
            from PKG.lrs import lr_for
            @step
            def a(size: str = "small") -> float:
                return lr_for(size)
            ''',
    }
    items, _ = code_of(tmp_path, files, "pipe:a")
    # SCALE imported into lrs is named where it is defined
    assert {"lrs.LR_SMALL", "consts.SCALE", "lrs.lr_for"} <= set(items), items


def test_evaluated_strings_name_module_constants(tmp_path) -> None:
    files = {"pipe.py": '''
        from zenbuild import step
        SCALE = 2
        OFFSET = 1
        THRESH = 3
        FORMULA = "x * SCALE + OFFSET"
        COND = "a > @THRESH"
        UNUSED = 9

        class DF:
            def query(self, expr):
                return expr

        @step
        def formula(x: int = 5) -> int:
            return eval(FORMULA, {"SCALE": 1, "OFFSET": 0}, {"x": x})

        @step
        def literal(x: int = 5) -> int:
            return eval("x * SCALE", {}, {"x": x})

        @step
        def query() -> str:
            return DF().query(COND)
        '''}
    items, _ = code_of(tmp_path, files, "pipe:formula")
    assert {"pipe.SCALE", "pipe.OFFSET", "pipe.FORMULA"} <= set(items)
    assert "pipe.UNUSED" not in items  # an explicit globals mapping: not the whole module
    items, _ = code_of(tmp_path, files, "pipe:literal")
    assert "pipe.SCALE" in items and "pipe.OFFSET" not in items
    items, _ = code_of(tmp_path, files, "pipe:query")
    assert {"pipe.THRESH", "pipe.COND"} <= set(items) and "pipe.UNUSED" not in items


def test_a_module_string_is_parsed_once_then_served_from_the_source_cache(tmp_path) -> None:
    cache = SourceCache()
    files = {"pipe.py": '''
        from zenbuild import step
        K = 2
        EXPR = "K * 3 + 1"
        @step
        def s() -> int:
            return eval(EXPR, {"K": K})
        '''}
    dn._CODE_NAMES.clear()
    code_of(tmp_path, files, "pipe:s", cache)
    keys = [k for k in cache.entries if "|evaluated|" in k]
    assert len(keys) == 1 and cache.entries[keys[0]][1] == [["K"]]
    dn._CODE_NAMES.clear()
    cache.entries[keys[0]] = ("", [["K"], ["FROM_CACHE"]])
    items, _ = code_of(tmp_path, {"pipe.py": files["pipe.py"] + "FROM_CACHE = 1\n"},
                       "pipe:s", cache)
    assert "pipe.FROM_CACHE" in items  # the cached names, not a new parse


DEFAULTS_MOD = '''
    import os
    import enum
    import dataclasses
    import attrs
    import pydantic
    from zenbuild import step

    def device(name=os.environ.get("ZB_T_DEV", "cpu"), *, n=int(os.getenv("ZB_T_N", "1"))):
        return name, n

    def literal(name="cpu", n=1, shape=(1, 2), eps=1e-3 * 2):
        return name

    class Trainer:
        def __init__(self, workers=int(os.getenv("ZB_T_N", "1"))):
            self.workers = workers

    class P(pydantic.BaseModel):
        device: str = os.getenv("ZB_T_DEV", "cpu")
        tags: list = pydantic.Field(default_factory=list)

    @attrs.define
    class A:
        device: str = attrs.field(default=os.getenv("ZB_T_DEV", "cpu"))

    @dataclasses.dataclass
    class D:
        tags: list = dataclasses.field(default_factory=lambda: [os.getenv("ZB_T_DEV")])

    class Dev(enum.Enum):
        DEFAULT = os.getenv("ZB_T_DEV", "cpu")
        CPU = "cpu-x"

        def label(self):
            return str(self.value)

    @step
    def s() -> str:
        return (device(), literal(), Trainer().workers, P().device, A().device, D().tags,
                Dev.DEFAULT.label())

    @step
    def lit() -> str:
        return literal()
    '''


def test_live_defaults_are_in_the_key_and_literal_ones_add_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("ZB_T_DEV", raising=False)
    monkeypatch.delenv("ZB_T_N", raising=False)
    cpu, info = code_of(tmp_path, {"m.py": DEFAULTS_MOD}, "m:s")
    expected = {"m.device.<default name>", "m.device.<default n>",
                "m.Trainer.__init__.<default workers>", "m.P.<default device>",
                "m.A.<default device>", "m.Dev.<default DEFAULT>"}
    assert expected <= set(cpu), sorted(cpu)
    assert info["m.device.<default name>"][0] == "default"
    # literal defaults, a dataclass's factory in its statement, a pydantic default_factory
    # named by its statement: nothing
    assert not [k for k in cpu if "<default" in k and k not in expected], sorted(cpu)
    lit, _ = code_of(tmp_path, {"m.py": DEFAULTS_MOD}, "m:lit")
    assert [k for k in lit if "<" in k] == []
    monkeypatch.setenv("ZB_T_DEV", "cuda")
    cuda, _ = code_of(tmp_path, {"m.py": DEFAULTS_MOD}, "m:s")
    changed = {k for k in set(cpu) | set(cuda) if cpu.get(k) != cuda.get(k)}
    assert changed == {"m.device.<default name>", "m.P.<default device>",
                       "m.A.<default device>", "m.Dev.<default DEFAULT>"}
    monkeypatch.setenv("ZB_T_N", "8")
    eight, _ = code_of(tmp_path, {"m.py": DEFAULTS_MOD}, "m:s")
    changed = {k for k in set(eight) | set(cuda) if eight.get(k) != cuda.get(k)}
    assert changed == {"m.device.<default n>", "m.Trainer.__init__.<default workers>"}


def test_enum_auto_is_static_and_kernel_history_is_no_constant() -> None:
    got = chains('''
        class Color(enum.Enum):
            RED = enum.auto()
            GREEN = auto()
            BLUE = os.getenv("BLUE")
        ''', "class")
    assert got == {(dn.FIELDS, "BLUE")}
    g = {"__name__": "__main__", "get_ipython": print, "In": ["", "x"], "Out": {1: 2},
         "_": 2, "_i1": "x", "_3": 4, "_ih": [], "LR": 0.1, "_cache": {}}
    assert list(dn.module_names(g, lambda v: False)) == ["LR", "_cache"]
    g["__name__"] = "pipe"  # a module that is no kernel's: its names are its own
    assert "_i1" in list(dn.module_names(g, lambda v: False))
