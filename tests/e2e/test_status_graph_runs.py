"""`status [--check]`, `graph --format mermaid|dot|json`, `runs`, `runs show`, and the GitHub
Actions output of `run --format github` and `status --format github`."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Dict

import pydot
import pytest

PIPE = '''
from zenbuild import File, Output, no_cache, pipeline, step
from ticker import tick


@step
def load(src: File) -> str:
    tick("load")
    return src.read_text()


@step
def parse(text: str) -> list:
    tick("parse")
    if "bad" in text:
        raise ValueError("cannot parse " + text.strip())
    return text.split()


@step
def report(items: list, out: Output) -> None:
    tick("report")
    out.write_text(",".join(items))


@step
def summary(report_file: File) -> int:
    tick("summary")
    return len(report_file.read_text())


@step
def other(n: int) -> int:
    tick("other")
    return n + 1


@no_cache
@step
def fetch() -> str:
    tick("fetch")
    return "rates"


@step
def use_rates(rates: str) -> str:
    tick("use_rates")
    return rates.upper()


@pipeline
def main():
    items = parse(load(File("data/in.txt")))
    report(items, Output("build/report.txt"))
    summary(File("build/report.txt"))
    other(1)
    use_rates(fetch())
'''

STEPS = ["load", "parse", "report", "summary", "other", "fetch", "use_rates"]


@pytest.fixture
def proj(project: Any) -> Any:
    project.write("zenbuild.toml", 'pipelines = ["pipes:main"]\n')
    project.write("pipes.py", PIPE)
    project.write("data/in.txt", "a b c\n")
    return project


def status_json(p: Any, *args: str, check: int = 0) -> Dict[str, Any]:
    return json.loads(p.run("status", "--json", *args, check=check).stdout)


# -- status -------------------------------------------------------------------------------------
def test_status_check_exit_codes_and_reasons(proj: Any) -> None:
    r = proj.run("status", "--check", check=1)  # never built
    # never built: all but the no_cache step (which never fails the check)
    assert "6 step(s) of pipeline main are not up to date: load, parse, report, summary, " \
        "other, use_rates." in r.stderr
    proj.run("run")
    proj.ticks()
    r = proj.run("status", "--check")
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:-1]}
    assert list(lines) == STEPS
    for name in ("load", "parse", "report", "summary", "other"):
        assert re.match(rf"\s*{name}\s+up to date$", lines[name]) or \
            lines[name].split(None, 1)[1].strip() == "up to date", lines[name]
    assert "always runs" in lines["fetch"] and "no_cache: external input" in lines["fetch"]
    assert "may rerun" in lines["use_rates"]
    assert "input rates: upstream step fetch would execute" in lines["use_rates"]
    assert proj.ticks() == []  # status executes nothing

    proj.write("data/in.txt", "a b c d\n")
    r = proj.run("status", "--check", check=1)
    assert re.search(r"^\s+load\s+stale\s+file data/in.txt: content changed \(6 B -> 8 B\)$",
                     r.stdout, re.M), r.stdout
    assert re.search(r"^\s+parse\s+stale\s+input text: upstream step load would execute$",
                     r.stdout, re.M)
    assert re.search(r"^\s+summary\s+stale\s+upstream step report would execute$", r.stdout, re.M)
    assert re.search(r"^\s+other\s+up to date$", r.stdout, re.M)
    assert "4 step(s) of pipeline main are not up to date: load, parse, report, summary" in r.stderr
    assert "zenbuild explain STEP" in r.stderr
    # without --check, status only reports
    proj.run("status", check=0)
    proj.run("run")
    proj.run("status", "--check", check=0)


def test_status_check_fails_when_an_output_on_disk_differs(proj: Any) -> None:
    proj.run("run")
    proj.ticks()
    (proj.root / "build/report.txt").write_text("edited by hand")
    r = proj.run("status", "--check", check=1)
    assert re.search(r"^\s+report\s+restore\s+output build/report.txt: differs from the stored "
                     r"result; a run restores it$", r.stdout, re.M), r.stdout
    assert "would have outputs restored from the store" in r.stdout
    assert "1 step(s) of pipeline main have outputs on disk that differ from their cached " \
           "results: report." in r.stderr
    # summary reads build/report.txt: it sees what a run would restore, so it stays up to date
    assert re.search(r"^\s+summary\s+up to date$", r.stdout, re.M), r.stdout
    r = proj.run("explain", "report")
    assert "its outputs on disk differ (a run restores them)" in r.stdout
    assert proj.read("build/report.txt") == "edited by hand"  # status and explain change nothing
    proj.run("run")
    assert proj.ticks() == ["fetch"]  # restored, not executed
    proj.run("status", "--check")


def test_status_json_schema(proj: Any) -> None:
    proj.run("run")
    proj.write("pipes.py", PIPE.replace("return n + 1", "return n + 2"))
    data = status_json(proj, check=0)
    assert set(data) == {"pipeline", "spec", "up_to_date", "stale", "steps"}
    assert data["pipeline"] == "main" and data["spec"] == "pipes:main"
    assert data["up_to_date"] is False and data["stale"] == ["other"]
    assert [s["step"] for s in data["steps"]] == STEPS
    for s in data["steps"]:
        assert set(s) == {"step", "function", "state", "execute", "no_cache", "reasons",
                          "reason_records", "waits_on", "last_built", "not_deterministic",
                          "last_run_not_cached"}
        assert s["not_deterministic"] is False
        assert [r["text"] for r in s["reason_records"]] == s["reasons"]
        assert s["state"] in ("up to date", "stale", "always runs", "may rerun", "error", "skipped")
        assert set(s["last_built"]) == {"fingerprint", "time", "duration_s"}
    by = {s["step"]: s for s in data["steps"]}
    assert by["other"]["reasons"] == ["code: step function pipes.other (pipes.py) changed"]
    [rec] = by["other"]["reason_records"]
    assert (rec["kind"], rec["subject"], rec["detail"]) == (
        "code_changed", "pipes.other", {"item": "step", "file": "pipes.py"})
    assert rec["before"] != rec["after"]  # the item's old and new digests
    assert [r["kind"] for r in by["fetch"]["reason_records"]] == ["no_cache"]
    assert by["use_rates"]["reason_records"] == [{
        "kind": "upstream_pending", "subject": "fetch", "before": None, "after": None,
        "detail": {"arg": "rates"}, "text": "input rates: upstream step fetch would execute"}]
    assert by["load"]["reason_records"] == [{
        "kind": "up_to_date", "subject": "", "before": None, "after": None, "detail": None,
        "text": "up to date"}]
    assert by["fetch"]["no_cache"] is True and by["fetch"]["execute"] is True
    assert by["use_rates"]["waits_on"] == ["fetch"]
    # the JSON verdict is the same with --check, which then exits 1
    assert status_json(proj, "--check", check=1)["stale"] == ["other"]


def test_status_errors_exit_2(proj: Any) -> None:
    r = proj.run("status", "--check", "nosuch", check=2)
    assert "unknown pipeline 'nosuch'" in r.stderr
    proj.write("pipes.py", PIPE + "\ndef broken(:\n")
    r = proj.run("status", "--check", check=2)
    assert "syntax error in pipes.py" in r.stderr
    proj.write("pipes.py", PIPE.replace('    other(1)\n', '    other(1)\n    raise RuntimeError("body")\n'))
    r = proj.run("status", "--check", check=2)
    assert "RuntimeError: body" in r.stderr


def test_status_missing_input_fails_the_check(proj: Any) -> None:
    proj.run("run")
    (proj.root / "data/in.txt").unlink()
    r = proj.run("status", "--check", check=1)
    assert re.search(r"^\s+load\s+error\s+input file 'data/in.txt' does not exist", r.stdout, re.M)
    assert re.search(r"^\s+parse\s+skipped\s+upstream step load failed", r.stdout, re.M)


def test_status_format_github_annotates_stale_steps(proj: Any) -> None:
    proj.run("run")
    proj.write("data/in.txt", "x\n")
    r = proj.run("status", "--check", "--format", "github", check=1)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("::error") and "load" in ln)
    m = re.match(r"^::error title=zenbuild%3A step load is stale,file=([^,]+),line=(\d+)::(.*)$", line)
    assert m, line
    assert Path(m.group(1)).name == "pipes.py"
    src = PIPE.splitlines()
    assert src[int(m.group(2)) - 1].startswith(("@step", "def load"))
    assert m.group(3) == "file data/in.txt: content changed (6 B -> 2 B)"


# -- run --format github ----------------------------------------------------------------------
def test_run_format_github_turns_a_failed_step_into_an_annotation(proj: Any, tmp_path: Path) -> None:
    proj.write("data/in.txt", "bad input\n")
    summary = tmp_path / "summary.md"
    r = proj.cli("run", "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)}, check=1)
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("::error")]
    assert len(errors) == 1, r.stdout
    m = re.match(r"^::error title=([^,]*),file=([^,]+),line=(\d+)::(.*)$", errors[0])
    assert m, errors[0]
    assert m.group(1) == "zenbuild%3A step parse failed%3A ValueError%3A cannot parse bad input"
    assert m.group(2) == "pipes.py"  # relative to the working directory, as GitHub wants
    assert PIPE.splitlines()[int(m.group(3)) - 1].strip() == 'raise ValueError("cannot parse " + text.strip())'
    assert "%0A" in m.group(4) and "\n" not in m.group(4)  # multi-line message escaped
    assert "Step parse failed" in r.stdout  # the usual log lines are still there
    table = summary.read_text()
    assert "| parse | failed |" in table and "| load | executed |" in table


# -- graph --------------------------------------------------------------------------------------
@pytest.fixture
def mixed(proj: Any) -> Any:
    """Two runs: the second has executed, cached, failed and skipped steps."""
    proj.run("run")
    proj.write("data/in.txt", "bad\n")
    proj.run("run", "--keep-going", check=1)
    return proj


def test_graph_before_any_run(proj: Any) -> None:
    data = json.loads(proj.run("graph", "--format", "json").stdout)
    assert data["run_id"] is None
    assert {n["status"] for n in data["nodes"]} == {"not run"}


def test_graph_json_schema(mixed: Any) -> None:
    data = json.loads(mixed.run("graph", "--format", "json").stdout)
    assert data["format"] == "zenbuild.graph/1"
    assert data["pipeline"] == "main" and data["run_status"] == "failed"
    assert set(data) >= {"format", "pipeline", "run_id", "run_status", "nodes", "edges", "styles"}
    status = {n["id"]: n["status"] for n in data["nodes"]}
    assert status == {"load": "executed", "parse": "failed", "report": "skipped",
                      "summary": "skipped", "other": "cached", "fetch": "executed",
                      "use_rates": "cached"}
    for n in data["nodes"]:
        assert set(n) == {"id", "function", "status", "duration_s", "reasons", "error",
                          "no_cache", "expired", "forced", "in_pipeline", "label"}
        assert n["status"] in n["label"]
    by = {n["id"]: n for n in data["nodes"]}
    assert "ValueError: cannot parse bad" in by["parse"]["error"]
    assert by["load"]["reasons"] == ["file data/in.txt: content changed (6 B -> 4 B)"]
    edges = {(e["from"], e["to"], e["kind"]) for e in data["edges"]}
    assert edges == {("load", "parse", "data"), ("parse", "report", "data"),
                     ("report", "summary", "file"), ("fetch", "use_rates", "data")}
    # colours differ per status
    fills = {data["styles"][s]["fill"] for s in ("executed", "cached", "failed", "skipped")}
    assert len(fills) == 4


def test_graph_dot_parses(mixed: Any) -> None:
    text = mixed.run("graph", "--format", "dot").stdout
    with warnings.catch_warnings():  # pyparsing's own deprecation notices, not ours
        warnings.simplefilter("ignore")
        graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1
    g = graphs[0]
    assert g.get_type() == "digraph"
    nodes = {n.get_name().strip('"'): n for n in g.get_nodes() if n.get_name() not in ("node", "edge", "graph")}
    assert set(nodes) == set(STEPS)
    styles = json.loads(mixed.run("graph", "--format", "json").stdout)["styles"]
    expected = {"load": "executed", "parse": "failed", "report": "skipped", "other": "cached"}
    for name, status in expected.items():
        attrs = nodes[name].get_attributes()
        assert attrs["label"].strip('"').startswith(f"{name}: {status}")
        assert attrs["fillcolor"].strip('"') == styles[status]["fill"]
        assert attrs["class"].strip('"') == status
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in g.get_edges()}
    assert edges == {("load", "parse"), ("parse", "report"), ("report", "summary"),
                     ("fetch", "use_rates")}


def test_graph_mermaid_lines(mixed: Any) -> None:
    lines = mixed.run("graph").stdout.splitlines()  # mermaid is the default
    assert lines[0] == "flowchart LR"
    nodes = dict(re.findall(r'^    s_(\w+)\["[^"]*"\]:::(\w+)$', "\n".join(lines), re.M))
    assert nodes == {"load": "executed", "parse": "failed", "report": "skipped",
                     "summary": "skipped", "other": "cached", "fetch": "executed",
                     "use_rates": "cached"}
    assert '    s_parse["parse: failed' in "\n".join(lines)
    assert "    s_load --> s_parse" in lines
    assert "    s_report -.-> s_summary" in lines  # a file dependency is dotted
    classdefs = {m.group(1): m.group(2) for m in
                 (re.match(r"^    classDef (\w+) fill:(#[0-9a-f]{6})", ln) for ln in lines) if m}
    assert set(classdefs) == {"executed", "failed", "skipped", "cached"}
    assert len(set(classdefs.values())) == 4


def test_graph_of_an_earlier_run(mixed: Any) -> None:
    first = json.loads(mixed.run("runs", "--json").stdout)[-1]["id"]
    data = json.loads(mixed.run("graph", "--format", "json", "--run", first).stdout)
    assert data["run_id"] == first
    assert {n["status"] for n in data["nodes"]} == {"executed"}


# -- runs ---------------------------------------------------------------------------------------
def test_runs_without_a_store(proj: Any) -> None:
    r = proj.run("runs", check=2)
    assert "nothing has been run in this project yet" in r.stderr


def test_runs_after_several_runs(mixed: Any) -> None:
    mixed.write("data/in.txt", "a b c\n")
    mixed.run("run")
    r = mixed.run("runs")
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["RUN", "ID", "PIPELINE", "STARTED", "DURATION", "EXECUTED",
                               "CACHED", "FAILED", "STATUS"]
    assert len(rows) == 4
    cols = [row.split() for row in rows[1:]]
    # newest first: all cached but fetch; the failed run; the first run
    assert [c[-1] for c in cols] == ["succeeded", "failed", "succeeded"]
    assert [c[-4:-1] for c in cols] == [["1", "6", "0"], ["2", "2", "1"], ["7", "0", "0"]]
    assert all(c[1] == "main" and re.match(r"\d+\.\d\ds$", c[4]) for c in cols)
    data = json.loads(mixed.run("runs", "--json").stdout)
    assert [d["id"] for d in data] == [c[0] for c in cols]
    for d, (executed, cached, failed, skipped, status) in zip(
            data, [(1, 6, 0, 0, "succeeded"), (2, 2, 1, 2, "failed"), (7, 0, 0, 0, "succeeded")]):
        started, finished, took = d["started"], d["finished"], d["duration_s"]
        assert isinstance(started, float) and isinstance(finished, float)
        assert took == pytest.approx(finished - started) and took >= 0
        assert d == {"id": d["id"], "pipeline": "main", "started": started, "finished": finished,
                     "duration_s": took, "status": status, "executed": executed,
                     "cached": cached, "failed": failed, "skipped": skipped, "params": {}}
    assert data[0]["started"] > data[1]["started"] > data[2]["started"]
    assert len(json.loads(mixed.run("runs", "--json", "-n", "2").stdout)) == 2
    assert json.loads(mixed.run("runs", "--json", "-P", "other").stdout) == []


def test_runs_show(mixed: Any) -> None:
    runs = json.loads(mixed.run("runs", "--json").stdout)
    failed = runs[0]["id"]
    r = mixed.run("runs", "show", failed[:-2])  # a unique prefix works
    assert r.stdout.startswith(f"run {failed}: pipeline main, failed")
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("  ")}
    assert rows["STEP"].split() == ["STEP", "STATUS", "DURATION", "REASONS"]
    assert re.match(r"^  load\s+executed\s+\d+\.\d{3}s\s+file data/in.txt: content changed", rows["load"])
    assert re.match(r"^  parse\s+failed\s+\d+\.\d{3}s\s+.*error: ValueError: cannot parse bad$", rows["parse"])
    assert re.match(r"^  report\s+skipped\s+-\s+upstream step parse failed$", rows["report"])
    assert re.match(r"^  other\s+cached\s+-\s+up to date$", rows["other"])
    assert re.match(r"^  fetch\s+executed\s+.*no_cache: external input, always executes$", rows["fetch"])
    # --log prints the run's console lines; --json carries steps and log
    r = mixed.run("runs", "show", "last", "--log")
    assert "Step parse failed after" in r.stdout and "Using cached version of other." in r.stdout
    data = json.loads(mixed.run("runs", "show", failed, "--json").stdout)
    assert [s["step"] for s in data["steps"]] == STEPS
    assert {s["step"]: s["status"] for s in data["steps"]}["parse"] == "failed"
    # each step's reasons as records too, so scripts can use kinds
    kinds = {s["step"]: [r["kind"] for r in s["reason_records"]] for s in data["steps"]}
    assert kinds == {"load": ["file_changed"], "parse": ["input_changed"],
                     "report": ["upstream_failed"], "summary": ["upstream_skipped"],
                     "other": ["up_to_date"], "fetch": ["no_cache"], "use_rates": ["up_to_date"]}
    load = next(s for s in data["steps"] if s["step"] == "load")
    assert load["reason_records"] == [{
        "kind": "file_changed", "subject": "data/in.txt", "before": 6, "after": 4, "detail": None,
        "text": "file data/in.txt: content changed (6 B -> 4 B)"}]
    assert "Step load has started." in data["log"]


def test_runs_show_unknown_or_ambiguous(mixed: Any) -> None:
    r = mixed.run("runs", "show", "nosuchrun", check=2)
    assert "no run with id 'nosuchrun'" in r.stderr
    r = mixed.run("runs", "show", "2", check=2)
    assert "is ambiguous" in r.stderr


def test_status_all_pipelines(proj: Any) -> None:
    proj.write("zenbuild.toml", 'pipelines = ["pipes:main", "second:side"]\n')
    proj.write("second.py", '''
        from zenbuild import pipeline, step

        @step
        def lonely(n: int) -> int:
            return n

        @pipeline
        def side():
            lonely(3)
    ''')
    proj.run("run")  # the first pipeline only
    proj.run("status", "--check")  # which is all `status` looks at by default
    r = proj.run("status", "--check", "--all", check=1)
    assert "pipeline main (pipes:main)" in r.stdout and "pipeline side (second:side)" in r.stdout
    assert re.search(r"^\s+lonely\s+stale\s+never built$", r.stdout, re.M)
    assert "1 step(s) of pipeline side are not up to date: lonely" in r.stderr
    assert "pipeline main are not up to date" not in r.stderr
    data = json.loads(proj.run("status", "--all", "--json").stdout)
    assert data["up_to_date"] is False
    assert [(p["pipeline"], p["stale"]) for p in data["pipelines"]] == [("main", []), ("side", ["lonely"])]
    proj.run("run", "side")
    proj.run("status", "--check", "--all")
    r = proj.run("status", "--all", "main", check=2)
    assert "not both" in r.stderr


REWORD = """
import zenbuild.reasons as R

