"""The cache controls in the core: durations and the injected clock, expiry and --rerun in
decide(), ignored params, Env() and version components, the secret key, probes (policy.py)."""

from __future__ import annotations

import os

import pytest

from zenbuild import Env, File, PipelineError, pipeline, step
from zenbuild import reasons as R
from zenbuild.durations import format_duration, now, parse_duration
from zenbuild.errors import ParamError
from zenbuild.graph import Node
from zenbuild.policy import EnvInputs, named_steps, probe_version, secret_key
from zenbuild.reasons import Reason, kinds, texts
from zenbuild.rebuild import (
    NO_VERSION,
    PROBE_FAILED_VERSION,
    Components,
    cache_policy,
    decide,
    diff_components,
)
from zenbuild.store.db import ActionEntry


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("15m", 900), ("6h", 21600), ("2d", 172800), ("1w", 604800), ("1.5h", 5400),
    ("PT6H", 21600), ("P1DT12H", 129600), ("PT30M", 1800), ("P2D", 172800), ("pt10s", 10),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["6 hours", "6", "", "P", "PT", "-1h", "0s", "P1H", 6])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (45, 25200, 27000, 90061, 0)] == [
        "45s", "7h", "7h 30m", "1d 1h", "0s"]


def test_clock_is_injected_by_argument_or_environment(monkeypatch):
    monkeypatch.setenv("ZENBUILD_NOW", "1234.5")
    assert now() == 1234.5 and now(99.0) == 99.0
    monkeypatch.delenv("ZENBUILD_NOW")
    assert now() > 1_700_000_000


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_a_clock_that_is_no_time_is_a_usage_error(monkeypatch, text):
    """inf crashed status in format_duration (OverflowError); nan ran a step, then failed to
    store its entry (created NULL) and left the run "running" in `zenbuild runs`."""
    from zenbuild.errors import ConfigError

    monkeypatch.setenv("ZENBUILD_NOW", text)
    with pytest.raises(ConfigError, match="is not a number of seconds since the epoch"):
        now()
    monkeypatch.delenv("ZENBUILD_NOW")
    for given in (float(text), 10 ** 400):
        with pytest.raises(ParamError, match="now is the wall time"):
            now(given)


def node(**opts):
    @step(**opts)
    def s(x: int = 1, verbose: bool = False) -> int:
        return x

    return Node(name="s", step=s, index=0, args={"x": 1, "verbose": False})


def comps(**over):
    base = dict(code={"m.s": "c1"}, code_meta={}, packages={}, params={"x": ["p1", "1"]},
                inputs={}, files={}, env={"python": "3.11"})
    base.update(over)
    return Components(**base)


def judge(n, c, created, now_, rerun=False, config_expiry=None, all_reasons=False, run=None):
    fp = c.fingerprint()
    prev = ActionEntry(fp, "p", "s", "v1", {}, c.to_json(), created=created)
    policy = cache_policy(n, run, None, None, rerun, config_expiry, now_)
    return decide(n, c, fp, policy, prev, lambda f: None, lambda e: None, all_reasons)


def test_expiry_in_decide():
    n = node(cache_expires_after="6h")
    assert not judge(n, comps(), 1000.0, 1000.0 + 6 * 3600).execute  # exactly 6h: still good
    v = judge(n, comps(), 1000.0, 1000.0 + 7 * 3600)
    assert v.execute and v.entry is not None
    assert v.reasons == [Reason(R.EXPIRED, "s", 7 * 3600.0, 6 * 3600.0)]
    assert texts(v.reasons) == ["cached result is 7h old (expires after 6h)"]
    # just past the limit: not "10s old (expires after 10s)", which reads as not expired
    assert texts([Reason(R.EXPIRED, "s", 10.4, 10.0)]) == [
        "cached result is more than 10s old (expires after 10s)"]
    # [steps.NAME] wins over the decorator
    assert not judge(n, comps(), 1000.0, 1000.0 + 7 * 3600, config_expiry=86400.0).execute
    assert not judge(node(), comps(), 0.5, 1e12).execute  # no expiry: forever


