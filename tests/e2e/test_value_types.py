"""End-to-end, issue 11: value encoding is pluggable. A type whose own pickle differs in every
process (it keeps the address of a temporary object) reruns its consumers on every run;
registered with zenbuild.register_value_type, it digests the same and they stay cached."""

from __future__ import annotations

MODEL = '''
import zenbuild


class Model:
    def __init__(self, weights):
        self.weights = weights
        self.handle = id(object())  # differs in every process: the pickle is unstable


def _reduce(m):
    return (Model, (m.weights,))


if {register}:
    zenbuild.register_value_type(Model, _reduce)
'''

PIPE = '''
from zenbuild import step, pipeline, no_cache
from ticker import tick
from model import Model


@no_cache
@step
def train() -> Model:
    tick("train")
    return Model([1, 2, 3])


@step
def evaluate(m) -> int:
    tick("evaluate")
    return sum(m.weights)


@pipeline
def p():
    evaluate(train())
'''


def _runs(project, register: bool):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", MODEL.replace("{register}", str(register)))
    project.write("pipe.py", PIPE)
    project.run("run")
    assert sorted(project.ticks()) == ["evaluate", "train"]
    r = project.run("run")
    return sorted(project.ticks()), r


def test_a_registered_type_digests_the_same_in_every_process(project):
    ticks, r = _runs(project, register=True)
    assert ticks == ["train"], r  # train is @no_cache; evaluate stays cached


def test_without_registration_the_same_type_reruns_its_consumer(project):
    ticks, r = _runs(project, register=False)
    assert ticks == ["evaluate", "train"], r  # the reason registration exists
