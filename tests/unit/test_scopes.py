"""scopes: which global names, and which imports, a definition reads."""

from __future__ import annotations

import ast
import textwrap

from zenbuild.fingerprint.scopes import IMPORT, global_references


def refs(src: str):
    return set(global_references(ast.parse(textwrap.dedent(src)).body[0]))


def test_globals_and_locals():
    got = refs('''
        def f(a):
            b = a + LIMIT
            return helper(b) + mod.sub.fn(a)
    ''')
    assert got == {("LIMIT",), ("helper",), ("mod", "sub", "fn")}


def test_imports_in_the_body_become_import_chains():
    got = refs('''
        def f(x):
            from proj.features import add_features as af
            import proj.util
            import proj.other as po
            from . import sibling
            from ..up import thing
            return af(x) + proj.util.scale(x) + po.g(x) + sibling.h(x) + thing
    ''')
    assert got == {
        (IMPORT, "0", "proj.features", "proj.features", "add_features"),
        (IMPORT, "0", "proj.util", "proj", "util", "scale"),
        (IMPORT, "0", "proj.other", "proj.other", "g"),
        (IMPORT, "1", "", "", "sibling", "h"),
        (IMPORT, "2", "up", "up", "thing"),
    }


def test_an_unused_import_and_a_shadowed_name_are_not_read():
    assert refs('''
        def f(x):
            import json
            json = 3
            return x
    ''') == set()


def test_a_nested_function_sees_the_enclosing_import():
    got = refs('''
        def f(x):
            from lib import clean
            def inner(v):
                return clean(v)
            return inner(x)
    ''')
    assert got == {(IMPORT, "0", "lib", "lib", "clean")}


def test_literal_import_module_calls():
    got = refs('''
        def f(name):
            a = importlib.import_module("plugins.x")
            b = import_module(".y", "plugins")
            c = importlib.import_module(f"plugins.{name}")
            return a, b, c
    ''')
    assert (IMPORT, "0", "plugins.x", "plugins.x") in got
    assert (IMPORT, "0", "plugins.y", "plugins.y") in got
    assert not any(c[0] == IMPORT and "{" in "".join(c) for c in got)
