"""End-to-end: the code registered to store a type (zenbuild.register_value_type's reducer, the
function its result names to rebuild the value, @value_type's save and load) is part of that
type's code. Editing it reruns the step that makes the value and the steps that receive it,
as editing a method of the class does; before, both were served from the cache with the value
the old code made (user report, section 4)."""

from __future__ import annotations

import pytest

MODEL = '''
import zenbuild


class Model:
    def __init__(self, w):
        self.w = w


def rebuild(w):
    return Model(w)


zenbuild.register_value_type(Model, lambda m: (rebuild, (m.w,)))
'''

PIPE = '''
from zenbuild import step, pipeline
from ticker import tick
from model import Model


@step
def make() -> Model:
    tick("make")
    return Model([1, 2])


@step
def use(m{annotation}) -> list:
    tick("use")
    print("use got", m.w)
    return m.w


@pipeline
def p():
    use(make())
'''


def _project(project, annotation: str = ": Model", model: str = MODEL, pipe: str = PIPE):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", model)
    project.write("pipe.py", pipe.replace("{annotation}", annotation))
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    r = project.run("run")
    assert project.ticks() == [], r
    return r


def _edit(project, rel: str, old: str, new: str) -> None:
    text = project.read(rel)
    assert old in text, (old, text)
    project.write(rel, text.replace(old, new))


# the consumer names the class (its key holds the class's code) or does not (it reruns because
# the value it receives names the rebuilding function, whose code changed)
@pytest.mark.parametrize("annotation", [": Model", ""])
def test_editing_the_function_the_reducer_names_reruns_producer_and_consumer(project,
                                                                            annotation):
    _project(project, annotation)
    _edit(project, "model.py", "return Model(w)", "return Model([x * 10 for x in w])")
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [10, 20]" in r.output, r
    r = project.run("run")
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


@pytest.mark.parametrize("annotation", [": Model", ""])
def test_editing_the_reducer_reruns_producer_and_consumer(project, annotation):
    _project(project, annotation)
    _edit(project, "model.py", "(m.w,)", "(m.w + [3],)")
    r = project.cli("explain", "make")
    assert "would execute" in r.output and "model.<lambda>" in r.output, r
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [1, 2, 3]" in r.output, r


def test_a_comment_edit_reruns_nothing(project):
    _project(project)
    _edit(project, "model.py", "def rebuild(w):\n", "def rebuild(w):  # the loader\n")
    _edit(project, "model.py", "lambda m:", "lambda m:  # the reducer\n    ")
    r = project.run("run")
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


def test_a_registration_changed_to_another_function_reruns(project):
    model = MODEL.replace(
        "zenbuild.register_value_type(Model, lambda m: (rebuild, (m.w,)))",
        "def rebuild_twice(w):\n    return Model(w + w)\n\n\n"
        "def reduce_a(m):\n    return (rebuild, (m.w,))\n\n\n"
        "def reduce_b(m):\n    return (rebuild_twice, (m.w,))\n\n\n"
        "zenbuild.register_value_type(Model, reduce_a)\n")
    _project(project, model=model)
    _edit(project, "model.py", "register_value_type(Model, reduce_a)",
          "register_value_type(Model, reduce_b)")
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [1, 2, 1, 2]" in r.output, r


REGISTRY = '''
import zenbuild
from model import Model


def load_model(w):
    return Model(w)


zenbuild.register_value_type(Model, lambda m: (load_model, (m.w,)))
'''


def test_a_type_registered_in_another_module(project):
    """The class in model.py, its reducer and loader in registry.py (imported by the
    pipeline): editing the loader reruns both steps."""
    model = MODEL.split("def rebuild")[0]
    pipe = PIPE.replace("from model import Model\n", "from model import Model\nimport registry\n")
    project.write("registry.py", REGISTRY)
    _project(project, model=model, pipe=pipe)
    _edit(project, "registry.py", "return Model(w)", "return Model(w[::-1])")
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [2, 1]" in r.output, r


# ---- a library's type, registered by the project ------------------------------------------

FRACS = '''
import fractions

import zenbuild


def make_fraction(n, d):
    return fractions.Fraction(n, d)


zenbuild.register_value_type(fractions.Fraction,
                             lambda f: (make_fraction, (f.numerator, f.denominator)))
'''

FRACTION_PIPE = '''
from fractions import Fraction

from zenbuild import step, pipeline
from ticker import tick
import fracs


@step
def make() -> Fraction:
    tick("make")
    return Fraction(1, 3)


@step
def use(f) -> str:
    tick("use")
    print("use got", f)
    return str(f)


@pipeline
def p():
    use(make())
'''


def _fraction_project(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("fracs.py", FRACS)
    project.write("pipe.py", FRACTION_PIPE)
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got 1/3" in r.output, r
    r = project.run("run")
    assert project.ticks() == [], r


def test_a_project_reducer_for_a_library_type_counts_as_code(project):
    _fraction_project(project)
    _edit(project, "fracs.py", "fractions.Fraction(n, d)", "fractions.Fraction(2 * n, d)")
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got 2/3" in r.output, r
    _edit(project, "fracs.py", "(f.numerator, f.denominator)", "(f.numerator, 5 * f.denominator)")
    r = project.run("run")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got 2/15" in r.output, r
    r = project.run("run")
    assert project.ticks() == [], r
