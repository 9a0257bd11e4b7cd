"""End-to-end: every numpy dtype and shape travels between steps (one-byte and flexible
dtypes, 0-d arrays), and a value that does not load because of the project's own code (a
value type's load()) fails its consumer with the user's traceback instead of being taken for
store damage (before: the producer ran three times and the run ended in "store blob ... is
corrupt", exit 2), while a value whose class is gone still has its producer run again."""

from __future__ import annotations

import json

import pytest
from conftest import Project

# kind -> the expression making it: written into the step, and evaluated here for the expected
EXPRS = {
    "image": "np.arange(16, dtype=np.uint8).reshape(4, 4)",
    "mask": "np.array([True, False, True])",
    "small": "np.array([-3, 4], dtype=np.int8)",
    "names": 'np.array([b"abc", b"de"], dtype="S3")',
    "raw": 'np.frombuffer(b"abcdefgh", dtype="V4")',
    "scalar": "np.array(3.5)",
    "big": "np.zeros((1024, 1024, 3), dtype=np.uint8)",  # 3 MiB: by reference under -j
}

ARRAYS = '''
import numpy as np
from zenbuild import pipeline, step
from ticker import tick


@step
def make(kind: str):
    tick("make")
    return {MAKERS}[kind]


@step
def show(a, kind: str) -> str:
    tick("show")
    return f"{kind} {a.dtype.str} {a.shape} {a.tobytes().hex()[:40]}"


@pipeline
def p(kind: str = "image"):
    show(make(kind), kind)
'''.replace("{MAKERS}", "{" + ", ".join(f"{k!r}: {v}" for k, v in EXPRS.items()) + "}")

KINDS = list(EXPRS)


@pytest.mark.parametrize("how", [[], ["-j", "2"]], ids=["serial", "jobs"])
def test_arrays_of_every_dtype_and_shape_reach_their_consumer(project: Project,
                                                              how: list) -> None:
    import numpy as np

    project.write("pipe.py", ARRAYS)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    expect = {k: eval(v, {"np": np}) for k, v in EXPRS.items()}
    for kind in KINDS:
        r = project.run("run", "--param", f"kind={kind}", "--json", *how)
        res = json.loads(r.stdout)
        assert res["status"] == "succeeded", r
        a = expect[kind]
        assert project.ticks() == ["make", "show"], kind
        assert _value(project, "show", kind) == f"{kind} {a.dtype.str} {a.shape} {a.tobytes().hex()[:40]}", kind
        # served from the store too, and the same value loads in the Python API
        assert project.run("run", "--param", f"kind={kind}", *how).executed == []


