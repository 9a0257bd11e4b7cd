"""What a `zenbuild run` imports: a no-op pays for start-up on every run, so modules only some
runs need (tempfile and shutil with the compressors they pull in, for values that save
themselves to a folder) are imported where they are used, not at start."""

from __future__ import annotations

import subprocess
import sys


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
    code = (
        "import sys\n"
        "from zenbuild.cli.entry import main\n"
        "try:\n"
        f"    main(['run', '-q', '--project-dir', {str(project.root)!r}])\n"
        "    code = 0\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('EXIT', code, *(m in sys.modules for m in ('tempfile', 'shutil', 'lzma')))\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert "EXIT 0" in first.stdout, first
    assert (project.root / "build" / "out.txt").read_text() == "hello\n"
    noop = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert "EXIT 0 False False False" in noop.stdout, noop
