"""zenbuild.typed: one conversion by annotation for --param strings, [params] values and API
arguments; zenbuild.typed.pipeline: a pipeline's params, unknown names, the default rule."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path, PurePosixPath
from typing import (
    Annotated,
    Any,
    Dict,
    FrozenSet,
    List,
    Literal,
    NamedTuple,
    Optional,
    Set,
    Tuple,
    Union,
)

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenbuild.binding import params_of
from zenbuild.errors import ConfigError, ParamError
from zenbuild.typed import ParamMismatch, from_text, from_value, hints, type_name
from zenbuild.typed.pipeline import ParamTypes, unknown_names


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Inner:
    k: int = 0


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float
    cols: List[str] = dataclasses.field(default_factory=list)
    color: Color = Color.RED
    inner: Inner = Inner()


class Span(NamedTuple):
    start: int
    stop: int = 10


TEXT_CASES = [
    ("3", int, 3), (" -4 ", int, -4), ("4.5", float, 4.5), ("1", float, 1.0),
    ("yes", bool, True), ("OFF", bool, False), ("hi", str, "hi"), ("", str, ""),
    ("a/b", Path, Path("a/b")), ("a/b", PurePosixPath, PurePosixPath("a/b")),
    ("none", Optional[int], None), ("NULL", Optional[int], None), ("5", Optional[int], 5),
    ("3", Union[int, str], 3), ("x", Union[int, str], "x"),
    ("b,c", List[str], ["b", "c"]), ('["b", "c"]', List[str], ["b", "c"]), ("", List[str], []),
    ("1, 2", List[int], [1, 2]), ("1,2", Tuple[int, ...], (1, 2)),
    ('[1, "z"]', Tuple[int, str], (1, "z")), ("a,b,a", Set[str], {"a", "b"}),
    ("a", FrozenSet[str], frozenset({"a"})),
    ('{"k": 2}', Dict[str, int], {"k": 2}), ("{k = 2}", Dict[str, int], {"k": 2}),
    ('{"1": [1]}', Dict[int, List[int]], {1: [1]}), ('{"1": 1}', dict, {"1": 1}),
    ("b", Literal["a", "b"], "b"), ("2", Literal[1, 2], 2), ("true", Literal[True], True),
    ("RED", Color, Color.RED), ("blue", Color, Color.BLUE), ("2", Level, Level.HIGH),
    ("HIGH", Level, Level.HIGH),
    ('{"lr": 1, "cols": ["x"], "color": "BLUE", "inner": {"k": 3}}', Cfg,
     Cfg(1.0, ["x"], Color.BLUE, Inner(3))),
    ("{lr = 0.5}", Cfg, Cfg(0.5)), ("[1, 4]", Span, Span(1, 4)), ('{"start": 2}', Span, Span(2)),
    ("4.5", Any, 4.5), ("[1, 2]", Any, [1, 2]), ("word", Any, "word"),
    ("3", Annotated[int, "meta"], 3), ("3", "int", 3),
]


@pytest.mark.parametrize("raw,ann,want", TEXT_CASES)
def test_a_cli_string_is_converted_by_its_annotation(raw: str, ann: Any, want: Any) -> None:
    got = from_text(raw, ann)
    assert got == want and type(got) is type(want)


VALUE_CASES = [
    (1, float, 1.0), (2.5, float, 2.5), (3, int, 3), (True, bool, True), ("s", str, "s"),
    ("a/b", Path, Path("a/b")), ("none", Optional[int], None), (None, Optional[int], None),
    (["b", "c"], List[str], ["b", "c"]), ([1, 2], Tuple[int, ...], (1, 2)),
    ({"k": 2}, Dict[str, int], {"k": 2}), ({"1": 2}, Dict[int, int], {1: 2}),
    ("RED", Color, Color.RED), ("red", Color, Color.RED), (Color.BLUE, Color, Color.BLUE),
    (2, Level, Level.HIGH), ({"lr": 2, "inner": {"k": 1}}, Cfg, Cfg(2.0, inner=Inner(1))),
    ({"start": 1}, Span, Span(1)), ("b", Literal["a", "b"], "b"),
    ("3", Union[int, str], "3"),  # an exact fit is kept
]


@pytest.mark.parametrize("value,ann,want", VALUE_CASES)
def test_a_toml_value_is_checked_and_converted(value: Any, ann: Any, want: Any) -> None:
    got = from_value(value, ann)
    assert got == want and type(got) is type(want)


MISMATCHES = [
    ("abc", int, "cannot convert to int: got 'abc' (not an integer)"),
    ("x", float, "cannot convert to float: got 'x'"),
    ("maybe", bool, "cannot convert to bool: got 'maybe' (use true or false)"),
    ("c", Literal["a", "b"], "cannot convert to one of 'a', 'b': got 'c'"),
    ("GREEN", Color, "cannot convert to Color (one of RED, BLUE): got 'GREEN'"),
    ("1,x", List[int], "cannot convert p[1] to int: got 'x'"),
    ('{"k": "v"}', Dict[str, int], "cannot convert p['k'] to int: got 'v'"),
    ('{"lr": "x"}', Cfg, "cannot convert p.lr to float: got 'x'"),
    ('{"lr": 1, "colour": "RED"}', Cfg, "it has no field 'colour' (did you mean 'color'?)"),
    ("{}", Cfg, "missing field lr"),
    ("[1]", Tuple[int, str], "2 items, got 1"),
    ("{nope", Dict[str, int], "not valid JSON or a TOML inline value"),
    ("x", Optional[int], "cannot convert to int or none: got 'x'"),
]


@pytest.mark.parametrize("raw,ann,text", MISMATCHES)
def test_a_mismatch_names_the_value_and_the_expected_type(raw: str, ann: Any, text: str) -> None:
    with pytest.raises(ParamMismatch) as e:
        from_text(raw, ann)
    assert text in e.value.text("p")


@pytest.mark.parametrize("value,ann", [
    ("abc", int), (True, int), (1.5, int), (True, float), (3, str), (1, bool), (3, Path),
    ("x", List[str]), ([1], List[str]), ("2", Literal[2]), ({"lr": 1, "x": 2}, Cfg), (7, Color),
])
def test_a_wrong_toml_value_is_refused(value: Any, ann: Any) -> None:
    with pytest.raises(ParamMismatch):
        from_value(value, ann)


def test_type_names_read_as_the_annotation() -> None:
    assert type_name(List[str]) == "list[str]"
    assert type_name(Optional[int]) == "int or none"
    assert type_name(Tuple[int, ...]) == "tuple[int, ...]"
    assert type_name(Dict[str, Cfg]) == "dict[str, Cfg]"


def test_string_annotations_are_resolved_and_unresolvable_ones_left_unchecked() -> None:
    def f(n: int, c: Color, later: NotDefinedAnywhere, plain: float = 1.0) -> None:  # noqa: F821
        ...

    got = hints(f, f.__annotations__)
    assert got == {"n": int, "c": Color, "plain": float}


# -- a pipeline's params ----------------------------------------------------------------------
def _pipe(n: int = 1, lr: float = 0.5, loose=3, flag=False, name="x", where=Path("p"),
          fraction=0.5, cfg: Cfg = Cfg(0.1)) -> None: ...


def _types() -> ParamTypes:
    return ParamTypes(_pipe, params_of(_pipe))


def test_cli_values_use_annotations_then_the_default_rule() -> None:
    got = _types().cli_values(["n=2", "lr=1", "loose=4.5", "flag=yes", "name=true",
                               "where=q", "fraction=1", 'cfg={"lr": 2}'], "demo")
    assert got == {"n": 2, "lr": 1.0, "loose": 4.5, "flag": True, "name": "true",
                   "where": Path("q"), "fraction": 1.0, "cfg": Cfg(2.0)}
    assert type(got["lr"]) is float and type(got["fraction"]) is float


def test_cli_errors_name_the_param_and_suggest_a_name() -> None:
    with pytest.raises(ParamError, match=r"--param n=abc: cannot convert to int: got 'abc'"):
        _types().cli_values(["n=abc"], "demo")
    with pytest.raises(ParamError, match=r"has no parameter 'lrr' \(did you mean 'lr'\?\)"):
        _types().cli_values(["lrr=1"], "demo")
    with pytest.raises(ParamError, match="expected KEY=VALUE"):
        _types().cli_values(["n"], "demo")


def test_config_values_convert_and_report_unknown_keys() -> None:
    got, unknown = _types().config_values({"lr": 1, "epochs": 3, "cfg": {"lr": 3}},
                                          lambda k: "zenbuild.toml:9", "demo at pipe.py:1")
    assert got == {"lr": 1.0, "cfg": Cfg(3.0)} and type(got["lr"]) is float
    assert unknown == ["epochs"]
    with pytest.raises(ConfigError, match=r"zenbuild.toml:9: params.n: cannot convert to int"):
        _types().config_values({"n": "abc"}, lambda k: "zenbuild.toml:9", "demo")


def test_api_values_are_checked_and_widened() -> None:
    assert _types().api_values({"lr": 2, "n": 3}, "demo") == {"lr": 2.0, "n": 3}
    with pytest.raises(ParamError, match="pipeline demo, parameter n: cannot convert to int"):
        _types().api_values({"n": "3"}, "demo")
    big = list(range(20_000))  # past the deep-check limit: taken as it is
    assert ParamTypes(_big, params_of(_big)).api_values({"xs": big}, "demo")["xs"] is big


def _big(xs: List[int] = []) -> None: ...  # noqa: B006


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"zenbuild.toml:3: \[steps.shwo\] names no step .*"
                                          r"did you mean 'show'"):
        unknown_names("steps", ["show", "shwo"], ["show", "fit"], lambda k: "zenbuild.toml:3")
    unknown_names("params", ["n"], ["n"], lambda k: "")  # all known: nothing raised


# -- properties -------------------------------------------------------------------------------
_word = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)


@given(st.lists(_word, max_size=6))
def test_a_list_given_as_commas_or_as_json_is_the_same_value(words: List[str]) -> None:
    import json

    assert from_text(",".join(words), List[str]) == words == from_text(json.dumps(words), List[str])


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_an_int_for_a_float_is_that_float_from_every_source(n: int) -> None:
    a, b, c = from_text(str(n), float), from_value(n, float), from_value(float(n), float)
    assert a == b == c == float(n) and type(a) is type(b) is float


@given(st.dictionaries(_word, st.integers(-1000, 1000), max_size=5))
def test_a_dict_from_json_or_a_toml_table_is_the_same_value(d: Dict[str, int]) -> None:
    import json

    toml = "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"
    assert from_text(json.dumps(d), Dict[str, int]) == d == from_text(toml, Dict[str, int])


def test_a_pydantic_model_is_validated_from_a_table_or_json() -> None:
    import pydantic

    class Model(pydantic.BaseModel):
        depth: int = 2
        name: str = "m"

    got = from_text('{"depth": 5}', Model)
    assert isinstance(got, Model) and got.depth == 5
    assert from_value({"name": "x"}, Model) == Model(name="x")
    with pytest.raises(ParamMismatch) as e:
        from_value({"depth": "deep"}, Model)
    assert "cannot convert to Model" in e.value.text("m") and "depth" in e.value.text("m")


def test_check_names_reads_sources_before_loading_and_says_nothing_when_it_cannot_tell(
        tmp_path: Path) -> None:
    from zenbuild.typed.pipeline import check_names, declared_names

    (tmp_path / "a.py").write_text("from lib import count\n\ndef p(n, *, k=1):\n    step(id='fast')\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("def q(**kw):\n    pass\n")
    assert declared_names(str(tmp_path), ["a:p"], "params") == ["n", "k"]
    assert {"count", "fast", "p"} <= set(declared_names(str(tmp_path), ["a:p"], "steps") or [])
    assert declared_names(str(tmp_path), ["pkg:q"], "params") is None  # **kw takes anything
    assert declared_names(str(tmp_path), ["missing:p"], "params") is None

    loaded: List[str] = []

    def load(spec: str) -> List[str]:
        loaded.append(spec)
        return ["x"]

    def where(k: str) -> str:
        return "zenbuild.toml:2"

    check_names("params", ["k"], ["y"], str(tmp_path), ["a:p"], load, where)
    check_names("steps", ["count_2", "fast"], [], str(tmp_path), ["a:p"], load, where)
    assert loaded == []  # declared in the source: nothing imported
    check_names("params", ["x"], [], str(tmp_path), ["a:p"], load, where)  # found by loading
    assert loaded == ["a:p"]
    with pytest.raises(ConfigError, match="params.z: no configured pipeline"):
        check_names("params", ["z"], [], str(tmp_path), ["a:p"], load, where)

    def broken(spec: str) -> List[str]:
        raise RuntimeError("cannot import")

    check_names("params", ["z"], [], str(tmp_path), ["a:p"], broken, where)  # cannot tell


def test_dates_datetimes_and_times_from_toml_and_iso_text() -> None:
    import datetime as dt

    tz = dt.timezone(dt.timedelta(hours=1))
    assert from_text("2024-03-05", dt.date) == dt.date(2024, 3, 5)
    assert from_text("2024-03-05T10:00:00+01:00", dt.datetime) == dt.datetime(2024, 3, 5, 10,
                                                                             tzinfo=tz)
    assert from_text("08:30", dt.time) == dt.time(8, 30)
    assert from_value(dt.date(2024, 3, 5), dt.date) == dt.date(2024, 3, 5)  # a TOML date
    assert from_value("2024-03-05", dt.date) == dt.date(2024, 3, 5)  # a JSON string
    aware = from_value(dt.datetime(2024, 3, 5, 10, tzinfo=tz), dt.datetime)
    assert aware.utcoffset() == dt.timedelta(hours=1)
    with pytest.raises(ParamMismatch) as e:
        from_value(dt.datetime(2024, 3, 5, 10), dt.date)  # not cut to its date
    assert "a datetime, not a date" in e.value.text("day")
    with pytest.raises(ParamMismatch) as e:
        from_value(dt.date(2024, 3, 5), dt.datetime)
    assert "a date without a time of day" in e.value.text("when")
    with pytest.raises(ParamMismatch) as e:
        from_text("5 March", dt.date)
    assert e.value.text("day") == ("cannot convert to date (ISO 8601, like 2024-03-05): got "
                                   "'5 March' (not an ISO 8601 date)")
    with pytest.raises(ParamMismatch):  # the Python API passes a date, not its text
        from_value("2024-03-05", dt.date, api=True)

    # made with real (not string) annotations: this module's are strings, and dt is local
    Window = dataclasses.make_dataclass(
        "Window", [("start", dt.date), ("at", dt.time, dataclasses.field(default=dt.time(9)))],
        frozen=True)
    got = from_value({"start": dt.date(2024, 2, 2), "at": dt.time(8, 30)}, Window)
    assert got == Window(dt.date(2024, 2, 2), dt.time(8, 30))
    with pytest.raises(ParamMismatch) as e:
        from_text('{"start": "2 Feb"}', Window)
    assert e.value.text("w").startswith("cannot convert w.start to date")


def test_dates_have_canonical_encodings_that_keep_the_utc_offset() -> None:
    import datetime as dt

    from zenbuild.serialize import Unencodable, canonical

    paris = dt.timezone(dt.timedelta(hours=1))
    noon = dt.datetime(2024, 3, 5, 12, tzinfo=paris)
    assert canonical(dt.date(2024, 3, 5)) == b"D15:date:2024-03-05"
    assert canonical(noon) == b"D34:datetime:2024-03-05T12:00:00+01:00"
    assert canonical(noon) != canonical(noon.astimezone(dt.timezone.utc))  # the offset kept
    assert canonical(noon) != canonical(noon.replace(tzinfo=None))
    assert canonical(dt.time(8, 30, 0, 5)) == b"D20:time:08:30:00.000005"
    assert canonical(dt.timedelta(days=1, seconds=3)) == b"D15:timedelta:1,3,0"
    assert canonical(dt.date(2024, 3, 5)) != canonical("2024-03-05")

    class Day(dt.date):  # a subclass is not the date class: no encoding of its own
        pass

    @dataclasses.dataclass
    class Window:
        days: List[Any]

    with pytest.raises(Unencodable) as e:
        canonical({"w": Window([1, Day(2024, 1, 1)])})
    assert e.value.path == "['w'].days[1]"
