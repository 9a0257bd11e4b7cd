"""End-to-end, issue 10 item 7 for the Python API: a script or notebook that edits a module
between two `pipeline().run()` calls still runs the old code in memory, while the fingerprint
is read from the file. The result must not be stored under the new fingerprint, or every later
`zenbuild run` would serve the old code's value as up to date."""

from __future__ import annotations

import json
import subprocess
import sys

PIPE = '''
from zenbuild import step, pipeline
import helper


@step
def s() -> int:
    return helper.f()


@pipeline
def p():
    s()
'''

SCRIPT = '''
import json, sys
sys.path.insert(0, {root!r})
import pipe

first = pipe.p().run().steps["s"].output
with open({root!r} + "/{edit}") as f:
    src = f.read()
with open({root!r} + "/{edit}", "w") as f:
    f.write(src.replace({old!r}, {new!r}))
second = pipe.p().run().steps["s"].output
print(json.dumps([first, second]))
'''


def _script(project, edit: str, old: str, new: str) -> subprocess.CompletedProcess:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.write("helper.py", "def f():\n    return 22\n")
    code = SCRIPT.format(root=str(project.root), edit=edit, old=old, new=new)
    return subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                          text=True, timeout=120)


def test_a_step_edited_between_two_api_runs_is_not_cached_under_the_new_code(project):
    proc = _script(project, "pipe.py", "return helper.f()", "return helper.f() + 100")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[22, 22]"  # the old code ran in memory
    assert "is not what the file holds now" in proc.stdout + proc.stderr
    r = project.run("run", "--json")
    assert [s["status"] for s in json.loads(r.stdout)["steps"]] == ["executed"], r  # not served
    r = project.run("run")
    assert r.cached == ["s"], r


def test_a_helper_edited_between_two_api_runs_is_not_cached_either(project):
    proc = _script(project, "helper.py", "return 22", "return 23")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[22, 22]"
    assert "is not what the file holds now" in proc.stdout + proc.stderr
    r = project.run("run")
    assert r.executed == ["s"], r
