"""Unit: subclass discovery (``Base.__subclasses__()``): which classes the code that ran asked
(zenbuild.trace.subclasses), and the "subclasses" section of a discovered record, built and
verified with injected look-ups (zenbuild.discovered)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import zenbuild.discovered as dv
from zenbuild import reasons as R
from zenbuild.trace import Trace, TraceOptions, _Recording
from zenbuild.trace import subclasses as S

PLUGINS = '''
class Base:
    @classmethod
    def plugins(cls):
        return [c.__name__ for c in cls.__subclasses__()]


class A(Base):
    W = 1


class B(A):
    W = 2


class Alone:
    pass


def by_attribute():
    return Base.__subclasses__()


def by_type():
    return type.__subclasses__(Base)


def by_local(c):
    return c.__subclasses__()


def by_name():
    return getattr(Base, "__subclasses__")()


def nothing():
    return Alone()
'''


@pytest.fixture
def mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"zb_plugins_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = importlib.import_module(name)
    yield m
    sys.modules.pop(name, None)


def _found(mod: Any, tmp_path: Path, *codes: Any, before: Any = None) -> List[List[Any]]:
    rec = _Recording(TraceOptions(str(tmp_path)), None)
    return S.found(list(codes), rec.root, rec.excluded, before)


def test_no_code_naming_subclasses_records_nothing(mod, tmp_path):
    assert not S.asks(mod.nothing.__code__)
    assert _found(mod, tmp_path, mod.nothing.__code__) == []


@pytest.mark.parametrize("fn", ["by_attribute", "by_type"])
def test_a_global_receiver_is_the_class_with_all_its_named_descendants(mod, tmp_path, fn):
    got = _found(mod, tmp_path, getattr(mod, fn).__code__)
    n = mod.__name__
    assert got == [[n, "Base", [[n, "A", True], [n, "B", True]]]]


def test_cls_in_a_classmethod_is_the_method_s_class(mod, tmp_path):
    got = _found(mod, tmp_path, mod.Base.plugins.__func__.__code__)
    assert [e[:2] for e in got] == [[mod.__name__, "Base"]]


@pytest.mark.parametrize("fn", ["by_local", "by_name"])
def test_an_unknown_receiver_counts_every_project_hierarchy(mod, tmp_path, fn):
    got = _found(mod, tmp_path, getattr(mod, fn).__code__)
    n = mod.__name__
    # Base's hierarchy (A and B); a class with no subclasses is no hierarchy
    assert [n, "Base", [[n, "A", True], [n, "B", True]]] in got
    assert all(e[1] != "Alone" for e in got)


def test_modules_loaded_before_the_step_are_not_imported_by_the_check(mod, tmp_path):
    got = _found(mod, tmp_path, mod.by_attribute.__code__, before={id(mod)})
    assert [x[2] for x in got[0][2]] == [False, False]


def test_a_class_made_at_run_time_is_left_out(mod, tmp_path):
    made = type("Made", (mod.Base,), {})  # no module name reaches it
    got = _found(mod, tmp_path, mod.by_attribute.__code__)
    assert all(x[1] != "Made" for x in got[0][2])
    del made


# -- the record: build and verify ----------------------------------------------------------------

def _trace(subs: List[List[Any]]) -> Trace:
    t = Trace()
    t.subclasses = [["m.base", "Base", subs]]
    return t


class World:
    """The look-ups a run answers: each class's digest, each base's subclasses now, and which
    classes were digested (a recorded subclass's module is imported by digesting it)."""

    def __init__(self, digests: Dict[Tuple[str, str], str],
                 subs: Optional[List[List[str]]]) -> None:
        self.digests = digests
        self.subs = subs
        self.asked: List[Tuple[str, str]] = []

    def digest(self, m: str, q: str) -> Optional[str]:
        self.asked.append((m, q))
        return self.digests.get((m, q))

    def now(self, m: str, q: str) -> Optional[List[List[str]]]:
        return self.subs


def _record(world: World, subs: List[List[Any]]) -> Dict[str, Any]:
    return dv.build(_trace(subs), lambda rel: None, lambda *a: None, class_digest=world.digest)


def _verify(record: Dict[str, Any], world: World) -> List[Any]:
    return dv.verify(record, lambda rel: None, {}, lambda *a: None,
                     class_digest=world.digest, subclasses_now=world.now)


SUBS = [["m.cnn", "CNN", False], ["m.rnn", "RNN", False]]
DIGESTS = {("m.cnn", "CNN"): "d1", ("m.rnn", "RNN"): "d2"}


def test_the_record_keeps_each_subclass_s_digest():
    rec = _record(World(DIGESTS, None), SUBS)
    assert rec["subclasses"] == [["m.base", "Base", [["m.cnn", "CNN", "d1", False],
                                                     ["m.rnn", "RNN", "d2", False]]]]
    assert not dv.is_empty(rec) and dv.malformed(rec) is None


def test_unchanged_subclasses_verify():
    rec = _record(World(DIGESTS, None), SUBS)
    assert _verify(rec, World(DIGESTS, [["m.cnn", "CNN"], ["m.rnn", "RNN"]])) == []


def test_a_changed_subclass():
    rec = _record(World(DIGESTS, None), SUBS)
    now = World({**DIGESTS, ("m.rnn", "RNN"): "d3"}, [["m.cnn", "CNN"], ["m.rnn", "RNN"]])
    (r,) = _verify(rec, now)
    assert r.kind == R.SUBCLASSES_CHANGED and r.subject == "m.base.Base"
    assert r.detail == {"added": [], "removed": [], "changed": ["m.rnn.RNN"]}
    assert "changed: m.rnn.RNN" in R.text(r)


def test_a_new_and_a_removed_subclass():
    rec = _record(World(DIGESTS, None), SUBS)
    now = World({**DIGESTS, ("m.gru", "GRU"): "d4"}, [["m.cnn", "CNN"], ["m.gru", "GRU"]])
    (r,) = _verify(rec, now)
    assert r.detail == {"added": ["m.gru.GRU"], "removed": ["m.rnn.RNN"], "changed": []}


def test_the_class_gone():
    rec = _record(World(DIGESTS, None), SUBS)
    (r,) = _verify(rec, World(DIGESTS, None))
    assert r.kind == R.SUBCLASSES_CHANGED and r.detail == {"gone": True}


def test_only_subclasses_the_step_imported_are_looked_up_before_listing():
    rec = _record(World(DIGESTS, None), [["m.cnn", "CNN", False], ["m.rnn", "RNN", True]])
    world = World(DIGESTS, [["m.cnn", "CNN"]])  # rnn's module is no longer imported
    (r,) = _verify(rec, world)
    assert r.detail["removed"] == ["m.rnn.RNN"]
    assert world.asked[0] == ("m.rnn", "RNN")  # digested (imported) first: it was the step's


def test_a_record_with_subclasses_and_no_look_ups_is_not_trusted():
    rec = _record(World(DIGESTS, None), SUBS)
    (r,) = dv.verify(rec, lambda rel: None, {}, lambda *a: None)
    assert r.kind == R.RECORD_UNREADABLE


def test_a_malformed_section():
    rec = _record(World(DIGESTS, None), SUBS)
    rec["subclasses"][0][2][0] = ["m.cnn", "CNN", "d1"]
    assert dv.malformed(rec) == "a class's subclasses"
    assert _verify(rec, World(DIGESTS, []))[0].kind == R.RECORD_UNREADABLE


def test_the_trace_section_travels_as_json():
    t = _trace(SUBS)
    assert Trace.from_json(t.to_json()).subclasses == t.subclasses
