"""End-to-end: @step(version=probe) against a REAL local HTTP server (http.server in a thread)
whose ETag changes, on the examples/external project copied into tmp_path, through the real
CLI and pipe().run(). Asserts exactly which steps executed, and that the probe ran each time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest

from examples.external.server import DataServer
from tests.conftest import REPO, Project

RATES = {"base": "USD", "rates": {"EUR": 0.92, "CHF": 0.88, "GBP": 0.79, "JPY": 151.2,
                                  "SGD": 1.34}}
ALL = ["fetch_rates", "load_prices", "convert", "render"]


@pytest.fixture
def ext(tmp_path: Path) -> Iterator[Tuple[Project, DataServer, str]]:
    root = tmp_path / "external"
    shutil.copytree(REPO / "examples" / "external", root,
                    ignore=shutil.ignore_patterns(".zenbuild", "build", "__pycache__"))
    with DataServer() as api:
        api.publish("/rates.json", RATES)
        yield Project(root), api, f"url={api.url}/rates.json"


def test_only_the_steps_behind_a_changed_etag_rerun(ext: Tuple[Project, DataServer, str]) -> None:
    p, api, url = ext
    r = p.run("run", "-p", url)
    assert r.executed == ALL
    assert api.hits == {"HEAD": 1, "GET": 1}
    assert "| coffee | 3.50 | 3.22 | 3.08 |" in p.read("build/report.md")

    r = p.run("run", "-p", url)  # the probe runs (HEAD), the same ETag: nothing executes
    assert r.executed == [] and r.cached == ALL
    assert api.hits == {"HEAD": 2, "GET": 1}

    api.publish("/rates.json", {**RATES, "rates": {**RATES["rates"], "EUR": 0.95}})
    r = p.run("explain", "fetch_rates", "-p", url, check=None)
    assert "version: 'rates-1' -> 'rates-2'" in r.output, r
    r = p.run("status", "--check", "-p", url, check=1)
    r = p.run("run", "-p", url, "--json")
    assert r.executed == ["fetch_rates", "convert", "render"]
    steps = {s["name"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["fetch_rates"]["reasons"][0]["kind"] == "version_changed"
    assert steps["fetch_rates"]["reasons"][0]["before"] == "rates-1"
    assert steps["fetch_rates"]["reasons"][0]["after"] == "rates-2"
    assert "| coffee | 3.50 | 3.32 | 3.08 |" in p.read("build/report.md")
    assert api.hits["GET"] == 2

    # a new ETag for the same data: fetch_rates executes, early cutoff keeps the rest cached
    api.publish("/rates.json", {**RATES, "rates": {**RATES["rates"], "EUR": 0.95}})
    r = p.run("run", "-p", url)
    assert r.executed == ["fetch_rates"]
    assert r.cached == ["load_prices", "convert", "render"]
    assert "not deterministic" not in r.output


def test_a_failing_probe_warns_once_and_the_step_runs(ext: Tuple[Project, DataServer, str]) -> None:
    p, api, url = ext
    p.run("run", "-p", url)
    api.fail_head = True  # HEAD answers 503; GET still works
    r = p.run("run", "-p", url, "--explain")
    assert r.executed == ["fetch_rates"]  # it returned the same rates: cutoff
    assert r.output.count("the version probe of step fetch_rates failed") == 1, r
    assert "HTTPError: HTTP Error 503" in r.output
    assert "0 failed" not in r.output and r.returncode == 0
    api.fail_head = False
    # the probe works again with the ETag of the first run: that run's entry is served
    r = p.run("run", "-p", url)
    assert r.executed == [] and api.hits["GET"] == 2


def test_no_cache_step_is_not_probed_and_always_executes(ext: Tuple[Project, DataServer, str]) -> None:
    p, api, url = ext
    src = p.read("pipeline.py")
    p.write("pipeline.py", src.replace("@step(version=rates_etag", "@no_cache\n@step(version="
                                       "rates_etag").replace("import Env,", "import Env, no_cache,"))
    p.run("run", "-p", url)
    r = p.run("run", "-p", url)
    assert r.executed == ["fetch_rates"]
    assert api.hits["HEAD"] == 0


API = '''
import json, sys
sys.path.insert(0, {root!r})
import pipeline
r = pipeline.external(url={url!r}).run(project_dir={root!r})
print(json.dumps([n for n, s in r.steps.items() if s.status == "executed"]))
'''


def api_executed(p: Project, url: str) -> Any:
    script = p.root.parent / "api.py"
    script.write_text(textwrap.dedent(API.format(root=str(p.root), url=url)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_probe_through_the_python_api(ext: Tuple[Project, DataServer, str]) -> None:
    p, api, url = ext
    full = url.split("=", 1)[1]
    assert api_executed(p, full) == ALL
    assert api_executed(p, full) == []
    api.publish("/rates.json", {**RATES, "rates": {**RATES["rates"], "CHF": 0.9}})
    assert api_executed(p, full) == ["fetch_rates", "convert", "render"]
    assert api.hits["HEAD"] == 3


THREE_PROBES = '''
import threading
from zenbuild import pipeline, step

# Each probe waits until all three are running: probes run one after another would time out
# here (and fail, so each step would execute with a warning) instead of meeting.
MET = threading.Barrier(3, timeout=60)


def probe(tag: str) -> str:
    MET.wait()
    return "v1-" + tag


@step(version=probe)
def fetch(tag: str) -> str:
    return tag.upper()


@pipeline
def p():
    for t in ("a", "b", "c"):
        fetch(t, id=f"fetch_{t}")
'''


def test_version_probes_of_a_run_run_at_once(project: Project) -> None:
    """A run's probes (HEAD requests, database queries) run together before the walk: three
    probes that each wait for the other two meet, so the run takes as long as the slowest."""
    project.write("zenbuild.toml", 'pipelines = ["three:p"]\n')
    project.write("three.py", THREE_PROBES)
    r = project.run("run")
    assert sorted(r.executed) == ["fetch_a", "fetch_b", "fetch_c"], r
    assert "version probe" not in r.output, r  # none failed
    r = project.run("run")
    assert r.executed == [] and "version probe" not in r.output, r
    r = project.run("status", "--check")  # explain and status probe the same way
    assert r.returncode == 0, r


HANGING_PROBE = '''
import urllib.request
from zenbuild import pipeline, step


def head(url: str) -> str:  # no timeout of its own: a server that never answers hangs it
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        return r.headers["ETag"]


@step(version=head, probe_timeout="1s")
def fetch(url: str) -> str:
    return "fetched"


@step
def local() -> int:
    return 1


@pipeline
def p(url: str = ""):
    fetch(url)
    local()
'''


def test_a_probe_that_never_returns_times_out_and_the_step_runs(project: Project) -> None:
    """A probe stuck on a server that accepts the connection and never answers does not hang
    the run: after its probe_timeout the step executes, as for a failed probe, with a warning,
    and the run exits although the probe's thread is still waiting."""
    import socket

    with socket.socket() as srv:  # listens, never accepts: the HEAD request waits forever
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        url = f"url=http://127.0.0.1:{srv.getsockname()[1]}/data.csv"
        project.write("zenbuild.toml", 'pipelines = ["hang:p"]\n')
        project.write("hang.py", HANGING_PROBE)
        r = project.run("run", "-p", url, timeout=60)
        assert sorted(r.executed) == ["fetch", "local"] and r.returncode == 0, r
        assert r.output.count("the version probe of step fetch failed: it did not return "
                              "within 1 s") == 1, r
        r = project.run("run", "-p", url, timeout=60)
        assert r.executed == ["fetch"] and r.cached == ["local"], r  # never served stale
    project.write("hang.py", HANGING_PROBE.replace('probe_timeout="1s"', 'probe_timeout="soon"'))
    r = project.run("run", "-p", url, check=2)
    assert "@step(probe_timeout='soon') of step fetch" in r.stderr and "Traceback" not in r.output


EXITING_PROBE = '''
import sys
from zenbuild import pipeline, step


def probe():
    raise {exc}


@step(version=probe)
def fetch() -> int:
    return 1


@step
def local() -> int:
    return 2


@pipeline
def p():
    fetch()
    local()
'''


@pytest.mark.parametrize("exc", ["SystemExit(2)", "KeyboardInterrupt()"])
def test_a_probe_that_exits_is_a_failed_probe_not_the_end_of_zenbuild(project: Project,
                                                                     exc: str) -> None:
    """sys.exit() in a probe ended run, status and explain silently with exit 2 (and --json
    printed nothing); a KeyboardInterrupt in it looked like the user's Ctrl-C (exit 130)."""
    project.write("zenbuild.toml", 'pipelines = ["exiting:p"]\n')
    project.write("exiting.py", EXITING_PROBE.replace("{exc}", exc))
    r = project.run("run", "--json")
    assert sorted(r.executed) == ["fetch", "local"] and r.returncode == 0, r
    name = exc.split("(")[0]
    assert f"the version probe of step fetch failed: it raised {name}" in r.stderr, r
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = project.run("explain", "fetch")
    assert f"version probe of step fetch failed (it raised {name}" in r.stdout, r
