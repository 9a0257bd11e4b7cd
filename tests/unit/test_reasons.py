"""reasons: every kind has one text template, records round-trip through JSON, old rows read."""

from __future__ import annotations

import json

import pytest

from zenbuild import reasons as R
from zenbuild.reasons import Reason


def test_every_kind_has_exactly_one_template_and_kinds_are_unique_snake_case():
    assert len(set(R.KINDS)) == len(R.KINDS)
    assert set(R.TEMPLATES) == set(R.KINDS)
    for k in R.KINDS:
        assert k == k.lower() and " " not in k


@pytest.mark.parametrize("reason,expected", [
    (Reason(R.CODE_CHANGED, "m.s", detail={"item": "step", "file": "m.py"}),
     "code: step function m.s (m.py) changed"),
    (Reason(R.CODE_ADDED, "m.h", detail={"item": "function", "file": "m.py"}),
     "code: now uses helper m.h (m.py)"),
    (Reason(R.CODE_REMOVED, "m.C", detail={"item": "constant", "file": ""}),
     "code: no longer uses constant m.C"),
    (Reason(R.PACKAGE_VERSION, "np", "1", None), "package np: 1 -> not used"),
    (Reason(R.PARAM_NEW, "top", after="5"), "param top: new (5)"),
    (Reason(R.PARAM_REMOVED, "top", before="5"), "param top: removed"),
    (Reason(R.PARAM_CHANGED, "top", "10", "5"), "param top: 10 -> 5"),
    (Reason(R.INPUT_ADDED, "w", detail={"step": "load"}), "input w: now reads the output of step load"),
    (Reason(R.INPUT_CHANGED, "w", "a", "b", {"step": "load"}),
     "input w: upstream step load produced different output"),
    (Reason(R.FILE_CHANGED, "d/w.txt", 2100, 2400), "file d/w.txt: content changed (2.1 KB -> 2.3 KB)"),
    (Reason(R.FILE_NEW, "d/n.csv", after=5), "file d/n.csv: new input"),
    (Reason(R.CACHE_DISABLED, "config", detail={"step": "fit"}),
     "caching disabled by zenbuild.toml [steps.fit] enable_cache = false"),
    (Reason(R.CACHE_DISABLED, "run"), "caching disabled by --no-cache"),
    (Reason(R.UPSTREAM_PENDING, "load", detail={"arg": "text"}), "input text: upstream step load would execute"),
    (Reason(R.UPSTREAM_PENDING, "load"), "upstream step load would execute"),
    (Reason(R.UPSTREAM_SKIPPED, "x"), "upstream step x was skipped"),
    (Reason(R.OUTPUT_RESTORE, "out/a"), "output out/a: differs from the stored result; a run restores it"),
    (Reason(R.DIR_CHANGED_DURING, "d", detail={"step": "s"}),
     "input folder d changed while step s ran; its result was used but not cached"),
    (Reason(R.UP_TO_DATE), "up to date"),
])
def test_text(reason, expected):
    assert R.text(reason) == expected
    assert reason.to_json()["text"] == expected


def test_records_round_trip_through_json_and_old_strings_stay_strings():
    r = Reason(R.FILE_CHANGED, "a.txt", 1, 2)
    back = R.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r
    assert R.from_json("never built") == "never built"  # a run row written before records
    assert R.text("never built") == "never built"
    assert R.to_json("never built")["kind"] == ""
    assert R.kinds([r, "x"]) == [R.FILE_CHANGED, ""]


def test_an_unknown_kind_still_renders():
    assert R.text(Reason("from_the_future", "x", after="y")) == "from_the_future x y"


def test_the_run_history_form_is_compact_and_reads_back_as_records():
    assert R.pack(Reason(R.UP_TO_DATE)) == "up_to_date"  # a no-op stores a word per step
    r = Reason(R.FILE_CHANGED, "a.txt", 1, 2)
    assert R.unpack(json.loads(json.dumps(R.pack(r))), R.text(r)) == r.to_json()
    assert R.unpack("up_to_date", "up to date") == Reason(R.UP_TO_DATE).to_json()
