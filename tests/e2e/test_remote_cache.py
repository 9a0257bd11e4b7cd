"""End-to-end: two checkouts sharing a real nginx WebDAV server as a Bazel HTTP remote cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from conftest import Project, Result

from tests.e2e.nginx_server import TOKEN, Nginx, nginx_binary, refusing_port

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx missing: tests/sysdeps/nginx.sh")

PIPE = '''
import json
import os
import signal
import socket
import time

from zenbuild import File, Output, pipeline, step
from ticker import tick


@step
def load(src: File) -> list:
    tick("load")
    return src.read_text().split()


@step
def stats(words: list) -> dict:
    tick("stats")
    if os.environ.get("KILL_NGINX"):  # the remote goes away in the middle of the run
        os.kill(int(os.environ["KILL_NGINX"]), signal.SIGTERM)
        port = int(os.environ["NGINX_PORT"])
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                time.sleep(0.01)
            except OSError:
                break
    return {"n": len(words), "longest": max(words, key=len)}


@step
def report(s: dict, out: Output) -> None:
    tick("report")
    out.write_text(json.dumps(s, sort_keys=True))


@step
def pages(words: list, out: Output) -> int:
    tick("pages")
    out.mkdir(parents=True, exist_ok=True)
    for w in words:
        (out / f"{w}.txt").write_text(w * 3)
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / "all.txt").write_text(" ".join(words))
    return len(words)


@pipeline
def main():
    words = load(File("data/words.txt"))
    report(stats(words), Output("build/report.json"))
    pages(words, Output("build/pages"))
'''

STEPS = ["load", "stats", "report", "pages"]


# conftest's ticker finds its log through __file__, an absolute path that the code fingerprint
# includes, so two checkouts at different paths would never share an entry; this one takes the
# log's path from the environment instead.
TICKER = """\
import os


def tick(name):
    with open(os.environ["ZENBUILD_TEST_TICKS"], "a") as f:
        f.write(name + "\\n")
"""


class Checkout(Project):
    def run(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
            check: Optional[int] = 0) -> Result:
        log = self.root.parent / (self.root.name + ".ticks.log")  # where Project.ticks reads
        full = {"ZENBUILD_TEST_TICKS": str(log), **(env or {})}
        return super().run(*args, env=full, timeout=timeout, check=check)


def checkout(root: Path, toml_extra: str = "") -> Checkout:
    """A fresh copy of the project's sources (no store, no outputs), as a clone would be."""
    root.mkdir(parents=True)
    p = Checkout(root)
    p.write("ticker.py", TICKER)
    p.write("zenbuild.toml", 'pipelines = ["pipe:main"]\n' + toml_extra)
    p.write("pipe.py", PIPE)
    p.write("data/words.txt", "alpha beta gamma delta\n")
    return p


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx").start()
    yield server
    server.stop()


def remote_warnings(output: str) -> list:
    return [ln for ln in output.splitlines() if ln.startswith("Warning: remote cache")]


def test_second_checkout_gets_every_step_from_the_remote(tmp_path: Path, nginx: Nginx) -> None:
    a = checkout(tmp_path / "a")
    r = a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload")
    assert sorted(r.executed) == sorted(STEPS)
    assert "4 uploaded" in r.output
    assert sorted(a.ticks()) == sorted(STEPS)
    assert len(nginx.files("ac")) == 4
    assert nginx.files("cas")  # every blob went up as cas/SHA256

    b = checkout(tmp_path / "elsewhere" / "b")  # another path: another machine's clone
    r = b.run("run", "--remote-cache", nginx.url)
    assert r.executed == [], r
    assert sorted(r.cached) == sorted(STEPS)
    assert b.ticks() == []
    assert "4 fetched, 0 missed" in r.output
    assert b.read("build/report.json") == a.read("build/report.json")
    for rel in ("alpha.txt", "delta.txt", "sub/all.txt"):
        assert b.read(f"build/pages/{rel}") == a.read(f"build/pages/{rel}")
    # the copies are in b's local store now: no remote needed any more
    nginx.stop()
    with refusing_port() as port:
        r = b.run("run", "--remote-cache", f"http://127.0.0.1:{port}/cache")
    assert r.executed == [] and sorted(r.cached) == sorted(STEPS)
    assert remote_warnings(r.output) == []  # never asked: the local store answered first


