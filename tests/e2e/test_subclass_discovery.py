"""End-to-end: plugin discovery through ``Base.__subclasses__()`` (no attribute of the class,
no module touched, no plugin method run) is recorded while the step runs and checked before
its entry is served: an edit of a subclass's attribute, or a plugin module newly imported,
reruns exactly the step that discovered them (and its consumer), with a fresh store's answer;
an unrelated edit keeps it cached."""

from __future__ import annotations

import pytest

from tests.e2e.test_stale_code import body_step, check

BASE = "class Base:\n    NAME = 'base'\n    WEIGHT = 0\n\n    @classmethod\n" \
       "    def plugins(cls):\n        return {c.NAME: c.WEIGHT for c in cls.__subclasses__()}\n"


def _plugin(name: str, weight: int) -> str:
    return (f"from .base import Base\n\n\nclass {name.upper()}(Base):\n"
            f"    NAME = '{name}'\n    WEIGHT = {weight}\n")


def _files(body: str, imports: str = "cnn, rnn") -> dict:
    return {
        "models/__init__.py": f"from . import {imports}\n",
        "models/base.py": BASE,
        "models/cnn.py": _plugin("cnn", 1),
        "models/rnn.py": _plugin("rnn", 2),
        "models/gru.py": _plugin("gru", 5),
        "unrelated.py": "K = 1\n",
        "pipe.py": "import models  # registers the plugins\nimport unrelated\n" + body_step(body),
    }


DISCOVER = {
    "attribute": '''
        from models.base import Base
        return repr(sorted((c.NAME, c.WEIGHT) for c in Base.__subclasses__()))
    ''',
    "type_method": '''
        from models.base import Base
        return repr(sorted((c.NAME, c.WEIGHT) for c in type.__subclasses__(Base)))
    ''',
    "classmethod": '''
        from models.base import Base
        return repr(sorted(Base.plugins().items()))
    ''',
    "walker": '''
        from walk import walk
        from models.base import Base
        return repr(sorted((c.NAME, c.WEIGHT) for c in walk(Base)))
    ''',
}
WALK = "def walk(cls):\n    for s in cls.__subclasses__():\n        yield s\n" \
       "        yield from walk(s)\n"


@pytest.mark.parametrize("how", sorted(DISCOVER))
def test_an_attribute_edit_in_a_discovered_subclass_reruns_the_step(project, how):
    files = _files(DISCOVER[how])
    files["walk.py"] = WALK
    check(project, files, ("models/rnn.py", "WEIGHT = 2", "WEIGHT = 3"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1), ('rnn', 3)]")


def test_a_newly_imported_subclass_reruns_the_step(project):
    files = _files(DISCOVER["attribute"])
    check(project, files, ("models/__init__.py", "cnn, rnn", "cnn, rnn, gru"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1), ('gru', 5), ('rnn', 2)]")


def test_explain_names_the_subclass_that_changed(project):
    files = _files(DISCOVER["attribute"])
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    for rel, text in files.items():
        project.write(rel, text)
    project.run("run")
    (project.root / "models/__init__.py").write_text("from . import cnn, rnn, gru\n")
    r = project.run("explain", "compute", "--json")
    assert '"subclasses_changed"' in r.output and "models.gru.GRU" in r.output, r


def test_a_plugin_removed_from_the_imports_reruns_the_step(project):
    files = _files(DISCOVER["attribute"])
    check(project, files, ("models/__init__.py", "cnn, rnn", "cnn"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1)]")


def test_no_edit_or_an_unrelated_edit_keeps_the_step_cached(project):
    files = _files(DISCOVER["attribute"])
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    for rel, text in files.items():
        project.write(rel, text)
    r = project.run("run")
    assert sorted(r.executed) == ["compute", "other", "report"], r
    for edit in (("unrelated.py", "K = 1", "K = 2"),
                 ("models/gru.py", "WEIGHT = 5", "WEIGHT = 6"),  # a plugin nobody imports
                 ("models/base.py", "NAME = 'base'", "NAME = 'base'  # a comment")):
        path = project.root / edit[0]
        path.write_text(path.read_text().replace(edit[1], edit[2]))
        r = project.run("run")
        assert r.executed == [] and sorted(r.cached) == ["compute", "other", "report"], (edit, r)
    path = project.root / "models/rnn.py"  # and the step still depends on what it found
    path.write_text(path.read_text().replace("WEIGHT = 2", "WEIGHT = 3"))
    r = project.run("run")
    assert sorted(r.executed) == ["compute", "report"], r


