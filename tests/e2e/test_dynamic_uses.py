"""End-to-end: code and config a step reaches dynamically (r1 findings 3, 4, 5b, 6). A module
chosen by name at run time, a function reached by getattr/import_module with what its names
point to, and files read through a loader called directly are all part of what the step's
entry verifies: an edit reruns the step, a fresh-store run agrees."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import Project, Result

ZB_TOML = 'pipelines = ["pipe:p"]\n'


def _edit_and_rerun(project: Project, edits: dict, expected_before: str,
                    expected_after: str, *args: str) -> Result:
    out = "build/out.txt"
    first = project.cli("run", *args)
    assert project.read(out).strip() == expected_before, first
    noop = project.cli("run", *args)
    assert noop.executed == [], noop  # unchanged: nothing reruns
    for rel, text in edits.items():
        project.write(rel, text)
    again = project.cli("run", *args)
    assert project.read(out).strip() == expected_after, again
    return again


def test_loader_reads_count(project: Project) -> None:
    """pkgutil.get_data and spec_from_file_location + exec_module read through importlib's
    loader, not through an import: the files are the step's reads."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("mypkg/__init__.py", "")
    project.write("mypkg/vocab.txt", "a b c")
    project.write("conf/exp.py", "LR = 0.1\n")
    project.write("pipe.py", '''
        import importlib.util, pkgutil
        from zenbuild import step, pipeline, Output

        @step
        def vocab() -> int:
            return len(pkgutil.get_data("mypkg", "vocab.txt").decode().split())

        @step
        def load_cfg(path: str = "conf/exp.py") -> float:
            spec = importlib.util.spec_from_file_location("exp_cfg", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod.LR

        @step
        def report(n: int, lr: float, out: Output) -> None:
            out.write_text(f"{n} {lr}")

        @pipeline
        def p():
            report(vocab(), load_cfg(), Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"mypkg/vocab.txt": "a b c d e"}, "3 0.1", "5 0.1")
    project.write("conf/exp.py", "LR = 0.2\n")
    r = project.cli("run")
    assert project.read("build/out.txt") == "5 0.2", r
    assert r.executed == ["load_cfg", "report"], r


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_config_module_chosen_by_name(project: Project, jobs: list) -> None:
    """A constants-only module imported by a computed name, one read through sys.modules (already
    imported by the pipeline module), and a Hydra-style _target_ resolved from a JSON file."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("configs/__init__.py", "")
    project.write("configs/base.py", "LR = 0.1\n")
    project.write("h.py", "K = 1\n")
    project.write("models.py", "SCALE = 2\n\ndef build():\n    return SCALE * 10\n")
    project.write("conf.json", '{"_target_": "models.build"}')
    project.write("pipe.py", '''
        import importlib, json, sys
        import h  # already in sys.modules when the step runs
        from zenbuild import step, pipeline, Output

        @step
        def lr(exp: str = "base") -> float:
            return importlib.import_module(f"configs.{exp}").LR

        @step
        def k() -> int:
            return sys.modules["h"].K

        @step
        def target() -> int:
            with open("conf.json") as f:
                path = json.load(f)["_target_"]
            mod, _, name = path.rpartition(".")
            return getattr(importlib.import_module(mod), name)()

        @step
        def show(a: float, b: int, c: int, out: Output) -> None:
            out.write_text(f"{a} {b} {c}")

        @pipeline
        def p():
            show(lr(), k(), target(), Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"configs/base.py": "LR = 0.5\n"}, "0.1 1 20", "0.5 1 20", *jobs)
    project.write("h.py", "K = 7\n")
    r = project.cli("run", *jobs)
    assert project.read("build/out.txt") == "0.5 7 20", r
    assert sorted(r.executed) == ["k", "show"], r
    project.write("models.py", "SCALE = 3\n\ndef build():\n    return SCALE * 10\n")
    r = project.cli("run", *jobs)
    assert project.read("build/out.txt") == "0.5 7 30", r
    assert sorted(r.executed) == ["show", "target"], r


