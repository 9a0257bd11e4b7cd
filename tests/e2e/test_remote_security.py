"""End-to-end: a poisoned remote cache on a real nginx, through the real CLI. Whoever can write
to the server (or serve GET answers) tries to run code on a reader (a pickle whose loading
creates a marker file), to write files the step never declared (pipelines.py, a user's file),
to pass off entries signed by another key, replayed under another key or with the signature
stripped. Every case must be a miss: the marker never appears, no injected file is written,
the step re-executes here, and the run prints one warning."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import xxhash
from conftest import Result, zb

from tests.e2e.nginx_server import Nginx, nginx_binary
from tests.e2e.test_remote_cache import TICKER, Checkout, remote_warnings
from zenbuild.store.signing import Signer, ac_key

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx missing: tests/sysdeps/nginx.sh")

PIPE = '''
from zenbuild import File, Output, pipeline, step
from ticker import tick


class Model:  # a value zenbuild stores as a pickle
    def __init__(self, words):
        self.words = words


@step
def load(src: File) -> list:
    tick("load")
    return src.read_text().split()


@step
def train(words: list) -> Model:
    tick("train")
    return Model(words)


@step
def score(model: Model) -> int:
    tick("score")
    return len(model.words)


@step
def report(n: int, out: Output) -> None:
    tick("report")
    out.write_text(f"{n} words\\n")


@pipeline
def main():
    n = score(train(load(File("data/words.txt"))))
    report(n, Output("build/report.txt"))
'''

STEPS = ["load", "train", "score", "report"]
USER_NOTES = "my own notes, not zenbuild's\n"


class Payload:
    """Unpickling this creates the marker file: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


def project(root: Path, toml: str = "") -> Checkout:
    root.mkdir(parents=True)
    p = Checkout(root)
    p.write("ticker.py", TICKER)
    p.write("zenbuild.toml", 'pipelines = ["pipelines:main"]\n' + toml)
    p.write("pipelines.py", PIPE)
    p.write("data/words.txt", "alpha beta gamma delta\n")
    p.write("notes.txt", USER_NOTES)
    return p


def keygen(path: Path) -> str:
    r = zb("cache", "keygen", "--out", str(path))
    assert path.stat().st_mode & 0o777 == 0o600, r
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("trusted_keys = "))
    key_id = json.loads(line.split("=", 1)[1])[0]
    assert (path.parent / (path.name + ".pub")).read_text().strip() == key_id
    return str(key_id)


