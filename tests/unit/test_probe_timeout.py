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
