"""The real pre-commit runs this repository's .pre-commit-hooks.yaml (`pre-commit try-repo`) on a
throw-away git repository: fresh outputs pass, an edited input fails naming the stale step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

PIPE = '''
from zenbuild import File, Output, pipeline, step


@step
def load(src: File) -> str:
    return src.read_text()


@step
def shout(text: str, out: Output) -> None:
    out.write_text(text.upper())


@pipeline
def main():
    shout(load(File("data/in.txt")), Output("build/out.txt"))
'''


def _env(tmp_path: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.pop("CI", None)
    env.update({
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "HOME": str(tmp_path / "home"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1", "NO_COLOR": "1",
    })
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _sh(cwd: Path, env: Dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_hooks_file_declares_both_hooks() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"zenbuild-check", "zenbuild-run"}
    check = hooks["zenbuild-check"]
    assert check["entry"] == "zenbuild status --check"
    assert check["pass_filenames"] is False and check["always_run"] is True
    assert hooks["zenbuild-run"]["entry"].startswith("zenbuild run")


def test_pre_commit_try_repo(tmp_path: Path) -> None:
    env = _env(tmp_path)
    repo = tmp_path / "work"
    (repo / "data").mkdir(parents=True)
    (repo / "zenbuild.toml").write_text('pipelines = ["pipes:main"]\n')
    (repo / "pipes.py").write_text(PIPE)
    (repo / "data" / "in.txt").write_text("hello\n")
    (repo / ".gitignore").write_text(".zenbuild/\nbuild/\n__pycache__/\n")
    _sh(repo, env, "git", "init", "-q")
    _sh(repo, env, sys.executable, "-m", "zenbuild", "run", "-q")
    _sh(repo, env, "git", "add", "-A")
    _sh(repo, env, "git", "commit", "-q", "-m", "pipeline")

    # the hooks repository: this repository's .pre-commit-hooks.yaml as it is in the work tree
    hooks_repo = tmp_path / "hooks"
    hooks_repo.mkdir()
    shutil.copy(REPO / ".pre-commit-hooks.yaml", hooks_repo / ".pre-commit-hooks.yaml")
    _sh(hooks_repo, env, "git", "init", "-q")
    _sh(hooks_repo, env, "git", "add", ".pre-commit-hooks.yaml")
    _sh(hooks_repo, env, "git", "commit", "-q", "-m", "hooks")

    def hook(hook_id: str) -> subprocess.CompletedProcess[str]:
        return _sh(repo, env, sys.executable, "-m", "pre_commit", "try-repo", str(hooks_repo),
                   hook_id, "--verbose", check=False)

    # fresh outputs: the check passes (always_run: it runs with nothing staged)
    fresh = hook("zenbuild-check")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "zenbuild outputs are up to date" in fresh.stdout and "Passed" in fresh.stdout

    # an edited (and staged) input: the check fails and names the stale steps
    (repo / "data" / "in.txt").write_text("hello world\n")
    _sh(repo, env, "git", "add", "data/in.txt")
    stale = hook("zenbuild-check")
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "Failed" in stale.stdout
    assert "load" in stale.stdout and "stale" in stale.stdout
    assert "not up to date: load, shout" in stale.stdout

    # the run hook brings them up to date; then the check passes again
    ran = hook("zenbuild-run")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (repo / "build" / "out.txt").read_text() == "HELLO WORLD\n"
    again = hook("zenbuild-check")
    assert again.returncode == 0, again.stdout + again.stderr