def test_rerun_and_precedence():
    v = judge(node(), comps(), 1000.0, 1000.0, rerun=True)
    assert v.execute and kinds(v.reasons) == [R.FORCED_RERUN]
    assert texts(v.reasons) == ["forced to execute (--rerun s)"]
    v = judge(node(), comps(), 1000.0, 1000.0, rerun=True, run=False)  # --no-cache wins
    assert kinds(v.reasons) == [R.CACHE_DISABLED]
    n = node()
    n.step.no_cache = True
    v = judge(n, comps(), 1000.0, 1000.0, rerun=True)
    assert kinds(v.reasons) == [R.NO_CACHE]
    assert R.REFRESH_KINDS >= {R.EXPIRED, R.FORCED_RERUN, R.PROBE_FAILED}


def test_probe_failure_forces_execution():
    n = node()
    fp = comps().fingerprint()
    prev = ActionEntry(fp, "p", "s", "v1", {}, comps().to_json(), created=1.0)
    policy = cache_policy(n, None, None, None)
    policy.probe_error = "OSError: down"
    v = decide(n, comps(), fp, policy, prev, lambda f: None, lambda e: None)
    assert v.execute and v.reasons == [Reason(R.PROBE_FAILED, "s", None, "OSError: down")]
    assert "version probe of step s failed (OSError: down)" in texts(v.reasons)[0]


def test_version_and_env_components_join_the_fingerprint_only_when_present():
    plain = comps()
    assert comps(version=None, has_version=False).fingerprint() == plain.fingerprint()
    v17 = comps(version="etag-17", has_version=True)
    v18 = comps(version="etag-18", has_version=True)
    assert len({plain.fingerprint(), v17.fingerprint(), v18.fingerprint()}) == 3
    assert diff_components(v17.to_json(), v18.to_json()) == [
        Reason(R.VERSION_CHANGED, "version", "etag-17", "etag-18")]
    assert texts(diff_components(v17.to_json(), v18.to_json())) == [
        "version: 'etag-17' -> 'etag-18'"]
    eu = comps(envs={"REGION": ["d1", "'eu'"]})
    us = comps(envs={"REGION": ["d2", "'us'"]})
    assert eu.fingerprint() != us.fingerprint() != plain.fingerprint()
    assert texts(diff_components(eu.to_json(), us.to_json())) == ["env REGION: 'eu' -> 'us'"]
    s1, s2 = comps(envs={"TOKEN": ["k:1", None]}), comps(envs={"TOKEN": ["k:2", None]})
    [r] = diff_components(s1.to_json(), s2.to_json())
    assert (r.kind, r.before, r.after, r.detail) == (R.ENV_INPUT_CHANGED, None, None,
                                                     {"secret": True})


def test_ignore_is_checked_at_definition_and_leaves_the_key():
    with pytest.raises(PipelineError, match="has no parameter 'verbos'.*x, verbose"):
        node(ignore=["verbos"])

    @step(ignore=["debug"])
    def anything(**kw: int) -> None: ...  # **kwargs: any name may be one of them

    assert anything.ignore == ("debug",)
    with pytest.raises(PipelineError, match="cache_expires_after='soon'"):
        node(cache_expires_after="soon")
    with pytest.raises(PipelineError, match="must be a function"):
        node(version="etag")


def test_env_inputs_read_digest_and_hide_secrets(tmp_path):
    @step
    def s(region: str, token: str) -> None: ...

    @pipeline
    def p():
        s(Env("REGION", default="eu"), Env("TOKEN", secret=True))

    g = p().trace(str(tmp_path))
    n = g.nodes["s"]
    store = str(tmp_path / "store")
    envs = EnvInputs(store, {"TOKEN": "hunter2"})
    got, values = envs.read(n)
    assert values == {"REGION": "eu", "TOKEN": "hunter2"}
    assert got["REGION"][1] == "'eu'" and got["TOKEN"][1] is None
    assert got["TOKEN"][0].startswith("k:") and "hunter2" not in repr(got)
    assert oct(os.stat(os.path.join(store, "secret.key")).st_mode & 0o777) == "0o600"
    # the same key next time (another process, same store); another store keys differently
    assert EnvInputs(store, {"TOKEN": "hunter2"}).read(n)[0] == got
    other = EnvInputs(str(tmp_path / "other"), {"TOKEN": "hunter2"}).read(n)[0]
    assert other["TOKEN"][0] != got["TOKEN"][0]
    assert secret_key(store) == secret_key(store)
    with pytest.raises(ParamError, match="Env\\('TOKEN'\\).*not set"):
        EnvInputs(store, {}).read(n)
    with pytest.raises(PipelineError):
        Env("1BAD")


