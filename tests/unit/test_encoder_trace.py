"""Unit: the trace of the registered code that encoded a stored value. The canonical pickle
names the classes whose registered project reducer it consulted (serialize.buffers.Encoded
.types); the entry records their code digests (fingerprint.encoders, discovered.py "types");
verify() names the class whose code is not the same now. A worker that stores a value itself
sends the classes back with it. A registration made after the fingerprinter memoized a
class's code is seen by it."""

from __future__ import annotations

import fractions
import importlib
import itertools
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pytest

from zenbuild import reasons as R
from zenbuild.discovered import build, is_empty, malformed, verify, with_types
from zenbuild.executors.worker_store import drop_target, make_target, store_value
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.encoders import TypeDigests, encoder_record
from zenbuild.serialize import GENERATION, register_value_type
from zenbuild.serialize.buffers import encode_value
from zenbuild.serialize.materialize import register_lazy
from zenbuild.serialize.pickler import REDUCERS
from zenbuild.store.blobs import StoredValue
from zenbuild.store.db import Store
from zenbuild.trace import Trace

_counter = itertools.count()


@pytest.fixture
def reducers():
    """REDUCERS as it was, after the test (registrations are process-wide)."""
    register_lazy()
    saved = dict(REDUCERS)
    yield REDUCERS
    REDUCERS.clear()
    REDUCERS.update(saved)


def _module(root: Path, source: str) -> Any:
    name = f"enctrace_{next(_counter)}"
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


class Sub(Point):
    pass


def _point(x: int) -> Point:
    return Point(x)


# ---- what the pickle consulted -----------------------------------------------------------


def test_the_registered_classes_a_value_used_are_named(reducers) -> None:
    register_value_type(Point, lambda p: (_point, (p.x,)))
    enc = encode_value({"a": [Point(1), Sub(2)], "b": 3})
    assert enc.types == (Point,)  # a subclass is stored by its base's registration
    assert encode_value({"a": [1, 2], "b": np.ones(3)}).types == ()  # plain data: nothing
    assert encode_value([fractions.Fraction(1, 3)]).types == ()  # not registered: nothing


def test_a_reducer_that_declines_is_still_named(reducers) -> None:
    """Returning NotImplemented is a decision of the registered code too: an edit may make
    it encode the object itself."""
    register_value_type(fractions.Fraction, lambda f: NotImplemented)
    assert encode_value([fractions.Fraction(1, 3)]).types == (fractions.Fraction,)


def test_zenbuilds_own_reducers_are_not_named(reducers) -> None:
    pl = pytest.importorskip("polars")
    register_lazy()
    enc = encode_value(pl.DataFrame({"a": [1, 2]}))
    assert enc.types == ()


SAVED = '''
import zenbuild


@zenbuild.value_type
class Saved:
    def __init__(self, w):
        self.w = w

    def save(self, folder):
        (folder / "w").write_text(self.w)

    @classmethod
    def load(cls, folder):
        return cls((folder / "w").read_text())
'''


def test_a_value_type_is_named_by_its_class(reducers, tmp_path: Path) -> None:
    mod = _module(tmp_path, SAVED)
    assert encode_value(mod.Saved("x")).types == (mod.Saved,)


# ---- the record and its check ------------------------------------------------------------


def _digests(table: Dict[Tuple[str, str], Optional[str]]):
    def digest(module: str, qualname: str) -> Tuple[bool, Optional[str]]:
        if (module, qualname) not in table:
            return False, None
        return True, table[(module, qualname)]

    return digest


def _rec(types) -> Dict[str, Any]:
    rec = with_types(None, types)
    assert rec is not None
    return rec


def test_a_record_with_types_verifies_while_their_code_is_the_same() -> None:
    rec = _rec([["m", "A", "d1"], ["m", "B.C", "d2"]])
    assert not is_empty(rec) and malformed(rec) is None
    same = _digests({("m", "A"): "d1", ("m", "B.C"): "d2"})
    assert verify(rec, lambda rel: None, {}, lambda *a: None, type_digest=same) == []
    changed = _digests({("m", "A"): "d1", ("m", "B.C"): "other"})
    got = verify(rec, lambda rel: None, {}, lambda *a: None, type_digest=changed)
    assert [(r.kind, r.subject) for r in got] == [(R.VALUE_TYPE_CODE_CHANGED, "m.B.C")]
    assert "m.B.C" in R.text(got[0])
    gone = _digests({("m", "B.C"): "d2"})
    got = verify(rec, lambda rel: None, {}, lambda *a: None, type_digest=gone)
    assert [(r.kind, r.subject) for r in got] == [(R.VALUE_TYPE_MISSING, "m.A")]
    # a registration now without project code (value_code None) is a change too
    none = _digests({("m", "A"): None, ("m", "B.C"): "d2"})
    got = verify(rec, lambda rel: None, {}, lambda *a: None, type_digest=none)
    assert [r.kind for r in got] == [R.VALUE_TYPE_CODE_CHANGED]
    # without a way to digest types, a record naming one never verifies
    assert verify(rec, lambda rel: None, {}, lambda *a: None) != []


