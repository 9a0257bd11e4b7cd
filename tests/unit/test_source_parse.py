"""A project module is parsed once on a cold run: the AST its import compiled is the one the
fingerprint reads, unless the file changed since the import (then it is parsed again)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any, List

import pytest

from zenbuild.fingerprint.source import Sources
from zenbuild.project import SourceLoader


def _import(path: Path, name: str) -> Any:
    loader = SourceLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _count_parses(monkeypatch: pytest.MonkeyPatch, path: Path) -> List[str]:
    seen: List[str] = []
    real = ast.parse

    def parse(source: Any, filename: str = "<unknown>", *a: Any, **k: Any) -> Any:
        if filename == str(path):
            seen.append(filename)
        return real(source, filename, *a, **k)

    monkeypatch.setattr(ast, "parse", parse)
    return seen


def test_the_fingerprint_reads_the_ast_the_import_compiled(tmp_path, monkeypatch) -> None:
    path = tmp_path / "zb_once_mod.py"
    path.write_text("X = 1\n\ndef f():\n    return X + 1\n")
    seen = _count_parses(monkeypatch, path)
    mod = _import(path, "zb_once_mod")
    assert mod.f() == 2 and seen == [str(path)]  # the import's own parse
    tree = Sources().module_ast(str(path))
    assert tree is not None and seen == [str(path)]  # not parsed a second time
    assert [type(n).__name__ for n in tree.body] == ["Assign", "FunctionDef"]


def test_a_file_changed_after_its_import_is_parsed_again(tmp_path, monkeypatch) -> None:
    path = tmp_path / "zb_edit_mod.py"
    path.write_text("X = 1\n")
    seen = _count_parses(monkeypatch, path)
    assert _import(path, "zb_edit_mod").X == 1
    path.write_text("Y = 2\n")  # same size, other bytes: saved after the import
    tree = Sources().module_ast(str(path))
    assert len(seen) == 2 and tree is not None
    assert isinstance(tree.body[0], ast.Assign)
    assert tree.body[0].targets[0].id == "Y"  # type: ignore[attr-defined]