for _kind in R.KINDS:  # every reason says something else, in other words
    R.TEMPLATES[_kind] = "reworded " + _kind.upper() + " {subject}"
"""


def test_status_check_decides_on_kinds_not_on_wording(proj: Any, tmp_path: Path) -> None:
    """With every reason's text reworded (a sitecustomize in the CLI's process), status --check
    gives the same states and exit codes: nothing is decided by matching a message."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(REWORD)
    env = {"PYTHONPATH": str(site)}
    proj.run("run")
    proj.ticks()
    # use_rates waits only on a no_cache step: "may rerun", which passes the check
    r = proj.run("status", "--check", env=env)
    assert re.search(r"^\s+use_rates\s+may rerun\s+reworded UPSTREAM_PENDING fetch$", r.stdout,
                     re.M), r.stdout
    assert re.search(r"^\s+other\s+up to date$", r.stdout, re.M), r.stdout
    # an output edited by hand: "restore", which fails it; its reader stays up to date
    (proj.root / "build/report.txt").write_text("edited by hand")
    r = proj.run("status", "--check", env=env, check=1)
    assert re.search(r"^\s+report\s+restore\s+reworded OUTPUT_RESTORE build/report.txt$",
                     r.stdout, re.M), r.stdout
    assert re.search(r"^\s+summary\s+up to date$", r.stdout, re.M), r.stdout
    assert "1 step(s) of pipeline main have outputs on disk that differ from their cached " \
           "results: report." in r.stderr
    data = json.loads(proj.run("explain", "use_rates", "--json", env=env).stdout)
    assert data["state"] == "may rerun"
    assert data["reasons"] == ["reworded UPSTREAM_PENDING fetch"]
    assert proj.ticks() == []


