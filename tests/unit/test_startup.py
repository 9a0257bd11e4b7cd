"""What a `zenbuild run` imports: a no-op pays for start-up on every run, so modules only some
runs need (tempfile and shutil with the compressors they pull in, for values that save
themselves to a folder; pickle, for a value that is stored; signal's enums; opcode) are imported
where they are used, not at start."""

from __future__ import annotations

from conftest import imported_by_run


def test_a_no_op_run_imports_neither_tempfile_nor_shutil(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("data.txt", "hello\n")
    project.write("pipe.py", """
        from pathlib import Path

        from zenbuild import File, Output, step, pipeline

        @step
        def copy(src: Path, out: Output) -> int:
            Path(out).write_text(Path(src).read_text())
            return 1

        @pipeline
        def p():
            copy(File("data.txt"), Output("build/out.txt"))
    """)
    assert imported_by_run(project.root, ("tempfile", "shutil", "lzma"))[0] == 0
    assert (project.root / "build" / "out.txt").read_text() == "hello\n"
    assert imported_by_run(project.root, ("tempfile", "shutil", "lzma")) == (
        0, [False, False, False])


def test_a_no_op_run_imports_neither_pickle_nor_signal_nor_opcode(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import step, pipeline

        @step
        def make() -> list:
            return [1, 2.5, "three"]

        @step
        def total(xs: list) -> int:
            return len(xs)

        @pipeline
        def p():
            total(make())
    """)
    mods = ("pickle", "signal", "opcode")
    assert imported_by_run(project.root, mods)[0] == 0  # executes: the cache is filled
    assert imported_by_run(project.root, mods) == (0, [False, False, False])
