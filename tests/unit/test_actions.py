"""The action cache's rows: components stored as the JSON text json.dumps(sort_keys=True) gives,
also for the sections many entries share (encoded once per run)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict

from zenbuild.store.db import ActionEntry, Store


def _components(code: Dict[str, str], files: Dict[str, Any]) -> Dict[str, Any]:
    return {"params": {"x": ["d" * 32, "1"]}, "code": code, "files": files,
            "code_meta": {"m.f": ["step", "m.py"]}, "env": {"python": "3.11"},
            "inputs": {"ups": {"a": "e" * 32}}, "packages": {}, "élan": "ü\u2028"}


def _stored(store: Store) -> Dict[str, str]:
    store.close()
    with contextlib.closing(sqlite3.connect(str(Path(store.path) / "zenbuild.db"))) as db:
        return dict(db.execute("SELECT step, components FROM actions"))  # (closed: 3.13 warns)


def test_components_text_is_json_dumps_sorted(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    code = {"m.f": "a" * 32, "m.g": "b" * 32}  # one dict shared by the calls of a step
    want = {}
    for i in range(3):
        comps = _components(code, {f"data/{i}.txt": ["c" * 32, i]})
        want[f"s{i}"] = json.dumps(comps, sort_keys=True)
        store.put_action(ActionEntry(f"{i:032x}", "p", f"s{i}", "f" * 32, {}, comps))
    code["m.h"] = "9" * 32  # a shared section that changed is encoded again
    comps = _components(code, {})
    want["s3"] = json.dumps(comps, sort_keys=True)
    store.put_action(ActionEntry("3" * 32, "p", "s3", "f" * 32, {}, comps))
    odd = {2: "int keys", 1: code}  # anything else: json.dumps itself
    want["s4"] = json.dumps(odd, sort_keys=True)
    store.put_action(ActionEntry("4" * 32, "p", "s4", "f" * 32, {}, odd))
    got = _stored(store)
    assert got == want
    assert json.loads(got["s3"])["code"]["m.h"] == "9" * 32


def test_components_text_with_placeholder_lookalikes(tmp_path: Path) -> None:
    """The shared sections are spliced into one encoding of the rest at the places their
    placeholders take: a value or key that holds a placeholder's very text cannot fool it
    (that entry is encoded whole), and two step functions' sections alternating, or a section
    missing, give json.dumps' text too; outputs and discovered records are json.dumps' as well."""
    store = Store(str(tmp_path / "st"))
    code_a = {"m.f": "a" * 32}
    code_b = {"m.g": "b" * 32}
    hole = "\0zenbuild-section-code\0"
    cases = [
        _components(code_a, {hole: ["c" * 32, 1]}),  # a key that looks like a placeholder
        _components(code_b, {"x.txt": [hole, 2]}),  # ... a value
        # a lookalike before the real placeholder ("env" sorts before "packages")
        {**_components(code_a, {}), "env": {"python": "\0zenbuild-section-packages\0"}},
        _components(code_b, {"y.txt": ["c" * 32, 3]}),
        _components(code_a, {"z.txt": ["c" * 32, 4]}),
        {"code": code_a},  # only a shared section
        {"files": {"a": ["c" * 32, 5]}},  # none
        {},
    ]
    want = {}
    outputs = {"build/o.txt": {"kind": "file", "digest": "1" * 32, "size": 3, "exec": False}}
    discovered = {"format": 1, "files": {"b.txt": ["2" * 32, 4]}, "env": {"Z": None, "A": "1"}}
    for i, comps in enumerate(cases):
        want[f"s{i}"] = json.dumps(comps, sort_keys=True)
        store.put_action(ActionEntry(f"{i:032x}", "p", f"s{i}", "f" * 32, outputs, comps,
                                     discovered=discovered))
    store.close()
    with contextlib.closing(sqlite3.connect(str(Path(store.path) / "zenbuild.db"))) as db:
        rows = db.execute("SELECT step, components, outputs, discovered FROM actions").fetchall()
    assert {r[0]: r[1] for r in rows} == want
    assert {r[2] for r in rows} == {json.dumps(outputs, sort_keys=True)}
    assert {r[3] for r in rows} == {json.dumps(discovered, sort_keys=True)}


def test_the_reused_encoder_recovers_after_an_error(tmp_path: Path) -> None:
    """The entry encoder is made once per store: after a value it cannot encode (or a
    circular one, still refused as json.dumps refuses it), the next entry is encoded as
    json.dumps would."""
    import pytest

    store = Store(str(tmp_path / "st"))
    loop: Dict[str, Any] = {}
    loop["self"] = loop
    for bad, error in (({"x": {"y": object()}}, TypeError), ({"x": loop}, ValueError)):
        with pytest.raises(error):
            store.put_action(ActionEntry("9" * 32, "p", "bad", "f" * 32, {}, {"params": bad}))
    comps = _components({"m.f": "a" * 32}, {"a.txt": ["c" * 32, 1]})
    store.put_action(ActionEntry("1" * 32, "p", "ok", "f" * 32, {}, comps))
    assert _stored(store) == {"ok": json.dumps(comps, sort_keys=True)}