def test_a_step_returning_a_different_value_for_the_same_key_is_reported(project: Any) -> None:
    project.write("zenbuild.toml", 'pipelines = ["clock:p"]\n')
    project.write("clock.py", '''
        import datetime

        from zenbuild import no_cache, pipeline, step


        @step
        def stamp() -> str:
            return datetime.datetime.now().isoformat()


        @step
        def steady(n: int) -> int:
            return n * 2


        @no_cache
        @step
        def fetch() -> str:
            return datetime.datetime.now().isoformat()


        @pipeline
        def p():
            stamp()
            steady(2)
            fetch()
    ''')
    r = project.run("run")
    assert "not deterministic" not in r.output
    r = project.run("run", "--no-cache")  # the same keys again: the same values are expected
    warnings = [ln for ln in r.stderr.splitlines() if "not deterministic" in ln]
    assert warnings == ["Warning: step stamp is not deterministic: it ran again with the same "
                        "code and inputs and returned a different value; seed it or mark it "
                        "@no_cache"]
    data = json.loads(project.run("runs", "show", "last", "--json").stdout)
    kinds = {s["step"]: [x["kind"] for x in s["reason_records"]] for s in data["steps"]}
    assert kinds == {"stamp": ["cache_disabled", "not_deterministic"],
                     "steady": ["cache_disabled"], "fetch": ["no_cache"]}


