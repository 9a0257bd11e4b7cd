"""End-to-end, issue 11: value encoding is pluggable. A type whose own pickle differs in every
process (it keeps the address of a temporary object) reruns its consumers on every run;
registered with zenbuild.register_value_type, it digests the same and they stay cached."""

from __future__ import annotations

import pytest

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


# ---- @zenbuild.value_type: a class that saves itself to a folder (issue 13) -------------

FOLDER_MODEL = '''
import json
import time
from pathlib import Path

import numpy as np
import zenbuild


@zenbuild.value_type
class Model:
    def __init__(self, weights, name):
        self.weights = weights
        self.name = name
        self.loaded_at = time.time()  # per-process state: not part of what save() writes

    def save(self, folder: Path) -> None:
        (folder / "meta.json").write_text(json.dumps({"name": self.name}))
        (folder / "arrays").mkdir()
        np.save(folder / "arrays" / "weights.npy", self.weights)

    @classmethod
    def load(cls, folder: Path) -> "Model":
        meta = json.loads((folder / "meta.json").read_text())
        return cls(np.load(folder / "arrays" / "weights.npy"), meta["name"])
'''

FOLDER_PIPE = '''
import numpy as np
from zenbuild import step, pipeline, no_cache
from ticker import tick
from model import Model


@no_cache
@step
def train(scale: float = 1.0) -> Model:
    tick("train")
    return Model(np.arange(100_000, dtype=np.float64) * scale, "linear")


@step
def evaluate(m) -> str:
    tick("evaluate")
    assert type(m) is Model, type(m)
    return f"{m.name}:{float(m.weights.sum())}"


@pipeline
def p(scale: float = 1.0):
    evaluate(train(scale))
'''


def test_a_value_type_is_stored_by_its_files_and_loaded_by_its_class(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", FOLDER_MODEL)
    project.write("pipe.py", FOLDER_PIPE)
    r = project.run("run")
    assert r.executed == ["train", "evaluate"] and sorted(project.ticks()) == ["evaluate", "train"]
    # train runs again (no_cache) in another process under another hash seed: the files it
    # saves are the same, so its digest is too, and evaluate stays cached
    r = project.run("run", env={"PYTHONHASHSEED": "7"})
    assert r.executed == ["train"] and r.cached == ["evaluate"], r
    assert project.ticks() == ["train"]
    # the consumer edited: it loads the model through Model.load from the stored files
    project.write("pipe.py", FOLDER_PIPE.replace('return f"{m.name}', 'return "v2 " + f"{m.name}'))
    r = project.run("run")
    assert sorted(project.ticks()) == ["evaluate", "train"]
    want = f"v2 linear:{float(sum(range(100_000)))}"
    assert _stored(project, "evaluate") == want
    assert _stored(project, "train") == ["linear", float(sum(range(100_000)))]
    # other weights: other files, another digest; evaluate executes
    r = project.run("run", "--param", "scale=2.0")
    assert r.executed == ["train", "evaluate"]


READ = """
import sys
sys.path.insert(0, sys.argv[1])
from zenbuild.serialize import loads
from zenbuild.store.db import Store
s = Store(sys.argv[1] + "/.zenbuild", create=False)
(digest,), = s.db.execute("SELECT a.value_digest FROM step_state s JOIN actions a"
                          " ON a.fingerprint = s.fingerprint WHERE s.step = ?", (sys.argv[2],))
v = loads(s.map_blob(digest))
print(repr(v if isinstance(v, str) else [v.name, float(v.weights.sum())]))
"""


def _stored(project, step):
    """A step's stored value, loaded in another process (a Model by its name and sum)."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", READ, str(project.root), step],
                         capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip())


@pytest.mark.parametrize("bad,says", [
    ('zenbuild.register_value_type(M, "not a function")',
     "register_value_type(cls, reduce) takes a class and a function, not type and str"),
    ("zenbuild.register_value_type(123, None)", "takes a class and a function, not int"),
    ("@zenbuild.value_type\nclass N:\n    pass", "@value_type: class N has no method save()"),
])
def test_a_misused_registration_is_the_project_s_mistake(project, bad, says):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", "import zenbuild\nfrom zenbuild import pipeline, step\n\n"
                  f"class M:\n    pass\n\n{bad}\n\n"
                  "@step\ndef make() -> int:\n    return 1\n\n"
                  "@pipeline\ndef p():\n    make()\n")
    r = project.run("run", check=2)
    assert says in r.stderr and "(in importing pipe, at pipe.py:" in r.stderr, r
    assert "zenbuild/serialize" not in r.output, r


SAVING = """
    import os
    from pathlib import Path
    import zenbuild
    from zenbuild import pipeline, step
HELPERS
    @zenbuild.value_type
    class M:
        def save(self, folder: Path) -> None:
SAVE
        @classmethod
        def load(cls, folder: Path) -> "M":
            return cls()

    @step
    def train() -> M:
        return M()

    @pipeline
    def p():
        train()
"""


def _saving(project, save: str, helpers: str = "") -> None:
    """A project whose one step returns a value type M whose save() body is ``save``."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", SAVING.replace("HELPERS", helpers).replace("SAVE", save))


