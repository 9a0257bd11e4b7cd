"""Unit: environment variables a step reads without declaring them. Which values are hidden (a
secret-looking name, or a value that looks like a credential), the keyed digest kept of a hidden
value (HMAC under the store's key, never the value nor an unkeyed hash), verification against
another key or an older unkeyed record (a rerun, never "same"), Env() inputs hidden the same
way, and os.environb reads recorded like os.environ's."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

import zenbuild.discovered as dv
import zenbuild.trace as trace
from zenbuild import reasons as R
from zenbuild.digest import StatCache, digest_bytes
from zenbuild.trace import Recorder, Trace, TraceOptions, is_hidden, keyed_digest

SEKRIT = "SEKRIT-4c1f9e"

HIDDEN = {  # name -> value: each must be hidden
    "API_TOKEN": SEKRIT, "PGPASSWORD": SEKRIT, "GITHUB_PAT": SEKRIT, "MYSQL_PWD": SEKRIT,
    "SENTRY_DSN": SEKRIT, "SIGNING_CERT": SEKRIT, "AWS_CREDS": SEKRIT, "PAT": SEKRIT,
    "SLACK_WEBHOOK": SEKRIT, "AZURE_CONNECTION_STRING": SEKRIT, "GHTOKEN": SEKRIT,
    "OAUTH": SEKRIT, "AWS_SECRET_ACCESS_KEY": SEKRIT, "api_key": SEKRIT,
    # credentials by their value, whatever the name
    "DATABASE_URL": f"postgres://u:{SEKRIT}@h/db", "REDIS_URL": f"redis://:{SEKRIT}@h",
    "MLFLOW_TRACKING_URI": f"https://u:{SEKRIT}@h", "GIT_REMOTE": f"https://{SEKRIT}@github.com/o/r",
    "UPSTREAM": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "LLM": "sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2", "HF": "hf_" + "abcdefghijklmnopqrstuvwxyz0123",
    "AWS_ID": "AKIA" + "ABCDEFGHIJKLMNOP", "SIGNED": "https://b.example/x?sig=abc&se=2030",
    "ODBC": "Server=db;Database=x;Password=" + SEKRIT + ";",
    "JWT_LIKE": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLWhlcmU",
    "PEM": "-----BEGIN RSA PRIVATE KEY-----\nMIIB...",
}
SHOWN = {  # ordinary values: shown as before
    "DEVICE": "cuda", "DATA_DIR": "/data/x", "SEED": "7", "MODEL_PATH": "models/a.pt",
    "API_URL": "https://api.example.com/v1", "SSH_LIKE": "git@github.com:o/r.git",
    "LIB": "sk-learn", "EMAIL": "a@b.example", "HOSTPORT": "redis:6379",
    # names that only look like secret words, paths to secrets, URLs with a plain user name:
    # hiding them would cost their steps every remote hit (a keyed digest is per store)
    "TOKENIZERS_PARALLELISM": "false", "AUTHOR": "me", "KEYWORDS": "a,b",
    "SSL_CERT_FILE": "/etc/ssl/cert.pem", "PASSWORD_FILE": "/run/secrets/pw",
    "REPO": "ssh://git@github.com/o/r.git", "LOCAL_DB": "postgres://postgres@localhost/db",
}


def test_what_is_hidden() -> None:
    for name, value in HIDDEN.items():
        assert is_hidden(name, value), name
    for name, value in SHOWN.items():
        assert not is_hidden(name, value), name
    assert not is_hidden("API_TOKEN", None)  # unset: nothing to hide


def files(_rel: str) -> Optional[Any]:
    return None


def code(_f: str, _q: str, _line: int) -> Optional[str]:
    return None


def key_digest(key: bytes) -> Any:
    return lambda value: keyed_digest(key, value)


ENV: Dict[str, Optional[str]] = {**HIDDEN, **SHOWN, "UNSET_ZB": None}
K1, K2 = b"1" * 32, b"2" * 32


def built(env: Dict[str, Optional[str]], key: bytes = K1) -> Dict[str, Any]:
    return dv.build(Trace(env=dict(env), env_traced=True), files, code,
                    secret_digest=key_digest(key))


def test_the_record_keeps_keyed_digests_of_hidden_values_only() -> None:
    rec = built(ENV)
    text = json.dumps(rec)
    assert SEKRIT not in text
    for name, value in HIDDEN.items():
        assert value not in text and digest_bytes(value.encode()) not in text  # no unkeyed hash
        want = "k:" + hmac.new(K1, value.encode(), hashlib.sha256).hexdigest()
        assert rec["env"][name] == [want, None], name
    for name, value in SHOWN.items():
        assert rec["env"][name] == [digest_bytes(value.encode()), value]
    assert rec["env"]["UNSET_ZB"] == [None, None]
    assert built(ENV, K2)["env"]["API_TOKEN"] != rec["env"]["API_TOKEN"]  # per store
    assert dv.malformed(json.loads(text)) is None


def check(rec: Dict[str, Any], environ: Dict[str, str], key: bytes = K1) -> list:
    return dv.verify(rec, files, environ, code, secret_digest=key_digest(key))


def test_hidden_values_verify_changes_and_never_show() -> None:
    now = {k: v for k, v in ENV.items() if v is not None}
    rec = built(ENV)
    assert check(rec, now) == []  # unchanged under the same key: served
    changed = {**now, "DATABASE_URL": "postgres://u:other@h/db", "API_TOKEN": "other"}
    got = check(rec, changed)
    assert [(r.subject, r.before, r.after) for r in got] == [
        ("API_TOKEN", None, None), ("DATABASE_URL", None, None)]
    assert all(r.detail == {"secret": True} for r in got)
    assert [R.text(r) for r in got] == ["read by the step: API_TOKEN changed (value hidden)",
                                        "read by the step: DATABASE_URL changed (value hidden)"]


def test_another_key_or_an_unkeyed_record_never_verifies_as_same() -> None:
    now = {k: v for k, v in ENV.items() if v is not None}
    rec = built(ENV, K2)  # a remote entry made by another store: its key is not ours
    got = check(rec, now, K1)
    assert sorted(r.subject for r in got) == sorted(HIDDEN)  # each hidden one: rerun
    assert all(r.before is None and r.after is None for r in got)
    old = {"format": 1, "env": {"API_TOKEN": [digest_bytes(SEKRIT.encode()), None]}}  # before
    assert [r.subject for r in check(old, {"API_TOKEN": SEKRIT})] == ["API_TOKEN"]
    # without a key (the pure functions' default): a key of this process, never unkeyed
    rec = dv.build(Trace(env={"API_TOKEN": SEKRIT}, env_traced=True), files, code)
    assert rec["env"]["API_TOKEN"][0].startswith("k:")
    assert dv.verify(rec, files, {"API_TOKEN": SEKRIT}, code) == []


def test_a_value_that_became_a_credential_shows_neither_value() -> None:
    rec = built({"UPSTREAM_URL": "https://h.example/repo"})
    got = check(rec, {"UPSTREAM_URL": f"https://u:{SEKRIT}@h.example/repo"})
    assert [(r.subject, r.before, r.after, r.detail) for r in got] == [
        ("UPSTREAM_URL", None, None, {"secret": True})]
    rec = built({"UPSTREAM_URL": f"https://u:{SEKRIT}@h.example/repo"})
    got = check(rec, {"UPSTREAM_URL": "https://h.example/repo"})
    assert [(r.before, r.after) for r in got] == [(None, None)]


def test_discovery_keys_with_the_store_key(tmp_path: Path) -> None:
    store = tmp_path / "store"
    d = dv.Discovery(str(tmp_path), StatCache(), environ={"API_TOKEN": SEKRIT}, store=str(store))
    rec = d.build(Trace(env={"API_TOKEN": SEKRIT}, env_traced=True))
    assert rec is not None
    key = (store / "secret.key").read_bytes()
    assert rec["env"]["API_TOKEN"][0] == keyed_digest(key, SEKRIT)
    assert d.verify(rec, True) == []


def test_env_inputs_hide_credential_values_and_keep_their_old_digests(tmp_path: Path) -> None:
    from zenbuild import Env, pipeline, step
    from zenbuild.policy import EnvInputs, secret_key

    @step
    def s(url: str, tok: str, dev: str) -> None: ...

    @pipeline
    def p() -> None:
        s(Env("DATABASE_URL"), Env("TOKEN_ZB", secret=True), Env("DEVICE_ZB"))

    node = p().trace(str(tmp_path)).nodes["s"]
    store = str(tmp_path / "store")
    url = f"postgres://u:{SEKRIT}@h/db"
    comps, values = EnvInputs(store, {"DATABASE_URL": url, "TOKEN_ZB": SEKRIT,
                                      "DEVICE_ZB": "cpu"}).read(node)
    assert SEKRIT not in repr(comps) and values["TOKEN_ZB"] == SEKRIT
    key = secret_key(store)
    assert comps["DATABASE_URL"] == [keyed_digest(key, url), None]
    # the digest of a secret Env is the one earlier versions stored (no rerun on upgrade)
    assert comps["TOKEN_ZB"] == ["k:" + hmac.new(key, SEKRIT.encode(), hashlib.sha256).hexdigest(),
                                 None]
    assert comps["DEVICE_ZB"][1] == "'cpu'"


# -- os.environb ---------------------------------------------------------------------------------


@pytest.fixture
def proj(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "proj"
    root.mkdir()
    yield root
    assert not trace._ACTIVE


def record(root: Path, body: Any) -> Trace:
    with Recorder(TraceOptions(str(root), str(root / ".zenbuild"))) as r:
        body()
    assert r.trace is not None
    return r.trace


@pytest.mark.skipif(not hasattr(os, "environb"), reason="os.environb is POSIX only")
def test_environb_reads_are_recorded_as_os_environ_shows_them(
        proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_ZB", "cuda")
    monkeypatch.setenv("SEED_ZB", "7")
    monkeypatch.setenv("OTHER_ZB", "x")
    monkeypatch.delenv("MISSING_ZB", raising=False)
    os.environb[b"RAW_ZB"] = b"caf\xff"  # not UTF-8: os.environ shows it surrogateescape'd
    try:
        def body() -> None:
            assert os.environb.get(b"DEVICE_ZB") == b"cuda"
            assert b"MISSING_ZB" not in os.environb
            int(os.environb[b"SEED_ZB"])
            os.environb.get(b"RAW_ZB")
            os.environb[b"SET_BY_STEP_ZB"] = b"1"  # set by the step: not an input
            os.environb.get(b"SET_BY_STEP_ZB")
            del os.environb[b"SET_BY_STEP_ZB"]
            for k in os.environb:  # reads os.environ whole (decoded, as os.environ has it)
                if k == b"OTHER_ZB":
                    os.environb[k]

        t = record(proj, body)
        mine = {k: v for k, v in t.env.items() if k.endswith("_ZB")}
        assert mine == {"DEVICE_ZB": "cuda", "MISSING_ZB": None, "SEED_ZB": "7",
                        "RAW_ZB": os.environ["RAW_ZB"], "OTHER_ZB": "x"}
        assert t.env["RAW_ZB"] == "caf\udcff"
        assert t.env_all is not None and "OTHER_ZB" in t.env_all and "RAW_ZB" in t.env_all
        assert "SET_BY_STEP_ZB" not in t.env and "MISSING_ZB" not in t.env_all
        # the record verifies against os.environ: the same value is no change
        rec = dv.build(t, files, code)
        assert dv.verify(rec, files, dict(os.environ), code) == []
    finally:
        del os.environb[b"RAW_ZB"]
    cls = type(os.environ)
    assert type(os.environb) is cls  # restored, as os.environ is