def test_no_types_adds_nothing_and_an_old_record_still_reads() -> None:
    assert with_types(None, []) is None
    trace = Trace(reads=["a.txt"])
    rec = build(trace, lambda rel: ("d", 1), lambda *a: None)
    assert with_types(rec, []) is rec and "types" not in rec
    assert malformed(rec) is None  # a record made before the section: nothing to check
    assert verify(rec, lambda rel: ("d", 1), {}, lambda *a: None) == []
    both = with_types(rec, [["m", "A", "d1"]])
    assert both is not None and both["files"] == {"a.txt": ["d", 1]}


@pytest.mark.parametrize("bad", [{"types": "x"}, {"types": [["m", "A"]]},
                                 {"types": [["m", 1, "d"]]}, {"types": [["m", "A", 3]]}])
def test_a_damaged_types_section_is_unreadable(bad) -> None:
    rec = {"format": 1, "files": {}, "listed": {}, "env": {}, "calls": [], "sources": {}, **bad}
    assert malformed(rec) is not None
    got = verify(rec, lambda rel: None, {}, lambda *a: None, type_digest=_digests({}))
    assert [r.kind for r in got] == [R.RECORD_UNREADABLE]


FRACS = '''
import fractions


def make_fraction(n, d):
    return fractions.Fraction(n, d)


def reduce_fraction(f):
    return (make_fraction, (f.numerator, f.denominator))


def reduce_twice(f):
    return (make_fraction, (2 * f.numerator, f.denominator))
'''


def test_the_record_holds_the_registered_codes_digest(reducers, tmp_path: Path) -> None:
    fracs = _module(tmp_path, FRACS)
    register_value_type(fractions.Fraction, fracs.reduce_fraction)
    fp = CodeFingerprinter(str(tmp_path), track_packages=False)
    enc = encode_value(fractions.Fraction(1, 3), fp.value_code)
    rec = encoder_record(fp, enc.types)
    assert rec == [["fractions", "Fraction", fp.value_code(fractions.Fraction)]]
    assert TypeDigests(fp)("fractions", "Fraction") == (True, rec[0][2])
    assert TypeDigests(fp)("fractions", "NoSuchClass") == (False, None)
    # another reducer: another digest (a fingerprinter of the next run)
    register_value_type(fractions.Fraction, fracs.reduce_twice)
    fresh = CodeFingerprinter(str(tmp_path), track_packages=False)
    found, now = TypeDigests(fresh)("fractions", "Fraction")
    assert found and now is not None and now != rec[0][2]


def test_a_registration_after_the_first_fingerprint_is_seen(reducers, tmp_path: Path) -> None:
    """The fingerprinter memoized the class's code before the project registered a reducer
    for it (a module imported by a step, or after the first step was fingerprinted): it
    drops its memos, so the registration joins value_code and the key of a step using it."""
    fracs = _module(tmp_path, FRACS)
    steps = _module(tmp_path, "from fractions import Fraction\n\n\n"
                              "def make():\n    return Fraction(1, 3)\n")
    fp = CodeFingerprinter(str(tmp_path), track_packages=False)
    assert fp.value_code(fractions.Fraction) is None
    before = dict(fp.code(steps.make).items)
    generation = GENERATION[0]
    register_value_type(fractions.Fraction, fracs.reduce_fraction)
    assert GENERATION[0] == generation + 1
    assert fp.value_code(fractions.Fraction) is not None
    after = fp.code(steps.make).items
    assert after != before and any("<registered" in k for k in after)


def test_zenbuilds_lazy_registrations_keep_the_memos(reducers, tmp_path: Path) -> None:
    pytest.importorskip("polars")
    from zenbuild.serialize import materialize

    generation = GENERATION[0]
    materialize._register_polars()
    assert GENERATION[0] == generation


# ---- a worker that stores the value itself -----------------------------------------------


def test_a_worker_sends_back_the_registered_classes(reducers, tmp_path: Path) -> None:
    register_value_type(Point, lambda p: (_point, (p.x,)))
    store = Store(str(tmp_path / "st"))
    target = make_target(store.path)
    value = {"p": Point(1), "big": np.ones(1 << 18)}
    stored = store_value(value, target, str(Path(__file__).parent))
    assert isinstance(stored, StoredValue)
    assert stored.types == ((__name__, "Point"),)
    main = CodeFingerprinter(str(Path(__file__).parent), True, store.path)
    # checked by the main process like every class the pickle names (scheduler._adopt)
    assert (__name__, "Point", main.value_code(Point)) in stored.refs
    assert store_value({"big": np.ones(1 << 18)}, target).types == ()
    drop_target(target)
    store.close()
