"""`zenbuild explain STEP`: every reason, each produced by a real change, in text and --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

PIPE = '''
from zenbuild import Dir, File, no_cache, pipeline, step
from ticker import tick
from nlp.text import tokenize, STOP
import fakepkg


@step
def load(src: File) -> str:
    tick("load")
    return src.read_text()


@step
def words(text: str) -> list:
    tick("words")
    return [w for w in tokenize(text) if w not in STOP]


@step
def count(tokens: list, top: int = 10) -> list:
    tick("count")
    if "boom" in tokens:
        raise ValueError("boom is not a word")
    return sorted(set(tokens))[:top]


@step
def extras(folder: Dir) -> list:
    tick("extras")
    return sorted(p.name for p in folder.iterdir())


@step
def scaled(n: int) -> int:
    tick("scaled")
    return fakepkg.double(n)


@no_cache
@step
def fetch() -> int:
    tick("fetch")
    return 1


@pipeline
def main(top: int = 10):
    w = words(load(File("data/words.txt")))
    count(w, top=top)
    extras(Dir("data/extra"))
    scaled(2)
    fetch()


@pipeline(enable_cache=False)
def uncached():
    scaled(3)
'''


@pytest.fixture
def nlp(project: Any, tmp_path: Path) -> Any:
    site = tmp_path / "site-packages"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    meta = site / "fakepkg-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    project.site = site
    project.env = {"PYTHONPATH": str(site)}
    project.write("zenbuild.toml", 'pipelines = ["pipes:main", "pipes:uncached"]\n')
    project.write("pipes.py", PIPE)
    project.write("nlp/__init__.py", "")
    project.write("nlp/text.py", 'STOP = ("a", "the")\n\n\ndef tokenize(s):\n    return s.split()\n')
    project.write("data/words.txt", "the cat sat on a mat\n")
    project.write("data/extra/one.csv", "1\n")
    project.run("run", env=project.env)
    project.ticks()
    return project


def explain(p: Any, step: str, *extra: str) -> List[str]:
    """The reasons of `explain STEP` from the text output, checked against --json."""
    env = getattr(p, "env", None)
    text = p.run("explain", step, *extra, env=env).stdout
    data: Dict[str, Any] = json.loads(p.run("explain", step, *extra, "--json", env=env).stdout)
    assert data["step"] == step
    shown = [line[4:] for line in text.splitlines() if line.startswith("  - ")]
    if data["state"] == "up to date":
        assert "up to date" in text.splitlines()[0]
        assert shown == []
    else:
        assert shown == data["reasons"], (text, data)
    # the same reasons as records, whose text is what was shown
    assert [r["text"] for r in data["reason_records"]] == data["reasons"]
    return list(data["reasons"]) if data["state"] != "up to date" else ["up to date"]


def records(p: Any, step: str, *extra: str) -> List[Tuple[str, str]]:
    """(kind, subject) of every reason `explain STEP --json` gives."""
    data = json.loads(p.run("explain", step, *extra, "--json", env=getattr(p, "env", None)).stdout)
    return [(r["kind"], r["subject"]) for r in data["reason_records"]]


def test_up_to_date_after_a_run(nlp: Any) -> None:
    assert explain(nlp, "count") == ["up to date"]
    data = json.loads(nlp.run("explain", "count", "--json", env=nlp.env).stdout)
    assert data["execute"] is False and data["last_built"]["fingerprint"]
    assert nlp.ticks() == []  # explain executes nothing


def test_never_built(project: Any) -> None:
    project.write("zenbuild.toml", 'pipelines = ["p:p"]\n')
    project.write("p.py", '''
        from zenbuild import step, pipeline
        from ticker import tick

        @step
        def a() -> int:
            tick("a")
            return 1

        @pipeline
        def p():
            a()
    ''')
    assert explain(project, "a") == ["never built"]
    assert "no earlier build" in project.run("explain", "a").stdout
    assert project.ticks() == []


def test_helper_change_names_the_function_and_its_file(nlp: Any) -> None:
    nlp.write("nlp/text.py", 'STOP = ("a", "the")\n\n\ndef tokenize(s):\n    return s.lower().split()\n')
    assert explain(nlp, "words") == ["code: helper nlp.text.tokenize (nlp/text.py) changed"]
    # and the run that follows executes exactly that step and says the same
    r = nlp.run("run", "--explain", env=nlp.env)
    assert "code: helper nlp.text.tokenize (nlp/text.py) changed" in r.stdout
    assert "words" in nlp.ticks()


def test_constant_change_is_named(nlp: Any) -> None:
    nlp.write("nlp/text.py", 'STOP = ("a", "the", "on")\n\n\ndef tokenize(s):\n    return s.split()\n')
    assert explain(nlp, "words") == ["code: constant nlp.text.STOP (nlp/text.py) changed"]


def test_step_function_change(nlp: Any) -> None:
    nlp.write("pipes.py", PIPE.replace("return sorted(set(tokens))[:top]",
                                       "return sorted(set(tokens), reverse=True)[:top]"))
    assert explain(nlp, "count") == ["code: step function pipes.count (pipes.py) changed"]


def test_param_change(nlp: Any) -> None:
    assert explain(nlp, "count", "--param", "top=5") == ["param top: 10 -> 5"]
    nlp.write("zenbuild.toml", 'pipelines = ["pipes:main", "pipes:uncached"]\n[params]\ntop = 3\n')
    assert explain(nlp, "count") == ["param top: 10 -> 3"]


def test_file_content_changed_with_sizes(nlp: Any) -> None:
    nlp.write("data/words.txt", "the cat sat on a big mat\n")
    assert explain(nlp, "load") == ["file data/words.txt: content changed (21 B -> 25 B)"]
    # downstream: judged on its own components too, and told its upstream would execute
    assert explain(nlp, "words") == ["input text: upstream step load would execute"]
    assert explain(nlp, "count") == ["input tokens: upstream step words would execute"]


def test_new_file_in_a_folder_input(nlp: Any) -> None:
    nlp.write("data/extra/two.csv", "2\n")
    assert explain(nlp, "extras") == ["file data/extra/two.csv: new input"]
    (nlp.root / "data/extra/one.csv").unlink()
    assert explain(nlp, "extras") == ["file data/extra/one.csv: no longer an input",
                                      "file data/extra/two.csv: new input"]


def test_upstream_produced_different_output(nlp: Any) -> None:
    # load and words rebuild with the new text; count fails on it, so its last build is old
    nlp.write("data/words.txt", "the cat sat on a boom\n")
    r = nlp.run("run", env=nlp.env, check=1)
    assert "Step count failed" in r.stdout
    nlp.ticks()
    assert explain(nlp, "count") == ["input tokens: upstream step words produced different output"]
    assert explain(nlp, "words") == ["up to date"]


def test_package_version_change(nlp: Any) -> None:
    meta = nlp.site / "fakepkg-1.0.dist-info"
    meta.rename(nlp.site / "fakepkg-2.0.dist-info")
    (nlp.site / "fakepkg-2.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakepkg\nVersion: 2.0\n")
    assert explain(nlp, "scaled") == ["package fakepkg: 1.0 -> 2.0"]


def test_no_cache_step(nlp: Any) -> None:
    assert explain(nlp, "fetch") == ["no_cache: external input, always executes"]
    data = json.loads(nlp.run("explain", "fetch", "--json", env=nlp.env).stdout)
    assert data["no_cache"] is True and data["state"] == "always runs"


def test_caching_disabled_by_flag_and_by_pipeline(nlp: Any) -> None:
    assert explain(nlp, "load", "--no-cache") == ["caching disabled by --no-cache"]
    assert explain(nlp, "count", "--no-cache") == [
        "caching disabled by --no-cache", "input tokens: upstream step words would execute"]
    nlp.run("run", "uncached", env=nlp.env)
    assert explain(nlp, "scaled", "uncached") == ["caching disabled by @pipeline(enable_cache=False)"]
    nlp.write("zenbuild.toml", 'pipelines = ["pipes:main"]\n[steps.load]\nenable_cache = false\n')
    assert explain(nlp, "load") == [
        "caching disabled by zenbuild.toml [steps.load] enable_cache = false"]


def test_every_reason_at_once(nlp: Any) -> None:
    nlp.write("nlp/text.py", 'STOP = ("a", "the")\n\n\ndef tokenize(s):\n    return s.lower().split()\n')
    nlp.write("data/words.txt", "The cat sat\n")
    nlp.write("pipes.py", PIPE.replace("return sorted(set(tokens))[:top]",
                                       "return sorted(set(tokens))[: top + 0]"))
    reasons = explain(nlp, "count", "-p", "top=2")
    assert reasons == [
        "code: step function pipes.count (pipes.py) changed",
        "param top: 10 -> 2",
        "input tokens: upstream step words would execute",
    ]
    assert records(nlp, "count", "-p", "top=2") == [
        ("code_changed", "pipes.count"), ("param_changed", "top"), ("upstream_pending", "words")]
    assert explain(nlp, "words") == [
        "code: helper nlp.text.tokenize (nlp/text.py) changed",
        "input text: upstream step load would execute",
    ]


def test_unknown_step_is_a_clear_error(nlp: Any) -> None:
    r = nlp.run("explain", "nosuch", env=nlp.env, check=2)
    assert "no step named 'nosuch'" in r.stderr and "load, words, count" in r.stderr
