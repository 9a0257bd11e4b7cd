"""End-to-end: one param conversion, driven by the annotation, for --param, zenbuild.toml
[params] and pipe().run() (issue 12), and config objects (dataclasses, Enums, NamedTuples) as
step arguments and pipeline params, whose classes' code joins the fingerprint (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import Project

import zenbuild

PKG = os.path.dirname(os.path.realpath(zenbuild.__file__))

# string annotations throughout: they are resolved with typing.get_type_hints
PIPE = '''
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

from zenbuild import Output, pipeline, step
from ticker import tick


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass(frozen=True)
class Train:
    lr: float = 0.1
    epochs: int = 2
    mode: Mode = Mode.FAST


@step
def show(values: dict, out: Output) -> None:
    tick("show")
    out.write_text(repr(values))


@pipeline
def typed(cols: List[str] = ["a"], opts: Dict[str, int] = {}, maybe: Optional[int] = 1,
          lr: float = 0.5, n: int = 1, kind: Literal["a", "b"] = "a", mode: Mode = Mode.FAST,
          where: Path = Path("x"), pair: Tuple[int, str] = (0, ""), loose=3,
          train: Train = Train()):
    show(dict(cols=cols, opts=opts, maybe=maybe, lr=lr, n=n, kind=kind, mode=mode,
              where=where, pair=pair, loose=loose, train=train), Output("out.txt"))
'''

EXPECTED = ("{'cols': ['b', 'c'], 'opts': {'k': 2}, 'maybe': None, 'lr': 1.0, 'n': 7, "
            "'kind': 'b', 'mode': <Mode.SLOW: 'slow'>, 'where': PosixPath('data/in.csv'), "
            "'pair': (3, 'z'), 'loose': 4.5, "
            "'train': Train(lr=0.25, epochs=3, mode=<Mode.SLOW: 'slow'>)}")


@pytest.fixture
def typed(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n')
    project.write("pipe.py", PIPE)
    return project


def _user_error(res, *parts: str) -> None:
    assert res.returncode == 2, res
    for p in parts:
        assert p in res.stderr, (p, res)
    assert PKG not in res.stderr and "Traceback (most recent" not in res.stderr, res


def test_cli_params_are_converted_by_their_annotations(typed: Project) -> None:
    typed.run("run", "--param", "cols=b,c", "--param", 'opts={"k": 2}', "--param", "maybe=none",
              "--param", "lr=1", "--param", "n=7", "--param", "kind=b", "--param", "mode=SLOW",
              "--param", "where=data/in.csv", "--param", 'pair=[3, "z"]', "--param", "loose=4.5",
              "--param", 'train={"lr": 0.25, "epochs": 3, "mode": "slow"}')
    assert typed.read("out.txt") == EXPECTED
    assert typed.ticks() == ["show"]


def test_toml_params_convert_the_same_and_give_the_same_fingerprint(typed: Project) -> None:
    typed.write("zenbuild.toml", '''\
        pipelines = ["pipe:typed"]
        [params]
        cols = ["b", "c"]
        opts = {k = 2}
        maybe = "none"
        lr = 1
        n = 7
        kind = "b"
        mode = "slow"
        where = "data/in.csv"
        pair = [3, "z"]
        loose = 4.5
        [params.train]
        lr = 0.25
        epochs = 3
        mode = "SLOW"
        ''')
    typed.run("run")
    assert typed.read("out.txt") == EXPECTED
    assert typed.ticks() == ["show"]
    # the same values from the command line (JSON and comma forms, 1.0 for 1, the Enum by
    # value): one value, one fingerprint, so nothing runs
    res = typed.run("run", "--param", '["b", "c"]'.join(["cols=", ""]), "--param", "lr=1.0",
                    "--param", "mode=slow", "--param", "opts={k = 2}")
    assert res.cached == ["show"] and typed.ticks() == [], res


def test_a_mismatch_is_exit_2_naming_the_param_the_value_and_the_type(typed: Project) -> None:
    _user_error(typed.run("run", "--param", "n=abc", check=None),
                "--param n=abc: cannot convert to int: got 'abc'", "pipe.py:")
    _user_error(typed.run("run", "--param", "cols=[1, 2]", check=None),
                "cannot convert cols[0] to str: got 1")
    _user_error(typed.run("run", "--param", "mode=MEDIUM", check=None),
                "Mode (one of FAST, SLOW)", "'MEDIUM'")
    _user_error(typed.run("run", "--param", 'train={"lr": 0.1, "epoch": 3}', check=None),
                "it has no field 'epoch' (did you mean 'epochs'?)")
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n[params]\nlr = 0.1\nn = "abc"\n')
    _user_error(typed.run("run", check=None), "zenbuild.toml:4: params.n: cannot convert to int",
                "'abc'")
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n[params.train]\nlr = "fast"\n')
    _user_error(typed.run("run", check=None), "params.train: cannot convert train.lr to float")
    assert typed.ticks() == []


def test_unknown_names_are_errors_with_a_did_you_mean(typed: Project) -> None:
    _user_error(typed.run("run", "--param", "moed=SLOW", check=None),
                "has no parameter 'moed' (did you mean 'mode'?)")
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n[params]\nkinds = "b"\n')
    _user_error(typed.run("run", check=None), "zenbuild.toml:3: params.kinds",
                "did you mean 'kind'?")
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n\n[steps.shwo]\nenable_cache = false\n')
    _user_error(typed.run("run", check=None), "zenbuild.toml:3: [steps.shwo] names no step",
                "did you mean 'show'?")
    assert typed.ticks() == []


def test_one_params_table_serves_every_configured_pipeline(typed: Project) -> None:
    """A [params] key or [steps.NAME] section of another configured pipeline is no error,
    and finding that out reads the other pipeline's source without importing it."""
    typed.write("other.py", '''\
        from zenbuild import pipeline, step
        from ticker import tick

        tick("imported-other")

        @step
        def count(k: int) -> int:
            tick("count")
            return k

        @pipeline
        def other(k: int = 1):
            count(k)
        ''')
    typed.write("zenbuild.toml", '''\
        pipelines = ["pipe:typed", "other:other"]
        [params]
        k = 5
        n = 2
        [steps.count]
        enable_cache = false
        [steps.show]
        enable_cache = false
        ''')
    typed.run("run", "typed")
    assert typed.ticks() == ["show"]  # other.py was read, not imported
    typed.run("run", "other")
    assert typed.ticks() == ["imported-other", "count"]
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed", "other:other"]\n[params]\nkk = 5\n')
    _user_error(typed.run("run", "other", check=None), "params.kk", "did you mean 'k'?")


