"""End-to-end: caching beyond on and off (issue 14), through the real CLI and pipe().run():
expiry with an injected clock, ignored params, Env() inputs and secrets, --step targets and
--rerun with early cutoff. Version probes against a real HTTP server: test_version_probes.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request

import pytest

PIPE = '''
import os
from zenbuild import step, pipeline, File, Output, Env
from ticker import tick


@step(cache_expires_after="6h")
def fetch(src: File) -> str:
    tick("fetch")
    return src.read_text().strip()


@step
def parse(text: str) -> list:
    tick("parse")
    return sorted(text.split(","))


@step(ignore=["verbose", "n_jobs"])
def count(items: list, verbose: bool = False, n_jobs: int = 1) -> int:
    tick("count")
    return len(items)


@step
def label(items: list, region: str) -> str:
    tick("label")
    return region + ":" + "+".join(items)


@step
def side(src: File) -> int:
    tick("side")
    return len(src.read_text())


@step
def render(n: int, tag: str, out: Output) -> None:
    tick("render")
    out.write_text(f"{n} {tag}\\n")


@pipeline
def feed(verbose: bool = False, n_jobs: int = 1):
    items = parse(fetch(File("data/feed.txt")))
    n = count(items, verbose=verbose, n_jobs=n_jobs)
    render(n, label(items, Env("API_REGION", default="eu")), Output("build/out.txt"))
    side(File("data/side.txt"))
'''

T0 = 1_800_000_000.0  # the injected clock: seconds since the epoch
HOUR = 3600.0


def at(t: float) -> dict:
    return {"ZENBUILD_NOW": repr(t)}


@pytest.fixture
def feed(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:feed"]\n')
    project.write("pipe.py", PIPE)
    project.write("data/feed.txt", "b,a,c\n")
    project.write("data/side.txt", "side\n")
    r = project.run("run", env=at(T0))
    assert sorted(r.executed) == ["count", "fetch", "label", "parse", "render", "side"]
    assert project.read("build/out.txt") == "3 eu:a+b+c\n"
    project.ticks()
    return project


# -- expiry ------------------------------------------------------------------------------------
def test_expired_step_reexecutes_and_early_cutoff_keeps_dependents_cached(feed):
    r = feed.run("run", env=at(T0 + 5 * HOUR))  # younger than 6h: nothing executes
    assert r.executed == []
    r = feed.run("run", env=at(T0 + 7 * HOUR))
    assert r.executed == ["fetch"]  # the same text again: parse, count... stay cached
    assert sorted(r.cached) == ["count", "label", "parse", "render", "side"]
    assert feed.ticks() == ["fetch"]
    # the re-executed result is the new entry: aged from T0 + 7h now
    assert feed.run("run", env=at(T0 + 12 * HOUR)).executed == []
    assert feed.run("run", env=at(T0 + 13.5 * HOUR)).executed == ["fetch"]


def test_an_older_entry_served_again_for_what_the_step_read_still_expires(project):
    """An entry kept for what a step read (an alternate: the file went A -> B -> A) ages like
    the latest one: served again at 7h old it would be a stale result."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:main"]\n')
    project.write("pipe.py", textwrap.dedent('''
        from pathlib import Path
        from zenbuild import step, pipeline
        from ticker import tick

        @step(cache_expires_after="6h")
        def fetch() -> str:
            tick("fetch")
            return (Path(__file__).parent / "feed.txt").read_text()  # read without File

        @pipeline
        def main():
            fetch()
    '''))
    project.write("feed.txt", "AAA\n")
    assert project.run("run", env=at(T0)).executed == ["fetch"]
    project.write("feed.txt", "BBB\n")
    assert project.run("run", env=at(T0 + 5 * HOUR)).executed == ["fetch"]
    project.write("feed.txt", "AAA\n")  # the AAA entry, made at T0, is still in the store
    r = project.run("run", env=at(T0 + 7 * HOUR))
    assert r.executed == ["fetch"], r
    project.write("feed.txt", "BBB\n")  # the BBB entry is 4h old: served
    assert project.run("run", env=at(T0 + 9 * HOUR)).executed == []


def test_expired_step_whose_result_changed_reruns_its_dependents(feed):
    feed.write("data/feed.txt", "b,a,c,d\n")  # fetch is keyed by the file: it reruns anyway
    feed.run("run", env=at(T0))
    feed.ticks()
    r = feed.run("run", env=at(T0 + 7 * HOUR))
    assert r.executed == ["fetch"]


