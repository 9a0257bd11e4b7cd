"""LazyPattern: a module-level regular expression compiled by its first use."""

from __future__ import annotations

import re

import pytest

from zenbuild.lazyre import LazyPattern


def test_it_matches_as_the_compiled_pattern_does_and_compiles_once():
    lazy = LazyPattern(r"\s*(\d+)\s*([smh])\s*", re.IGNORECASE)
    rx = re.compile(r"\s*(\d+)\s*([smh])\s*", re.IGNORECASE)
    assert lazy._rx is None  # nothing compiled before a use
    for text in ("5m", " 12 H ", "x", ""):
        a, b = lazy.fullmatch(text), rx.fullmatch(text)
        assert (a and a.groups()) == (b and b.groups())
    compiled = lazy._rx
    assert isinstance(compiled, re.Pattern)
    assert lazy.findall("1s 2m") == rx.findall("1s 2m")
    assert lazy.split("a1sb") == rx.split("a1sb")
    assert lazy._rx is compiled


def test_it_copies_and_pickles_as_the_pattern_it_stands_for():
    # an instance made without __init__ (copy, pickle) looked its unset slot up through
    # __getattr__, which read that slot again: RecursionError
    import copy
    import pickle

    lazy = LazyPattern(r"a(\d)", re.IGNORECASE)
    for other in (copy.copy(lazy), copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy))):
        assert other.fullmatch("A7").group(1) == "7"
    with pytest.raises(AttributeError):
        getattr(LazyPattern.__new__(LazyPattern), "match")  # noqa: B009
