"""End-to-end: a refused store placement leaves nothing behind that blocks the fix (a review
found the compiled sources of the refused run in build/.zenbuild/pycode, which then made
build/ a folder of files zenbuild did not create as an Output)."""

from __future__ import annotations

from tests.conftest import Project
from tests.e2e.test_data_safety import setup


def test_after_a_refused_store_inside_an_output_the_corrected_config_runs(project: Project) -> None:
    setup(project, out_dir="build", store="build/.zenbuild")
    r = project.run("run", check=2)
    assert "inside Output('build') of step folder" in r.stderr, r
    assert not (project.root / "build" / ".zenbuild").exists()
    setup(project, out_dir="build")  # the store back at the default .zenbuild
    r = project.run("run")
    assert sorted(r.executed) == ["folder", "listing", "table"], r


def test_a_used_store_is_never_removed_when_its_placement_is_refused(project: Project) -> None:
    setup(project, store="build/.zenbuild")  # outputs in build/folder: allowed
    project.run("run")
    db = project.root / "build" / ".zenbuild" / "zenbuild.db"
    assert db.exists()
    setup(project, out_dir="build", store="build/.zenbuild")  # now the store is inside
    r = project.run("run", check=2)
    assert "inside Output('build') of step folder" in r.stderr, r
    assert db.exists() and (project.root / "build" / ".zenbuild" / "pycode").exists()


def _two_steps(project: Project, second: str) -> None:
    """Steps first (Output build/first.txt) and a (Output ``second``)."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", f"""
        from zenbuild import Output, pipeline, step

        @step
        def first(out: Output) -> int:
            out.write_text("1")
            return 1

        @step
        def a(out: Output) -> int:
            out.write_text("1")
            return 1

        @pipeline
        def p():
            first(Output("build/first.txt"))
            a(Output({second!r}))
    """)


def test_an_output_inside_a_file_is_refused_before_any_step_runs(project: Project) -> None:
    project.write("data/in.txt", "in\n")
    _two_steps(project, "data/in.txt/deeper/x")
    r = project.run("run", check=2)
    assert "Output('data/in.txt/deeper/x') of step a: 'data/in.txt' is a file" in r.stderr, r
    assert "Traceback" not in r.output and r.started == [], r
    assert (project.root / "data" / "in.txt").read_text() == "in\n"
    r = project.run("run", "--step", "first")  # another step's Output is not this run's
    assert r.executed == ["first"], r
    r = project.run("run", "--step", "a", check=2)
    assert "Output('data/in.txt/deeper/x') of step a: 'data/in.txt' is a file" in r.stderr, r


def test_an_output_folder_a_file_took_meanwhile_fails_its_step_only(project: Project) -> None:
    # the file appears after the placement check: the step that needs the folder fails, the
    # others run, and the message says which folder
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from pathlib import Path
        from zenbuild import Output, pipeline, step

        @step
        def blocker(out: Output) -> int:
            out.write_text("1")
            out.with_name("late").write_text("a file where a folder will be wanted")
            return 1

        @step
        def a(first: int, out: Output) -> int:
            out.write_text("1")
            return 1

        @pipeline
        def p():
            a(blocker(Output("b.txt")), Output("late/x.txt"))
    """)
    r = project.run("run", check=1)
    assert "step a: the folder of its Output('late/x.txt') cannot be made" in r.output, r
    assert r.executed == ["blocker"] and "Traceback" not in r.output, r


def test_a_path_that_is_not_one_is_the_pipeline_s_mistake(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    for kind in ("File", "Dir", "Output"):
        project.write("pipe.py", f"""
            from zenbuild import Dir, File, Output, pipeline, step

            @step
            def a(x) -> int:
                return 1

            @pipeline
            def p():
                a({kind}(123))
        """)
        r = project.run("run", check=2)
        assert f"{kind}(123): a path is a str or a pathlib.Path, not int" in r.stderr, r
        assert "zenbuild/dsl.py" not in r.output, r


def test_status_and_explain_refuse_what_run_refuses(project: Project) -> None:
    _two_steps(project, "data/gen2/inner.txt")
    project.run("run")
    import shutil

    shutil.rmtree(project.root / "data" / "gen2")
    (project.root / "data" / "gen2").write_text("a file where the Output's folder was")
    for cmd in (["status"], ["explain", "a"], ["run", "--dry-run"]):
        r = project.run(*cmd, check=2)
        assert "'data/gen2' is a file, not a folder" in r.stderr and "Traceback" not in r.output, r
    r = project.run("explain", "first")  # another step's: not this question's
    assert "up to date" in r.stdout, r
