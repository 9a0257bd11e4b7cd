"""The cyclic GC while `zenbuild run` works: paused for zenbuild's own work (tracing the
pipeline body included), on around each step's own code, and the objects that existed when the
walk began kept out of its scans until the walk ends (frozen), collectable again afterwards."""

from __future__ import annotations

import json

from tests.conftest import Project

PIPE = '''
import gc
import json
from pathlib import Path

from zenbuild import Output, pipeline, step


def _state():
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count() > 0}


@step
def probe(out: Output) -> int:
    Path(out).write_text(json.dumps(_state()))
    return 1


@pipeline
def pipe():
    (Path(__file__).parent / "body.json").write_text(json.dumps(_state()))
    probe(Output("step.json"))
'''


def test_gc_is_paused_for_tracing_and_on_for_steps(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:pipe"]\n')
    project.write("pipe.py", PIPE)
    assert project.run("run").executed == ["probe"]
    assert json.loads(project.read("body.json")) == {"enabled": False, "frozen": False}
    assert json.loads(project.read("step.json")) == {"enabled": True, "frozen": True}


def test_the_python_api_unfreezes_after_the_walk(project: Project, monkeypatch) -> None:
    import gc
    import importlib
    import sys

    project.write("zenbuild.toml", 'pipelines = ["pipe:pipe"]\n')
    project.write("pipe.py", PIPE)
    monkeypatch.syspath_prepend(str(project.root))
    try:
        mod = importlib.import_module("pipe")
        before = gc.get_freeze_count()
        result = mod.pipe().run(project_dir=project.root)
        assert result.status == "succeeded"
        assert json.loads(project.read("step.json"))["frozen"] is (before == 0)
        assert gc.get_freeze_count() == before  # collectable again
    finally:
        sys.modules.pop("pipe", None)
