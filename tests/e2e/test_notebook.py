"""End-to-end, issue 10 class 5: a real Jupyter kernel (nbclient + ipykernel) runs a real
.ipynb whose cells define a helper and a @step/@pipeline; editing the helper's cell and
restarting-and-running-all reruns exactly the step that uses it, with the new value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import nbclient  # noqa: E402  (installed with the dev extras)
import nbformat  # noqa: E402

HELPER = "def helper(x):\n    return x * 2\n"
UNRELATED = "def unrelated(x):\n    return x - 1\n"
STEPS = '''\
from zenbuild import step, pipeline


@step
def scaled(x: int) -> int:
    return helper(x) + 1


@step
def plain() -> int:
    return unrelated(10) * 0 + 7


@pipeline
def p():
    scaled(3)
    plain()
'''
RUN = '''\
r = p().run()
print("VALUES", r.steps["scaled"].output, r.steps["plain"].output)
'''


def run_notebook(root: Path, cells: List[str]) -> Tuple[List[str], str]:
    """A fresh kernel runs every cell (restart and run all); returns (executed steps, values)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = root / "analysis.ipynb"
    nbformat.write(nb, str(path))
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    )
    client.execute()
    text = ""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text += out.get("text", "") if out.get("output_type") == "stream" else ""
    executed = re.findall(r"^Step (\S+) has finished in", text, re.M)
    values = re.findall(r"^VALUES (.*)$", text, re.M)
    assert values, text
    return executed, values[-1]


def test_editing_a_helper_cell_reruns_the_step_that_uses_it(tmp_path):
    root = tmp_path / "nbproj"
    root.mkdir()
    (root / "zenbuild.toml").write_text("")
    cells = [HELPER, UNRELATED, STEPS, RUN]
    executed, values = run_notebook(root, cells)
    assert sorted(executed) == ["plain", "scaled"] and values == "7 7"

    executed, values = run_notebook(root, cells)  # restart and run all, nothing edited
    assert executed == [] and values == "7 7"

    cells[0] = "def helper(x):\n    # a comment\n    return x * 2\n"  # cosmetic
    executed, values = run_notebook(root, cells)
    assert executed == [] and values == "7 7"

    cells[0] = "def helper(x):\n    return x * 3\n"  # the helper, defined in another cell
    executed, values = run_notebook(root, cells)
    assert executed == ["scaled"] and values == "10 7"
