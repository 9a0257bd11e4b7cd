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
from zenbuild.executors import GcPause


def _state():  # frozen: more than the interpreter's own (Python 3.12 starts with some frozen)
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count() > GcPause.frozen_base,
            "count": gc.get_freeze_count()}


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
    body, step = json.loads(project.read("body.json")), json.loads(project.read("step.json"))
    assert (body["enabled"], body["frozen"]) == (False, False)
    assert (step["enabled"], step["frozen"]) == (True, True)


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
        # frozen for the walk only when nothing was (a frozen object may be the caller's,
        # which gc.unfreeze() would release; Python 3.12 starts with some frozen)
        assert json.loads(project.read("step.json"))["count"] > before or before > 0
        assert json.loads(project.read("step.json"))["count"] == before or before == 0
        assert gc.get_freeze_count() == before  # collectable again
    finally:
        sys.modules.pop("pipe", None)