def test_explain_and_status_show_an_expired_step(feed):
    r = feed.run("explain", "fetch", env=at(T0 + 7 * HOUR), check=None)
    assert "cached result is 7h old (expires after 6h)" in r.output, r
    r = feed.run("explain", "fetch", "--json", env=at(T0 + 7 * HOUR), check=None)
    kinds = [x["kind"] for x in json.loads(r.stdout)["reason_records"]]
    assert "expired" in kinds, r
    r = feed.run("status", "--check", env=at(T0 + 7 * HOUR), check=None)
    assert r.returncode == 1, r
    assert re.search(r"^\s+fetch\s+stale\s+cached result is 7h old \(expires after 6h\)$",
                     r.stdout, re.M), r
    # its dependents wait only on a refresh: early cutoff may keep them cached
    assert re.search(r"^\s+parse\s+may rerun\s+input text: upstream step fetch would execute$",
                     r.stdout, re.M), r
    assert "1 step(s) of pipeline feed are not up to date: fetch." in r.stderr
    m = re.search(r"^(\d+) of 6 steps would execute \(1 stale, (\d+) may rerun\)$", r.stdout, re.M)
    assert m and int(m.group(1)) == 1 + int(m.group(2)), r  # every row counted, by its state
    r = feed.run("status", "--check", env=at(T0 + 1 * HOUR), check=None)
    assert r.returncode == 0, r


def test_expiry_from_zenbuild_toml_wins_over_the_decorator(feed):
    feed.write("zenbuild.toml", 'pipelines = ["pipe:feed"]\n[steps.side]\n'
               'cache_expires_after = "PT30M"\n[steps.fetch]\ncache_expires_after = "1d"\n')
    r = feed.run("run", env=at(T0 + 7 * HOUR))
    assert r.executed == ["side"]  # fetch now lasts a day; side only 30 minutes


@pytest.mark.parametrize("where", ["toml", "decorator"])
def test_a_bad_duration_is_a_clear_error(feed, where):
    if where == "toml":
        feed.write("zenbuild.toml", 'pipelines = ["pipe:feed"]\n[steps.fetch]\n'
                   'cache_expires_after = "6 hours"\n')
        r = feed.run("run", check=2)
        assert "zenbuild.toml:3: steps.fetch.cache_expires_after:" in r.output, r
    else:
        feed.write("pipe.py", PIPE.replace('cache_expires_after="6h"',
                                           'cache_expires_after="6hours"'))
        r = feed.run("run", check=2)
        assert "cache_expires_after='6hours'" in r.output and "step fetch" in r.output, r
    assert "ISO-8601" in r.output
    assert "Traceback" not in r.output


# -- ignored params ----------------------------------------------------------------------------
def test_ignored_params_do_not_invalidate(feed):
    r = feed.run("run", "-p", "verbose=true", "-p", "n_jobs=4", env=at(T0))
    assert r.executed == []
    assert feed.ticks() == []


def test_an_unknown_ignored_name_is_an_error_at_definition(feed):
    feed.write("pipe.py", PIPE.replace('ignore=["verbose", "n_jobs"]', 'ignore=["verbos"]'))
    r = feed.run("run", check=2)
    assert "@step(ignore=['verbos']) of step count" in r.output, r
    assert "has no parameter 'verbos'" in r.output and "items, verbose, n_jobs" in r.output
    assert "Traceback" not in r.output


# -- Env() ---------------------------------------------------------------------------------------
def test_env_input_is_given_to_the_step_and_keys_it(feed):
    r = feed.run("run", env={**at(T0), "API_REGION": "eu"})  # the default's value: no change
    assert r.executed == []
    r = feed.run("run", env={**at(T0), "API_REGION": "us"})
    assert r.executed == ["label", "render"]
    assert feed.read("build/out.txt") == "3 us:a+b+c\n"
    r = feed.run("explain", "label", env={**at(T0), "API_REGION": "ch"}, check=None)
    assert "env API_REGION: 'us' -> 'ch'" in r.output, r


