"""fingerprint: what changes a step's code component, and what does not."""

from __future__ import annotations

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
    return {k.split(".", 1)[1]: v for k, v in info.items.items()}, info


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
    kinds = {k.split(".", 1)[1]: v[0] for k, v in info.meta.items()}
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
