"""End-to-end, issue 10: for each shape of code a step reaches, an edit through the real CLI
reruns exactly the step that depends on it (and its consumer, since the value changes), and
the new value is produced; a no-op run executes nothing."""

from __future__ import annotations

import textwrap
from typing import Dict, Optional, Tuple

import pytest

PIPE = '''
from zenbuild import step, pipeline, Output
from ticker import tick
{imports}


@step
def compute() -> str:
    tick("compute")
    return repr({expr})


@step
def other() -> int:
    tick("other")
    return 1


@step
def report(v: str, o: int, out: Output) -> None:
    tick("report")
    out.write_text(v)


@pipeline
def p():
    report(compute(), other(), Output("build/out.txt"))
'''


def body_step(body: str) -> str:
    """A pipeline whose compute step runs ``body`` (which must end with `return ...`)."""
    return PIPE.replace(
        '    return repr({expr})\n',
        textwrap.indent(textwrap.dedent(body), "    "),
    ).replace("{imports}", "")


def check(
    project,
    files: Dict[str, str],
    edit: Tuple[str, str, str],
    before: str,
    after: str,
    env: Optional[Dict[str, str]] = None,
) -> str:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    for rel, text in files.items():
        project.write(rel, text)
    r = project.run("run", env=env)
    assert sorted(r.executed) == ["compute", "other", "report"], r
    assert project.read("build/out.txt") == before
    r = project.run("run", env=env)
    assert r.executed == [] and sorted(r.cached) == ["compute", "other", "report"], r
    rel, old, new = edit
    path = project.root / rel  # an absolute rel stays itself
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new))
    project.ticks()
    r = project.run("run", env=env)
    assert r.executed == ["compute", "report"] and r.cached == ["other"], r
    assert project.ticks() == ["compute", "report"]
    assert project.read("build/out.txt") == after
    return r.output


def test_import_inside_a_step_body(project):
    files = {
        "proj/__init__.py": "",
        "proj/features.py": "from .scaling import scale\n\n\ndef add_features(x):\n    return scale(x) + 1\n",
        "proj/scaling.py": "def scale(x):\n    return x * 2\n",
        "pipe.py": body_step('''
            from proj.features import add_features
            import proj.scaling
            return repr(add_features(1) + proj.scaling.scale(1))
        '''),
    }
    check(project, files, ("proj/scaling.py", "x * 2", "x * 3"), "5", "7")


@pytest.mark.parametrize(
    "edit,after",
    [
        (("helpers.py", "return x + 1", "return x + 2"), "(2, 8, 20, 30, 1.25)"),  # lru_cache
        (("helpers.py", "n=2", "n=3"), "(1, 16, 20, 30, 1.25)"),  # partial keywords
        (("helpers.py", "return x * 10", "return x * 11"), "(1, 8, 22, 33, 1.25)"),  # dispatch
        (("helpers.py", '"lr": 0.25', '"lr": 0.5'), "(1, 8, 20, 30, 1.5)"),  # dict + lambda
    ],
    ids=["lru_cache", "partial", "dispatch", "dict-with-lambda"],
)
def test_helpers_behind_wrappers_and_containers(project, edit, after):
    files = {
        "helpers.py": '''
import functools


@functools.lru_cache(maxsize=None)
def bump(x):
    return x + 1


def _power(x, n):
    return x ** n


CUBE = functools.partial(_power, n=2)


def times(x):
    return x * 10


OPS = {"times": times}
STEPS = [times]
CONF = {"lr": 0.25, "f": lambda v: v + 1}
''',
        "pipe.py": body_step('''
            from helpers import bump, CUBE, OPS, STEPS, CONF
            return repr((bump(0), CUBE(2) * 2, OPS["times"](2), STEPS[0](3), CONF["f"](CONF["lr"])))
        '''),
    }
    before = "(1, 8, 20, 30, 1.25)"
    check(project, files, edit, before, after)


def test_namespace_package_by_dotted_path(project):
    files = {
        "lib/cleaning.py": "def clean(x):\n    return x.strip()\n",
        "pipe.py": body_step("return lib.cleaning.clean('  A ')\n").replace(
            "from ticker import tick", "from ticker import tick\nimport lib.cleaning"),
    }
    check(project, files, ("lib/cleaning.py", "x.strip()", "x.strip().lower()"), "A", "a")