def test_already_imported_module_used_by_a_second_step(project: Project) -> None:
    """The first step imports the config module; the second finds it in sys.modules (no import
    event): both depend on it."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("configs/__init__.py", "")
    project.write("configs/exp.py", "LR = 0.1\n")
    project.write("pipe.py", '''
        import importlib
        from zenbuild import step, pipeline, Output

        @step
        def a(exp: str = "exp") -> int:  # imports it; its value does not depend on LR
            return len(importlib.import_module(f"configs.{exp}").__name__)

        @step
        def b(x: int, exp: str = "exp") -> float:  # runs after a (early cutoff keeps x)
            return importlib.import_module(f"configs.{exp}").LR * 2

        @step
        def show(x: int, y: float, out: Output) -> None:
            out.write_text(f"{x} {y}")

        @pipeline
        def p():
            x = a()
            show(x, b(x), Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"configs/exp.py": "LR = 0.25\n"}, "11 0.2", "11 0.5")


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_what_a_dynamically_reached_function_refers_to(project: Project, jobs: list) -> None:
    """getattr(ops, op) reaching a function that reads a constant imported from another module;
    a plugin's library alias; a plugin re-binding its exported name; a plugin class whose base
    is swapped; globals()[name] dispatch in a helper module."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("consts.py", "SCALE = 2\n")
    project.write("ops.py", "from consts import SCALE\n\ndef double(x):\n    return x * SCALE\n")
    project.write("plugins/__init__.py", "")
    project.write("plugins/beta.py", "from statistics import mean as agg\n\n"
                  "def run(xs):\n    return agg(xs)\n")
    project.write("impl.py", "def v1():\n    return 1\n\ndef v2():\n    return 2\n")
    project.write("plugins/gamma.py", "from impl import v1 as make\n")
    project.write("bases.py", "class B1:\n    def f(self):\n        return 'b1'\n\n"
                  "class B2:\n    def f(self):\n        return 'b2'\n")
    project.write("plugins/delta.py", "from bases import B1 as A\n\nclass P(A):\n    pass\n")
    project.write("disp.py", "from consts import SCALE\n\ndef tri(x):\n    return x * SCALE + 1\n\n"
                  "def call(name, x):\n    return globals()[name](x)\n")
    project.write("pipe.py", '''
        import importlib
        import ops
        import disp
        from zenbuild import step, pipeline, Output

        @step
        def by_getattr(op: str = "double") -> int:
            return getattr(ops, op)(5)

        @step
        def lib_alias(name: str = "beta") -> float:
            return importlib.import_module(f"plugins.{name}").run([1, 2, 9])

        @step
        def rebound(name: str = "gamma") -> int:
            return importlib.import_module(f"plugins.{name}").make()

        @step
        def base(name: str = "delta") -> str:
            return importlib.import_module(f"plugins.{name}").P().f()

        @step
        def by_globals() -> int:
            return disp.call("tri", 5)

        @step
        def show(a: int, b: float, c: int, d: str, e: int, out: Output) -> None:
            out.write_text(f"{a} {b} {c} {d} {e}")

        @pipeline
        def p():
            show(by_getattr(), lib_alias(), rebound(), base(), by_globals(),
                 Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"consts.py": "SCALE = 3\n"}, "10 4 1 b1 11", "15 4 1 b1 16",
                    *jobs)
    project.write("plugins/beta.py", "from statistics import median as agg\n\n"
                  "def run(xs):\n    return agg(xs)\n")
    project.write("plugins/gamma.py", "from impl import v2 as make\n")
    project.write("plugins/delta.py", "from bases import B2 as A\n\nclass P(A):\n    pass\n")
    r = project.cli("run", *jobs)
    assert project.read("build/out.txt") == "15 2 2 b2 16", r
    assert sorted(r.executed) == ["base", "lib_alias", "rebound", "show"], r
    r = project.cli("run", *jobs)  # the closures recomputed on a no-op are the recorded ones
    assert r.executed == [], r


def test_a_module_the_static_key_reaches_is_left_to_it(project: Project) -> None:
    """`import cfg; cfg.LR` touches the module object too, but the static key already has
    cfg.LR: an edit elsewhere in cfg.py reruns nothing (the modules record leaves it out)."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("cfg.py", "LR = 0.1\n\ndef other():\n    return 1\n")
    project.write("pipe.py", '''
        import cfg
        from zenbuild import step, pipeline, Output

        @step
        def lr(out: Output) -> None:
            out.write_text(str(cfg.LR))

        @pipeline
        def p():
            lr(Output("build/out.txt"))
        ''')
    r = _edit_and_rerun(project, {"cfg.py": "LR = 0.1\n\ndef other():\n    return 2\n"},
                        "0.1", "0.1")
    assert r.executed == [], r
    r = project.cli("explain", "lr")
    assert "modules it used" not in r.stdout, r
    project.write("cfg.py", "LR = 0.3\n\ndef other():\n    return 2\n")
    r = project.cli("run")
    assert r.executed == ["lr"] and project.read("build/out.txt") == "0.3", r


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_a_method_reached_at_run_time_is_checked_with_its_class(project: Project,
                                                                 jobs: list) -> None:
    """r2 finding 3: a method the step never names (a pandas accessor's, a class chosen by a
    computed name, Hydra-style) reads a class constant through self: the class's own, its
    base's, or that of the subclass in the same module that self is. Each edit reruns the step
    that reads it; an edit elsewhere in the file (a comment above the class) reruns nothing."""
    pytest.importorskip("pandas")
    project.write("zenbuild.toml", ZB_TOML)
    project.write("base.py", "class Unit:\n    UNIT = 1\n")
    project.write("geo.py", '''
        import pandas as pd
        from base import Unit


        @pd.api.extensions.register_dataframe_accessor("geo")
        class Geo(Unit):
            FACTOR = 2

            def __init__(self, df):
                self._df = df

            def area(self):
                return int(self._df["w"].sum()) * self.FACTOR * self.UNIT
        ''')
    project.write("models.py", '''
        class Base:
            SCALE = 2

            def predict(self, x):
                return x * self.SCALE


        class Sub(Base):
            SCALE = 3


        def helper():
            return 0
        ''')
    project.write("pipe.py", '''
        import importlib
        import pandas as pd
        import geo  # registers the accessor
        import models
        from zenbuild import step, pipeline, Output

        @step
        def area() -> int:
            return pd.DataFrame({"w": [1, 2]}).geo.area()

        @step
        def target(path: str = "models.Sub") -> int:
            mod, _, name = path.rpartition(".")  # models.helper: the module is reached statically
            return getattr(importlib.import_module(mod), name)().predict(3) + models.helper()

        @step
        def show(a: int, b: int, out: Output) -> None:
            out.write_text(f"{a} {b}")

        @pipeline
        def p():
            show(area(), target(), Output("build/out.txt"))
        ''')
    geo = project.read("geo.py")
    models = project.read("models.py")
    _edit_and_rerun(project, {"geo.py": geo.replace("FACTOR = 2", "FACTOR = 10")}, "6 9",
                    "30 9", *jobs)
    r = project.cli("explain", "area")
    assert "up to date" in r.stdout and "geo.py:Geo.area" in r.stdout, r  # what it ran
    project.write("base.py", "class Unit:\n    UNIT = 2\n")
    r = project.cli("explain", "area")
    assert "code run by the step, not seen statically: geo.py:Geo.area changed" in r.stdout, r
    r = project.cli("run", *jobs)
    assert project.read("build/out.txt") == "60 9" and sorted(r.executed) == ["area", "show"], r
    project.write("models.py", models.replace("SCALE = 3", "SCALE = 5"))
    r = project.cli("run", *jobs)
    assert project.read("build/out.txt") == "60 15", r
    assert sorted(r.executed) == ["show", "target"], r
    project.write("geo.py", "# a comment moves every line down\n"
                  + geo.replace("FACTOR = 2", "FACTOR = 10"))
    project.write("models.py", "# a comment\n" + models.replace("SCALE = 3", "SCALE = 5"))
    r = project.cli("run", *jobs)
    assert r.executed == [], r


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_code_no_name_reaches_is_checked_with_the_globals_it_reads(project: Project,
                                                                   jobs: list) -> None:
    """r2 finding 7: a plugin reached by a computed name exposes functions no name path reaches
    (a nested def made by a factory, a lambda in a dict, a method of a class made inside a
    function, a function a decorator registered and replaced by None, a nested def inside a
    method) and an lru_cache'd one; each reads SCALE imported from consts.py. The record is
    checked in a process where the nested functions were never made: an edit to SCALE reruns
    every step; a new constant in consts.py or a comment in the plugin reruns none."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("consts.py", "SCALE = 2\n")
    project.write("plugins/__init__.py", "")
    plugin = textwrap.dedent('''
        import functools
        from consts import SCALE

        REG = {}


        def register(fn):
            REG[fn.__name__] = fn


        def make(offset):
            def inner(x):
                return x * SCALE + offset
            return inner


        def make_cls():
            class Model:
                def predict(self, x):
                    return x * SCALE
            return Model


        F = make(0)
        OPS = {"f": lambda x: x * SCALE}
        Model = make_cls()


        @register
        def hidden(x):
            return x * SCALE


        @functools.lru_cache(maxsize=None)
        def cached(x):
            return x * SCALE


        class Tab:
            def run(self, x):
                def twice(y):
                    return y * SCALE
                return twice(x)
        ''')
    project.write("plugins/lin.py", plugin)
    project.write("pipe.py", '''
        import importlib
        import plugins.lin  # imported up front: no step imports consts.py
        from zenbuild import step, pipeline, Output

        def plugin(name):
            return importlib.import_module(f"plugins.{name}")

        @step
        def nested(name: str = "lin") -> int:
            return plugin(name).F(3)

        @step
        def lam(name: str = "lin") -> int:
            return plugin(name).OPS["f"](3)

        @step
        def made(name: str = "lin") -> int:
            return plugin(name).Model().predict(3)

        @step
        def registered(name: str = "lin") -> int:
            return plugin(name).REG["hidden"](3)

        @step
        def cached(name: str = "lin") -> int:
            return plugin(name).cached(3)

        @step
        def method(name: str = "lin") -> int:
            return plugin(name).Tab().run(3)

        @step
        def show(a: int, b: int, c: int, d: int, e: int, f: int, out: Output) -> None:
            out.write_text(f"{a} {b} {c} {d} {e} {f}")

        @pipeline
        def p():
            show(nested(), lam(), made(), registered(), cached(), method(),
                 Output("build/out.txt"))
        ''')
    r = _edit_and_rerun(project, {"consts.py": "SCALE = 10\n"}, "6 6 6 6 6 6",
                        "30 30 30 30 30 30", *jobs)
    assert sorted(r.executed) == ["cached", "lam", "made", "method", "nested", "registered",
                                  "show"], r
    project.write("consts.py", "SCALE = 10\nOTHER = 1\n")
    project.write("plugins/lin.py", "# a comment moves every line down\n" + plugin)
    r = project.cli("run", *jobs)
    assert r.executed == [], r
    r = project.cli("run", *jobs)
    assert r.executed == [], r


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_a_module_run_by_runpy_is_the_steps(project: Project, jobs: list) -> None:
    """runpy.run_module runs a project module in a module of its own, never in sys.modules,
    and reads its source through the import machinery: an edit of it left the step cached
    (runpy.run_path, a plain read, was seen)."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("jobs/__init__.py", "")
    project.write("jobs/job.py", "THRESH = 1\nresult = 10 * THRESH\n")
    project.write("pipe.py", '''
        import runpy
        from zenbuild import step, pipeline, Output

        @step
        def s(out: Output) -> None:
            out.write_text(str(runpy.run_module("jobs.job")["result"]))

        @pipeline
        def p():
            s(Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"jobs/job.py": "THRESH = 2\nresult = 10 * THRESH\n"}, "10", "20",
                    *jobs)


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_what_a_module_used_by_name_read_when_imported_is_the_steps(project: Project,
                                                                    jobs: list) -> None:
    """A plugin module the pipeline imports (to register it) and a step then uses by name: its
    top level read a JSON file and a variable when it was imported, before the step ran. The
    used module's record held its source only, so an edit of the file or a new value of the
    variable kept the step cached with the old result."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("plugins/__init__.py", "")
    project.write("plugins/a.py", '''
        import json, os
        from pathlib import Path
        W = json.loads((Path(__file__).parent / "a.json").read_text())["w"]
        V = int(os.environ.get("PLUG_V", "1"))
        ''')
    project.write("plugins/a.json", '{"w": 1}')
    project.write("pipe.py", '''
        import importlib
        import plugins.a  # registered by the pipeline module, used by name below
        from zenbuild import step, pipeline, Output

        @step
        def weight(name: str = "a") -> str:
            mod = importlib.import_module("plugins." + name)
            return f"{mod.W} {mod.V}"

        @step
        def other() -> int:
            return 1

        @step
        def show(w: str, o: int, out: Output) -> None:
            out.write_text(w)

        @pipeline
        def p():
            show(weight(), other(), Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"plugins/a.json": '{"w": 2}'}, "1 1", "2 1", *jobs)
    r = project.cli("run", *jobs, env={"PLUG_V": "5"})
    assert project.read("build/out.txt") == "2 5", r
    assert sorted(r.executed) == ["show", "weight"], r
    r = project.cli("run", *jobs, env={"PLUG_V": "5"})
    assert r.executed == [], r


def test_a_module_used_by_name_is_checked_with_the_modules_its_globals_come_from(
        project: Project) -> None:
    """plugins/a.py builds CFG with a helper from plugins/common.py, which read common.json
    when it was imported: the used module's record held a.py's own source and reads only, so
    an edit of common.json or of common.py kept the step cached."""
    project.write("zenbuild.toml", ZB_TOML)
    project.write("plugins/__init__.py", "")
    project.write("plugins/common.py", '''
        import json
        from pathlib import Path
        BASE = json.loads((Path(__file__).parent / "common.json").read_text())
        SCALE = 10

        def make_cfg():
            return {"lr": BASE["lr"], "scale": SCALE}
        ''')
    project.write("plugins/common.json", '{"lr": 1}')
    project.write("plugins/a.py", "from plugins.common import make_cfg\nCFG = make_cfg()\n")
    project.write("unrelated.py", "K = 1\n")
    project.write("pipe.py", '''
        import importlib
        import plugins.a
        import unrelated
        from zenbuild import step, pipeline, Output

        @step
        def cfg(name: str = "a") -> str:
            return repr(importlib.import_module("plugins." + name).CFG)

        @step
        def show(c: str, out: Output) -> None:
            out.write_text(c)

        @pipeline
        def p():
            show(cfg(), Output("build/out.txt"))
        ''')
    _edit_and_rerun(project, {"plugins/common.json": '{"lr": 2}'},
                    "{'lr': 1, 'scale': 10}", "{'lr': 2, 'scale': 10}")
    project.write("plugins/common.py", (project.root / "plugins/common.py").read_text()
                  .replace("SCALE = 10", "SCALE = 20"))
    r = project.cli("run")
    assert project.read("build/out.txt") == "{'lr': 2, 'scale': 20}", r
    project.write("unrelated.py", "K = 2\n")  # no global of plugins.a comes from it
    r = project.cli("run")
    assert r.executed == [], r
