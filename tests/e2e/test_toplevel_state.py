"""End-to-end: process state set by top-level statements of a project module (a seed, a
library option, an environment variable read when the module is imported) is part of the key
of the steps whose code lives in, or reads from, that module (fingerprint/toplevel.py). A seed
or option change reruns them; a comment, a docstring, an unrelated def or the body of the
``if __name__ == "__main__":`` block does not; `explain` says what changed."""

from __future__ import annotations

from conftest import Project

PIPE = '''
import decimal
import os
import random

from zenbuild import no_cache, pipeline, step
from ticker import tick
import fmt

SEED = 0
random.seed(SEED)
decimal.getcontext().prec = 3


@step
def sample() -> float:
    """Draws from the global RNG seeded above."""
    tick("sample")
    return round(random.random(), 6)


@step
def third() -> str:
    tick("third")
    return str(decimal.Decimal(1) / decimal.Decimal(3))


@step
def shown(x: float) -> str:
    tick("shown")
    return fmt.show(x)


@no_cache
@step
def out(a: float, b: str, c: str) -> None:
    print("VALUE", a, b, c)


@pipeline
def p():
    a = sample()
    out(a, third(), shown(a))


if __name__ == "__main__":
    p().run()
'''

# a helper module pipe.py imports: its top-level option counts for every step of pipe.py
FMT = '''
import reprlib

reprlib.aRepr.maxstring = 8


def show(x):
    return reprlib.repr(str(x) * 5)
'''