@pytest.mark.parametrize(
    "files,edit,before,after",
    [
        ({"pipe.py": PIPE.format(imports="from statistics import mean as agg", expr="agg([1, 2, 9])")},
         ("pipe.py", "mean as agg", "median as agg"), "4", "2"),
        ({"pipe.py": PIPE.format(imports="from numpy import mean as agg", expr="float(agg([1, 2, 9]))")},
         ("pipe.py", "mean as agg", "median as agg"), "4.0", "2.0"),
        ({"conf.py": "import operator\nCOMBINE = operator.add\n",
          "pipe.py": PIPE.format(imports="import conf", expr="conf.COMBINE(6, 2)")},
         ("conf.py", "operator.add", "operator.sub"), "8", "4"),
    ],
    ids=["stdlib-alias", "numpy-alias", "config-module"],
)
def test_names_bound_to_library_objects(project, files, edit, before, after):
    out = check(project, files, edit, before, after)
    assert "has started" in out


def test_module_level_callable_objects(project):
    files = {
        "helpers.py": '''
import numpy as np


def _clip(v):
    return min(v, 5)


CLIP = np.vectorize(_clip)


class Normalizer:
    def __init__(self, factor):
        self.factor = factor

    def transform(self, v):
        return v * self.factor


NORMALIZE = Normalizer(0.5).transform
''',
        "pipe.py": PIPE.format(imports="from helpers import CLIP, NORMALIZE",
                               expr="(int(CLIP(9)), NORMALIZE(4))"),
    }
    check(project, files, ("helpers.py", "min(v, 5)", "min(v, 6)"), "(5, 2.0)", "(6, 2.0)")


def test_module_level_callable_object_bound_method_edit(project):
    files = {
        "helpers.py": '''
class Normalizer:
    def __init__(self, factor):
        self.factor = factor

    def transform(self, v):
        return v * self.factor


NORMALIZE = Normalizer(0.5).transform
''',
        "pipe.py": PIPE.format(imports="from helpers import NORMALIZE", expr="NORMALIZE(4)"),
    }
    check(project, files, ("helpers.py", "v * self.factor", "v * self.factor + 1"), "2.0", "3.0")


def test_classes_made_without_a_class_statement(project):
    files = {
        "shapes.py": '''
import enum
from collections import namedtuple

Point = namedtuple("Point", "x y", defaults=(0, 1))
Split = enum.Enum("Split", {"TRAIN": 0.8, "TEST": 0.2})
''',
        "pipe.py": PIPE.format(imports="from shapes import Point, Split",
                               expr="(Point().y, Split.TRAIN.value)"),
    }
    check(project, files, ("shapes.py", "defaults=(0, 1)", "defaults=(0, 2)"), "(1, 0.8)", "(2, 0.8)")


def test_class_defined_twice_uses_the_binding_in_use(project):
    files = {
        "engine.py": '''
FAST = True
if not FAST:
    class Engine:
        def run(self, v):
            return v - 1
else:
    class Engine:
        def run(self, v):
            return v + 1
''',
        "pipe.py": PIPE.format(imports="from engine import Engine", expr="Engine().run(1)"),
    }
    check(project, files, ("engine.py", "return v + 1", "return v + 2"), "2", "3")


def test_code_outside_the_root_on_pythonpath(project, tmp_path):
    common = tmp_path / "common"
    common.mkdir()
    (common / "shared_norm.py").write_text("def norm(x):\n    return x / 2\n")
    files = {"pipe.py": PIPE.format(imports="from shared_norm import norm", expr="norm(8)")}
    out = check(project, files, (str(common / "shared_norm.py"), "x / 2", "x / 4"), "4.0", "2.0",
                env={"PYTHONPATH": str(common)})
    assert "outside the project root" in out


def test_literal_import_module_plugin(project):
    files = {
        "plugins/__init__.py": "",
        "plugins/x.py": "def run(v):\n    return v + 1\n",
        "pipe.py": body_step('''
            import importlib
            mod = importlib.import_module("plugins.x")
            return repr(mod.run(1))
        '''),
    }
    check(project, files, ("plugins/x.py", "v + 1", "v + 5"), "2", "6")


