"""Unit: the recorder's frame filter (zenbuild.trace._from_user) stops at the recorder's own
files as user code's boundary. The recorder was one file, trace/__init__.py; the modules split
out of it hold the os.environ and os.stat wrappers, the audit hook and the store's key, whose
frames must be judged as that file's were: each is in _BOUNDARY_FILES."""

from __future__ import annotations

import os

import zenbuild.trace as trace
from zenbuild.trace import hooks, probes, secrets


def test_the_recorders_files_are_boundaries() -> None:
    for mod in (trace, hooks, probes, secrets):
        assert mod.__file__ is not None
        assert os.path.abspath(mod.__file__) in trace._BOUNDARY_FILES, mod.__name__


def test_a_library_call_from_the_recorders_code_counts() -> None:
    """A library call made straight from the recorder's code (no user frame between) counts,
    as it did when that code was in trace/__init__.py; any other file of zenbuild's does not."""
    class Code:
        def __init__(self, filename: str) -> None:
            self.co_filename = filename

    class Frame:
        def __init__(self, filename: str, back: object = None) -> None:
            self.f_code = Code(filename)
            self.f_back = back

    lib = os.path.dirname(os.__file__)
    for mod in (hooks, probes, secrets):
        assert trace._from_user(Frame(os.path.join(lib, "os.py"), Frame(str(mod.__file__))))
    other = os.path.join(trace._ZB_DIR, "discovered.py")
    assert not trace._from_user(Frame(os.path.join(lib, "os.py"), Frame(other)))
