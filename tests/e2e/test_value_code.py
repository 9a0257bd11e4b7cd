"""End-to-end, issue 10 class 1: the code that will run on a step's inputs is part of what the
step depends on. A method of a project class, called on an instance that comes from an
upstream step, reruns the consumer when edited, although the producer's pickled output is
byte-identical (early cutoff alone would keep the consumer cached with stale numbers)."""

from __future__ import annotations

MODEL = '''
from dataclasses import dataclass


class Scaler:
    def __init__(self, k):
        self.k = k

    def transform(self, xs):
        return [x * self.k for x in xs]


@dataclass
class Metrics:
    acc: float

    def summary(self):
        return f"acc={self.acc:.2f}"
'''

PIPE = '''
from zenbuild import step, pipeline, Output
from ticker import tick
from model import Scaler, Metrics


@step
def fit() -> Scaler:
    tick("fit")
    return Scaler(2)


@step
def apply(scaler, out: Output) -> None:
    tick("apply")
    out.write_text(repr(scaler.transform([1, 2, 3])))


@step
def evaluate() -> Metrics:
    tick("evaluate")
    return Metrics(0.5)


@step
def report(m, out: Output) -> None:
    tick("report")
    out.write_text(m.summary())


@step
def plain(n: int) -> int:
    tick("plain")
    return n + 1


@pipeline
def p():
    apply(fit(), Output("build/scaled.txt"))
    report(evaluate(), Output("build/report.txt"))
    plain(1)
'''


def _setup(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", MODEL)
    project.write("pipe.py", PIPE)
    project.run("run")
    assert sorted(project.ticks()) == ["apply", "evaluate", "fit", "plain", "report"]
    assert project.read("build/scaled.txt") == "[2, 4, 6]"


def test_method_of_an_upstream_instance_reruns_its_consumer(project):
    _setup(project)
    r = project.run("run")
    assert project.ticks() == [], r
    model = project.read("model.py").replace("return [x * self.k for x in xs]",
                                             "return [x * self.k + 1 for x in xs]")
    project.write("model.py", model)
    r = project.run("run", "--explain")
    # fit names Scaler, so it re-executes; its pickle is byte-identical, yet apply reruns
    # because the value's identity carries the code of the class it is an instance of.
    assert sorted(project.ticks()) == ["apply", "fit"], r
    assert project.read("build/scaled.txt") == "[3, 5, 7]"
    r = project.run("run")
    assert project.ticks() == [], r
    # revert: served from the store, the old output restored
    project.write("model.py", MODEL)
    r = project.run("run")
    assert project.ticks() == [], r  # both entries of the old code are in the store
    assert project.read("build/scaled.txt") == "[2, 4, 6]"


def test_method_of_a_dataclass_result_reruns_its_consumer(project):
    _setup(project)
    project.write("model.py", MODEL.replace('f"acc={self.acc:.2f}"', 'f"accuracy={self.acc:.1f}"'))
    r = project.run("run")
    assert sorted(project.ticks()) == ["evaluate", "report"], r
    assert project.read("build/report.txt") == "accuracy=0.5"


def test_a_comment_in_the_class_reruns_nothing(project):
    _setup(project)
    project.write("model.py", MODEL.replace("class Scaler:", "class Scaler:  # scales"))
    r = project.run("run")
    assert project.ticks() == [], r