DATACLASS_CONF = '''
from dataclasses import dataclass, field
from typing import Optional

from kinds import Num, Optim


@dataclass
class Cfg:
    timeout: float = field(default=1.5, metadata={"scale": 1000})
    optim: Optional[Optim] = None
    x: Num = 3
'''


@pytest.mark.parametrize(
    "edit,after",
    [
        (("conf.py", '"scale": 1000', '"scale": 60'), "(90.0, 'adam', 'int')"),
        (("kinds.py", 'FAST = "adam"', 'FAST = "adamw"'), "(1500.0, 'adamw', 'int')"),
        (("kinds.py", "Num = int", "Num = float"), "(1500.0, 'adam', 'float')"),
    ],
    ids=["field-metadata", "enum-in-annotation", "alias-in-annotation"],
)
def test_a_dataclass_without_methods_of_its_own_is_keyed_by_its_class_statement(
        project, edit, after):
    """The __repr__ dataclasses generate is wrapped (functools.wraps): it carries the
    qualname Cfg.__repr__ and code in dataclasses.py, so the class statement was looked for
    there, never found, and its field metadata and the names in its annotations were not in
    the key."""
    files = {
        "kinds.py": 'import enum\n\nNum = int\n\n\nclass Optim(enum.Enum):\n'
                    '    FAST = "adam"\n',
        "conf.py": DATACLASS_CONF,
        "pipe.py": body_step('''
            import dataclasses
            import typing
            from conf import Cfg
            f = dataclasses.fields(Cfg)[0]
            hints = typing.get_type_hints(Cfg)  # the classes the annotations name
            optim = typing.get_args(hints["optim"])[0]
            return repr((f.default * f.metadata["scale"], optim.FAST.value,
                         hints["x"].__name__))
        '''),
    }
    check(project, files, edit, "(1500.0, 'adam', 'int')", after)


REGISTRIES = '''
class Registry:
    """mmcv/mmdet style: classes kept in a dict attribute of an object."""

    def __init__(self, name):
        self.name = name
        self._modules = {}

    def register(self, cls):
        self._modules[cls.__name__] = cls
        return cls

    def items(self):
        return self._modules.items()


MODELS = Registry("models")


def register(cls):
    """A registry kept on a function's attribute."""
    register.items[cls.__name__] = cls
    return cls


register.items = {}
'''

MODELS = '''
from registry import MODELS, register


@MODELS.register
class CNN:
    DEPTH = 3


@register
class Head:
    WIDTH = 8
'''


@pytest.mark.parametrize(
    "edit,after",
    [
        (("models.py", "DEPTH = 3", "DEPTH = 5"), "({'CNN': 5}, {'Head': 8})"),
        (("models.py", "WIDTH = 8", "WIDTH = 9"), "({'CNN': 3}, {'Head': 9})"),
        (("models.py", "class Head:\n    WIDTH = 8\n",
          "class Head:\n    WIDTH = 8\n\n\n@register\nclass Tail:\n    WIDTH = 1\n"),
         "({'CNN': 3}, {'Head': 8, 'Tail': 1})"),
    ],
    ids=["class-in-an-objects-dict", "class-in-a-functions-attribute", "new-registration"],
)
def test_classes_held_by_a_registry_object_or_a_functions_attribute(project, edit, after):
    """The pickle of an object constant names the classes in its dict attributes by
    reference only, and a function's attributes were never encoded: an edit of a registered
    class's attribute (no method of it runs) kept the step cached."""
    files = {
        "registry.py": REGISTRIES,
        "models.py": MODELS,
        # the pipeline module imports models (registering its classes); the step names
        # only the registries
        "pipe.py": PIPE.replace("{imports}", "import models\nfrom registry import MODELS, register")
        .replace("    return repr({expr})\n",
                 "    return repr(({k: c.DEPTH for k, c in MODELS.items()},\n"
                 "                 {k: c.WIDTH for k, c in register.items.items()}))\n"),
    }
    check(project, files, edit, "({'CNN': 3}, {'Head': 8})", after)