def test_a_plugin_the_step_imports_itself_is_checked_without_rerunning(project):
    """A subclass whose module the step imported while it ran is found again on the check
    (its module imported first), so the entry is served, and its edit is still seen."""
    body = '''
        import importlib
        from models.base import Base
        importlib.import_module("models.gru")
        return repr(sorted((c.NAME, c.WEIGHT) for c in Base.__subclasses__()))
    '''
    files = _files(body, imports="cnn")
    check(project, files, ("models/gru.py", "WEIGHT = 5", "WEIGHT = 7"),
          "[('cnn', 1), ('gru', 5)]", "[('cnn', 1), ('gru', 7)]")
    (project.root / "models/__init__.py").write_text("from . import cnn, rnn\n")  # one more
    r = project.run("run")
    assert sorted(r.executed) == ["compute", "report"], r
    assert project.read("build/out.txt") == "[('cnn', 1), ('gru', 7), ('rnn', 2)]"


def test_in_a_worker_process(project):
    files = _files(DISCOVER["attribute"])
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    for rel, text in files.items():
        project.write(rel, text)
    r = project.run("run", "-j", "2")
    assert sorted(r.executed) == ["compute", "other", "report"], r
    r = project.run("run", "-j", "2")
    assert r.executed == [], r
    path = project.root / "models/rnn.py"
    path.write_text(path.read_text().replace("WEIGHT = 2", "WEIGHT = 4"))
    r = project.run("run", "-j", "2")
    assert sorted(r.executed) == ["compute", "report"], r
    assert project.read("build/out.txt") == "[('cnn', 1), ('rnn', 4)]"


# shapes a reviewer found stale: a metaclass's method (its cls is a class made with it), a
# parameter that is merely called cls (it names what it is given), a type()-made subclass
# under an abc.ABC base (ABCMeta gives it the __module__ "abc")


def test_a_metaclass_methods_cls_counts_every_hierarchy(project):
    files = _files('''
        from models.base import Base, Meta
        return repr(sorted((c.NAME, c.WEIGHT) for c in Meta.subs(Base)))
    ''')
    files["models/base.py"] = (
        "class Meta(type):\n    def subs(cls):\n        return cls.__subclasses__()\n\n\n"
        + BASE.replace("class Base:", "class Base(metaclass=Meta):"))
    check(project, files, ("models/rnn.py", "WEIGHT = 2", "WEIGHT = 3"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1), ('rnn', 3)]")


def test_a_parameter_called_cls_names_what_it_is_given(project):
    files = _files('''
        from models.base import Base, Manager
        return repr(sorted((c.NAME, c.WEIGHT) for c in Manager().discover(Base)))
    ''')
    files["models/base.py"] = BASE + (
        "\n\nclass Manager:\n    def discover(self, cls):\n        return cls.__subclasses__()\n")
    check(project, files, ("models/rnn.py", "WEIGHT = 2", "WEIGHT = 3"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1), ('rnn', 3)]")


def test_a_type_made_subclass_under_an_abc_base_is_recorded(project):
    files = _files(DISCOVER["walker"])
    files["walk.py"] = WALK
    files["models/base.py"] = "import abc\n\n\n" + BASE.replace("class Base:",
                                                                 "class Base(abc.ABC):")
    files["models/rnn.py"] = ("from .base import Base\n\n\nRNN = type('RNN', (Base,), "
                              "{'NAME': 'rnn', 'WEIGHT': 2})\n")
    check(project, files, ("models/rnn.py", "'WEIGHT': 2", "'WEIGHT': 3"),
          "[('cnn', 1), ('rnn', 2)]", "[('cnn', 1), ('rnn', 3)]")