class Server:
    """The nginx folder as an attacker with write access sees it."""

    def __init__(self, nginx: Nginx, prefix: str = "cache") -> None:
        self.nginx = nginx
        self.base = nginx.data / prefix
        self.url = f"http://127.0.0.1:{nginx.port}/{prefix}"

    def entries(self) -> Dict[str, Dict[str, Any]]:
        """ac file name -> entry, for every entry on the server."""
        d = self.base / "ac"
        return {p.name: json.loads(p.read_text()) for p in sorted(d.iterdir())} if d.is_dir() else {}

    def entry(self, step: str, signer: Optional[str] = None) -> Dict[str, Any]:
        for name, doc in self.entries().items():
            if doc["step"] == step and name == ac_key(doc["fingerprint"], signer):
                return doc
        raise AssertionError(f"no entry of {step} in namespace {signer}")

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` as cas/SHA256 (as a PUT would); returns its xxh3 (the local digest)."""
        sha = hashlib.sha256(data).hexdigest()
        (self.base / "cas").mkdir(parents=True, exist_ok=True)
        (self.base / "cas" / sha).write_bytes(data)
        return str(xxhash.xxh3_128_hexdigest(data))

    def blob_ref(self, data: bytes) -> List[Any]:
        return [hashlib.sha256(data).hexdigest(), len(data)]

    def put_entry(self, fingerprint: str, signer: Optional[str], doc: Dict[str, Any]) -> None:
        (self.base / "ac").mkdir(parents=True, exist_ok=True)
        (self.base / "ac" / ac_key(fingerprint, signer)).write_text(json.dumps(doc))


class Tally:
    """The figures the tests print: cases tried, code executions, injected writes."""

    def __init__(self) -> None:
        self.cases = 0
        self.executions = 0
        self.injected = 0

    def line(self, what: str) -> str:
        return (f"remote security ({what}): {self.cases} cases, code executions={self.executions}, "
                f"injected writes={self.injected}")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx").start()
    yield server
    server.stop()


def poisoned_value(marker: Path) -> bytes:
    """A value blob in zenbuild's pickle encoding whose loading creates ``marker``. The same
    payload aimed at another file is loaded here first and must create it, so a test where
    the marker stays absent shows that zenbuild did not load it, not that it cannot run."""
    probe = marker.with_name(marker.name + ".probe")
    blob = marker.with_name("probe-payload.bin")
    blob.write_bytes(b"ZBP2" + pickle.dumps(Payload(probe), protocol=5))
    code = "import sys; from zenbuild.serialize import loads; loads(open(sys.argv[1], 'rb').read())"
    subprocess.run([sys.executable, "-c", code, str(blob)], check=True)
    assert probe.exists(), "the payload must run when loaded, or this test shows nothing"
    probe.unlink()
    return b"ZBP2" + pickle.dumps(Payload(marker), protocol=5)


def poison_value(server: Server, doc: Dict[str, Any], marker: Path) -> Dict[str, Any]:
    """``doc`` with its value replaced by the payload, self-consistent (digests match)."""
    data = poisoned_value(marker)
    forged = json.loads(json.dumps(doc))
    digest = server.put_blob(data)
    forged["value_digest"] = digest
    forged["blobs"][digest] = server.blob_ref(data)
    return forged


def inject_outputs(server: Server, doc: Dict[str, Any], replace: bool) -> Dict[str, Any]:
    """``doc`` listing pipelines.py and notes.txt as outputs too (or instead, ``replace``)."""
    forged = json.loads(json.dumps(doc))
    if replace:
        forged["outputs"] = {}
    for rel, text in (("pipelines.py", "raise SystemExit('replaced by the remote cache')\n"),
                      ("notes.txt", "overwritten by the cache\n")):
        data = text.encode()
        digest = server.put_blob(data)
        forged["outputs"][rel] = {"kind": "file", "digest": digest, "size": len(data), "exec": False}
        forged["blobs"][digest] = server.blob_ref(data)
    return forged


def check_reader(r: Result, p: Checkout, marker: Path, tally: Tally, executed: List[str],
                 *warnings: str) -> None:
    """The run succeeded with exactly ``executed`` run here, ran no payload, wrote nothing it
    should not, and printed one warning per refused kind, containing each of ``warnings``."""
    tally.cases += 1
    tally.executions += marker.exists()
    tally.injected += (p.read("pipelines.py") != PIPE) + (p.read("notes.txt") != USER_NOTES)
    assert not marker.exists(), r
    assert p.read("pipelines.py") == PIPE and p.read("notes.txt") == USER_NOTES
    assert r.returncode == 0, r
    assert sorted(r.executed) == sorted(executed), r
    assert sorted(r.cached) == sorted(set(STEPS) - set(executed)), r
    assert p.read("build/report.txt") == "4 words\n"
    said = [w for w in remote_warnings(r.output) if "remote cache entry" in w]
    assert len(said) == len(warnings), r
    for w in warnings:
        assert sum(w in line for line in said) == 1, (w, r)


def test_unsigned_remote_serves_data_never_code_or_undeclared_files(
        tmp_path: Path, nginx: Nginx, capsys: pytest.CaptureFixture[str]) -> None:
    server, tally = Server(nginx), Tally()
    marker = tmp_path / "PWNED-marker"
    writer = project(tmp_path / "ci")
    r = writer.run("run", "--remote-cache", server.url, "--remote-cache-upload")
    assert sorted(r.executed) == sorted(STEPS) and "4 uploaded" in r.output
    assert len(server.entries()) == 4

    # the honest entries, unsigned: plain data is served; train's value is a pickle: not
    reader = project(tmp_path / "r0")
    r = reader.run("run", "--remote-cache", server.url, check=None)
    check_reader(r, reader, marker, tally, ["train"], "its value is a pickle")
    assert "3 fetched" in r.output and "1 refused" in r.output

    # a forged, self-consistent train entry whose value runs code when loaded
    train = server.entry("train")
    server.put_entry(train["fingerprint"], None, poison_value(server, train, marker))
    reader = project(tmp_path / "r1")
    r = reader.run("run", "--remote-cache", server.url, check=None)
    check_reader(r, reader, marker, tally, ["train"], "its value is a pickle")
    r = reader.run("run", "--remote-cache", server.url, check=None)  # and the next run: all local
    check_reader(r, reader, marker, tally, [])

    # output injection: the report entry also (or only) lists pipelines.py and notes.txt
    report = server.entry("report")
    for replace in (False, True):
        server.put_entry(report["fingerprint"], None, inject_outputs(server, report, replace))
        reader = project(tmp_path / f"r-inject-{replace}")
        r = reader.run("run", "--remote-cache", server.url, check=None)
        check_reader(r, reader, marker, tally, ["train", "report"], "pickle", "declared outputs")
        r = reader.run("run", check=None)  # the next run imports pipelines.py: still the user's
        check_reader(r, reader, marker, tally, [])
    with capsys.disabled():
        print("\n" + tally.line("unsigned remote"))
    assert tally.executions == 0 and tally.injected == 0, tally.line("unsigned remote")


def test_signed_remote_refuses_every_untrusted_entry(
        tmp_path: Path, nginx: Nginx, capsys: pytest.CaptureFixture[str]) -> None:
    server, tally = Server(nginx), Tally()
    marker = tmp_path / "PWNED-marker"
    ci_key = keygen(tmp_path / "keys" / "ci")
    evil_key = keygen(tmp_path / "keys" / "evil")
    trust = f'[cache]\nremote = "{server.url}"\ntrusted_keys = ["{ci_key}"]\n'

    # a pull request's job, with its own key, races main: it uploads first
    pr = project(tmp_path / "pr")
    pr.write("data/words.txt", "alpha beta gamma delta\n")
    r = pr.run("run", "--remote-cache", server.url, "--remote-cache-upload",
               env={"ZENBUILD_SIGNING_KEY_FILE": str(tmp_path / "keys" / "evil")})
    assert "4 signed uploaded" in r.output, r
    # main's CI, signing with the trusted key, from its signing_key_file setting
    ci = project(tmp_path / "ci", f'[cache]\nsigning_key_file = "{tmp_path / "keys" / "ci"}"\n')
    r = ci.run("run", "--remote-cache", server.url, "--remote-cache-upload")
    assert sorted(r.executed) == sorted(STEPS) and "4 signed uploaded" in r.output, r
    assert len(server.entries()) == 8  # the PR's entries did not take CI's keys

    reader = project(tmp_path / "r0", trust)
    r = reader.run("run", check=None)  # signed by a trusted key: everything, the pickle too
    check_reader(r, reader, marker, tally, [])
    assert "4 fetched, 0 missed" in r.output

    train = server.entry("train", ci_key)
    forged = poison_value(server, train, marker)
    stripped = {k: v for k, v in forged.items() if k != "signature"}
    with_evil_signature = dict(stripped, signature=dict(server.entry("train", evil_key)["signature"]))
    kept_signature = forged  # the CI signature kept on an altered entry
    report = server.entry("report", ci_key)
    replayed = {**report, "step": "train"}  # CI's genuine report entry under train's key
    cases = [
        ("downgrade: signature stripped", train["fingerprint"], stripped, "it is not signed"),
        ("untrusted signer", train["fingerprint"], with_evil_signature, "another key"),
        ("altered after signing", train["fingerprint"], kept_signature, "does not verify"),
        ("replayed under another fingerprint", train["fingerprint"], report,
         "another fingerprint"),
        ("replayed and relabelled", train["fingerprint"], replayed, "does not verify"),
    ]
    for i, (_what, fingerprint, doc, warning) in enumerate(cases):
        server.put_entry(fingerprint, ci_key, doc)
        reader = project(tmp_path / f"r{i + 1}", trust)
        r = reader.run("run", check=None)
        check_reader(r, reader, marker, tally, ["train"], warning)
    server.put_entry(train["fingerprint"], ci_key, train)  # CI's own entry back: served again

    # output injection, re-signed with the attacker's key into CI's namespace, and unsigned
    injected = inject_outputs(server, report, replace=False)
    unsigned = {k: v for k, v in injected.items() if k != "signature"}
    evil = Signer.from_pem((tmp_path / "keys" / "evil").read_bytes(), "test")
    for i, doc in enumerate([dict(unsigned, signature=evil.sign(unsigned)), unsigned]):
        server.put_entry(report["fingerprint"], ci_key, doc)
        reader = project(tmp_path / f"inject{i}", trust)
        r = reader.run("run", check=None)
        check_reader(r, reader, marker, tally, ["report"], "trusted_keys")

    # a reader trusting no key looks only in the unsigned namespace: nothing there
    reader = project(tmp_path / "untrusting", f'[cache]\nremote = "{server.url}"\n')
    r = reader.run("run", check=None)
    check_reader(r, reader, marker, tally, STEPS)
    with capsys.disabled():
        print("\n" + tally.line("signed remote"))
    assert tally.executions == 0 and tally.injected == 0, tally.line("signed remote")


def test_a_get_only_server_cannot_poison_readers(
        tmp_path: Path, nginx: Nginx, capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker needs no PUT: a server that answers GETs with prepared files is enough."""
    tally = Tally()
    marker = tmp_path / "PWNED-marker"
    writable, getonly = Server(nginx), Server(nginx, "getonly")
    key = keygen(tmp_path / "keys" / "ci")
    # the attacker prepares entries with the project's source (fingerprints are computable):
    # run it once against a writable server, then lay the files out on the GET-only one
    src = project(tmp_path / "attacker")
    src.run("run", "--remote-cache", writable.url, "--remote-cache-upload")
    for sub in ("ac", "cas"):
        (getonly.base / sub).mkdir(parents=True)
        for f in (writable.base / sub).iterdir():
            (getonly.base / sub / f.name).write_bytes(f.read_bytes())
    train = getonly.entry("train")
    getonly.put_entry(train["fingerprint"], None, poison_value(getonly, train, marker))
    getonly.put_entry(train["fingerprint"], key, poison_value(getonly, train, marker))
    report = getonly.entry("report")
    getonly.put_entry(report["fingerprint"], None, inject_outputs(getonly, report, False))

    reader = project(tmp_path / "r0")
    r = reader.run("run", "--remote-cache", getonly.url, "--remote-cache-upload", check=None)
    check_reader(r, reader, marker, tally, ["train", "report"], "pickle", "declared outputs")
    assert any("refused an upload" in w for w in remote_warnings(r.output)), r  # GET only

    reader = project(tmp_path / "r1", f'[cache]\ntrusted_keys = ["{key}"]\n')
    r = reader.run("run", "--remote-cache", getonly.url, check=None)
    check_reader(r, reader, marker, tally, STEPS, "it is not signed")
    with capsys.disabled():
        print("\n" + tally.line("GET-only server"))
    assert tally.executions == 0 and tally.injected == 0, tally.line("GET-only server")


def test_keygen_never_overwrites_and_bad_keys_stop_with_exit_2(tmp_path: Path) -> None:
    key_id = keygen(tmp_path / "k" / "ci")
    private = (tmp_path / "k" / "ci").read_bytes()
    r = zb("cache", "keygen", "--out", str(tmp_path / "k" / "ci"), check=2)
    assert "already exists" in r.stderr and "Traceback" not in r.output
    assert (tmp_path / "k" / "ci").read_bytes() == private  # untouched
    (tmp_path / "k" / "other.pub").write_text("someone's file\n")
    r = zb("cache", "keygen", "--out", str(tmp_path / "k" / "other"), check=2)
    assert not (tmp_path / "k" / "other").exists()  # no half pair
    assert (tmp_path / "k" / "other.pub").read_text() == "someone's file\n"
    assert private.decode() not in r.output

    p = project(tmp_path / "p", '[cache]\nremote = "http://127.0.0.1:9/c"\n'
                                f'trusted_keys = ["{key_id[:-6]}"]\n')
    r = p.run("run", check=2)
    assert "trusted_keys" in r.stderr and "not a zenbuild public key" in r.stderr, r
    assert "Traceback" not in r.output and p.ticks() == []
    p.write("zenbuild.toml", 'pipelines = ["pipelines:main"]\n[cache]\n'
                             'remote = "http://127.0.0.1:9/c"\nsigning_key_file = "nowhere"\n')
    r = p.run("run", check=2)
    assert "cannot read the signing key" in r.stderr and str(p.root / "nowhere") in r.stderr, r


def forge_value(server: Server, doc: Dict[str, Any], data: bytes) -> Dict[str, Any]:
    forged = json.loads(json.dumps(doc))
    digest = server.put_blob(data)
    forged["value_digest"] = digest
    forged["blobs"][digest] = server.blob_ref(data)
    return forged


def test_an_unsigned_data_value_that_does_not_decode_is_a_miss(
        tmp_path: Path, nginx: Nginx, capsys: pytest.CaptureFixture[str]) -> None:
    """An unsigned remote is trusted for data, but a forged data encoding (a bad array header,
    a list as a dict key, nesting deep enough to exhaust the stack) must be a miss with one
    warning, never a value every later run fails to load."""
    server, tally = Server(nginx), Tally()
    writer = project(tmp_path / "ci")
    writer.run("run", "--remote-cache", server.url, "--remote-cache-upload")
    load = server.entry("load")
    forgeries = [b"ZBV1d1:l0:i1;", b"ZBV1" + b"l1:" * 100_000 + b"i1;",
                 b"ZBV1a" + b"\xff" * 40, b"ZBV1"]
    for i, data in enumerate(forgeries):
        server.put_entry(load["fingerprint"], None, forge_value(server, load, data))
        reader = project(tmp_path / f"r{i}")
        r = reader.run("run", "--remote-cache", server.url, check=None)
        check_reader(r, reader, tmp_path / "no-marker", tally, ["load", "train"],
                     "pickle", "does not decode")
        r = reader.run("run", "--remote-cache", server.url, check=None)  # no lasting damage
        check_reader(r, reader, tmp_path / "no-marker", tally, [], )
    with capsys.disabled():
        print("\n" + tally.line("forged data values"))


def test_a_remote_entry_keeps_its_age(tmp_path: Path, nginx: Nginx) -> None:
    """cache_expires_after counts from when the writer made the entry, not from when a reader
    fetched it: a 5-day-old entry of a step that expires after a day is not served."""
    server = Server(nginx)
    now = 1_700_000_000  # in the past: a fetched entry is never younger than the real clock allows
    toml = f'[cache]\nremote = "{server.url}"\n[steps.load]\ncache_expires_after = "1d"\n'
    writer = project(tmp_path / "ci", toml)
    writer.run("run", "--remote-cache-upload", env={"ZENBUILD_NOW": str(now - 5 * 86400)})
    reader = project(tmp_path / "r0", toml)
    r = reader.run("run", env={"ZENBUILD_NOW": str(now)}, check=None)
    assert r.returncode == 0, r
    assert sorted(r.executed) == ["load", "train"], r  # load expired; train: a pickle
    reader = project(tmp_path / "r1", toml)
    r = reader.run("run", env={"ZENBUILD_NOW": str(now - 4 * 86400)}, check=None)
    assert sorted(r.executed) == ["train"], r  # a day old then: served


def test_a_blob_name_that_is_a_path_is_refused_and_touches_nothing(tmp_path: Path,
                                                                   nginx: Nginx) -> None:
    """A blob is named by its digest, which becomes a path in the store: an entry naming a
    blob "ab/home/you/file" would have made zenbuild read that file as the value and, finding
    it corrupt, delete it. Any name that is not a digest makes the entry a miss."""
    server = Server(nginx)
    writer = project(tmp_path / "ci")
    writer.run("run", "--remote-cache", server.url, "--remote-cache-upload")
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's precious file\n")
    load = server.entry("load")
    for name in ("ab" + str(victim), "../../../" + str(victim), ""):
        forged = json.loads(json.dumps(load))
        forged["blobs"][name] = forged["blobs"].pop(forged["value_digest"])
        forged["value_digest"] = name
        server.put_entry(load["fingerprint"], None, forged)
        reader = project(tmp_path / f"r{len(name)}")
        r = reader.run("run", "--remote-cache", server.url, check=None)
        assert r.returncode == 0, r
        assert sorted(r.executed) == ["load", "train"], r
        assert "not a digest" in r.output, r
        assert victim.read_text() == "the user's precious file\n", name


def test_keygen_warns_when_the_private_key_lands_in_a_checkout(tmp_path: Path) -> None:
    p = project(tmp_path / "p")
    r = zb("cache", "keygen", "--out", str(p.root / "keys" / "signing-key"))
    assert f"the private key is inside {p.root}" in r.output, r
    assert "keys/signing-key to .gitignore" in r.output, r
    r = zb("cache", "keygen", "--out", str(tmp_path / "outside" / "signing-key"))
    assert "Warning" not in r.output, r


DEPLOY = '''
from pathlib import Path
Path(__file__).with_name("DEPLOYED-marker").write_text("ran at import")
'''


@pytest.mark.parametrize("case", ["types", "calls", "subclasses", "outside"])
def test_an_unsigned_record_never_imports_a_module_nor_reads_outside_the_project(
        tmp_path: Path, nginx: Nginx, case: str) -> None:
    """Checking a record imported the project modules it named (a value type's module, a
    traced call's module, a subclass's module), to find the classes: a forged unsigned entry
    could name any project file, a script whose top level deploys, or one that an unsigned
    restore had just written into an Output. And it read whatever path a record named
    (``../../dev/zero``: forever). Unsigned records are checked without importing anything,
    and a record naming a path outside the project is refused."""
    server = Server(nginx)
    writer = project(tmp_path / "ci")
    writer.run("run", "--remote-cache", server.url, "--remote-cache-upload")
    load = server.entry("load")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the project's\n")
    odigest = xxhash.xxh3_128_hexdigest(outside.read_bytes())
    base = {"format": 2, "files": {}, "listed": {}, "env": {}, "calls": [], "sources": {}}
    forgeries = {
        "types": {**base, "types": [["deploy", "Anything", "0" * 32]]},
        "calls": {**base, "calls": [["deploy.py", "main", 2, None, "0" * 32]],
                  "sources": {"deploy.py": None}},
        "subclasses": {**base, "subclasses": [["deploy", "Base", [["deploy", "Sub", None,
                                                                     True]]]]},
        "outside": {**base, "files": {"../outside.txt": [odigest, outside.stat().st_size]}},
    }
    for record in [forgeries[case]]:
        forged = json.loads(json.dumps(load))
        forged["discovered"] = record
        server.put_entry(load["fingerprint"], None, forged)
        reader = project(tmp_path / f"r-{case}")
        reader.write("deploy.py", DEPLOY)
        r = reader.run("run", "--remote-cache", server.url, check=None)
        assert r.returncode == 0, (case, r)
        assert not (reader.root / "DEPLOYED-marker").exists(), (case, r)
        if case == "outside":  # refused, not served on a read of a file outside the project
            assert "load" in r.executed, (case, r)
        r = reader.run("run", check=None)  # the entry is local now: still never imported
        assert r.returncode == 0 and not (reader.root / "DEPLOYED-marker").exists(), (case, r)
