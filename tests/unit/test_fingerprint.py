"""fingerprint: what changes a step's code component, and what does not."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import sys
import textwrap
from pathlib import Path

import pytest

from zenbuild.fingerprint.code import CodeFingerprinter, NoSourceWarning, SourceCache

_counter = itertools.count()

BASE = '''
import json
from zenbuild import step

LIMIT = 3
NAMES = ["a", "b"]


def helper(x):
    return inner(x) + LIMIT


def inner(x):
    return x * 2


def unused(x):
    return x


class Model:
    def predict(self, x):
        return inner(x)


@step
def my_step(x: int) -> int:
    """Doc."""
    return helper(x) + len(NAMES) + Model().predict(1)


@step
def uses_json(x: int) -> str:
    return json.dumps(x)
'''


def code_of(tmp_path, source: str, name: str = "my_step", cache: SourceCache | None = None):
    mod = f"fpmod_{next(_counter)}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        m = importlib.import_module(mod)
    finally:
        sys.path.remove(str(tmp_path))
    fp = CodeFingerprinter(str(tmp_path), source_cache=cache)
    info = fp.code(getattr(m, name).fn)
    del sys.modules[mod]
    return {k[len(mod) + 1:] if k.startswith(mod + ".") else k: v
            for k, v in info.items.items()}, info


def digest(tmp_path, source, name="my_step"):
    items, _ = code_of(tmp_path, source, name)
    return sorted(items.items())


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("return x * 2", "return x * 2  # double"),
        lambda s: s.replace('"""Doc."""', '"""Another doc."""'),
        lambda s: s.replace("def helper(x):", "def helper(x):\n    'doc'\n"),
        lambda s: s.replace("@step\ndef my_step", "@step()\ndef my_step"),
        lambda s: s.replace("return x\n", "return x + 1\n"),  # `unused` is not referenced
        lambda s: s + "\n\nOTHER = 5\n",
        lambda s: s.replace("return helper(x)", "return   helper( x )"),
    ],
    ids=["comment", "docstring", "helper-docstring", "decorator", "unused-fn", "new-const",
         "whitespace"],
)
def test_cosmetic_or_unrelated_edits_keep_the_digest(tmp_path, edit):
    assert digest(tmp_path, BASE) == digest(tmp_path, edit(BASE))


@pytest.mark.parametrize(
    "edit,changed",
    [
        (lambda s: s.replace("return x * 2", "return x * 3"), "inner"),
        (lambda s: s.replace("LIMIT = 3", "LIMIT = 4"), "LIMIT"),
        (lambda s: s.replace('["a", "b"]', '["a", "c"]'), "NAMES"),
        (lambda s: s.replace("return inner(x)\n", "return inner(x) + 1\n"), "Model"),
        (lambda s: s.replace("+ len(NAMES)", "- len(NAMES)"), "my_step"),
    ],
    ids=["transitive-helper", "constant", "list-constant", "class-method", "body"],
)
def test_semantic_edits_change_the_named_item(tmp_path, edit, changed):
    before, _ = code_of(tmp_path, BASE)
    after, _ = code_of(tmp_path, edit(BASE))
    assert before != after
    diff = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert diff == {changed}


def test_references_and_kinds(tmp_path):
    items, info = code_of(tmp_path, BASE)
    assert {"my_step", "helper", "inner", "LIMIT", "NAMES", "Model"} <= set(items)
    assert "unused" not in items
    kinds = {k.split(".", 1)[-1]: v[0] for k, v in info.meta.items()}
    assert kinds["my_step"] == "step" and kinds["helper"] == "function"
    assert kinds["LIMIT"] == "constant" and kinds["Model"] == "class"


def test_stdlib_is_ignored_and_third_party_versioned(tmp_path):
    _, info = code_of(tmp_path, BASE, "uses_json")
    assert info.packages == {}  # json is stdlib: the Python version covers it
    src = BASE.replace("import json", "import click") + (
        "\n@step\ndef uses_click(x: int) -> str:\n    return click.style(str(x))\n"
    )
    _, info = code_of(tmp_path, src, "uses_click")
    from importlib.metadata import version

    assert info.packages == {"click": version("click")}


def test_mutual_recursion_terminates(tmp_path):
    src = BASE + '''

def ping(n):
    return pong(n - 1) if n else 0


def pong(n):
    return ping(n - 1) if n else 1


@step
def rec(n: int) -> int:
    return ping(n)
'''
    items, _ = code_of(tmp_path, src, "rec")
    assert {"rec", "ping", "pong"} <= set(items)


def test_source_cache_is_used_and_keyed_by_file_content(tmp_path):
    cache = SourceCache(lambda path: Path(path).read_bytes().hex()[:40])
    a, _ = code_of(tmp_path, BASE, cache=cache)
    assert cache.new  # parsed once and remembered
    cache.new.clear()
    # same content in another module file: served from the cache, same digests
    b, _ = code_of(tmp_path, BASE, cache=cache)
    assert a == b


def test_function_without_source_falls_back_to_bytecode(tmp_path):
    ns: dict = {}
    exec("def made(x):\n    return x + 1\n", ns)
    from zenbuild import step

    s = step(ns["made"])
    fp = CodeFingerprinter(str(tmp_path))
    with pytest.warns(NoSourceWarning):
        info = fp.code(s.fn)
    assert len(info.items) == 1


def test_locals_shadowing_globals_are_not_dependencies(tmp_path):
    src = BASE + '''

def words(x):
    return x


@step
def shadow(words: list, inner: int = 0) -> int:
    helper = len
    total = sum(len(w) for w in words)
    return total + helper(words) + inner


def uses_global_too():
    global LIMIT
    return LIMIT
'''
    items, _ = code_of(tmp_path, src, "shadow")
    # `words`, `inner` and `helper` are parameters or locals here, not the module's functions
    assert set(items) == {"shadow"}


def test_free_names_in_nested_scopes_are_dependencies(tmp_path):
    src = BASE + '''

@step
def nested(xs: list) -> list:
    def local_fn(v):
        return inner(v) + LIMIT
    return [local_fn(x) for x in xs] + [NAMES[0] for _ in xs]
'''
    items, _ = code_of(tmp_path, src, "nested")
    assert {"nested", "inner", "LIMIT", "NAMES"} <= set(items)
    assert "local_fn" not in " ".join(items)


def test_code_fingerprint_does_not_depend_on_where_the_checkout_lives(tmp_path):
    src = BASE + '''
import os
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
FEED = Path(HERE) / "feed.json"


@step
def located(x: int) -> str:
    return os.path.join(os.path.dirname(__file__), str(FEED), HERE, str(x))
'''
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = code_of(tmp_path / "a", src, "located")
    second, _ = code_of(tmp_path / "b", src, "located")
    assert first == second
    assert "__file__" not in " ".join(first)


# -- issue 10: the code a step really runs ------------------------------------------------------

_roots = itertools.count()


def fingerprint(tmp_path, files: dict, module: str = "pipe", name: str = "s", warn_ok: bool = False):
    """Write ``files`` into a fresh root, import ``module`` and fingerprint its step ``name``.
    Module names are the same across calls, so items of two versions compare directly."""
    root = tmp_path / f"root{next(_roots)}"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    tops = {rel.split("/")[0].removesuffix(".py") for rel in files}
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        m = importlib.import_module(module)
        fp = CodeFingerprinter(str(root))
        info = fp.code(getattr(m, name).fn)
    finally:
        sys.path.remove(str(root))
        for k in list(sys.modules):
            if k.split(".")[0] in tops:
                del sys.modules[k]
    return info


def changed(tmp_path, files: dict, edits: dict, **kw) -> set:
    """Item names whose digest differs (or that appear/disappear) after applying ``edits``
    ({file: (old, new)}) to ``files``."""
    before = fingerprint(tmp_path, files, **kw).items
    new_files = dict(files)
    for rel, (old, new) in edits.items():
        assert old in new_files[rel], (rel, old)
        new_files[rel] = new_files[rel].replace(old, new)
    after = fingerprint(tmp_path, new_files, **kw).items
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


IMPORTS_IN_BODY = {
    "proj/__init__.py": "",
    "proj/features.py": '''
        from proj.util import scale


        def add_features(x):
            return scale(x) + 1


        def unrelated(x):
            return x
    ''',
    "proj/util.py": '''
        def scale(x):
            return x * 2
    ''',
    "proj/pipe.py": '''
        from zenbuild import step


        @step
        def s(x: int) -> int:
            from proj.features import add_features
            import proj.util
            from . import features as f
            return add_features(x) + proj.util.scale(x) + f.add_features(1) + helper(x)


        def helper(x):
            from .util import scale as sc
            return sc(x)
    ''',
}


def test_imports_inside_a_body_are_followed(tmp_path):
    kw = dict(module="proj.pipe")
    assert changed(tmp_path, IMPORTS_IN_BODY,
                   {"proj/util.py": ("x * 2", "x * 3")}, **kw) == {"proj.util.scale"}
    assert changed(tmp_path, IMPORTS_IN_BODY,
                   {"proj/features.py": ("scale(x) + 1", "scale(x) + 2")}, **kw) == {
        "proj.features.add_features"}
    # cosmetic edits and an unrelated helper in the imported module change nothing
    assert changed(tmp_path, IMPORTS_IN_BODY,
                   {"proj/features.py": ("return x\n", "return x + 1\n")}, **kw) == set()
    assert changed(tmp_path, IMPORTS_IN_BODY,
                   {"proj/util.py": ("return x * 2", "return x*2  # twice")}, **kw) == set()


def test_an_import_in_the_body_of_a_module_not_loaded_yet(tmp_path):
    files = {
        "lazy_mod.py": "def work(x):\n    return x - 1\n",
        "pipe.py": '''
            from zenbuild import step


            @step
            def s(x: int) -> int:
                import lazy_mod
                return lazy_mod.work(x)
        ''',
    }
    assert changed(tmp_path, files, {"lazy_mod.py": ("x - 1", "x - 2")}) == {"lazy_mod.work"}


WRAPPERS = {
    "pipe.py": '''
        import functools
        from zenbuild import step


        @functools.lru_cache(maxsize=None)
        def cached(x):
            return x + 1


        @functools.cache
        def cached2(x):
            return x + 2


        def _power(x, n, scale=1):
            return x ** n * scale


        SQUARE = functools.partial(_power, n=2, scale=3)


        def add(x):
            return x + 10


        def mul(x):
            return x * 10


        OPS = {"add": add, "mul": mul}
        CHAIN = [add, mul]
        CONF = {"lr": 0.1, "epochs": 3, "act": lambda v: v * 0.5}


        @step
        def s(x: int) -> float:
            return cached(x) + cached2(x) + SQUARE(x) + OPS["add"](x) + CHAIN[1](x) + CONF["act"](x) + CONF["lr"]
    ''',
}


@pytest.mark.parametrize(
    "old,new,item",
    [
        ("return x + 1\n", "return x + 5\n", "pipe.cached"),
        ("return x + 2\n", "return x + 6\n", "pipe.cached2"),
        ("x ** n * scale", "x ** n * scale + 1", "pipe._power"),
        ("n=2, scale=3", "n=2, scale=4", "pipe.SQUARE (value)"),
        ("return x + 10", "return x + 11", "pipe.add"),
        ("return x * 10", "return x * 11", "pipe.mul"),
        ('"lr": 0.1', '"lr": 0.2', "pipe.CONF"),
        ('"epochs": 3', '"epochs": 4', "pipe.CONF"),
    ],
)
def test_helpers_behind_wrappers_and_containers(tmp_path, old, new, item):
    assert item in changed(tmp_path, WRAPPERS, {"pipe.py": (old, new)})


def test_a_lambda_in_a_dict_is_its_own_code(tmp_path):
    diff = changed(tmp_path, WRAPPERS, {"pipe.py": ("v * 0.5", "v * 0.7")})
    assert diff and all("<lambda>" in k or k == "pipe.CONF" for k in diff)
    assert changed(tmp_path, WRAPPERS, {"pipe.py": ("v * 0.5", "v  *  0.5")}) == set()


def test_wrappers_are_stable_across_imports(tmp_path):
    assert changed(tmp_path, WRAPPERS, {"pipe.py": ("        @step\n", "        # a comment\n        @step\n")}) == set()


NAMESPACE = {
    "lib/cleaning.py": "def clean(x):\n    return x.strip()\n",
    "pipe.py": '''
        import lib.cleaning
        from zenbuild import step


        @step
        def s(x: str) -> str:
            return lib.cleaning.clean(x)
    ''',
}


def test_namespace_packages_by_dotted_path(tmp_path):
    assert changed(tmp_path, NAMESPACE, {"lib/cleaning.py": ("x.strip()", "x.lower()")}) == {
        "lib.cleaning.clean"}
    info = fingerprint(tmp_path, NAMESPACE)
    assert info.meta["lib.cleaning.clean"] == ["function", "lib/cleaning.py"]


LIBRARY = {
    "conf.py": '''
        import operator
        ACTIVATION = operator.add
    ''',
    "pipe.py": '''
        from statistics import mean as agg
        from json import dumps as enc
        import math as m
        import conf
        from zenbuild import step


        @step
        def s(xs: list) -> str:
            return enc(agg(xs)) + str(conf.ACTIVATION(1, 2)) + str(m.floor(1.5))
    ''',
}


@pytest.mark.parametrize(
    "rel,old,new,gone,now",
    [
        ("pipe.py", "mean as agg", "median as agg", "statistics.mean", "statistics.median"),
        ("conf.py", "operator.add", "operator.sub", "_operator.add", "_operator.sub"),
        ("pipe.py", "import math as m", "import cmath as m", "math", "cmath"),
    ],
)
def test_names_bound_to_library_objects_record_which_object(tmp_path, rel, old, new, gone, now):
    before = fingerprint(tmp_path, LIBRARY)
    assert before.meta[gone][0].startswith("library")
    after = fingerprint(tmp_path, {**LIBRARY, rel: LIBRARY[rel].replace(old, new)})
    assert gone in before.items and gone not in after.items and now in after.items


def test_third_party_objects_by_identity(tmp_path):
    files = {"pipe.py": '''
        from numpy import mean as agg
        from zenbuild import step


        @step
        def s(xs: list) -> float:
            return float(agg(xs))
    '''}
    before = fingerprint(tmp_path, files)
    after = fingerprint(tmp_path, {"pipe.py": files["pipe.py"].replace("mean as", "median as")})
    assert "numpy.mean" in before.items and "numpy.median" in after.items
    assert before.meta["numpy.mean"] == ["library object", "pipe.py"]
    assert "numpy" in before.packages


CALLABLES = {
    "pipe.py": '''
        import operator
        import numpy as np
        from zenbuild import step


        def _clip(v):
            return min(v, 5)


        class Normalizer:
            def __init__(self, factor):
                self.factor = factor

            def transform(self, v):
                return v * self.factor


        KEY = operator.itemgetter("a")
        CLIP = np.vectorize(_clip)
        NORMALIZE = Normalizer(0.5).transform


        @step
        def s(d: dict) -> float:
            return float(CLIP(KEY(d))) + NORMALIZE(1)
    ''',
}


@pytest.mark.parametrize(
    "old,new,item",
    [
        ('itemgetter("a")', 'itemgetter("b")', "pipe.KEY (value)"),
        ("min(v, 5)", "min(v, 6)", "pipe._clip"),
        ("v * self.factor", "v * self.factor + 1", "pipe.Normalizer.transform"),
        ("Normalizer(0.5)", "Normalizer(0.7)", "pipe.NORMALIZE (value)"),
    ],
)
def test_module_level_callable_objects_by_value_and_wrapped_code(tmp_path, old, new, item):
    assert item in changed(tmp_path, CALLABLES, {"pipe.py": (old, new)})


def test_callable_objects_are_stable(tmp_path):
    assert changed(tmp_path, CALLABLES, {"pipe.py": ("return min(v, 5)", "return min(v,5)  # c")}) == set()


def test_library_instance_by_value(tmp_path):
    files = {"pipe.py": '''
        import fractions
        from zenbuild import step

        SCALE = fractions.Fraction(3, 4)


        @step
        def s(x: int) -> float:
            return float(SCALE * x)
    '''}
    assert changed(tmp_path, files, {"pipe.py": ("(3, 4)", "(3, 7)")}) == {"pipe.SCALE"}


CLASSES = {
    "pipe.py": '''
        import enum
        from collections import namedtuple
        from dataclasses import field, make_dataclass
        from zenbuild import step

        HAS_FAST = True
        Point = namedtuple("Point", "x y", defaults=(0, 1))
        Split = enum.Enum("Split", {"TRAIN": 0.8, "TEST": 0.2})
        Cfg = make_dataclass("Cfg", [("lr", float, field(default=0.1))])

        if not HAS_FAST:
            class Engine:
                def run(self, v):
                    return v - 1
        else:
            class Engine:
                def run(self, v):
                    return v + 1


        class Memo:
            def __init__(self, fn):
                self.fn = fn
                self.cache = {}

            def __call__(self, v):
                return self.fn(v)


        @Memo
        def memoized(v):
            return v * 100


        @step
        def s(x: int) -> float:
            return Point().y + Split.TRAIN.value + Cfg().lr + Engine().run(x) + memoized(x)
    ''',
}


@pytest.mark.parametrize(
    "old,new,item",
    [
        ("defaults=(0, 1)", "defaults=(0, 2)", "pipe.Point"),
        ('"TRAIN": 0.8', '"TRAIN": 0.7', "pipe.Split"),
        ("default=0.1", "default=0.2", "Cfg"),
        ("return v + 1", "return v + 2", "pipe.Engine"),
        ("return v * 100", "return v * 101", "pipe.memoized"),
    ],
)
def test_classes_without_a_class_statement_and_defined_twice(tmp_path, old, new, item):
    diff = changed(tmp_path, CLASSES, {"pipe.py": (old, new)})
    # make_dataclass names its module "types" before Python 3.12
    assert item in diff or (item == "Cfg" and diff & {"pipe.Cfg", "types.Cfg"})


def test_the_unused_fallback_class_is_not_a_dependency(tmp_path):
    assert changed(tmp_path, CLASSES, {"pipe.py": ("return v - 1", "return v - 2")}) == set()


def test_code_outside_the_root_is_source_with_one_warning(tmp_path):
    from zenbuild.fingerprint.project import OutsideRootWarning

    common = tmp_path / "common"
    common.mkdir()
    (common / "shared_helpers.py").write_text("def norm(x):\n    return x / 2\n")
    files = {"pipe.py": '''
        from shared_helpers import norm
        from zenbuild import step


        @step
        def s(x: int) -> float:
            return norm(x)
    '''}
    sys.path.insert(0, str(common))
    try:
        with pytest.warns(OutsideRootWarning, match="outside the project root"):
            before = fingerprint(tmp_path, files, warn_ok=True)
        (common / "shared_helpers.py").write_text("def norm(x):\n    return x / 3\n")
        sys.modules.pop("shared_helpers", None)
        with pytest.warns(OutsideRootWarning):
            after = fingerprint(tmp_path, files, warn_ok=True)
    finally:
        sys.path.remove(str(common))
        sys.modules.pop("shared_helpers", None)
    assert before.items["shared_helpers.norm"] != after.items["shared_helpers.norm"]
    assert before.packages == {}  # no "unknown" package any more


def test_a_symlinked_folder_is_source(tmp_path):
    real = tmp_path / "elsewhere" / "linked"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("")
    (real / "ops.py").write_text("def op(x):\n    return x + 1\n")
    root = tmp_path / "root_sym"
    root.mkdir()
    (root / "linked").symlink_to(real)
    (root / "pipe.py").write_text(textwrap.dedent('''
        from linked.ops import op
        from zenbuild import step


        @step
        def s(x: int) -> int:
            return op(x)
    '''))
    from zenbuild.fingerprint.project import OutsideRootWarning

    sys.path.insert(0, str(root))
    try:
        m = importlib.import_module("pipe")
        with pytest.warns(OutsideRootWarning, match="elsewhere"):
            info = CodeFingerprinter(str(root)).code(m.s.fn)
    finally:
        sys.path.remove(str(root))
        for k in ("pipe", "linked", "linked.ops"):
            sys.modules.pop(k, None)
    assert info.meta["linked.ops.op"][1] == str(real / "ops.py")


PLUGINS = {
    "plugins/__init__.py": "",
    "plugins/x.py": "def run(v):\n    return v + 1\n",
    "plugins/y.py": "def run(v):\n    return v + 2\n",
    "pipe.py": '''
        import importlib
        from zenbuild import step


        @step
        def s(v: int) -> int:
            mod = importlib.import_module("plugins.x")
            return mod.run(v)
    ''',
}


def test_a_literal_import_module_is_resolved(tmp_path):
    assert changed(tmp_path, PLUGINS, {"plugins/x.py": ("v + 1", "v + 5")}) == {"plugins.x"}
    assert changed(tmp_path, PLUGINS, {"plugins/y.py": ("v + 2", "v + 5")}) == set()


def test_a_library_import_in_a_body_is_the_same_whether_or_not_it_is_loaded(tmp_path, monkeypatch):
    files = {"pipe.py": '''
        from zenbuild import step


        @step
        def s(x: float) -> tuple:
            from colorsys import rgb_to_hsv
            return rgb_to_hsv(x, x, x)
    '''}
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    cold = fingerprint(tmp_path, files).items
    importlib.import_module("colorsys")
    warm = fingerprint(tmp_path, files).items
    assert cold == warm and "colorsys" in cold


# -- config objects as params (issue 14): serialize/configs.py and fingerprint/params.py ------
def _config_classes():
    import dataclasses
    import enum
    from typing import NamedTuple

    import pydantic

    @dataclasses.dataclass(frozen=True)
    class Train:
        lr: float = 0.1
        tags: tuple = ()

    @dataclasses.dataclass(frozen=True)
    class Other:
        lr: float = 0.1
        tags: tuple = ()

    class Mode(enum.Enum):
        FAST = "fast"
        SLOW = "slow"

    class Window(NamedTuple):
        start: int = 0
        stop: int = 10

    class Model(pydantic.BaseModel):
        depth: int = 2
        train: Train = Train()

    return Train, Other, Mode, Window, Model


def test_config_objects_have_canonical_encodings_by_type_and_fields() -> None:
    from zenbuild.fingerprint.params import encode_param

    Train, Other, Mode, Window, Model = _config_classes()
    cases = [Train(), Train(lr=0.2), Train(tags=("a",)), Other(), Mode.FAST, Mode.SLOW,
             Window(), Window(1, 10), (0, 10), Model(), Model(depth=3),
             Model(train=Train(lr=0.3)), {"cfg": Train()}, [Mode.FAST]]
    encodings = [encode_param(v) for v in cases]
    assert len(set(encodings)) == len(cases)  # each field, each type tells them apart
    assert encode_param(Train(lr=0.2)) == encode_param(Train(lr=0.2))  # equal: equal bytes
    assert b"dataclass:" in encodings[0] and b"Train" in encodings[0]
    assert b"pydantic:" in encodings[9] and b"dataclass:" in encodings[11]  # nested
    assert b"Other" in encodings[3] and b"enum:" in encodings[4]


@dataclasses.dataclass(frozen=True)
class PickledTrain:
    lr: float = 0.1


def test_a_stored_config_value_is_still_the_canonical_pickle_that_loads_back() -> None:
    from zenbuild.serialize import canonical, dumps, loads

    v = PickledTrain(lr=0.5)
    data = dumps(v)
    assert not data.startswith(b"ZBV1")  # not the fingerprint-only encoding: a pickle
    assert loads(data) == v and type(loads(data)) is PickledTrain
    assert canonical(v).startswith(b"o")  # the fingerprint encoding, tag o


def test_a_project_class_code_digest_joins_the_param_key() -> None:
    from zenbuild.fingerprint.params import encode_param

    Train, _, Mode, _, _ = _config_classes()
    plain = encode_param(Train())
    with_code = encode_param(Train(), None, lambda cls: "d1" if cls is Train else None)
    other_code = encode_param(Train(), None, lambda cls: "d2" if cls is Train else None)
    assert with_code != plain and with_code != other_code
    assert b"Train=d1" in with_code
    # a library class (code_of says None) adds nothing; plain data is untouched
    assert encode_param(Train(), None, lambda cls: None) == plain
    assert encode_param([1, "a"], None, lambda cls: "x") == encode_param([1, "a"])


@pytest.mark.parametrize("value", [
    "marker", "list", "tuple", "mixed", "nested", "empty list", "empty tuple"])
def test_the_marker_fast_path_encodes_as_canonical_does(value) -> None:
    """encode_param short-cuts a marker and a list/tuple of markers (the usual File list and
    handle list); its bytes must be exactly canonical()'s, or every such step's key changes."""
    from zenbuild.fingerprint.params import _MARKERS, encode_param
    from zenbuild.graph import EnvRef, FileRef, InputRef, OutputRef
    from zenbuild.serialize import canonical

    f, d = FileRef("data/a.csv"), FileRef("data", "*.csv")
    h, o, e = InputRef("load", (0, "x")), OutputRef("out/b.bin"), EnvRef("TOKEN")
    v = {"marker": f, "list": [f, d, h, o, e], "tuple": (h, e, f), "mixed": [f, 1, "a"],
         "nested": [f, [d]], "empty list": [], "empty tuple": ()}[value]
    got = encode_param(v)
    assert got == canonical(v, items=_MARKERS)
    # the items really are in it, in order: two different lists do not collide
    if isinstance(v, (list, tuple)) and len(v) > 1:
        assert got != encode_param(type(v)(reversed(v)))


CONST_CONFIGS = '''
import dataclasses
from zenbuild import step


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 0.1

    def scaled(self):
        return self.lr * 2


CONFIGS = [Cfg(0.1), Cfg(0.2)]


@step
def my_step() -> int:
    return len(CONFIGS)
'''


def test_a_container_of_config_constants_keeps_their_class_in_the_closure(tmp_path) -> None:
    """A list of dataclass constants is encoded in one pass now (tag o), and the project
    class its elements are still joins the code closure: editing a method reruns."""
    before, _ = code_of(tmp_path, CONST_CONFIGS)
    assert "Cfg" in before and "CONFIGS" in before
    # (each code_of imports the source as a new module, whose name is in CONFIGS's encoding)
    after, _ = code_of(tmp_path, CONST_CONFIGS.replace("self.lr * 2", "self.lr * 3"))
    assert before["Cfg"] != after["Cfg"] and before["my_step"] == after["my_step"]
    value, _ = code_of(tmp_path, CONST_CONFIGS.replace("Cfg(0.2)]", "Cfg(0.3)]"))
    assert before["Cfg"] == value["Cfg"]