def test_a_missing_env_input_without_default_is_a_clear_error(feed):
    feed.write("pipe.py", PIPE.replace('Env("API_REGION", default="eu")', 'Env("API_REGION")'))
    feed.write("data/feed.txt", "z,y\n")  # fetch and parse would execute before label
    env = {k: v for k, v in os.environ.items() if k != "API_REGION"}
    proc = subprocess.run([sys.executable, "-m", "zenbuild", "run", "--project-dir",
                           str(feed.root)], capture_output=True, text=True, env=env, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "step label takes Env('API_REGION')" in out and "is not set" in out
    assert "Traceback" not in out
    assert "has started" not in out and feed.ticks() == []  # checked before anything runs


def test_explain_and_status_name_a_step_whose_env_input_is_not_set(feed):
    """In a pre-commit hook without the secrets, explain and status still judge the pipeline:
    the step whose Env() is unset is reported as one that cannot run (status --check exit 1),
    not as a usage error (exit 2)."""
    feed.write("pipe.py", PIPE.replace('Env("API_REGION", default="eu")', 'Env("API_REGION")'))
    env = {k: v for k, v in os.environ.items() if k != "API_REGION"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zenbuild", *args, "--project-dir",
                               str(feed.root)], capture_output=True, text=True, env=env,
                              timeout=120)

    r = cli("status", "--check")
    assert r.returncode == 1, r
    assert re.search(r"^\s+label\s+error\s+step label takes Env\('API_REGION'\)", r.stdout,
                     re.M), r
    assert re.search(r"^\s+fetch\s+up to date", r.stdout, re.M), r
    r = cli("explain", "label")
    assert r.returncode == 0 and "is not set" in r.stdout, r
    assert "Traceback" not in r.stdout + r.stderr and feed.ticks() == []
    # also when a step before it would execute (its key cannot be computed then): it was
    # "stale, upstream step would execute", and status --check's verdict hid it
    feed.write("data/feed.txt", "z,y\n")
    r = cli("status")
    assert re.search(r"^\s+label\s+error\s+step label takes Env\('API_REGION'\)", r.stdout,
                     re.M), r
    r = cli("explain", "label")
    assert "cannot run" in r.stdout and "is not set" in r.stdout, r


SECRET_PIPE = '''
from zenbuild import step, pipeline, Env, Output
from ticker import tick


@step
def call_api(token: str, region: str) -> int:
    tick("call_api")
    return len(token) * 0 + len(region)


@step
def report(n: int, out: Output) -> None:
    tick("report")
    out.write_text(str(n))


@pipeline
def api():
    report(call_api(Env("ZB_TEST_TOKEN", secret=True), Env("ZB_TEST_REGION", default="eu")),
           Output("build/report.txt"))
'''


def dashboard_pages(project) -> list:
    """What the real dashboard serves (page, run list, every run's detail), as text."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "dashboard", "--port", "0", "--project-dir",
         str(project.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1"))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"^zenbuild dashboard: (http://127\.0\.0\.1:\d+/) ", line)
        assert m, line
        base = m.group(1)

        def get(path: str) -> str:
            with urllib.request.urlopen(base + path, timeout=30) as r:
                return r.read().decode()

        pages = [get(""), get("api/runs")]
        runs = json.loads(pages[1])["runs"]
        assert runs
        pages += [get("api/runs/" + r["id"]) for r in runs]
        return pages
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _files_text(root) -> bytes:
    out = b""
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out += fh.read()
    return out


def test_a_secret_env_input_is_keyed_and_appears_nowhere(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:api"]\n')
    project.write("pipe.py", SECRET_PIPE)
    secret, secret2 = "s3cr3t-T0KEN-value-4711", "an0ther-S3CRET-0815"
    r = project.run("run", "--json", env={"ZB_TEST_TOKEN": secret})
    assert project.ticks() == ["call_api", "report"]
    outputs = [r.output]
    assert project.run("run", env={"ZB_TEST_TOKEN": secret}).executed == []
    r = project.run("run", "--json", "--explain", env={"ZB_TEST_TOKEN": secret2})
    outputs.append(r.output)
    assert project.ticks() == ["call_api"]  # the secret changed; the result did not
    reasons = [x for s in json.loads(r.stdout)["steps"] if s["name"] == "call_api"
               for x in s["reasons"]]
    assert [x["kind"] for x in reasons] == ["env_input_changed"]
    assert reasons[0]["before"] is None and reasons[0]["after"] is None
    assert "value hidden" in reasons[0]["text"]
    for args in (("explain", "call_api"), ("explain", "call_api", "--json"), ("status",),
                 ("status", "--json"), ("runs", "--json"), ("graph", "--format", "json")):
        outputs.append(project.run(*args, env={"ZB_TEST_TOKEN": "x" + secret}, check=None).output)
    outputs += dashboard_pages(project)
    key = project.root / ".zenbuild" / "secret.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    store = _files_text(project.root / ".zenbuild")
    for s in (secret, secret2):
        assert s.encode() not in store
        for text in outputs:
            assert s not in text


LEAKY_PIPE = '''
import os
from zenbuild import step, pipeline, Env
from ticker import tick


@step
def connect(url: str, api_key: str) -> int:
    tick("connect")
    # a library reading the same variables from the environment, as drivers and SDKs do
    return len(url) + len(os.environ.get("DB_URL", "")) + len(os.environ["OPENAI_API_KEY"])


@pipeline
def db():
    connect(Env("DB_URL", secret=True), Env("OPENAI_API_KEY"))
'''


def test_a_secret_read_again_through_os_environ_and_a_secret_looking_name_stay_hidden(project):
    """A variable declared secret is not recorded in clear by the read tracker when the step
    (or a library) also reads it from os.environ; a name that looks secret (..._API_KEY) is
    keyed like a secret even without secret=True."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:db"]\n')
    project.write("pipe.py", LEAKY_PIPE)
    url, key = "postgres://admin:Sup3rS3cretPW@db/prod", "sk-LEAKME123"
    env = {"DB_URL": url, "OPENAI_API_KEY": key}
    outputs = [project.run("run", "--json", env=env).output]
    assert project.ticks() == ["connect"]
    assert project.run("run", env=env).executed == []
    env2 = {"DB_URL": url, "OPENAI_API_KEY": "sk-LEAKME456"}
    r = project.run("run", "--json", "--explain", env=env2)
    assert project.ticks() == ["connect"]
    outputs.append(r.output)
    outputs.append(project.run("explain", "connect", env=env, check=None).output)
    store = _files_text(project.root / ".zenbuild")
    for s in (url, "Sup3rS3cretPW", key, "sk-LEAKME456"):
        assert s.encode() not in store, s
        for text in outputs:
            assert s not in text, (s, text)


