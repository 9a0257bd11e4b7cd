"""--param NAME.FIELD=VALUE (zenbuild.typed.edits): one field changed, by its annotation."""

from __future__ import annotations

import dataclasses
from typing import Dict, NamedTuple, Optional

import pydantic
import pytest

from zenbuild.binding import params_of
from zenbuild.errors import ParamError
from zenbuild.typed.edits import EditError, apply
from zenbuild.typed.pipeline import ParamTypes


class Point(NamedTuple):
    x: int
    y: float = 0.0


class Model(pydantic.BaseModel):
    depth: int
    name: str = "m"

    @pydantic.field_validator("depth")
    @classmethod
    def positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("depth must be positive")
        return v


@dataclasses.dataclass(frozen=True)
class Cfg:
    point: Point
    model: Optional[Model] = None
    weights: Dict[str, float] = dataclasses.field(default_factory=dict)


def test_a_field_is_converted_by_its_own_annotation_and_nests() -> None:
    cfg = Cfg(Point(1), Model(depth=2))
    got = apply(cfg, Cfg, ("point", "y"), "3")
    assert got == Cfg(Point(1, 3.0), Model(depth=2)) and isinstance(got.point.y, float)
    got = apply(got, Cfg, ("model", "depth"), "7")
    assert got.model == Model(depth=7, name="m")
    got = apply(got, Cfg, ("weights", "a"), "1")
    assert got.weights == {"a": 1.0} and isinstance(got.weights["a"], float)
    assert cfg == Cfg(Point(1), Model(depth=2))  # the value edited is not changed in place


def test_edits_that_cannot_be_made_say_why() -> None:
    cfg = Cfg(Point(1))
    with pytest.raises(EditError, match="no value to change a field of"):
        apply(cfg, Cfg, ("model", "depth"), "3")  # model is None
    with pytest.raises(EditError, match="refused it: .*depth must be positive"):
        apply(Model(depth=1), Model, ("depth",), "0")  # the model's own validation runs
    with pytest.raises(EditError, match="cannot convert to int"):
        apply(cfg, Cfg, ("point", "x"), "one")
    with pytest.raises(EditError, match=r"Point has no field 'z'"):
        apply(cfg, Cfg, ("point", "z"), "1")


def test_a_param_without_a_value_must_be_given_whole_first() -> None:
    def pipe(cfg: Cfg, n: int = 1) -> None: ...

    types_ = ParamTypes(pipe, params_of(pipe))
    edits = types_.cli_values(["cfg.point.x=4"], "pipe")["cfg"]
    with pytest.raises(ParamError, match=r"parameter cfg has no value .* --param 'cfg=\{\.\.\.\}'"):
        types_.edited("cfg", edits, {})
    assert types_.edited("cfg", edits, {"cfg": Cfg(Point(1))}) == Cfg(Point(4))  # [params]
    whole = types_.cli_values(['cfg={"point": [2, 1.5]}', "cfg.point.x=5"], "pipe")["cfg"]
    assert types_.edited("cfg", whole, {"cfg": Cfg(Point(1))}) == Cfg(Point(5, 1.5))
