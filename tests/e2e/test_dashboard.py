"""`zenbuild dashboard`: its HTTP API, and the page in a real headless Chromium (Debian's, through
chromedriver and selenium): runs listed, a run opened, its steps' statuses shown, a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

PIPE = '''
from zenbuild import File, no_cache, pipeline, step


@step
def load(src: File) -> str:
    return src.read_text()


@step
def parse(text: str) -> list:
    if "bad" in text:
        raise ValueError("cannot parse " + text.strip())
    return text.split()


@step
def report(items: list) -> int:
    return len(items)


@step
def other(n: int) -> int:
    return n + 1


@no_cache
@step
def fetch() -> str:
    return "rates"


@pipeline
def main():
    report(parse(load(File("data/in.txt"))))
    other(1)
    fetch()
'''

SECOND_RUN = {"load": "executed", "parse": "failed", "report": "skipped", "other": "cached",
              "fetch": "executed"}


@pytest.fixture
def history(project: Any) -> Any:
    """A project with two runs: all executed, then executed/cached/failed/skipped steps."""
    project.write("zenbuild.toml", 'pipelines = ["pipes:main"]\n')
    project.write("pipes.py", PIPE)
    project.write("data/in.txt", "a b c\n")
    project.run("run")
    project.write("data/in.txt", "bad\n")
    project.run("run", "--keep-going", check=1)
    project.runs = json.loads(project.run("runs", "--json").stdout)
    return project


@pytest.fixture
def server(history: Any) -> Iterator[Tuple[str, Any]]:
    env = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "dashboard", "--port", "0",
         "--project-dir", str(history.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"^zenbuild dashboard: (http://127\.0\.0\.1:\d+/) \(Ctrl\+C to stop\)$", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1), history
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def get(url: str) -> Tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_api(server: Tuple[str, Any]) -> None:
    base, p = server
    code, data = get(base + "api/runs")
    assert code == 200 and [r["id"] for r in data["runs"]] == [r["id"] for r in p.runs]
    code, run = get(base + "api/runs/" + p.runs[0]["id"])
    assert code == 200
    assert {n["id"]: n["status"] for n in run["graph"]["nodes"]} == SECOND_RUN
    assert {(e["from"], e["to"]) for e in run["graph"]["edges"]} == {("load", "parse"), ("parse", "report")}
    assert "Step parse failed" in run["log"]
    assert get(base + "api/runs/nosuch")[0] == 404
    code, page = get(base)
    assert code == 200 and b"/assets/cytoscape.min.js" in page and b"https://" not in page
    assert get(base + "assets/cytoscape-dagre.min.js")[0] == 200
    assert get(base + "assets/..%2F__init__.py")[0] == 404
    assert get(base + "assets/../cli.py")[0] == 404


def test_port_in_use_is_a_clear_error(server: Tuple[str, Any]) -> None:
    base, p = server
    port = base.rsplit(":", 1)[1].strip("/")
    r = p.run("dashboard", "--port", port, check=2)
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr


def test_serve_closes_its_socket_when_the_announcement_fails(tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    """The listening socket is closed on every way out of serve(), the first printed line
    failing (a closed pipe: `zenbuild dashboard | head -0`) included."""
    from zenbuild.config import load_config
    from zenbuild.inspect import dashboard

    made: List[Any] = []

    def make_server(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    def announce(text: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    real = dashboard.make_server
    monkeypatch.setattr(dashboard, "make_server", make_server)
    with pytest.raises(BrokenPipeError):
        dashboard.serve(load_config(str(tmp_path), None), port=0, announce=announce)
    assert len(made) == 1 and made[0].socket.fileno() == -1  # closed


# -- the browser --------------------------------------------------------------------------------
def _driver(tmp_path: Path, monkeypatch: Any) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver")
    if not os.path.exists(browser) or driver_path is None:
        pytest.fail("Debian's chromium and chromium-driver are needed: sh tests/sysdeps/chromium.sh")
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def _wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _rgb(colour: str) -> Tuple[int, ...]:
    """#rrggbb, rgb(r, g, b) or rgba(r, g, b, 1) as (r, g, b)."""
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(x)) for x in re.findall(r"[\d.]+", colour)[:3])