def test_ignore_refuses_an_output_or_env_argument(project):
    """An Output's path in ignore= would give two output paths one key: the second run would
    be served from the first and never write its file. Refused when the pipeline is traced."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:main"]\n')
    project.write("pipe.py", textwrap.dedent('''
        from zenbuild import step, pipeline, File, Output, Env

        @step(ignore=["out"])
        def w(out: Output) -> None:
            out.write_text("DATA")

        @step(ignore=["region"])
        def r(src: File, region: str) -> str:
            return src.read_text() + region

        @pipeline
        def main(o: str = "build/a.txt", env: bool = False):
            if env:
                r(File("pipe.py"), Env("REGION", default="eu"))
            else:
                w([Output(o)][0])
    '''))
    for args, what in ((("--param", "o=build/b.txt"), "Output('build/b.txt')"),
                       (("--param", "env=true"), "Env('REGION')")):
        r = project.run("run", *args, check=2)
        assert "it is in @step(ignore=[...]) but receives" in r.output, r
        assert what in r.output, r
        assert "Traceback" not in r.output, r
    assert not (project.root / "build").exists()


# -- targets and forced reruns -----------------------------------------------------------------
def test_step_runs_that_step_and_what_it_needs_nothing_else(feed):
    feed.write("data/feed.txt", "x,y\n")
    feed.write("data/side.txt", "changed\n")
    r = feed.run("run", "--step", "count", env=at(T0))
    assert r.executed == ["fetch", "parse", "count"]
    assert r.cached == []
    assert feed.ticks() == ["fetch", "parse", "count"]
    r = feed.run("run", "--step", "side", "--step", "label", env=at(T0))
    assert sorted(r.executed) == ["label", "side"]
    assert r.cached == ["fetch", "parse"]
    r = feed.run("run", "--step", "nope", check=2)
    assert "--step nope: pipeline feed has no step named 'nope'" in r.output


def test_rerun_executes_a_cached_step_and_cuts_off_when_its_output_is_the_same(feed):
    r = feed.run("run", "--rerun", "parse", env=at(T0))
    assert r.executed == ["parse"]
    assert sorted(r.cached) == ["count", "fetch", "label", "render", "side"]
    assert feed.ticks() == ["parse"]
    assert "not deterministic" not in r.output


def test_rerun_whose_output_changed_reruns_dependents(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:ext"]\n')
    project.write("pipe.py", '''
from zenbuild import step, pipeline
from ticker import tick
import os


@step
def snapshot() -> str:
    tick("snapshot")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "outside.txt")) as f:  # outside the project: not tracked
        return f.read()


@step
def shout(text: str) -> str:
    tick("shout")
    return text.upper()


@pipeline
def ext():
    shout(snapshot())
''')
    outside = project.root.parent / "outside.txt"
    outside.write_text("one")
    project.run("run")
    assert project.ticks() == ["snapshot", "shout"]
    outside.write_text("two")
    assert project.run("run").executed == []  # zenbuild cannot see it: that is what --rerun is for
    r = project.run("run", "--rerun", "snapshot", "--explain")
    assert r.executed == ["snapshot", "shout"]
    assert "forced to execute (--rerun snapshot)" in r.output
    assert "not deterministic" not in r.output
    r = project.run("run", "--rerun", "snapshot")
    assert r.executed == ["snapshot"] and r.cached == ["shout"]


def test_the_dashboard_graph_shows_forced_and_expired_steps(feed):
    feed.run("run", "--rerun", "label", env=at(T0 + 7 * HOUR))
    nodes = {n["id"]: n for n in json.loads(feed.run("graph", "--format", "json").stdout)["nodes"]}
    assert nodes["fetch"]["expired"] and not nodes["fetch"]["forced"]
    assert nodes["label"]["forced"] and not nodes["label"]["expired"]
    assert nodes["fetch"]["label"].startswith("fetch: executed (expired)")
    assert nodes["label"]["label"].startswith("label: executed (forced)")
    assert not nodes["parse"]["forced"] and not nodes["parse"]["expired"]
    assert nodes["parse"]["label"] == "parse: cached"
    assert "cached result is 7h old (expires after 6h)" in nodes["fetch"]["reasons"]
    assert "forced to execute (--rerun label)" in nodes["label"]["reasons"]
    [page] = [p for p in dashboard_pages(feed)[2:3]]  # the latest run, as the dashboard has it
    drawn = {n["id"]: n for n in json.loads(page)["graph"]["nodes"]}
    assert drawn["fetch"]["expired"] and drawn["label"]["forced"]


def test_no_cache_still_wins_over_rerun_and_expiry(feed):
    r = feed.run("run", "--no-cache", "--rerun", "parse", "--explain", env=at(T0))
    assert sorted(r.executed) == ["count", "fetch", "label", "parse", "render", "side"]
    assert "caching disabled by --no-cache" in r.output


# -- the Python API --------------------------------------------------------------------------------
API = '''
import json, sys
sys.path.insert(0, {root!r})
import pipe
opts = json.loads(sys.argv[1])
r = pipe.feed(**opts.pop("params", {{}})).run(project_dir={root!r}, **opts)
print(json.dumps({{n: s.status for n, s in r.steps.items()}}))
'''


def api_run(project, env_vars=None, **options):
    script = project.root.parent / "api.py"
    script.write_text(textwrap.dedent(API.format(root=str(project.root))))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env_vars or {}))
    env.pop("ZENBUILD_NOW", None)
    proc = subprocess.run([sys.executable, str(script), json.dumps(options)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = json.loads(proc.stdout.strip().splitlines()[-1])
    return sorted(n for n, s in statuses.items() if s == "executed"), statuses


def test_python_api_takes_now_steps_and_rerun(feed):
    assert api_run(feed, now=T0 + 5 * HOUR)[0] == []
    assert api_run(feed, now=T0 + 7 * HOUR)[0] == ["fetch"]
    feed.ticks()
    feed.write("data/side.txt", "other\n")
    executed, statuses = api_run(feed, steps=["count"], now=T0 + 7 * HOUR)
    assert executed == [] and sorted(statuses) == ["count", "fetch", "parse"]
    executed, statuses = api_run(feed, rerun=["label"], now=T0 + 7 * HOUR)
    assert executed == ["label", "side"]
    assert statuses["render"] == "cached"
    assert feed.ticks() == ["label", "side"]


def test_python_api_ignored_params_and_env_inputs(feed):
    now = T0 + HOUR
    assert api_run(feed, now=now, params={"verbose": True, "n_jobs": 8})[0] == []
    assert api_run(feed, {"API_REGION": "us"}, now=now)[0] == ["label", "render"]
    assert feed.read("build/out.txt") == "3 us:a+b+c\n"
    assert api_run(feed, {"API_REGION": "us"}, now=now)[0] == []


def test_the_reason_names_the_section_that_turned_caching_off(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n[steps.count]\nenable_cache = false\n'
                  '[steps.count_2]\ncache_expires_after = "1h"\n')
    project.write("pipe.py", """
        from zenbuild import pipeline, step

        @step
        def count(n: int) -> int:
            return n

        @pipeline
        def p():
            count(1)
            count(2)
        """)
    r = project.run("run")
    assert sorted(r.executed) == ["count", "count_2"], r  # count_2 keeps count's setting
    r = project.run("explain", "count_2")
    assert "caching disabled by zenbuild.toml [steps.count] enable_cache = false" in r.stdout, r
