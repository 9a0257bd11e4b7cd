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
