"""records: the dataclass stand-in behaves like dataclasses where zenbuild relies on it."""

from __future__ import annotations

from typing import Dict, List

import pytest

from zenbuild.records import field, record


@record
class Point:
    x: int
    y: int = 0
    tags: List[str] = field(default_factory=list)


@record(frozen=True)
class Key:
    path: str
    glob: str = ""


def test_init_defaults_factories_repr_eq():
    a, b = Point(1), Point(1)
    assert (a.x, a.y, a.tags) == (1, 0, [])
    a.tags.append("t")
    assert b.tags == []  # a fresh list per instance
    assert Point(1, 2) == Point(x=1, y=2) and Point(1) != Point(2)
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hash(Point(1))


def test_frozen_records_are_hashable_and_read_only():
    k = Key("a")
    d: Dict[Key, int] = {k: 1}
    assert d[Key("a", "")] == 1
    with pytest.raises(AttributeError):
        k.path = "b"  # type: ignore[misc]


def test_a_record_compiles_its_init_at_its_first_instance():
    @record
    class Late:
        a: int
        b: List[int] = field(default_factory=list)

    placeholder = Late.__init__
    x = Late(1)
    assert Late.__init__ is not placeholder  # the compiled one took its place
    y = Late(2, b=[3])
    assert (x.a, x.b, y.a, y.b) == (1, [], 2, [3])
    assert x.b is not Late(1).b
    with pytest.raises(TypeError):
        Late()