def _value(project: Project, step: str, kind: str) -> str:
    """The value of ``step`` (served from the store), loaded through the Python API in a child
    process."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, '.'); import pipe; "
            "r = pipe.p(kind=sys.argv[1]).run(); print(r.steps[sys.argv[2]].output)")
    out = subprocess.run([sys.executable, "-c", code, kind, step], cwd=str(project.root),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


VALUE_TYPE = '''
import json
from pathlib import Path

import zenbuild


@zenbuild.value_type
class Model:
    def __init__(self, weights):
        self.weights = weights

    def save(self, folder: Path) -> None:
        (folder / "w.json").write_text(json.dumps(self.weights))

    @classmethod
    def load(cls, folder: Path) -> "Model":
        return cls(json.loads((folder / "w.json").read_text()))
'''

USES = '''
from zenbuild import pipeline, step
from model import Model
from ticker import tick


@step
def train() -> Model:
    tick("train")
    return Model([1, 2, 3])


@step
def use(m: Model, k: int) -> list:
    tick("use")
    return [w * k for w in m.weights]


@pipeline
def p(k: int = 1):
    use(train(), k)
'''


def test_a_value_types_failing_load_fails_the_consumer_not_the_store(project: Project) -> None:
    project.write("model.py", VALUE_TYPE)
    project.write("pipe.py", USES)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    assert sorted(project.ticks()) == ["train", "use"]
    # a bug in load(): the stored value is fine, reading it back raises in the project's code
    project.write("model.py", VALUE_TYPE.replace(
        'return cls(json.loads((folder / "w.json").read_text()))',
        'raise ValueError("bad load")'))
    # (load() is Model's code, in train's key: train runs again, once, not three times)
    r = project.run("run", "--param", "k=2", check=1)
    assert project.ticks() == ["train"]
    assert "is corrupt" not in r.output and "started the run again" not in r.output
    assert "the value of step train it receives cannot be loaded" in r.stderr
    assert 'raise ValueError("bad load")' in r.stderr and "ValueError: bad load" in r.stderr
    assert "zenbuild/" not in r.stderr.replace(str(project.root), "")  # the user's frames only
    # train's entry was kept: now it is served, and use fails again on loading it
    r = project.run("run", "--param", "k=2", check=1)
    assert project.ticks() == []
    assert "cannot be loaded" in r.stderr and "is corrupt" not in r.output
    # load() put back: train's first entry is served again, use runs
    project.write("model.py", VALUE_TYPE)
    assert project.run("run", "--param", "k=2").executed == ["use"]


def test_a_value_whose_class_is_gone_still_has_its_producer_run_again(project: Project) -> None:
    project.write("shapes.py", "class Box:\n    def __init__(self, n):\n        self.n = n\n")
    project.write("pipe.py", '''
        from zenbuild import pipeline, step
        from ticker import tick
        import shapes


        @step
        def make():
            tick("make")
            return getattr(shapes, "Box", None) and shapes.Box(3) or shapes.Crate(3)


        @step
        def use(b, k: int) -> int:
            tick("use")
            return b.n * k


        @pipeline
        def p(k: int = 1):
            use(make(), k)
    ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    assert sorted(project.ticks()) == ["make", "use"]
    # Box renamed: make's stored value names a class that no longer exists (and make's key
    # did not change: it reaches the class through getattr); it is not the project's code
    # that fails but the lookup, so make runs again and the run succeeds
    project.write("shapes.py", "class Crate:\n    def __init__(self, n):\n        self.n = n\n")
    r = project.run("run", "--param", "k=2")
    assert "make" in project.ticks() and r.returncode == 0


def test_a_value_type_whose_save_is_unstable_is_told_so(project: Project) -> None:
    """A @value_type whose save() writes different bytes each time is refused with a message
    about its save(), not about pickles (and not "..": one sentence end)."""
    project.write("model.py", VALUE_TYPE.replace(
        '(folder / "w.json").write_text(json.dumps(self.weights))',
        'import time; (folder / "w.json").write_text(json.dumps([self.weights, time.time_ns()]))'))
    project.write("pipe.py", USES)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    r = project.run("run", check=1)
    assert "two calls of its save() in this process wrote different files" in r.stderr, r
    assert "pickle" not in r.stderr and ".." not in r.stderr


def test_the_api_s_output_of_a_damaged_small_value_says_so_and_the_next_run_rebuilds(
        project) -> None:
    import sqlite3
    import subprocess
    import sys

    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import pipeline, step
        from ticker import tick

        @step
        def make() -> str:
            tick("make")
            return "value-AAAA"

        @pipeline
        def p():
            make()
    """)
    project.run("run")
    db = sqlite3.connect(str(project.root / ".zenbuild" / "zenbuild.db"))
    hit = 0
    for digest, data in list(db.execute("select digest, data from blobs")):
        if isinstance(data, bytes) and b"value-AAAA" in data:
            db.execute("update blobs set data=? where digest=?",
                       (data.replace(b"AAAA", b"BBBB"), digest))
            hit += 1
    db.commit()
    db.close()
    assert hit == 1
    code = ("import sys; sys.path.insert(0, '.'); import pipe\n"
            "from zenbuild.errors import StoreError\n"
            "r = pipe.p().run()\n"
            "try:\n    print('VALUE', r.steps['make'].output)\n"
            "except StoreError as e:\n    print('ERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                         text=True, timeout=120)
    assert "ERROR the stored value of step make" in out.stdout, out
    assert "the 1 cache entry using it was removed" in out.stdout, out
    assert "BBBB" not in out.stdout
    r = project.run("run")
    assert r.executed == ["make"], r