@pytest.mark.parametrize("how", ["step", "config", "pipeline"])
def test_a_step_with_caching_turned_off_never_makes_status_check_fail(project: Any,
                                                                      how: str) -> None:
    """`status --check` (the pre-commit hook) called such a step, and every step after it,
    stale on every commit, and explain said the step after it "would execute" while run
    served it: only @no_cache counted as a step that always runs."""
    deco = "@step(enable_cache=False)" if how == "step" else "@step"
    pipe = "@pipeline(enable_cache=False)" if how == "pipeline" else "@pipeline"
    project.write("pipe.py", f'''
        from zenbuild import pipeline, step

        {deco}
        def src() -> int:
            return 1

        @step{"(enable_cache=True)" if how == "pipeline" else ""}
        def down(x: int) -> int:
            return x + 1

        {pipe}
        def p():
            down(src())
        ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n'
                  + ("[steps.src]\nenable_cache = false\n" if how == "config" else ""))
    project.run("run")
    r = project.run("status", "--check")
    assert re.search(r"^\s+src\s+always runs\s+caching disabled by", r.stdout, re.M), r
    assert re.search(r"^\s+down\s+may rerun\s+input x: upstream step src", r.stdout, re.M), r
    e = project.run("explain", "down")
    assert "would execute if an upstream" in e.stdout, e
    r = project.run("run")
    assert r.executed == ["src"] and r.cached == ["down"], r
