"""Unit: discovered dependencies (zenbuild.discovered): a Trace turned into the stored record
(digests, no secret values) and verified on a later run, one Reason kind per change."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import zenbuild.discovered as dv
from zenbuild.digest import digest_file
from zenbuild.trace import Trace

HELPERS = '''
def helper(x):
    """Doc."""
    return [v + 1 for v in x]


class Scaler:
    def transform(self, x):
        return x * 2


if True:
    def fallback():
        return 1
'''


def files(root: Path) -> Any:
    def digest(rel: str) -> Optional[Tuple[str, int]]:
        p = root / rel
        return digest_file(str(p)) if p.is_file() else None

    return digest


def setup(tmp_path: Path) -> Tuple[Path, Dict[str, Any], dv.SourceDigests]:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("a\n1\n")
    (tmp_path / "lib.py").write_text(HELPERS)
    trace = Trace(reads=["data/train.csv", "local.cfg"], writes=["side.txt"], listed=["data"],
                  env={"DEVICE": "cpu", "API_TOKEN": "s3cret", "OPTIONAL": None},
                  calls=[["lib.py", "helper", 2], ["lib.py", "helper.<locals>.<listcomp>", 4],
                         ["lib.py", "Scaler.transform", 8], ["lib.py", "fallback", 13],
                         ["pipe.py", "step_fn", 1]],
                  reads_traced=True, env_traced=True, calls_traced=True)
    code = dv.SourceDigests(str(tmp_path))
    rec = dv.build(trace, files(tmp_path), code, lambda rel: dv.listing_digest(str(tmp_path), rel),
                   skip_calls=[("pipe.py", "step_fn")])
    return tmp_path, rec, code


def check(root: Path, rec: Dict[str, Any], code: Any, environ: Dict[str, str],
          first_only: bool = False) -> list:
    return dv.verify(rec, files(root), environ, code,
                     lambda rel: dv.listing_digest(str(root), rel), first_only=first_only)


ENV = {"DEVICE": "cpu", "API_TOKEN": "s3cret"}


def test_the_record_is_json_holds_digests_and_no_secret(tmp_path: Path) -> None:
    root, rec, _ = setup(tmp_path)
    text = json.dumps(rec)
    assert "s3cret" not in text
    assert rec["files"]["data/train.csv"][1] == 4 and rec["files"]["local.cfg"] is None
    assert rec["env"]["DEVICE"][1] == "cpu" and rec["env"]["API_TOKEN"][1] is None
    assert rec["env"]["OPTIONAL"] == [None, None]
    assert [c[:2] for c in rec["calls"]] == [["lib.py", "helper"],
                                              ["lib.py", "helper.<locals>.<listcomp>"],
                                              ["lib.py", "Scaler.transform"],
                                              ["lib.py", "fallback"]]
    assert all(c[3] for c in rec["calls"]) and rec["writes"] == ["side.txt"]
    assert check(root, json.loads(text), dv.SourceDigests(str(root)), ENV) == []


def test_each_change_has_its_reason(tmp_path: Path) -> None:
    root, rec, code = setup(tmp_path)
    (root / "data" / "train.csv").write_text("a\n1\n2\n")
    got = check(root, rec, code, ENV)
    assert [r.kind for r in got] == [dv.READ_FILE_CHANGED]
    assert (got[0].subject, got[0].before, got[0].after) == ("data/train.csv", 4, 6)
    (root / "local.cfg").write_text("x")  # tried by the step, missing then
    (root / "data" / "train.csv").unlink()
    got = check(root, rec, code, ENV)
    assert [(r.kind, r.subject) for r in got] == [
        (dv.READ_FILE_MISSING, "data/train.csv"), (dv.READ_FILE_APPEARED, "local.cfg"),
        (dv.LISTED_DIR_CHANGED, "data")]
    assert check(root, rec, code, ENV, first_only=True) == got[:1]


def test_env_changes_show_values_only_when_not_secret(tmp_path: Path) -> None:
    root, rec, code = setup(tmp_path)
    got = check(root, rec, code, {"DEVICE": "cuda", "API_TOKEN": "other", "OPTIONAL": "1"})
    assert [(r.kind, r.subject, r.before, r.after) for r in got] == [
        (dv.ENV_READ_CHANGED, "DEVICE", "cpu", "cuda"),
        (dv.ENV_READ_CHANGED, "API_TOKEN", None, None),
        (dv.ENV_READ_CHANGED, "OPTIONAL", None, "1")]
    texts = [dv.TEMPLATES[r.kind](r) for r in got]
    assert texts == ["read by the step: DEVICE 'cpu' -> 'cuda'",
                     "read by the step: API_TOKEN changed (value hidden)",
                     "read by the step: OPTIONAL unset -> '1'"]
    assert [r.subject for r in check(root, rec, code, {"DEVICE": "cpu"})] == ["API_TOKEN"]


def test_traced_code_semantic_cosmetic_and_removed(tmp_path: Path) -> None:
    root, rec, code = setup(tmp_path)
    cosmetic = HELPERS.replace('"""Doc."""', '"""Another doc."""  # note').replace(
        "def helper(x):", "\n\ndef helper(x):  # moved down")
    (root / "lib.py").write_text(cosmetic)
    os.utime(root / "lib.py", ns=(1, 1))  # a new stat: the cached tree is not reused
    assert check(root, rec, code, ENV) == []
    (root / "lib.py").write_text(HELPERS.replace("x * 2", "x * 3").replace("return 1", "return 2"))
    got = check(root, rec, code, ENV)
    assert [(r.kind, r.subject) for r in got] == [
        (dv.TRACED_CODE_CHANGED, "lib.py:Scaler.transform"),
        (dv.TRACED_CODE_CHANGED, "lib.py:fallback")]
    (root / "lib.py").write_text(HELPERS.replace("def helper(x):", "def renamed(x):"))
    got = check(root, rec, code, ENV)
    assert [(r.kind, r.subject) for r in got] == [
        (dv.TRACED_CODE_MISSING, "lib.py:helper"),
        (dv.TRACED_CODE_MISSING, "lib.py:helper.<locals>.<listcomp>")]


def test_main_code_is_found_by_name(tmp_path: Path, monkeypatch: Any) -> None:
    """Notebook cells have no file that survives a kernel restart: found in __main__."""
    import linecache

    def make(body: str) -> None:
        src = f"def cell_fn(x):\n    return {body}\n"
        name = f"<zb-cell-{abs(hash(body))}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        ns: Dict[str, Any] = {}
        exec(compile(src, name, "exec"), ns)
        main = types.ModuleType("__main__")
        main.cell_fn = ns["cell_fn"]  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "__main__", main)

    code = dv.SourceDigests(str(tmp_path))
    make("x + 1")
    before = code("<__main__>", "cell_fn", 1)
    assert before is not None
    make("x + 1")
    assert code("<__main__>", "cell_fn", 1) == before
    make("x + 2")
    assert code("<__main__>", "cell_fn", 1) not in (None, before)
    assert code("<__main__>", "gone_fn", 1) is None


def test_an_unknown_format_verifies_nothing() -> None:
    assert dv.verify({"format": 99, "files": {"x": ["d", 1]}}, lambda rel: None, {},
                     lambda *a: None) == []
