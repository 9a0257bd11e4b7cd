"""Python 3.10's code objects have no co_qualname; the call trace finds it in the source
(trace.calls.qualname_310), the same name 3.11+ gives, or a method's edits would go unseen."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from zenbuild.trace.calls import qualname_310

SRC = '''\
import functools


def deco(f):
    @functools.wraps(f)
    def wrapper(*a):
        return f(*a)
    return wrapper


class Scaler:
    def transform(self, xs):
        return [x * 2 for x in xs]

    class Inner:
        key = staticmethod(lambda v: v)


@deco
def decorated(x):
    return x


def outer():
    def inner():
        return (i for i in range(3))
    return inner
'''


def _codes(code: types.CodeType):
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield c
            yield from _codes(c)


def test_qualnames_from_the_source_are_the_ones_311_gives(tmp_path: Path) -> None:
    path = tmp_path / "mod310.py"
    path.write_text(SRC)
    module_code = compile(SRC, str(path), "exec")
    got = {qualname_310(c) for c in _codes(module_code)}
    want = {"deco", "deco.<locals>.wrapper", "Scaler", "Scaler.transform",
            "Scaler.Inner", "Scaler.Inner.<lambda>", "decorated", "outer",
            "outer.<locals>.inner", "outer.<locals>.inner.<locals>.<genexpr>"}
    if sys.version_info < (3, 12):  # PEP 709 inlines list comprehensions from 3.12
        want.add("Scaler.transform.<locals>.<listcomp>")
    assert got == want
    if sys.version_info >= (3, 11):
        assert all(qualname_310(c) == c.co_qualname for c in _codes(module_code))
    path.write_text(SRC.replace("class Scaler:", "class Scaler2:"))  # an edit: parsed again
    assert "Scaler2.transform" in {qualname_310(c) for c in _codes(
        compile(path.read_text(), str(path), "exec"))}
