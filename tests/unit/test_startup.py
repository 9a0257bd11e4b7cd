"""What a `zenbuild run` imports: a no-op pays for start-up on every run, so modules only some
runs need (tempfile and shutil with the compressors they pull in, for values that save
themselves to a folder) are imported where they are used, not at start."""

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
