"""End-to-end: what a step reads that its code does not name (r2 findings 5, 8, 9). A
constant picked by a computed name from the step's own module (or a helper's), a name inside
an evaluated string, a default evaluated from the environment when a module was imported:
the change reruns the step, with the value a fresh store gives; an unrelated edit does not."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import pytest

from tests.conftest import Project, Result

ZB_TOML = 'pipelines = ["pipe:p"]\n'


def value(r: Result) -> str:
    found = re.findall(r"^(?:\[show\] )?VALUE (.*)$", r.output, re.M)
    assert found, r
    return found[-1]


def run(project: Project, *args: str, env: Optional[Dict[str, str]] = None
        ) -> tuple[str, List[str]]:
    r = project.cli("run", *args, env=env)
    return value(r), sorted(set(project.ticks()) - {"show"})


SHOW = '''
        @no_cache
        @step
        def show(*v) -> None:
            print("VALUE", v)
        '''  # indented as the pipe.py texts it joins


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_a_constant_picked_by_a_computed_name_from_the_steps_module(project: Project,
                                                                     jobs: list) -> None:
    project.write("zenbuild.toml", ZB_TOML)
    pipe = '''
        import sys
        from ticker import tick
        from zenbuild import step, pipeline, no_cache
        LR_SMALL = 0.1
        LR_BIG = 1.0

        def unrelated():
            return 1

        @step
        def a(size: str = "small") -> float:
            tick("a")
            return globals()[f"LR_{size.upper()}"]

        @step
        def b(size: str = "small") -> float:
            tick("b")
            return getattr(sys.modules[__name__], f"LR_{size.upper()}")

        @step
        def c(size: str = "small") -> float:
            tick("c")
            return vars(sys.modules[__name__])["LR_" + size.upper()]

        @step
        def named() -> float:
            tick("named")
            return LR_BIG
        ''' + SHOW + '''
        @pipeline
        def p():
            show(a(), b(), c(), named())
        '''
    project.write("pipe.py", pipe)
    assert run(project, *jobs) == ("(0.1, 0.1, 0.1, 1.0)", ["a", "b", "c", "named"])
    assert run(project, *jobs) == ("(0.1, 0.1, 0.1, 1.0)", [])
    project.write("pipe.py", pipe.replace("LR_SMALL = 0.1", "LR_SMALL = 0.5"))
    assert run(project, *jobs) == ("(0.5, 0.5, 0.5, 1.0)", ["a", "b", "c"])
    # a function of the module is not a constant: its edit reruns nothing (the call trace
    # would see it, were it called)
    project.write("pipe.py", pipe.replace("LR_SMALL = 0.1", "LR_SMALL = 0.5")
                  .replace("return 1", "return 2"))
    assert run(project, *jobs) == ("(0.5, 0.5, 0.5, 1.0)", [])
    r = project.cli("explain", "a")
    assert "up to date" in r.output, r


def test_a_helper_picks_a_constant_of_its_own_module_by_name(project: Project) -> None:
    project.write("zenbuild.toml", ZB_TOML)
    lrs = '''
        LR_SMALL = 0.1
        LR_BIG = 1.0
        def lr_for(size):
            return globals()[f"LR_{size.upper()}"]
        '''
    project.write("lrs.py", lrs)
    project.write("pipe.py", '''
        from ticker import tick
        from lrs import lr_for
        from zenbuild import step, pipeline, no_cache
        @step
        def a(size: str = "small") -> float:
            tick("a")
            return lr_for(size)
        ''' + SHOW + '''
        @pipeline
        def p():
            show(a())
        ''')
    assert run(project) == ("(0.1,)", ["a"])
    project.write("lrs.py", lrs.replace("LR_SMALL = 0.1", "LR_SMALL = 0.5"))
    assert run(project) == ("(0.5,)", ["a"])
    r = project.cli("explain", "a")
    assert "up to date" in r.output, r
    project.write("lrs.py", lrs.replace("LR_SMALL = 0.1", "LR_SMALL = 0.7"))
    r = project.cli("explain", "a")
    assert "constant lrs.LR_SMALL (lrs.py) changed" in r.output, r


def test_names_in_an_evaluated_formula(project: Project) -> None:
    project.write("zenbuild.toml", ZB_TOML)
    project.write("consts.py", "SCALE = 2\n")
    pipe = '''
        from ticker import tick
        from consts import SCALE
        from zenbuild import step, pipeline, no_cache
        OFFSET = 1
        FORMULA = "x * SCALE + OFFSET"
        OTHER = 5

        @step
        def compute(x: int = 5) -> int:
            tick("compute")
            return eval(FORMULA, globals(), {"x": x})

        @step
        def literal(x: int = 5) -> int:
            tick("literal")
            return eval("x * SCALE", {"SCALE": SCALE}, {"x": x})
        ''' + SHOW + '''
        @pipeline
        def p():
            show(compute(), literal())
        '''
    project.write("pipe.py", pipe)
    assert run(project) == ("(11, 10)", ["compute", "literal"])
    project.write("pipe.py", pipe.replace("OFFSET = 1", "OFFSET = 100"))
    assert run(project) == ("(110, 10)", ["compute"])
    project.write("consts.py", "SCALE = 3\n")
    assert run(project) == ("(115, 15)", ["compute", "literal"])


def test_pandas_query_and_eval_at_names(project: Project) -> None:
    pytest.importorskip("pandas")
    project.write("zenbuild.toml", ZB_TOML)
    pipe = '''
        import pandas as pd
        from ticker import tick
        from zenbuild import step, pipeline, no_cache
        THRESH = 2
        K = 10
        UNRELATED = 0

        @step
        def filt() -> int:
            tick("filt")
            df = pd.DataFrame({"a": [1, 2, 3, 4]})
            return int(df.query("a > @THRESH")["a"].sum())

        @step
        def scaled() -> int:
            tick("scaled")
            df = pd.DataFrame({"a": [1, 2]})
            return int(df.eval("@K * a").sum())
        ''' + SHOW + '''
        @pipeline
        def p():
            show(filt(), scaled())
        '''
    project.write("pipe.py", pipe)
    assert run(project) == ("(7, 30)", ["filt", "scaled"])
    project.write("pipe.py", pipe.replace("THRESH = 2", "THRESH = 0"))
    assert run(project) == ("(10, 30)", ["filt"])
    project.write("pipe.py", pipe.replace("THRESH = 2", "THRESH = 0").replace("K = 10", "K = 1"))
    assert run(project) == ("(10, 3)", ["scaled"])
    project.write("pipe.py", pipe.replace("THRESH = 2", "THRESH = 0").replace("K = 10", "K = 1")
                  .replace("UNRELATED = 0", "UNRELATED = 1"))
    assert run(project) == ("(10, 3)", [])


def test_defaults_evaluated_from_the_environment_at_import(project: Project) -> None:
    pytest.importorskip("pydantic")
    pytest.importorskip("attrs")
    project.write("zenbuild.toml", ZB_TOML)
    project.write("dev.py", '''
        import enum
        import os
        import attrs
        import pydantic

        def device(name=os.environ.get("DEVICE", "cpu")):
            return name

        def literal(name="cpu", n=1):
            return name

        class Trainer:
            def __init__(self, workers=int(os.getenv("N_WORKERS", "1"))):
                self.workers = workers

        class PSettings(pydantic.BaseModel):
            device: str = os.getenv("DEVICE", "cpu")

        @attrs.define
        class ASettings:
            device: str = attrs.field(default=os.getenv("DEVICE", "cpu"))

        class Dev(enum.Enum):
            DEFAULT = os.getenv("DEVICE", "cpu")
            CPU = "cpu-x"

            def label(self):
                return str(self.value)
        ''')
    project.write("pipe.py", '''
        import os
        import dev
        from ticker import tick
        from zenbuild import step, pipeline, no_cache

        @step
        def f() -> str:
            tick("f")
            return dev.device()

        @step
        def m() -> int:
            tick("m")
            return dev.Trainer().workers

        @step
        def pyd() -> str:
            tick("pyd")
            return dev.PSettings().device

        @step
        def att() -> str:
            tick("att")
            return dev.ASettings().device

        @step
        def en() -> str:
            tick("en")
            return dev.Dev.DEFAULT.label()

        @step
        def lit() -> str:
            tick("lit")
            return dev.literal()

        @step
        def own(d: str = os.getenv("DEVICE", "cpu")) -> str:
            tick("own")
            return d
        ''' + SHOW + '''
        @pipeline
        def p():
            show(f(), m(), pyd(), att(), en(), lit(), own())
        ''')
    everything = ["att", "en", "f", "lit", "m", "own", "pyd"]
    base = {"DEVICE": "", "N_WORKERS": "1"}
    cpu = {"DEVICE": "cpu", "N_WORKERS": "1"}
    assert run(project, env=cpu) == (
        "('cpu', 1, 'cpu', 'cpu', 'cpu', 'cpu', 'cpu')", everything)
    assert run(project, env=cpu)[1] == []
    cuda = {"DEVICE": "cuda", "N_WORKERS": "1"}
    assert run(project, env=cuda) == (
        "('cuda', 1, 'cuda', 'cuda', 'cuda', 'cpu', 'cuda')", ["att", "en", "f", "own", "pyd"])
    assert run(project, env={"DEVICE": "cuda", "N_WORKERS": "8"}) == (
        "('cuda', 8, 'cuda', 'cuda', 'cuda', 'cpu', 'cuda')", ["m"])
    r = project.cli("explain", "f", env=base)
    assert "default dev.device.<default name> (dev.py) changed" in r.output, r
    assert run(project, env=cpu)[1] == []  # back: every entry is in the store
