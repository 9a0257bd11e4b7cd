"""End-to-end: environment variables a step reads without declaring them, through the real CLI.
Credentials (by name, or by a value such as postgres://u:pw@host) are never in the store nor
in explain/status output, not even as an unkeyed hash; a changed one still reruns the step; a
record keyed by another store's key (as a remote entry is) reruns, never serves; and reads of
os.environb are recorded like those of os.environ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

from tests.conftest import Project
from zenbuild.digest import digest_bytes

SEKRIT = "SEKRIT-7d2a91"
VALUES = {
    "DATABASE_URL": f"postgres://u:{SEKRIT}@h/db", "REDIS_URL": f"redis://:{SEKRIT}@h",
    "SENTRY_DSN": f"https://{SEKRIT}@sentry", "MLFLOW_TRACKING_URI": f"https://u:{SEKRIT}@h",
    "GITHUB_PAT": SEKRIT, "MYSQL_PWD": SEKRIT, "SIGNING_CERT": SEKRIT, "API_TOKEN": SEKRIT,
    "PGPASSWORD": SEKRIT, "DEVICE": "cpu",
}

PIPE = f'''
import os
from zenbuild import step, pipeline
from ticker import tick

NAMES = {sorted(VALUES)!r}


@step
def call() -> int:
    tick("call")
    return sum(len(os.environ.get(n, "")) for n in NAMES)


@step
def dev() -> str:
    tick("dev")
    return str(os.environb.get(b"DEVICE_ZB"))


@pipeline
def p():
    call()
    dev()
'''


def setup(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)


def store_bytes(root: Path) -> bytes:
    """Every file of the store, concatenated (the database, its journal, anything else)."""
    out: List[bytes] = []
    for d, _dirs, names in os.walk(root / ".zenbuild"):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out.append(f.read())
    return b"".join(out)


def secrets_in(text: str, values: Dict[str, str]) -> List[str]:
    """The secret parts (and their unkeyed digests) found in ``text``."""
    found = [v for v in (SEKRIT, "other-" + SEKRIT) if v in text]
    found += [n for n, v in values.items() if n != "DEVICE" and digest_bytes(v.encode()) in text]
    return found


def test_credentials_are_never_stored_or_shown_and_a_change_still_reruns(
        project: Project) -> None:
    setup(project)
    r = project.run("run", env=VALUES)
    assert sorted(r.executed) == ["call", "dev"], r
    raw = store_bytes(project.root).decode("latin-1")
    assert secrets_in(raw, VALUES) == []
    assert "'cpu'" in raw or '"cpu"' in raw  # an ordinary value is still shown

    assert project.run("run", env=VALUES).executed == []  # unchanged: served
    changed = {**VALUES, "DATABASE_URL": f"postgres://u:other-{SEKRIT}@h/db",
               "GITHUB_PAT": "other-" + SEKRIT}
    for args in (("explain", "call"), ("explain", "call", "--json"), ("status",),
                 ("status", "--json")):
        r = project.run(*args, env=changed, check=None)
        assert r.returncode in (0, 1), r
        assert secrets_in(r.output, VALUES) == [], (args, r)
        if args[0] == "explain":
            assert "DATABASE_URL" in r.output and "GITHUB_PAT" in r.output, r
    r = project.run("explain", "call", env=changed)
    assert "read by the step: DATABASE_URL changed (value hidden)" in r.output, r
    assert "read by the step: GITHUB_PAT changed (value hidden)" in r.output, r

    r = project.run("run", env=changed)
    assert r.executed == ["call"], r  # a changed secret reruns the step
    assert project.run("run", env=changed).executed == []
    assert secrets_in(store_bytes(project.root).decode("latin-1"), changed) == []
    r = project.run("run", env={**changed, "DEVICE": "cuda"})
    assert r.executed == ["call"], r
    r = project.run("explain", "call", env={**changed, "DEVICE": "gpu"}, check=None)
    assert "read by the step: DEVICE 'cuda' -> 'gpu'" in r.output, r


def test_a_record_keyed_by_another_store_reruns_never_serves(project: Project) -> None:
    setup(project)
    project.run("run", env=VALUES)
    assert project.run("run", env=VALUES).executed == []
    # another machine's store has another key: its keyed digests cannot be compared with
    # ours (a remote entry's record, say), so the same values must still mean "rerun"
    (project.root / ".zenbuild" / "secret.key").write_bytes(os.urandom(32))
    r = project.run("run", env=VALUES)
    assert r.executed == ["call"], r
    assert project.run("run", env=VALUES).executed == []  # recorded under the new key


def test_environb_reads_are_recorded(project: Project) -> None:
    setup(project)
    project.run("run", env=VALUES)
    r = project.run("run", env={**VALUES, "DEVICE_ZB": "cuda"})
    assert r.executed == ["dev"], r  # was served its 'None' before
    assert project.run("run", env={**VALUES, "DEVICE_ZB": "cuda"}).executed == []
    r = project.run("explain", "dev", env={**VALUES, "DEVICE_ZB": "tpu"}, check=None)
    assert "read by the step: DEVICE_ZB 'cuda' -> 'tpu'" in r.output, r
    r = project.run("run", env={**VALUES, "DEVICE_ZB": "tpu"})
    assert r.executed == ["dev"], r
    assert "not deterministic" not in r.output, r
    r = project.run("run", env=VALUES)  # unset again: the first run's entry fits again
    assert r.executed == [] and r.cached == ["call", "dev"], r