def test_a_save_that_leaves_a_fifo_fails_its_step_instead_of_hanging(project):
    _saving(project, """\
            (folder / "w.txt").write_text("w")
            os.mkfifo(folder / "progress.fifo")""")
    r = project.run("run", check=1, timeout=60)
    assert "M.save() left progress.fifo in its folder, which is a fifo, not a file" in r.output, r


def test_a_file_a_value_type_s_load_reads_is_an_input_of_the_consumer(project):
    # load() runs when the consumer's argument is decoded, before the step itself: what it
    # read was recorded nowhere, and an edit of that file was served stale (tester round r5)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("vocab.txt", "a b\n")
    project.write("pipe.py", """
        import os
        from pathlib import Path
        import zenbuild
        from zenbuild import Output, pipeline, step

        HERE = Path(__file__).parent

        @zenbuild.value_type
        class Tok:
            def __init__(self, w, vocab=None):
                self.w, self.vocab = w, vocab
            def save(self, folder: Path) -> None:
                (folder / "w.txt").write_text(self.w)
            @classmethod
            def load(cls, folder: Path) -> "Tok":
                return cls((folder / "w.txt").read_text(), (HERE / "vocab.txt").read_text().split())

        @step
        def train() -> Tok:
            return Tok("w")

        @step
        def use(t: Tok, out: Output) -> str:
            out.write_text(" ".join(t.vocab))
            return " ".join(t.vocab)

        @pipeline
        def p():
            use(train(), Output("used.txt"))
    """)
    r = project.run("run")
    assert sorted(r.executed) == ["train", "use"], r
    assert project.run("run").executed == []
    project.write("vocab.txt", "c d e\n")
    r = project.run("run")
    assert r.executed == ["use"], r
    assert (project.root / "used.txt").read_text() == "c d e"
    assert "vocab.txt" in project.run("explain", "use").stdout
    assert project.run("run").executed == []  # and then cached again


CHECKPOINT = """
    import os
    from pathlib import Path
    import zenbuild
    from zenbuild import pipeline, step

    @zenbuild.value_type
    class Ckpt:
        def __init__(self, w):
            self.w = w
        def save(self, folder: Path) -> None:
            (folder / "checkpoint-3").mkdir()
            (folder / "checkpoint-3" / "w.txt").write_text(self.w)
            os.symlink(TARGET, folder / "latest")  # a checkpoint layout's pointer
            (folder / "logs" / "empty").mkdir(parents=True)
        @classmethod
        def load(cls, folder: Path) -> "Ckpt":
            assert (folder / "logs" / "empty").is_dir()
            assert os.readlink(folder / "latest") == TARGET
            return cls((folder / "latest" / "w.txt").read_text())

    @step
    def train() -> Ckpt:
        return Ckpt("weights")

    @step
    def use(c: Ckpt) -> str:
        return c.w + SUFFIX

    @pipeline
    def p():
        use(train())
"""


def test_a_value_type_keeps_the_links_and_empty_folders_its_save_makes(project):
    """A link to a sub-folder (``latest -> checkpoint-3``) and an empty folder were dropped
    from the stored value, and every consumer's load failed on every run. They come back;
    a link leading out of the folder is refused at save(), naming it."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", CHECKPOINT.replace("TARGET", '"checkpoint-3"').replace(
        "SUFFIX", '""'))
    r = project.run("run")
    assert sorted(r.executed) == ["train", "use"], r.output
    project.write("pipe.py", CHECKPOINT.replace("TARGET", '"checkpoint-3"').replace(
        "SUFFIX", '"!"'))  # the consumer alone: the value loaded from the store
    r = project.run("run")
    assert r.cached == ["train"] and r.executed == ["use"], r.output
    project.write("pipe.py", CHECKPOINT.replace("TARGET", '".."').replace("SUFFIX", '""'))
    r = project.run("run", check=1)
    assert "Ckpt.save() left latest in its folder, a link to '..', outside that folder" \
        in r.output, r.output


def test_a_save_that_raises_shows_where_in_the_project(project):
    """An exception from the project's own code while the value is stored (a value type's
    save()) was told by its text alone; the message shows where it was raised, without
    zenbuild's frames."""
    _saving(project, """\
            write_weights(folder)""", helpers="""
    def write_weights(folder):
        raise OSError("quota exceeded while saving")
""")
    r = project.run("run", check=1)
    assert "cannot be stored: OSError: quota exceeded while saving" in r.output, r.output
    assert 'in write_weights\n    raise OSError("quota exceeded while saving")' in r.output
    assert "zenbuild/" not in r.output.split("cannot be stored", 1)[1], r.output
