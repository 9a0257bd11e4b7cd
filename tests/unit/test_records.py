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