def _open_run(driver: Any, run_id: str) -> None:
    row = driver.find_element("css selector", f'#runs tbody tr[data-run-id="{run_id}"]')
    row.click()
    _wait(driver, f'return document.body.getAttribute("data-run-loaded") === "{run_id}"')


def _step_rows(driver: Any) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for tr in driver.find_elements("css selector", "#steps tbody tr"):
        cells = tr.find_elements("css selector", "td")
        badge = cells[1].find_element("css selector", ".badge")
        out[cells[0].text] = {"status": badge.text.strip(), "colour": badge.value_of_css_property("background-color"),
                              "duration": cells[2].text, "reasons": cells[3].text}
    return out


def test_dashboard_in_headless_chromium(server: Tuple[str, Any], tmp_path: Path,
                                        monkeypatch: Any) -> None:
    base, p = server
    styles = get(base + "api/styles")[1]
    driver = _driver(tmp_path, monkeypatch)
    try:
        driver.get(base)
        _wait(driver, 'return document.body.getAttribute("data-ready") === "1"')
        # the run list: both runs, newest first, with their statuses
        rows = driver.find_elements("css selector", "#runs tbody tr")
        assert [r.get_attribute("data-run-id") for r in rows] == [r["id"] for r in p.runs]
        badges = [r.find_element("css selector", ".badge") for r in rows]
        assert [b.text.strip() for b in badges] == ["failed", "succeeded"]

        # open the first run: every step executed
        _open_run(driver, p.runs[1]["id"])
        steps = _step_rows(driver)
        assert {k: v["status"] for k, v in steps.items()} == {
            "load": "executed", "parse": "executed", "report": "executed", "other": "executed",
            "fetch": "executed"}

        # open the failed run: each status told apart by its word and its colour
        _open_run(driver, p.runs[0]["id"])
        steps = _step_rows(driver)
        assert {k: v["status"] for k, v in steps.items()} == SECOND_RUN
        for name, status in SECOND_RUN.items():
            assert _rgb(steps[name]["colour"]) == _rgb(styles[status]["fill"]), (name, steps[name])
        assert len({steps[n]["colour"] for n in ("load", "parse", "report", "other")}) == 4
        assert "ValueError: cannot parse bad" in steps["parse"]["reasons"]
        assert "file data/in.txt: content changed" in steps["load"]["reasons"]
        assert "upstream step parse failed" in steps["report"]["reasons"]
        assert re.match(r"^\d+\.\d{3}s$", steps["load"]["duration"]) and steps["other"]["duration"] == "-"

        # the DAG, drawn by Cytoscape with the dagre layout: nodes coloured by status, laid out
        # left to right along the edges
        nodes: List[Dict[str, Any]] = driver.execute_script(
            "return zbCy.nodes().map(n => ({id: n.id(), status: n.data('status'),"
            " label: n.data('label'), fill: n.style('background-color'), x: n.position('x')}))")
        by = {n["id"]: n for n in nodes}
        assert {k: v["status"] for k, v in by.items()} == SECOND_RUN
        for name, status in SECOND_RUN.items():
            assert by[name]["label"].splitlines()[0] == name and status in by[name]["label"]
            assert _rgb(by[name]["fill"]) == _rgb(styles[status]["fill"])
        assert by["load"]["x"] < by["parse"]["x"] < by["report"]["x"]
        assert driver.execute_script("return zbCy.edges().length") == 2
        assert driver.execute_script(
            "return document.querySelectorAll('#graph canvas').length") >= 1

        # the log, and nothing loaded from anywhere but the dashboard itself
        assert "Step parse failed after" in driver.find_element("id", "log").text
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(base) for r in resources), resources

        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        driver.quit()
