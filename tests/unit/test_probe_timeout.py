"""A version probe that does not return in time: the step executes, the run goes on."""

from __future__ import annotations

import threading

import pytest

from zenbuild import PipelineError, pipeline, policy, step
from zenbuild.policy import probe_version
from zenbuild.rebuild import PROBE_FAILED_VERSION


def test_a_stuck_probe_fails_after_the_default_timeout(tmp_path, monkeypatch) -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck(**_) -> str:
        release.wait()  # a server that never answers, until the test lets it go
        finished.set()
        return "late"

    @step(version=stuck)
    def fetch() -> None: ...

    @pipeline
    def p():
        fetch()

    node = p().trace(str(tmp_path)).nodes["fetch"]
    assert node.step.probe_timeout is None
    monkeypatch.setattr(policy, "PROBE_TIMEOUT_S", 0.01)  # the default, made short
    value, error = probe_version(node, str(tmp_path), {})
    assert value == PROBE_FAILED_VERSION and "did not return within 0.01 s" in (error or "")
    release.set()
    assert finished.wait(30)  # the probe's thread went on and ended on its own

    node.step.probe_timeout = 30.0  # @step(probe_timeout="30s"): waits that long instead
    assert probe_version(node, str(tmp_path), {}) == ("late", None)


def test_a_probes_own_error_still_comes_through_its_thread(tmp_path) -> None:
    def broken(**_) -> str:
        raise ConnectionError("refused")

    @step(version=broken, probe_timeout="5s")
    def fetch() -> None: ...

    @pipeline
    def p():
        fetch()

    node = p().trace(str(tmp_path)).nodes["fetch"]
    assert node.step.probe_timeout == 5.0
    assert probe_version(node, str(tmp_path), {}) == (PROBE_FAILED_VERSION,
                                                      "ConnectionError: refused")
    with pytest.raises(PipelineError, match="probe_timeout='1 hour'"):
        step(version=broken, probe_timeout="1 hour")(lambda: None)


def test_a_probe_that_outlived_its_timeout_reads_for_itself_not_for_the_step(tmp_path) -> None:
    """The probe's thread goes on after its timeout; what it reads while a step is being
    recorded is not the step's (else a spurious input would join the step's record). The
    same reads from another thread of user code that was already running are booked, so the
    test can see a read at all."""
    import os

    from zenbuild.trace import Recorder, TraceOptions

    (tmp_path / "probe_state.txt").write_text("v2")
    go, done = threading.Event(), threading.Event()

    def late_probe(**_) -> str:
        go.wait(30)  # the run gave up on it; now a step is being recorded
        text = (tmp_path / "probe_state.txt").read_text()
        os.environ.get("ZB_PROBE_ONLY_VAR")
        done.set()
        return text

    @step(version=late_probe)
    def fetch() -> None: ...

    @pipeline
    def p():
        fetch()

    node = p().trace(str(tmp_path)).nodes["fetch"]
    node.step.probe_timeout = 0.01  # the run gives up on it at once
    assert probe_version(node, str(tmp_path), {})[0] == PROBE_FAILED_VERSION
    opts = TraceOptions(str(tmp_path), store_dir=str(tmp_path / ".zenbuild"))
    with Recorder(opts) as r:  # the step runs while the probe wakes up
        go.set()
        assert done.wait(30)
    assert r.trace is not None
    assert r.trace.reads == [] and "ZB_PROBE_ONLY_VAR" not in r.trace.env

    go.clear(), done.clear()
    plain = threading.Thread(target=late_probe)  # user code, not a probe: booked as before
    plain.start()
    with Recorder(opts) as r:
        go.set()
        assert done.wait(30)
    plain.join()
    assert r.trace is not None and r.trace.reads == ["probe_state.txt"]


def test_a_number_of_seconds_is_a_duration_and_a_bad_one_is_said_once() -> None:
    def probe(**_) -> str:
        return "v"

    assert step(version=probe, probe_timeout=5)(lambda: None).probe_timeout == 5.0
    assert step(cache_expires_after=90.5)(lambda: None).expires_after == 90.5
    for bad in (0, -3, "10ms", True):
        with pytest.raises(PipelineError) as e:
            step(version=probe, probe_timeout=bad)(lambda: None)
        assert str(e.value).count('"90s"') == 1  # the accepted forms, named once