def test_upload_only_on_ci_by_default(tmp_path: Path, nginx: Nginx) -> None:
    dev = checkout(tmp_path / "dev", f'[cache]\nremote = "{nginx.url}"\n')
    r = dev.run("run")
    assert sorted(r.executed) == sorted(STEPS)
    assert nginx.files("ac") == []  # a developer machine reads, does not write
    ci = checkout(tmp_path / "ci", f'[cache]\nremote = "{nginx.url}"\n')
    r = ci.run("run", "-j", "2", env={"CI": "true"})  # uploads while workers run
    assert sorted(r.executed) == sorted(STEPS)
    assert len(nginx.files("ac")) == 4
    ci.write("data/words.txt", "alpha beta gamma delta epsilon\n")
    ci.run("run", "--no-remote-cache-upload", env={"CI": "true"})
    assert len(nginx.files("ac")) == 4  # the flag wins over CI


def test_remote_stopped_mid_run_degrades_to_local(tmp_path: Path, nginx: Nginx) -> None:
    a = checkout(tmp_path / "a")
    assert nginx.proc is not None
    env = {"KILL_NGINX": str(nginx.proc.pid), "NGINX_PORT": str(nginx.port)}
    r = a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload", env=env)
    assert sorted(r.executed) == sorted(STEPS)
    warnings = remote_warnings(r.output)
    assert len(warnings) == 1, r
    assert "unavailable" in warnings[0] and "local store only" in warnings[0]
    assert json.loads(a.read("build/report.json")) == {"longest": "alpha", "n": 4}


def test_remote_down_before_the_run(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a")
    with refusing_port() as port:
        r = a.run("run", "--remote-cache", f"http://127.0.0.1:{port}/cache",
                  "--remote-cache-upload")
    assert sorted(r.executed) == sorted(STEPS)
    assert len(remote_warnings(r.output)) == 1, r


def test_corrupt_blob_on_the_server_is_a_miss(tmp_path: Path, nginx: Nginx) -> None:
    a = checkout(tmp_path / "a")
    a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload")
    entries = [json.loads(p.read_text()) for p in nginx.files("ac")]
    stats_entry = next(e for e in entries if e["step"] == "stats")
    sha = stats_entry["blobs"][stats_entry["value_digest"]][0]
    blob = nginx.data / "cache" / "cas" / sha
    blob.write_bytes(b"\x80\x04not what it was" + blob.read_bytes()[3:])

    b = checkout(tmp_path / "b")
    r = b.run("run", "--remote-cache", nginx.url, "--remote-cache-upload")
    assert r.executed == ["stats"], r  # recomputed here; everything else came from the remote
    assert sorted(r.cached) == ["load", "pages", "report"]
    assert any("does not match its digest" in w for w in remote_warnings(r.output)), r
    assert json.loads(b.read("build/report.json")) == {"longest": "alpha", "n": 4}
    # b uploaded the good bytes again over the corrupt ones: a third clone gets everything
    c = checkout(tmp_path / "c")
    r = c.run("run", "--remote-cache", nginx.url)
    assert r.executed == [] and remote_warnings(r.output) == [], r


def test_auth_header_from_env_is_sent_never_logged_or_stored(tmp_path: Path, nginx: Nginx) -> None:
    url = f"http://127.0.0.1:{nginx.port}/auth"
    toml = f'[cache]\nremote = "{url}"\nheader_env = "ZB_CACHE_HEADER"\n'
    a = checkout(tmp_path / "a", toml)
    r = a.run("run", "--remote-cache-upload")  # variable unset: a warning, then 401: local only
    assert "ZB_CACHE_HEADER, which is not set" in r.output
    assert any("401" in w for w in remote_warnings(r.output)), r
    shutil.rmtree(a.root / ".zenbuild")  # a fresh clone: no store, no outputs (zenbuild
    shutil.rmtree(a.root / "build")  # refuses to adopt outputs a store it lost had made)
    r = a.run("run", "--remote-cache-upload", env={"ZB_CACHE_HEADER": f"X-Token: {TOKEN}"})
    assert remote_warnings(r.output) == [], r
    assert len(list((nginx.data / "auth" / "ac").iterdir())) == 4
    assert TOKEN not in r.output
    for dirpath, _dirs, files in os.walk(a.root / ".zenbuild"):
        for f in files:
            assert TOKEN.encode() not in Path(dirpath, f).read_bytes(), f

