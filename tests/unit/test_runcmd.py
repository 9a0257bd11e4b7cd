"""runcmd/entry: the click-free fast path for `zenbuild run` parses exactly like click."""

from __future__ import annotations

import pytest
from conftest import imported_by_run

from zenbuild.cli.runcmd import fast_parse


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["report"],
        ["-q", "report", "--param", "top=5", "-p", "data=x.txt"],
        ["--param=top=5", "--json", "--no-cache", "--dry-run", "--explain", "-k", "--no-wait"],
        ["--project-dir", "/tmp/x", "-v", "mod:attr"],
        ["--project-dir=/tmp/x", "--quiet", "--verbose", "--keep-going"],
    ],
)
def test_fast_parse_agrees_with_click(args):
    from zenbuild.cli.commands import cli

    ctx = cli.commands["run"].make_context("run", list(args))
    fast = fast_parse(list(args))
    assert fast is not None
    for key, value in fast.items():
        want = ctx.params[key]
        assert (list(want) if key == "params" else want) == value, key
    for key, value in ctx.params.items():
        if key not in fast:  # left to run_command's defaults
            assert value in (None, False, (), "text"), key


@pytest.mark.parametrize(
    "args",
    [
        ["--help"], ["-j", "2"], ["--format", "github"], ["-qv"], ["a", "b"], ["--param"],
        ["--remote-cache", "http://x"], ["--json=1"], ["--project-dir", "a", "--project-dir", "b"],
        ["--unknown"],
    ],
)
def test_fast_parse_leaves_the_rest_to_click(args):
    assert fast_parse(list(args)) is None


def test_run_does_not_import_click(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import step, pipeline

        @step
        def one() -> int:
            return 1

        @pipeline
        def p():
            one()
    """)
    assert imported_by_run(project.root, ("click",)) == (0, [False])
    # and an option the fast path does not know still works, through click
    assert imported_by_run(project.root, ("click",), "-j", "1") == (0, [True])
