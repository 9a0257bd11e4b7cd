"""End-to-end: process-local machinery a module holds at top level (a worker pool, an
executor, a lock, an open log file) counts by its type: its attributes (worker pids, thread
idents, a file position) differ in every process, and made every step using it rerun on
every run."""

from __future__ import annotations

from conftest import Project

PIPE = '''
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

from zenbuild import pipeline, step
from ticker import tick

SCALE = 3


def sq(x):
    return x * x * SCALE


POOL = multiprocessing.get_context("fork").Pool(2)  # (forked after sq exists)
EXECUTOR = ThreadPoolExecutor(2)
EXECUTOR.submit(int).result()  # its thread is running (and has an ident) before any step
LOCK = threading.Lock()
LOG = open("run.log", "a")


@step
def pooled(n: int) -> int:
    tick("pooled")
    with LOCK:
        LOG.write("pooled\\n")
        return sum(POOL.map(sq, range(n))) + sum(EXECUTOR.map(sq, range(n)))


@pipeline
def p():
    pooled(5)
'''


def test_a_module_level_pool_executor_lock_and_file_keep_the_step_cached(
        project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.cli("run")
    assert project.ticks() == ["pooled"]
    r = project.cli("run")
    assert project.ticks() == [] and r.cached == ["pooled"], r
    # the code the pool runs still counts
    project.write("pipe.py", PIPE.replace("SCALE = 3", "SCALE = 4"))
    project.cli("run")
    assert project.ticks() == ["pooled"]
