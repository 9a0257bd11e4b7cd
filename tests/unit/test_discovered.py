"""Unit: discovered dependencies (zenbuild.discovered): a Trace turned into the stored record
(digests, no secret values) and verified on a later run, one Reason kind per change."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

import zenbuild.discovered as dv
from zenbuild import reasons as R
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
    assert all(c[3] for c in rec["calls"])
    assert "side.txt" not in text  # an undeclared write is warned about, never verified
    assert check(root, json.loads(text), dv.SourceDigests(str(root)), ENV) == []


def test_each_change_has_its_reason(tmp_path: Path) -> None:
    root, rec, code = setup(tmp_path)
    (root / "data" / "train.csv").write_text("a\n1\n2\n")
    got = check(root, rec, code, ENV)
    assert [r.kind for r in got] == [R.READ_FILE_CHANGED]
    assert (got[0].subject, got[0].before, got[0].after) == ("data/train.csv", 4, 6)
    (root / "local.cfg").write_text("x")  # tried by the step, missing then
    (root / "data" / "train.csv").unlink()
    got = check(root, rec, code, ENV)
    assert [(r.kind, r.subject) for r in got] == [
        (R.READ_FILE_MISSING, "data/train.csv"), (R.READ_FILE_APPEARED, "local.cfg"),
        (R.LISTED_DIR_CHANGED, "data")]
    assert check(root, rec, code, ENV, first_only=True) == got[:1]


def test_env_changes_show_values_only_when_not_secret(tmp_path: Path) -> None:
    root, rec, code = setup(tmp_path)
    got = check(root, rec, code, {"DEVICE": "cuda", "API_TOKEN": "other", "OPTIONAL": "1"})
    assert [(r.kind, r.subject, r.before, r.after) for r in got] == [
        (R.ENV_READ_CHANGED, "DEVICE", "cpu", "cuda"),
        (R.ENV_READ_CHANGED, "API_TOKEN", None, None),
        (R.ENV_READ_CHANGED, "OPTIONAL", None, "1")]
    texts = [R.text(r) for r in got]
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
        (R.TRACED_CODE_CHANGED, "lib.py:Scaler.transform"),
        (R.TRACED_CODE_CHANGED, "lib.py:fallback")]
    (root / "lib.py").write_text(HELPERS.replace("def helper(x):", "def renamed(x):"))
    got = check(root, rec, code, ENV)
    assert [(r.kind, r.subject) for r in got] == [
        (R.TRACED_CODE_MISSING, "lib.py:helper"),
        (R.TRACED_CODE_MISSING, "lib.py:helper.<locals>.<listcomp>")]


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


def test_a_record_of_an_unknown_format_or_shape_is_never_valid() -> None:
    """A record verify() cannot check fully (another version's format, a damaged row) is one
    reason, so its entry is not served; a well-formed record verifies as before."""
    good = {"format": 2, "files": {"x": ["d", 1], "y": None}, "listed": {"f": None},
            "env": {"A": [None, None]}, "calls": [["a.py", "f", 3, "c", None]],
            "sources": {"a.py": "s"}, "modules": {"m.py": ["d", "s"], "n.py": None}}
    assert dv.malformed(good) is None
    assert dv.verify(good, lambda rel: ("d", 1) if rel in ("x", "a.py", "m.py") else None, {},
                     lambda *a: "c", lambda rel: None) == []
    # format 1 (no closures) is read only without calls: one with calls is checked again
    assert dv.malformed({"format": 1, "files": {"x": ["d", 1]}}) is None
    assert dv.malformed({"format": 1, "calls": [["a.py", "f", 3, "c"]]}) is not None
    for bad in ({"format": 99, "files": {"x": ["d", 1]}}, {"files": {}}, [1], "x",
                {"format": 1, "files": 5}, {"format": 1, "files": {"x": 5}},
                {"format": 1, "files": {"x": ["d"]}}, {"format": 1, "env": {"A": 3}},
                {"format": 1, "env": {"A": [1, None]}}, {"format": 1, "calls": [[1]]},
                {"format": 1, "calls": [["a.py", "f", "3", None]]},
                {"format": 1, "listed": {"f": 1}}, {"format": 1, "sources": {"a": 1}},
                {"format": 2, "calls": [["a.py", "f", 3, "c"]]},
                {"format": 2, "modules": {"m.py": ["d"]}}, {"format": 2, "modules": 5}):
        assert dv.malformed(bad) is not None, bad
        got = dv.verify(bad, lambda rel: None, {}, lambda *a: None)  # type: ignore[arg-type]
        assert [r.kind for r in got] == ["record_unreadable"], bad


# -- the record on the entry: the store, its migration, alternates, the remote cache, decide ---

RECORD = {"format": 1, "files": {"data/train.csv": ["d1", 4]}, "listed": {}, "env": {},
          "calls": [], "sources": {}}


def _put(store: Any, fp: str, value: bytes, record: Optional[Dict[str, Any]],
         last_used: float = 0.0) -> Any:
    from zenbuild.store.db import ActionEntry

    e = ActionEntry(fp, "pipe", "load", store.put_blob(value), {}, {"code": {}},
                    last_used=last_used, discovered=record)
    store.put_action(e)
    return e


def test_the_record_has_its_own_column_and_no_record_is_null(tmp_path: Path) -> None:
    from zenbuild.store.db import Store

    s = Store(str(tmp_path / "st"))
    _put(s, "a" * 32, b"v", RECORD)
    _put(s, "b" * 32, b"w", None)
    assert s.get_action("a" * 32).discovered == RECORD  # type: ignore[union-attr]
    assert s.get_action("b" * 32).discovered is None  # type: ignore[union-attr]
    states = s.step_states("pipe")
    assert states["load"].discovered is None  # step_state points at the last put
    assert dict(s.db.execute("SELECT fingerprint, discovered FROM actions").fetchall())[
        "b" * 32] is None
    s.close()


def test_a_schema_5_store_gains_the_column_and_keeps_its_entries(tmp_path: Path) -> None:
    from tests.conftest import sqlite_db
    from zenbuild.store.db import SCHEMA_VERSION, Store

    s = Store(str(tmp_path / "st"))
    _put(s, "a" * 32, b"v", None)
    s.close()
    with sqlite_db(tmp_path / "st" / "zenbuild.db") as db:
        db.execute("ALTER TABLE actions DROP COLUMN discovered")  # what a schema-5 store holds
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    s = Store(str(tmp_path / "st"))
    e = s.get_action("a" * 32)
    assert e is not None and e.discovered is None
    assert s.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)
    s.close()


def test_a_replaced_entry_stays_as_an_alternate_and_can_be_promoted(tmp_path: Path) -> None:
    from zenbuild.store.actions import ALTERNATES_KEPT
    from zenbuild.store.db import Store

    s = Store(str(tmp_path / "st"))
    fp = "c" * 32
    first = _put(s, fp, b"one", RECORD, last_used=1.0)
    other = {**RECORD, "files": {"data/train.csv": ["d2", 5]}}
    s.demote_action(fp, json.dumps(other, sort_keys=True))
    _put(s, fp, b"two", other, last_used=2.0)
    alts = s.alternate_actions(fp)
    assert [a.value_digest for a in alts] == [first.value_digest]
    assert alts[0].fingerprint.startswith(fp + ":") and alts[0].discovered == RECORD
    s.promote_action(alts[0].fingerprint, fp)
    assert s.get_action(fp).value_digest == first.value_digest  # type: ignore[union-attr]
    assert [a.discovered for a in s.alternate_actions(fp)] == [other]
    s.demote_action(fp, json.dumps(RECORD, sort_keys=True))  # the same record: replaced
    assert len(s.alternate_actions(fp)) == 1
    for i in range(ALTERNATES_KEPT + 3):  # bounded
        rec = {**RECORD, "files": {"data/train.csv": [f"x{i}", i]}}
        s.demote_action(fp)
        _put(s, fp, f"v{i}".encode(), rec, last_used=10.0 + i)
    assert len(s.alternate_actions(fp)) == ALTERNATES_KEPT
    s.close()


def test_the_record_survives_the_remote_round_trip(tmp_path: Path) -> None:
    from tests.unit.test_remote import FakeHttp
    from zenbuild.store.db import Store
    from zenbuild.store.remote import RemoteCache

    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    warnings: list = []
    # values in the canonical data encoding: an unsigned remote serves no other (remote.py)
    entry = _put(a, "d" * 32, b"ZBV1s5:value", RECORD)
    plain = _put(a, "e" * 32, b"ZBV1s5:plain", None)
    http = FakeHttp()
    up = RemoteCache(http, a, warnings.append, upload=True)
    up.upload(entry)
    up.upload(plain)
    rc = RemoteCache(http, b, warnings.append)
    got = rc.fetch(entry.fingerprint)
    # unsigned: marked, so that checking it imports nothing (Discovery.verify)
    assert got is not None and got.discovered == {**RECORD, "untrusted": True}
    assert b.get_action(entry.fingerprint).discovered == {  # type: ignore[union-attr]
        **RECORD, "untrusted": True}
    got2 = rc.fetch(plain.fingerprint)
    assert got2 is not None and got2.discovered is None and warnings == []
    a.close()
    b.close()


def test_decide_verifies_the_record_then_the_alternates(tmp_path: Path) -> None:
    from zenbuild import reasons as R
    from zenbuild.reasons import Reason
    from zenbuild.rebuild import CachePolicy, Components, decide
    from zenbuild.store.db import ActionEntry

    comps = Components({}, {}, {}, {}, {}, {}, {})
    fp = comps.fingerprint()
    latest = ActionEntry(fp, "p", "s", "v2", {}, {}, discovered={"latest": 1})
    alt = ActionEntry(fp + ":t", "p", "s", "v1", {}, {}, discovered={"alt": 1})
    valid: Dict[str, bool] = {"latest": False, "alt": True}
    asked: list = []

    def verify(rec: Dict[str, Any], first_only: bool) -> list:
        asked.append((sorted(rec), first_only))
        key = sorted(rec)[0]
        return [] if valid[key] else [Reason(R.READ_FILE_CHANGED, "data/train.csv", 4, 5)]

    policy = CachePolicy(False, True, "default")
    node: Any = types.SimpleNamespace(name="s")
    v = decide(node, comps, fp, policy, latest, lambda f: None, lambda e: None,
               verify=verify, alternates=lambda f: [alt])
    assert not v.execute and v.entry is alt and asked == [(["latest"], True), (["alt"], True)]
    valid["alt"] = False
    v = decide(node, comps, fp, policy, latest, lambda f: None, lambda e: None,
               all_reasons=True, verify=verify, alternates=lambda f: [alt])
    assert v.execute and v.entry is None  # not the same inputs: no non-determinism check
    assert [r.kind for r in v.reasons] == [R.READ_FILE_CHANGED]
    assert R.text(v.reasons[0]) == "read by the step, not declared: data/train.csv changed"
    plain = ActionEntry(fp, "p", "s", "v", {}, {})  # no record: nothing is verified
    asked.clear()
    v = decide(node, comps, fp, policy, plain, lambda f: None, lambda e: None, verify=verify)
    assert not v.execute and asked == []


def test_static_calls_cover_what_the_static_key_names() -> None:
    meta = {"pipe.step_fn": ["step", "pipe.py"], "lib.Scaler": ["class", "lib.py"],
            "numpy.mean": ["library", ""]}
    skip = dv.static_calls(meta)
    trace = Trace(calls=[["pipe.py", "step_fn", 1], ["pipe.py", "step_fn.<locals>.inner", 2],
                         ["lib.py", "Scaler.transform", 3], ["lib.py", "helper", 9]],
                  calls_traced=True)
    rec = dv.build(trace, lambda rel: ("d", 1), lambda f, q, line: "c", None, skip)
    assert [c[:2] for c in rec["calls"]] == [["lib.py", "helper"]]
    assert rec["sources"] == {"lib.py": "d"}
    assert dv.is_empty(dv.build(Trace(), lambda rel: None, lambda *a: None))


def test_an_unchanged_source_file_is_not_parsed(tmp_path: Path) -> None:
    rec = {"format": 2, "calls": [["lib.py", "helper", 2, "old", None]],
           "sources": {"lib.py": "d"}}
    parsed: list = []

    def code(f: str, q: str, line: int) -> str:
        parsed.append(q)
        return "new"

    assert dv.verify(rec, lambda rel: ("d", 1), {}, code) == [] and parsed == []
    got = dv.verify(rec, lambda rel: ("d2", 1), {}, code)
    assert [r.kind for r in got] == [R.TRACED_CODE_CHANGED] and parsed == ["helper"]


def test_ignored_variables_are_not_verified() -> None:
    from zenbuild.trace import env_filter

    rec = {"format": 1, "env": {"MY_SEED": [dv.env_digest("1"), "1"],
                                "DEVICE": [dv.env_digest("cpu"), "cpu"]}}
    environ = {"MY_SEED": "2", "DEVICE": "gpu"}
    wanted = env_filter(["MY_*"])
    got = dv.verify(rec, lambda rel: None, environ, lambda *a: None, env_wanted=wanted)
    assert [r.subject for r in got] == ["DEVICE"]
    assert not wanted("HOME") and not wanted("LC_ALL") and wanted("DEVICE")


def test_a_traced_call_is_checked_by_its_closure_even_when_its_file_is_unchanged() -> None:
    """The closure digest (what the function's names point to: a constant imported from another
    module, an alias) is compared on every verify; the file shortcut covers only the def's AST."""
    trace = Trace(calls=[["ops.py", "double", 2]], calls_traced=True)
    rec = dv.build(trace, lambda rel: ("d", 1), lambda *a: "ast",
                   closure_digest=lambda f, q, line: "c1")
    assert rec["calls"] == [["ops.py", "double", 2, "ast", "c1"]]
    assert dv.verify(rec, lambda rel: ("d", 1), {}, lambda *a: "ast",
                     closure_digest=lambda *a: "c1") == []
    got = dv.verify(rec, lambda rel: ("d", 1), {}, lambda *a: "ast",
                    closure_digest=lambda *a: "c2")
    assert [(r.kind, r.subject) for r in got] == [(R.TRACED_CODE_CHANGED, "ops.py:double")]


def test_a_null_closure_that_has_a_digest_now_is_a_change() -> None:
    """A record made by a version that found no closure for a nested def or a lambda (null)
    was never checked for what the code reads: once a digest can be computed, it runs once
    more (and is recorded with it). Null then and now stays served."""
    trace = Trace(calls=[["p.py", "make.<locals>.inner", 3]], calls_traced=True)
    rec = dv.build(trace, lambda rel: ("d", 1), lambda *a: "ast",
                   closure_digest=lambda *a: None)
    assert rec["calls"] == [["p.py", "make.<locals>.inner", 3, "ast", None]]
    assert dv.verify(rec, lambda rel: ("d", 1), {}, lambda *a: "ast",
                     closure_digest=lambda *a: None) == []
    got = dv.verify(rec, lambda rel: ("d", 1), {}, lambda *a: "ast",
                    closure_digest=lambda *a: "c1")
    assert [(r.kind, r.subject) for r in got] == [
        (R.TRACED_CODE_CHANGED, "p.py:make.<locals>.inner")]


def test_a_used_module_is_checked_by_its_source_parsed_only_when_its_file_changed() -> None:
    trace = Trace(modules=["configs/exp.py", "pipe.py"])
    rec = dv.build(trace, lambda rel: ("f1", 9), lambda *a: None, skip_modules={"pipe.py"},
                   module_digest=lambda rel: "s1")
    assert rec["modules"] == {"configs/exp.py": ["f1", "s1"]}  # pipe.py: the static key's
    parsed: list = []

    def source(rel: str) -> str:
        parsed.append(rel)
        return "s1" if len(parsed) == 1 else "s2"

    assert dv.verify(rec, lambda rel: ("f1", 9), {}, lambda *a: None, module_digest=source) == []
    assert parsed == []  # same file: nothing parsed
    # a comment edit: another file digest, the same normalized source
    assert dv.verify(rec, lambda rel: ("f2", 9), {}, lambda *a: None, module_digest=source) == []
    got = dv.verify(rec, lambda rel: ("f3", 9), {}, lambda *a: None, module_digest=source)
    assert [(r.kind, r.subject) for r in got] == [(R.USED_MODULE_CHANGED, "configs/exp.py")]
    gone = dv.verify(rec, lambda rel: None, {}, lambda *a: None, module_digest=source)
    assert [r.kind for r in gone] == [R.USED_MODULE_CHANGED]


def test_a_used_module_counts_by_its_constants_and_signatures_not_function_bodies(
        tmp_path: Path) -> None:
    code = dv.SourceDigests(str(tmp_path))
    p = tmp_path / "m.py"
    p.write_text('"""doc"""\nLR = 0.1\n\ndef other():\n    return 1\n')
    before = code.module("m.py")
    p.write_text('"""doc 2"""\nLR = 0.1\n\n\ndef other():  # c\n    return 2\n')
    assert code.module("m.py") == before  # a body runs only through a traced call
    p.write_text('"""doc"""\nLR = 0.2\n\ndef other():\n    return 1\n')
    assert code.module("m.py") not in (None, before)
    p.write_text('"""doc"""\nLR = 0.1\n\ndef other(x=2):\n    return 1\n')
    assert code.module("m.py") != before


@pytest.mark.parametrize("section,value", [
    ("files", {"../../dev/zero": ["d", 1]}),
    ("files", {"/etc/passwd": ["d", 1]}),
    ("files", {"a/../../b": None}),
    ("modules", {"../x.py": ["d", "s"]}),
    ("listed", {"../": "d"}),
    ("calls", [["../../x.py", "f", 1, None, None]]),
    ("sources", {"/x.py": "d"}),
])
def test_a_record_naming_a_path_outside_the_project_is_malformed(section, value) -> None:
    """Only a forged record names one (the recorder drops such paths); checking it read the
    path: /dev/zero forever."""
    rec = {"format": 2, "files": {}, "listed": {}, "env": {}, "calls": [], "sources": {},
           section: value}
    assert dv.malformed(rec) is not None
    ok = {"format": 2, "files": {"a..b/c.txt": ["d", 1]}, "listed": {".": "d"}, "env": {},
          "calls": [["<__main__>", "f", 1, None, None], ["sub/../pipe.py", "f", 1, None, None]],
          "sources": {}}  # (a call's label from a sys.path entry "sub/..")
    assert dv.malformed(ok) is None
    assert dv.malformed({**ok, "untrusted": True}) is None
    assert dv.malformed({**ok, "untrusted": "yes"}) is not None
