"""End-to-end, issue 10 class 16: each element of an unpacked tuple output has its own digest,
and each consumer is keyed by the element it reads, so `train, test = split()` reruns the
consumer of `test` only when `test` changed."""

from __future__ import annotations

PIPE = '''
from typing import Tuple
from zenbuild import step, pipeline, File, Output
from ticker import tick


@step
def split(src: File) -> Tuple[list, list]:
    tick("split")
    rows = src.read_text().split()
    return rows[:2], rows[2:]


@step
def fit(train: list, out: Output) -> None:
    tick("fit")
    out.write_text(",".join(train))


@step
def score(test: list, out: Output) -> None:
    tick("score")
    out.write_text(",".join(test))


@step
def both(parts, out: Output) -> None:
    tick("both")
    out.write_text(repr(parts))


@pipeline
def p():
    parts = split(File("data.txt"))
    train, test = parts
    fit(train, Output("build/train.txt"))
    score(test, Output("build/test.txt"))
    both(parts, Output("build/both.txt"))  # the whole value: reruns on any change
'''


def test_a_consumer_of_one_element_ignores_the_others(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.write("data.txt", "a b c d\n")
    r = project.run("run")
    assert sorted(project.ticks()) == ["both", "fit", "score", "split"], r

    project.write("data.txt", "a b c e\n")  # only the test half changes
    r = project.run("run", "--explain")
    assert sorted(project.ticks()) == ["both", "score", "split"], r
    assert project.read("build/test.txt") == "c,e"
    assert project.read("build/train.txt") == "a,b"

    project.write("data.txt", "x b c e\n")  # only the train half changes
    r = project.run("run")
    assert sorted(project.ticks()) == ["both", "fit", "split"], r
    assert project.read("build/train.txt") == "x,b"

    r = project.run("run")
    assert project.ticks() == [], r
    r = project.run("explain", "score")
    assert r.returncode == 0 and "up to date" in r.output, r