def test_probe_gets_the_plain_params_it_names(tmp_path):
    seen = {}

    def probe(url, src, **_):
        seen.update(url=url, src=src)
        return {"etag": "e1"}

    @step(version=probe)
    def fetch(url: str, src: File, n: int = 3) -> None: ...

    @pipeline
    def p():
        fetch("http://x", File("a.txt"))

    n = p().trace(str(tmp_path)).nodes["fetch"]
    assert probe_version(n, str(tmp_path), {}) == ({"etag": "e1"}, None)
    assert seen == {"url": "http://x", "src": tmp_path / "a.txt"}

    def broken(**_):
        raise ConnectionError("refused")

    n.step.version = broken
    assert probe_version(n, str(tmp_path), {}) == (PROBE_FAILED_VERSION,
                                                   "ConnectionError: refused")
    n.step.version = lambda **_: object()
    value, error = probe_version(n, str(tmp_path), {})
    assert value == PROBE_FAILED_VERSION and "not JSON-able" in (error or "")
    assert NO_VERSION is not None


def test_named_steps_accepts_call_and_function_names(tmp_path):
    @step
    def a(x: int) -> int:
        return x

    @pipeline
    def p():
        a(1)
        a(2)

    g = p().trace(str(tmp_path))
    assert named_steps(g, ["a"], "--rerun") == {"a", "a_2"}
    assert named_steps(g, ["a_2"], "--rerun") == {"a_2"}
    with pytest.raises(PipelineError, match="--rerun b: pipeline p has no step named 'b'"):
        named_steps(g, ["b"], "--rerun")


def test_the_fast_path_parses_step_and_rerun_like_click():
    from zenbuild.cli.commands import cli
    from zenbuild.cli.runcmd import fast_parse

    args = ["--step", "a", "--rerun=b", "--step", "c", "-p", "x=1"]
    ctx = cli.commands["run"].make_context("run", list(args))
    fast = fast_parse(list(args))
    assert fast is not None
    assert fast["steps"] == list(ctx.params["steps"]) == ["a", "c"]
    assert fast["rerun"] == list(ctx.params["rerun"]) == ["b"]


def test_secret_key_of_the_wrong_size_or_a_folder_is_refused(tmp_path):
    from zenbuild.errors import StoreError

    store = tmp_path / "store"
    store.mkdir()
    (store / "secret.key").write_bytes(b"abc")
    with pytest.raises(StoreError, match="damaged: it holds 3 bytes, not 32.*Delete"):
        secret_key(str(store))
    (store / "secret.key").unlink()
    (store / "secret.key").mkdir()
    with pytest.raises(StoreError, match="is a folder.*executes once"):
        secret_key(str(store))
    (store / "secret.key").rmdir()
    assert len(secret_key(str(store))) == 32


def test_rerun_outside_the_selection_and_api_wording(tmp_path):
    from zenbuild.policy import check_api_choices, check_rerun_selected

    @step
    def a(x: int) -> int:
        return x

    @step
    def b(y: int) -> int:
        return y

    @pipeline
    def p():
        b(a(1))
        a(2)

    g = p().trace(str(tmp_path))
    check_rerun_selected(g, ["a"], ["b"])  # a (its first call) is needed by b
    check_rerun_selected(g, ["a_2"], ["a_2"])
    with pytest.raises(PipelineError, match="--rerun b: step b does not run in this run: "
                       "--step a_2 selects only a_2"):
        check_rerun_selected(g, ["b"], ["a_2"])
    with pytest.raises(PipelineError, match=r"^rerun=\['zz'\]: pipeline p has no step"):
        check_api_choices(g, None, None, ["zz"])
    with pytest.raises(PipelineError, match=r"^rerun=\['b'\]: .* steps=\['a'\] selects only "
                       "a, a_2"):
        check_api_choices(g, None, "a", "b")
    with pytest.raises(PipelineError, match=r"run\(steps=3\): expected a step name"):
        check_api_choices(g, None, 3, None)
    check_api_choices(g, ["b"], None, ["a"])


def test_an_api_clock_is_a_number_or_an_aware_datetime():
    import datetime as dt

    assert now(5) == 5.0
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert now(aware) == aware.timestamp()  # type: ignore[arg-type]
    for bad in ("x", True, float("nan"), dt.datetime(2026, 1, 1)):
        with pytest.raises(ParamError, match=r"run\(now=.*seconds since the epoch"):
            now(bad)  # type: ignore[arg-type]
