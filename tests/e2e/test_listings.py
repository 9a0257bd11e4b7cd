"""End-to-end: a step that lists a folder depends on exactly what its listing could show it.

A listing through a pattern (glob.glob, glob.iglob, Path.glob, Path.rglob, a Dir input's
Path globbed) is recorded as that pattern: a file the pattern does not match can come and go
without rerunning the step. A listing of everything (os.listdir, os.scandir, Path.iterdir,
os.walk), even when the step filters the names itself with fnmatch, depends on every name.
Each shape below gets its own folder and step; every round edits all folders at once and
checks exactly which steps executed."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

from tests.conftest import Project

# name -> (body returning something built from the listing, folder, a matching entry (path
# inside the folder), a non-matching one, whether the step lists everything)
SHAPES: Dict[str, Tuple[str, str, str, str, bool]] = {
    "dir_glob": ("sorted(p.name for p in d.glob('*.csv'))", "d1", "x.csv", "notes.txt", False),
    "glob_glob": ("sorted(glob.glob('d2/*.csv'))", "d2", "x.csv", "notes.txt", False),
    "glob_root_dir": ("sorted(glob.glob('*.csv', root_dir='d3'))", "d3", "x.csv", "notes.txt",
                      False),
    "path_rglob": ("sorted(str(p) for p in Path('d4').rglob('*.csv'))", "d4", "sub/deep/x.csv",
                   "sub/deep/notes.txt", False),
    "glob_recursive": ("sorted(glob.glob('d5/**/*.csv', recursive=True))", "d5",
                       "sub/deep/x.csv", "sub/deep/notes.txt", False),
    "iglob_first": ("min(glob.iglob('d6/*.csv'))", "d6", "0.csv", "notes.txt", False),
    "glob_hidden_out": ("sorted(glob.glob('d7/*'))", "d7", "x.csv", ".hidden", False),
    "path_glob_star": ("sorted(p.name for p in Path('d8').glob('*'))", "d8", ".hidden",
                       "sub/notes.txt", False),
    "abs_path_glob": ("sorted(p.name for p in (Path(__file__).parent / 'd9').glob('*.csv'))",
                      "d9", "x.csv", "notes.txt", False),
    "listdir_fnmatch": ("sorted(fnmatch.filter(os.listdir('e1'), '*.csv'))", "e1", "x.csv",
                        "notes.txt", True),
    "scandir": ("sorted(e.name for e in os.scandir('e2') if e.name.endswith('.csv'))", "e2",
                "x.csv", "notes.txt", True),
    "iterdir": ("sorted(p.name for p in Path('e3').iterdir() if p.suffix == '.csv')", "e3",
                "x.csv", "notes.txt", True),
    "walk": ("sorted(f for _, _, fs in os.walk('e4') for f in fs if f.endswith('.csv'))", "e4",
             "sub/x.csv", "sub/notes.txt", True),
}


def pipeline_source() -> str:
    lines = ["import fnmatch, glob, os", "from pathlib import Path", "",
             "from zenbuild import Dir, pipeline, step", "from ticker import tick", ""]
    for name, (expr, _folder, _m, _n, _all) in SHAPES.items():
        arg = "d: Dir" if name == "dir_glob" else ""
        lines += ["", "@step", f"def {name}({arg}):", f"    tick({name!r})", f"    return {expr}",
                  ""]
    lines += ["", "@pipeline", "def p():"]
    for name in SHAPES:
        arg = 'Dir("d1", glob="*.csv")' if name == "dir_glob" else ""
        lines.append(f"    {name}({arg})")
    return "\n".join(lines) + "\n"


def make(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", pipeline_source())
    for _expr, folder, match, other, _all in SHAPES.values():
        project.write(f"{folder}/1.csv", "a\n")
        project.write(f"{folder}/keep.txt", "b\n")
        for inner in (match, other):  # the folders the entries go into exist from the start
            parent = os.path.dirname(inner)
            if parent:
                project.write(f"{folder}/{parent}/2.csv", "c\n")
    return project


def ran(project: Project) -> List[str]:
    r = project.cli("run")
    assert r.returncode == 0, r
    assert sorted(project.ticks()) == sorted(r.executed), r
    return sorted(r.executed)


def everything_lister() -> List[str]:
    return sorted(n for n, s in SHAPES.items() if s[4])


def test_each_listing_shape_depends_on_exactly_what_it_could_see(project: Project) -> None:
    make(project)
    assert ran(project) == sorted(SHAPES)
    assert ran(project) == []
    for _expr, folder, _m, other, _all in SHAPES.values():  # a name no pattern matches
        project.write(f"{folder}/{other}", "not data\n")
    assert ran(project) == everything_lister()
    assert ran(project) == []
    for _expr, folder, _m, other, _all in SHAPES.values():  # renamed, still not matching
        src = project.root / folder / other
        src.rename(src.with_name(src.name + "2"))
    assert ran(project) == everything_lister()
    for _expr, folder, match, _other, _all in SHAPES.values():  # a matching name appears
        project.write(f"{folder}/{match}", "new data\n")
    assert ran(project) == sorted(SHAPES)
    assert ran(project) == []
    for _expr, folder, match, _other, _all in SHAPES.values():  # renamed, still matching
        src = project.root / folder / match
        src.rename(src.with_name("0" + src.name))
    assert ran(project) == sorted(SHAPES)
    for _expr, folder, _m, _other, _all in SHAPES.values():  # a matching one removed
        (project.root / folder / "1.csv").unlink()
    assert ran(project) == sorted(SHAPES)
    assert ran(project) == []
    for _expr, folder, match, _other, _all in SHAPES.values():  # back as it was: served
        src = project.root / folder / os.path.dirname(match) / ("0" + os.path.basename(match))
        src.rename(src.with_name(os.path.basename(match)))
        project.write(f"{folder}/1.csv", "a\n")
    assert ran(project) == []


def test_a_dir_input_key_covers_only_its_matching_files(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
from zenbuild import Dir, pipeline, step
from ticker import tick


@step
def total(d: Dir) -> int:
    tick("total")
    return sum(len(p.read_text()) for p in sorted(d.glob("**/*.csv")))


@pipeline
def p():
    total(Dir("data", glob="**/*.csv"))
''')
    project.write("data/a.csv", "1\n")
    project.write("data/sub/b.csv", "22\n")

    def key() -> str:
        doc = json.loads(project.cli("run", "--json").stdout)
        (s,) = doc["steps"]
        return str(s["fingerprint"])

    first = key()
    assert project.ticks() == ["total"]
    project.write("data/notes.txt", "x\n")
    project.write("data/sub/.hidden", "x\n")
    assert key() == first and project.ticks() == []
    project.write("data/sub/deeper/c.csv", "333\n")
    assert key() != first and project.ticks() == ["total"]


def test_a_glob_imported_before_the_run_is_still_never_stale(project: Project) -> None:
    # `from glob import glob` binds the function before zenbuild records anything: its listing
    # is then seen as a listing of everything (a rerun too many, never a stale result)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
from glob import glob
from zenbuild import pipeline, step
from ticker import tick


@step
def names() -> list:
    tick("names")
    return sorted(glob("data/*.csv"))


@pipeline
def p():
    names()
''')
    project.write("data/a.csv", "1\n")
    assert ran(project) == ["names"]
    project.write("data/b.csv", "1\n")
    assert ran(project) == ["names"]
    assert ran(project) == []


def test_explain_names_the_pattern_whose_matches_changed(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
import glob
from zenbuild import pipeline, step
from ticker import tick


@step
def names() -> list:
    tick("names")
    return sorted(glob.glob("data/**/*.csv", recursive=True))


@pipeline
def p():
    names()
''')
    project.write("data/a.csv", "1\n")
    assert ran(project) == ["names"]
    r = project.cli("explain", "names")
    assert "data/**/*.csv" in r.stdout, r
    project.write("data/x/b.csv", "1\n")
    r = project.cli("explain", "names")
    assert "listed by the step: the matches of data/**/*.csv changed" in r.stdout, r


def test_a_glob_of_the_whole_project_is_not_changed_by_the_store(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
from pathlib import Path
from zenbuild import pipeline, step
from ticker import tick


@step
def everything() -> list:
    tick("everything")
    return sorted(str(p) for p in Path(".").glob("**/*"))


@pipeline
def p():
    everything()
''')
    assert ran(project) == ["everything"]
    assert ran(project) == []  # the store gained entries and blobs in between
    project.write("data/new.txt", "x\n")
    assert ran(project) == ["everything"]
