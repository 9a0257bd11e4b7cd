"""Unit: a worker process that serves task after task (a Dask worker that outlives runs) runs
each step with the project's modules as their files are now (executors.freshness): classes
that arrive in a step's arguments, modules the step imports in its body, and modules edited
while a task ran. Each case is one real worker process running two tasks, with a file edited
between (or during) them; the tasks' arguments and code references are made by fresh
"client" processes, as a run's would be."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = r'''
import json, os, pickle, subprocess, sys
root = sys.argv[1]
from zenbuild.executors.process import run_packed
from zenbuild.executors.process import FnRef, received


def client(expr):
    """What a fresh client process sends: the FnRef of steps.use and the packed arguments."""
    out = subprocess.run([sys.executable, "-c", f"""
import pickle, sys
sys.path.insert(0, {root!r})
import steps
from zenbuild.executors.process import fn_ref
from zenbuild.executors.worker_store import pack_args
sys.stdout.buffer.write(pickle.dumps((fn_ref(steps.use), pack_args({expr}, {{}}))))"""],
        capture_output=True, check=True)
    return pickle.loads(out.stdout)


def task(expr):
    ref, packed = client(expr)
    outcome, _ = run_packed("use", ref, root, packed, None, None, "py")
    assert outcome.ok, outcome.error
    # through a pipe, then loaded as the executor loads it (received)
    outcome, _ = received((pickle.loads(pickle.dumps(outcome)), ""))
    assert outcome.ok, outcome.error
    return outcome.value


first = task(sys.argv[2])
exec(sys.argv[3])  # the edit, between the two tasks
print(json.dumps([first, task(sys.argv[2])]))
'''


def two_tasks(root: Path, args_expr: str, edit: str) -> list:
    (root / "worker.py").write_text(WORKER)
    out = subprocess.run([sys.executable, str(root / "worker.py"), str(root), args_expr, edit],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_an_argument_of_an_edited_project_class_is_of_the_new_class(tmp_path: Path) -> None:
    write(tmp_path / "helpers.py", '''
        class Cfg:
            def val(self):
                return "old"
    ''')
    write(tmp_path / "steps.py", '''
        import helpers

        def use(cfg):
            return [cfg.val(), isinstance(cfg, helpers.Cfg)]
    ''')
    edit = ("open(os.path.join(root, 'helpers.py'), 'w').write("
            "'class Cfg:\\n    def val(self):\\n        return \"newer\"\\n')")
    assert two_tasks(tmp_path, "(__import__('helpers').Cfg(),)", edit) == [
        ["old", True], ["newer", True]]


def test_a_module_the_step_imports_in_its_body_is_read_again(tmp_path: Path) -> None:
    write(tmp_path / "lazyh.py", "def val():\n    return 'old'\n")
    write(tmp_path / "steps.py", '''
        def use():
            import lazyh  # imported when the step runs, not with its module
            return lazyh.val()
    ''')
    edit = "open(os.path.join(root, 'lazyh.py'), 'w').write('def val():\\n    return \"newer\"\\n')"
    assert two_tasks(tmp_path, "()", edit) == ["old", "newer"]


def test_a_module_edited_while_a_task_ran_is_read_again_by_the_next(tmp_path: Path) -> None:
    # the step imports its helper, then the helper's file is edited before the task ends:
    # the worker cannot tell which version it imported, so the next task imports it again
    write(tmp_path / "during.py", "def val():\n    return 'old'\n")
    write(tmp_path / "steps.py", '''
        import os

        def use():
            import during
            here = os.path.dirname(os.path.abspath(__file__))
            if during.val() == "old":
                with open(os.path.join(here, "during.py"), "w") as f:
                    f.write("def val():\\n    return 'newer'\\n")
            return during.val()
    ''')
    assert two_tasks(tmp_path, "()", "pass") == ["old", "newer"]
