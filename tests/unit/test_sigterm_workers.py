"""SIGTERM: the process that ran main() unwinds (Terminated, like Ctrl-C); a process forked from
it (a -j N pool worker) inherits the handler and still dies of the signal."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import REPO

# Run in a fresh interpreter: forking the (threaded) test process is not safe. The child is
# what concurrent.futures' worker loop is: whatever the running task raises is caught, and it
# waits for the next task. Python 3.13's pool stops such a worker of a broken pool with SIGTERM
# and waits for it; had the worker survived (Terminated raised and caught), the run hung.
SCRIPT = r'''
import os
import signal
import time

from zenbuild.cli import entry

entry._handler_pid = os.getpid()  # what main() does
signal.signal(signal.SIGTERM, entry._terminate)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, b"x")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:
            pass
    os._exit(0)
os.close(w)
os.read(r, 1)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print("worker", os.WTERMSIG(status) if os.WIFSIGNALED(status) else "survived")
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("main not interrupted")
except entry.Terminated:
    print("main unwound")
'''


def test_a_forked_worker_dies_of_sigterm_and_main_unwinds() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(REPO), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"worker {int(signal.SIGTERM)}", "main unwound"], r