CONFIG_PIPE = '''
import dataclasses
import enum
from typing import NamedTuple

from zenbuild import pipeline, step
from ticker import tick


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass(frozen=True)
class Train:
    lr: float = 0.1
    epochs: int = 2


class Window(NamedTuple):
    start: int = 0
    stop: int = 10


@step
def fit(cfg):  # unannotated: the class reaches the key through the value only
    tick("fit")
    return cfg.lr * cfg.epochs


@step
def window(w) -> int:
    tick("window")
    return w.stop - w.start


@step
def speed(mode) -> str:
    tick("speed")
    return mode.value


@step
def report(score, width, how) -> str:
    tick("report")
    return f"{score}/{width}/{how}"


@pipeline
def configs(train: Train = Train(), mode: Mode = Mode.FAST, w: Window = Window()):
    report(fit(train), window(w), speed(mode))
'''


@pytest.fixture
def configs(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:configs"]\n')
    project.write("pipe.py", CONFIG_PIPE)
    return project


def test_a_dataclass_field_change_reruns_exactly_the_steps_that_take_it(configs: Project) -> None:
    configs.run("run")
    assert sorted(configs.ticks()) == ["fit", "report", "speed", "window"]
    configs.write("zenbuild.toml", 'pipelines = ["pipe:configs"]\n[params.train]\nepochs = 3\n')
    res = configs.run("run")
    assert res.executed == ["fit", "report"] and sorted(res.cached) == ["speed", "window"], res
    assert sorted(configs.ticks()) == ["fit", "report"]
    # the same value again from the command line (lr 0.1 is the default): nothing runs
    res = configs.run("run", "--param", 'train={"epochs": 3}')
    assert configs.ticks() == [] and len(res.cached) == 4, res
    # a NamedTuple field, from JSON
    res = configs.run("run", "--param", "w=[2, 10]")
    assert res.executed == ["window", "report"], res


def test_editing_a_config_class_reruns_the_steps_that_take_its_instances(configs: Project) -> None:
    configs.run("run")
    configs.ticks()
    # a method no step calls: only the class's code changed; fit takes a Train, so it reruns
    # (its value is the same, so report stays cached: early cutoff)
    configs.write("pipe.py", CONFIG_PIPE.replace(
        "    epochs: int = 2\n", "    epochs: int = 2\n\n    def total(self):\n        return 1\n"))
    res = configs.run("run")
    assert res.executed == ["fit"], res
    assert sorted(res.cached) == ["report", "speed", "window"], res


def test_an_enum_param_from_the_cli_and_from_params(configs: Project) -> None:
    configs.run("run")
    configs.ticks()
    res = configs.run("run", "--param", "mode=SLOW")  # by name
    assert res.executed == ["speed", "report"], res
    configs.write("zenbuild.toml", 'pipelines = ["pipe:configs"]\n[params]\nmode = "slow"\n')
    res = configs.run("run")  # by value, in [params]: the same member, the same fingerprint
    assert configs.ticks() == ["speed", "report"] and len(res.cached) == 4, res


API = '''
import json, sys
sys.path.insert(0, {root!r})
import pipe
from zenbuild.errors import ParamError

out = []
r = pipe.configs(train=pipe.Train(epochs=3), mode=pipe.Mode.SLOW).run()
out.append(sorted(r.executed()))
r = pipe.configs(train=pipe.Train(epochs=3), mode="slow").run()  # an Enum by value
out.append(sorted(r.executed()))
r = pipe.configs(train=pipe.Train(epochs=4), mode=pipe.Mode.SLOW).run()  # one field changed
out.append(sorted(r.executed()))
try:
    pipe.configs(mode="medium").run()
except ParamError as e:
    out.append(str(e))
print(json.dumps(out))
'''


def test_config_objects_and_the_type_check_through_pipe_run(configs: Project) -> None:
    code = API.format(root=str(configs.root))
    proc = subprocess.run([sys.executable, "-c", code], cwd=configs.root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[0] == ["fit", "report", "speed", "window"]
    assert out[1] == []  # "slow" is Mode.SLOW
    assert out[2] == ["fit", "report"]  # exactly the steps that take the config
    assert "pipeline configs, parameter mode: cannot convert to Mode" in out[3], out
    assert sorted(configs.ticks()) == ["fit", "fit", "report", "report", "speed", "window"]
    # the CLI gives the same values the same fingerprints: nothing runs
    res = configs.run("run", "--param", 'train={"epochs": 4}', "--param", "mode=SLOW")
    assert res.executed == [] and len(res.cached) == 4 and configs.ticks() == [], res


def test_one_field_of_a_table_param_changes_the_rest_kept(typed: Project) -> None:
    """--param train.lr=0.25 changes one field of [params.train] (or of the default), keeps
    the others, converts by the field's annotation and fingerprints as the whole value."""
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n[params.train]\nepochs = 3\n'
                                 'mode = "slow"\n[params.opts]\nk = 2\n')
    typed.run("run", "--param", "train.lr=0.25", "--param", "opts.j=5")
    assert "'train': Train(lr=0.25, epochs=3, mode=<Mode.SLOW: 'slow'>)" in typed.read("out.txt")
    assert "'opts': {'k': 2, 'j': 5}" in typed.read("out.txt")
    assert typed.ticks() == ["show"]
    whole = typed.run("run", "--param", 'train={"lr": 0.25, "epochs": 3, "mode": "slow"}',
                      "--param", 'opts={"k": 2, "j": 5}')
    assert whole.cached == ["show"] and typed.ticks() == []  # the same value, one fingerprint
    typed.write("zenbuild.toml", 'pipelines = ["pipe:typed"]\n')  # on the default: Train()
    typed.run("run", "--param", "train.mode=SLOW")
    assert "Train(lr=0.1, epochs=2, mode=<Mode.SLOW: 'slow'>)" in typed.read("out.txt")
    typed.run("run", "--param", 'train={"epochs": 9}', "--param", "train.lr=2")  # on the whole
    assert "Train(lr=2.0, epochs=9, mode=<Mode.FAST: 'fast'>)" in typed.read("out.txt")
    _user_error(typed.run("run", "--param", "train.lr=fast", check=None),
                "--param train.lr=fast: cannot convert to float")
    _user_error(typed.run("run", "--param", "train.epoch=1", check=None),
                "Train has no field 'epoch' (did you mean 'epochs'?)")
    _user_error(typed.run("run", "--param", "n.x=1", check=None),
                "--param n.x=1: int 1 has no fields to set")
    _user_error(typed.run("run", "--param", "trian.lr=1", check=None),
                "has no parameter 'trian'", "did you mean 'train'")
