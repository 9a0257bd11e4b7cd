"""The pure renderers of issue 4: GitHub annotations, graph formats, and the CI doc's workflow."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pydot
import yaml

from tests.conftest import REPO
from zenbuild.events import RunFinished, StepCached, StepErrored, StepFinished, Warning_
from zenbuild.inspect.github import GithubReporter, annotation, error_location
from zenbuild.inspect.render import graph_data, to_dot, to_mermaid


def test_annotation_escapes_data_and_properties() -> None:
    line = annotation("error", "50% done\nline two\r", "step a, b: failed", "dir/p.py", 7)
    assert line == "::error title=step a%2C b%3A failed,file=dir/p.py,line=7::50%25 done%0Aline two"
    assert annotation("notice", "ok") == "::notice::ok"


def test_error_location_takes_the_innermost_project_frame(tmp_path: Path, monkeypatch: Any) -> None:
    root = tmp_path / "proj"
    (root / "lib").mkdir(parents=True)
    monkeypatch.chdir(root)
    tb = (
        "Traceback (most recent call last):\n"
        f'  File "{root}/pipes.py", line 12, in count\n    helper()\n'
        f'  File "{root}/lib/h.py", line 3, in helper\n    raise ValueError("x")\n'
        '  File "/usr/lib/python3/json/__init__.py", line 99, in loads\n'
        "ValueError: x\n"
    )
    assert error_location(tb, str(root)) == ("lib/h.py", 3)
    assert error_location("no frames", str(root)) == ("", None)


def test_github_reporter(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = tmp_path / "summary.md"
    rep = GithubReporter(str(tmp_path), stream=out, summary_path=str(summary))
    rep.handle(StepCached(step="a"))
    rep.handle(StepFinished(step="b", duration=0.25))
    rep.handle(StepErrored(step="c", duration=0.5, error="Traceback...\nKeyError: 'k'\n"))
    rep.handle(Warning_(message="input x changed while step b ran"))
    rep.handle(RunFinished(status="failed", counts={"executed": 1, "cached": 1, "failed": 1}))
    lines = out.getvalue().splitlines()
    assert lines[0] == "::error title=zenbuild%3A step c failed%3A KeyError%3A 'k'::Traceback...%0AKeyError: 'k'"
    assert lines[1] == "::warning title=zenbuild::input x changed while step b ran"
    assert len(lines) == 2  # no success notice for a failed run
    table = summary.read_text()
    assert "| a | cached |  |" in table and "| b | executed | 0.250s |" in table
    assert "| c | failed | 0.500s |" in table and table.startswith("### zenbuild run: failed")


def _data(statuses: Dict[str, str], edges: List[tuple]) -> Dict[str, Any]:
    nodes = [{"id": n, "status": s, "duration_s": 0.5, "reasons": [f'why "{n}"'], "label": f"{n}: {s}"}
             for n, s in statuses.items()]
    return {"pipeline": 'p"q', "run_id": "r1", "run_status": "failed", "nodes": nodes,
            "edges": [{"from": a, "to": b, "kind": k} for a, b, k in edges]}


def test_mermaid_avoids_keywords_and_quotes() -> None:
    text = to_mermaid(_data({"end": "cached", "graph": "not run"}, [("end", "graph", "file")]))
    assert 's_end["end: cached"]:::cached' in text
    assert 's_graph["graph: not run"]:::not_run' in text
    assert "s_end -.-> s_graph" in text
    assert re.search(r"classDef not_run fill:#ffffff,.*stroke-dasharray", text)


def test_dot_escapes_and_parses() -> None:
    text = to_dot(_data({"a": "executed", "b": "failed"}, [("a", "b", "data")]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (g,) = pydot.graph_from_dot_data(text)
    assert g.get_name() == '"p\\"q"'
    b = g.get_node('"b"')[0].get_attributes()
    assert b["tooltip"] == '"why \\"b\\""' and b["penwidth"] == "3"


def test_graph_data_without_a_graph_keeps_the_run_steps() -> None:
    run = {"id": "r", "status": "succeeded", "steps": [
        {"step": "gone", "status": "cached", "duration": 0.0, "reasons": ["up to date"], "error": None}]}
    data = graph_data(None, run, "old")
    assert data["pipeline"] == "old" and data["edges"] == []
    assert data["nodes"][0]["id"] == "gone" and data["nodes"][0]["in_pipeline"] is False


def test_ci_doc_workflow_is_valid_and_its_commands_exist() -> None:
    doc = (REPO / "docs" / "ci.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    workflow = yaml.safe_load(blocks[0])
    steps = workflow["jobs"]["run"]["steps"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert "actions/cache/restore@v4" in uses and "actions/cache/save@v4" in uses
    save = next(s for s in steps if s.get("uses") == "actions/cache/save@v4")
    assert save["if"] == "always()" and save["with"]["path"] == ".zenbuild"
    commands = [s["run"] for s in steps if str(s.get("run", "")).startswith("zenbuild ")]
    commands += re.findall(r"^\s+- run: (zenbuild status[^\n]*)$", doc, re.M)
    assert any("--format github" in c for c in commands)
    for c in commands:  # every option the doc shows is accepted by the real CLI
        args = c.split("#")[0].split()[1:]
        proc = subprocess.run([sys.executable, "-m", "zenbuild", *args, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (c, proc.stderr)