def make(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.write("fmt.py", FMT)
    first = project.run("run")
    assert sorted(first.executed) == ["out", "sample", "shown", "third"], first
    project.ticks()
    return project


def value(res) -> str:
    return [ln for ln in res.stdout.splitlines() if ln.startswith("VALUE")][-1]


def fresh(project: Project, edit) -> str:
    """What a run from scratch of the edited project gives."""
    import random

    random.seed(edit)
    return str(round(random.random(), 6))


def test_a_changed_seed_or_option_reruns_what_the_module_holds(project: Project) -> None:
    make(project)
    noop = project.run("run")
    assert noop.executed == ["out"] and project.ticks() == [], noop

    project.write("pipe.py", PIPE.replace("SEED = 0", "SEED = 1"))
    ex = project.run("explain", "third")
    assert "code: constant pipe.SEED (pipe.py) changed" in ex.stdout, ex
    run = project.run("run")
    # every step of pipe.py: its statements hold the seed (sample, third, shown live there)
    assert sorted(project.ticks()) == ["sample", "shown", "third"], run
    assert value(run).split()[1] == fresh(project, 1), run

    project.write("pipe.py", PIPE.replace("SEED = 0", "SEED = 1").replace("prec = 3", "prec = 8"))
    ex = project.run("explain", "third")
    assert "code: top-level statements of pipe.py changed" in ex.stdout, ex
    run = project.run("run")
    assert "0.33333333" in value(run), run
    assert sorted(project.ticks()) == ["sample", "shown", "third"], run


def test_cosmetic_and_unrelated_edits_rerun_nothing(project: Project) -> None:
    make(project)
    edited = (PIPE.replace("random.seed(SEED)", "random.seed( SEED )  # seeded once, here")
              .replace('"""Draws from the global RNG seeded above."""', '"""Draws."""')
              .replace('    p().run()', '    p().run()\n    random.seed(99)')
              + "\n\ndef unrelated():\n    return 5\n\n\nOTHER = 3\n")
    project.write("pipe.py", '"""The pipeline."""\n' + edited)
    run = project.run("run")
    assert run.executed == ["out"] and project.ticks() == [], run
    assert sorted(run.cached) == ["sample", "shown", "third"], run


def test_a_helper_modules_statements_count_for_every_step_of_a_module_importing_it(
        project: Project) -> None:
    """The state fmt.py sets (reprlib's options here; decimal's context, a seed) is the
    process's: a step of pipe.py that never names fmt reads it as well (a reviewer's
    ``decimal.getcontext().prec = 3`` in utils.py, imported by steps.py for a helper one
    step calls, kept the other step cached with its old precision). An edit of one of
    fmt's functions still reruns only the steps that reach it."""
    make(project)
    project.write("fmt.py", FMT.replace("maxstring = 8", "maxstring = 12"))
    for step in ("shown", "third"):
        ex = project.run("explain", step)
        assert "code: top-level statements of fmt.py changed" in ex.stdout, ex
    run = project.run("run")
    assert sorted(project.ticks()) == ["sample", "shown", "third"], run
    assert len(value(run).split()[-1]) == 12, run  # was 8
    project.write("fmt.py", FMT.replace("maxstring = 8", "maxstring = 12")
                  .replace("str(x) * 5", "str(x) * 6"))
    run = project.run("run")
    assert project.ticks() == ["shown"], run


def test_an_env_var_read_at_import_by_a_seeding_module_reruns(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
import os
import random

from zenbuild import no_cache, pipeline, step
from ticker import tick

random.seed(int(os.environ.get("PY_SEED", "0")))


@step
def sample() -> float:
    tick("sample")
    return round(random.random(), 6)


@no_cache
@step
def out(a: float) -> None:
    print("VALUE", a)


@pipeline
def p():
    out(sample())
''')
    first = project.run("run")
    assert value(first).split()[1] == fresh(project, 0), first
    project.ticks()
    assert project.run("run").executed == ["out"] and project.ticks() == []

    env7 = {"PY_SEED": "7"}
    ex = project.run("explain", "sample", env=env7)
    assert ("code: environment variable PY_SEED (read when pipe.py is imported) changed"
            in ex.stdout), ex
    run = project.run("run", env=env7)
    assert project.ticks() == ["sample"], run
    assert value(run).split()[1] == fresh(project, 7), run
    assert project.run("run", env=env7).executed == ["out"] and project.ticks() == []
    back = project.run("run")  # PY_SEED unset again: the first result, from the store
    assert project.ticks() == [] and value(back).split()[1] == fresh(project, 0), back


def test_the_pipeline_modules_statements_count_for_steps_defined_elsewhere(
        project: Project) -> None:
    """The steps live in steps.py; the pipeline's module seeds the RNG before any step runs."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("steps.py", '''
import random

from zenbuild import no_cache, step
from ticker import tick


@step
def sample() -> float:
    tick("sample")
    return round(random.random(), 6)


@no_cache
@step
def out(a: float) -> None:
    print("VALUE", a)
''')
    pipe = '''
import random

from zenbuild import pipeline
from steps import out, sample

random.seed(0)


@pipeline
def p():
    out(sample())
'''
    project.write("pipe.py", pipe)
    first = project.run("run")
    assert value(first).split()[1] == fresh(project, 0), first
    project.ticks()
    project.write("pipe.py", pipe.replace("seed(0)", "seed(0)  # the seed") + "\nX = 1\n")
    assert project.run("run").executed == ["out"] and project.ticks() == []
    project.write("pipe.py", pipe.replace("seed(0)", "seed(5)"))
    ex = project.run("explain", "sample")
    assert "code: top-level statements of pipe.py changed" in ex.stdout, ex
    run = project.run("run")
    assert project.ticks() == ["sample"], run
    assert value(run).split()[1] == fresh(project, 5), run


def test_a_module_imported_for_its_effect_counts(project: Project) -> None:
    """``import seeding  # noqa: F401`` in the step's module: seeding.py's statements ran."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("seeding.py", "import random\n\nrandom.seed(0)\n")
    project.write("pipe.py", '''
import random

import seeding  # noqa: F401  (seeds the RNG)
from zenbuild import no_cache, pipeline, step
from ticker import tick


@step
def sample() -> float:
    tick("sample")
    return round(random.random(), 6)


@no_cache
@step
def out(a: float) -> None:
    print("VALUE", a)


@pipeline
def p():
    out(sample())
''')
    first = project.run("run")
    assert value(first).split()[1] == fresh(project, 0), first
    project.ticks()
    project.write("seeding.py", "import random\n\nrandom.seed(3)\n")
    ex = project.run("explain", "sample")
    assert "code: top-level statements of seeding.py changed" in ex.stdout, ex
    run = project.run("run")
    assert project.ticks() == ["sample"], run
    assert value(run).split()[1] == fresh(project, 3), run


def test_state_a_used_module_sets_reaches_a_step_that_does_not_name_it(project: Project) -> None:
    """utils.py sets decimal's precision and exports a helper step a calls; step b divides
    decimals: it stayed cached with the old precision, as only imports whose name the module
    never read counted for every step."""
    project.write("zenbuild.toml", 'pipelines = ["steps:p"]\n')
    project.write("utils.py", "import decimal\ndecimal.getcontext().prec = 3\n\n\n"
                  "def helper_x():\n    return 1\n")
    project.write("steps.py", '''
import decimal

from zenbuild import pipeline, step
import utils


@step
def a() -> int:
    return utils.helper_x()


@step
def b() -> str:
    return str(decimal.Decimal(1) / decimal.Decimal(7))


@step
def show(x: int, y: str) -> None:
    print("VALUE", y)


@pipeline
def p():
    show(a(), b())
''')
    assert value(project.run("run")) == "VALUE 0.143"
    project.write("utils.py", (project.root / "utils.py").read_text().replace("prec = 3",
                                                                             "prec = 5"))
    r = project.run("run")
    assert "b" in r.executed and value(r) == "VALUE 0.14286", r
