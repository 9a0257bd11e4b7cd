"""fingerprint/toplevel.py: which top-level statements of a module may set process state (a
seed, a library option), and the item they add to the key of a step living in, or reading
from, that module (fingerprint/code.py)."""

from __future__ import annotations

import ast
import importlib
import itertools
import sys
import textwrap

import pytest

from zenbuild.fingerprint.code import CodeFingerprinter, SourceCache
from zenbuild.fingerprint.toplevel import effect_imports, select, statements

_counter = itertools.count()


def chosen(src: str) -> list:
    return [ast.unparse(s) for s in select(ast.parse(textwrap.dedent(src)).body)]


@pytest.mark.parametrize("stmt", [
    "np.random.seed(SEED)",
    "torch.set_default_dtype(torch.float64)",
    "decimal.getcontext().prec = 8",
    "torch.backends.cudnn.deterministic = True",
    "os.environ['X'] = '1'",
    "REGISTRY['a'] = f",
    "COUNT += 1",
    "del os.environ['X']",
    "global G",
    "g = torch.manual_seed(0)",
    "old = np.seterr(all='ignore')",
    "_ = random.seed(1)",
    "x: int = obj.attr.set_x(1)",
    "a = b.c = 1",
    "if HAS_TORCH:\n    torch.manual_seed(0)",
    "for k in NAMES:\n    REG[k] = k",
    "try:\n    import torch\n    torch.manual_seed(0)\nexcept ImportError:\n    pass",
    "with lock:\n    np.random.seed(0)",
    "while False:\n    setup()",
    "match MODE:\n    case 'a':\n        setup()",
])
def test_statements_that_may_set_process_state_are_selected(stmt):
    assert chosen(stmt) == [ast.unparse(ast.parse(stmt).body[0])]


@pytest.mark.parametrize("stmt", [
    '"""A module docstring."""',
    "...",
    "import numpy as np",
    "from x import y",
    "SEED = 0",
    "a, *b = 1, 2, 3",
    "X: int = 5",
    "Y: int",
    "logger = logging.getLogger(__name__)",
    "CFG = load('cfg.json')",
    "def f():\n    np.random.seed(0)",
    "@register('a')\nclass A:\n    pass",
    "try:\n    import torch\nexcept ImportError:\n    torch = None",
    "if TYPE_CHECKING:\n    from x import Y",
    "with open('c.json') as f:\n    CFG = json.load(f)",
    "if __name__ == '__main__':\n    p().run()",
    "if '__main__' == __name__:\n    main()",
])
def test_definitions_and_plain_bindings_are_left_out(stmt):
    assert chosen(stmt) == []


def test_the_else_of_a_main_guard_runs_and_counts():
    assert chosen("if __name__ == '__main__':\n    main()\nelse:\n    random.seed(3)\n") == [
        "random.seed(3)"]


def text(src: str) -> list:
    """The statement groups of statements() (texts, target roots and chains), no imports."""
    return [c for c in statements(ast.parse(src))[1] if c[0] != "<effect import>"]


def test_text_ignores_comments_docstrings_positions_and_unrelated_definitions():
    base = "import random\nSEED = 1\nrandom.seed(SEED)\n\ndef f():\n    return 1\n"
    other = ('"""Doc."""\nimport random\n\n\nSEED = 2  # changed, but a plain binding\n'
             "random.seed( SEED )  # seed it\n\ndef f():\n    return 2\n\ndef g():\n    pass\n"
             "if __name__ == '__main__':\n    print(1)\n")
    assert text(base) == text(other) != []
    assert text(base.replace("random.seed(SEED)", "random.seed(SEED + 1)")) != text(base)
    # a definition inside a selected block: its docstring does not count
    blk = "if X:\n    def h():\n        'doc'\n        return 1\n    setup(h)\n"
    assert text(blk) == text(blk.replace("'doc'", "'o'"))
    assert statements(ast.parse("import random\nSEED = 1\nrandom.x\n\n"))[0] != ""
    assert statements(ast.parse("import random\nSEED = random.x\n"))[0] == ""
    assert ["SEED"] in text(base)
    assert ["random", "seed"] in text(base)


def test_assignment_targets_name_whose_state_is_set():
    groups = [c[2:] for c in text("model.Model.LR = 0.5\nREG['a'] = f\nN += 1\n"
                                  "a.b, c[0] = 1, 2\nf().x = 1\nrandom.seed(0)\n"
                                  "g = torch.manual_seed(0)\n") if c[0] == "<statement>"]
    assert groups == [["model"], ["REG"], ["N"], ["c", "a"], [], ["<call>", "random"], []]


def test_imports_made_for_their_effect():
    tree = ast.parse(textwrap.dedent('''
        import seeding
        import used
        import pkg.sub
        from . import setup_env
        from config import *
        from lib import thing, other as alias
        try:
            import optional_effect
        except ImportError:
            pass
        if __name__ == "__main__":
            import only_as_script
        def f():
            import inner_one
            return used.x + alias
    '''))
    # every top-level import, its name read or not (import used: used.x): the state an
    # imported project module sets is the process's, which every step of this one sees
    assert [e[1:] for e in effect_imports(tree)] == [
        ["0", "seeding", ""], ["0", "used", ""], ["0", "pkg.sub", ""], ["1", "", "setup_env"],
        ["0", "config", ""], ["0", "lib", "thing"], ["0", "lib", "other"],
        ["0", "optional_effect", ""]]


# -- the item in a step's key ------------------------------------------------------------------
MOD = '''
import random
from zenbuild import step

SEED = 0
LIMIT = 3
{extra}


def helper(x):
    return x + LIMIT


@step
def s(x: int) -> float:
    """Doc."""
    return helper(x) + random.random()
'''


def code_of(tmp_path, source, with_statements=True, cache=None, name="s", files=None):
    """The step's items, meta, packages and value code, from module ``tlmod`` in a root of its
    own (so two versions compare by content alone)."""
    root = tmp_path / f"r{next(_counter)}"
    root.mkdir()
    (root / "tlmod.py").write_text(textwrap.dedent(source))
    for rel, text in (files or {}).items():
        (root / rel).write_text(text)
        sys.modules.pop(rel[:-3], None)
    sys.modules.pop("tlmod", None)
    sys.path.insert(0, str(root))
    try:
        m = importlib.import_module("tlmod")
    finally:
        sys.path.remove(str(root))
    fp = CodeFingerprinter(str(root), source_cache=cache)
    if not with_statements:  # what the fingerprinter gave before top-level statements counted
        fp._statements_ref = lambda mod, refs: None  # type: ignore[method-assign]
    info = fp.code(getattr(m, name).fn)
    value_code = fp.value_code(getattr(m, name).fn)
    del sys.modules["tlmod"]
    return info.items, info.meta, info.packages, value_code


@pytest.mark.parametrize("extra", [
    "",
    "NAMES = ['a']\nlogger = print\n",
    "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n",
    "if __name__ == '__main__':\n    random.seed(1)\n",
])
def test_a_module_without_such_statements_keeps_its_keys(tmp_path, extra):
    src = MOD.format(extra=extra)
    now = code_of(tmp_path, src)
    before = code_of(tmp_path, src, with_statements=False)
    assert now == before
    assert not any("top-level statements" in k for k in now[0])


def test_a_seed_statement_is_an_item_with_what_it_reads(tmp_path):
    src = MOD.format(extra="random.seed(SEED)")
    items, meta, _, value_code = code_of(tmp_path, src)
    before, _, _, value_before = code_of(tmp_path, src, with_statements=False)
    added = set(items) - set(before)
    assert added == {"tlmod.<top-level statements>", "tlmod.SEED"}, added  # (random: the step's own)
    assert meta["tlmod.<top-level statements>"][0] == "statements"
    assert meta["tlmod.<top-level statements>"][1] == "tlmod.py"
    # a value naming the step's code carries the code only, not the process state it ran in
    assert value_code == value_before

    changed, _, _, _ = code_of(tmp_path, src.replace("SEED = 0", "SEED = 1"))
    assert {k for k in items if items[k] != changed.get(k)} == {"tlmod.SEED"}
    edited, _, _, _ = code_of(tmp_path, src.replace("random.seed(SEED)", "random.seed(SEED + 1)"))
    assert {k for k in items if items[k] != edited.get(k)} == {"tlmod.<top-level statements>"}


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("random.seed(SEED)", "random.seed(SEED)  # the seed"),
    lambda s: s.replace('"""Doc."""', '"""Other doc."""'),
    lambda s: s + "\n\ndef unrelated():\n    return 5\n",
    lambda s: s + "\n\nOTHER = 5\n",
    lambda s: s + "\n\nif __name__ == '__main__':\n    print('x')\n",
], ids=["comment", "docstring", "unrelated-def", "unrelated-const", "main-guard"])
def test_cosmetic_and_unrelated_edits_keep_the_key(tmp_path, edit):
    src = MOD.format(extra="random.seed(SEED)")
    assert code_of(tmp_path, src)[0] == code_of(tmp_path, edit(src))[0]


def test_the_statements_of_a_helper_module_the_step_reads_count(tmp_path):
    helpers = ("import decimal\ndecimal.getcontext().prec = 5\n\ndef third():\n"
               "    return decimal.Decimal(1) / 3\n")
    src = ("from zenbuild import step\nimport tl_helpers_a\n\n@step\ndef s() -> str:\n"
           "    return str(tl_helpers_a.third())\n")
    items, meta, _, _ = code_of(tmp_path, src, files={"tl_helpers_a.py": helpers})
    assert meta["tl_helpers_a.<top-level statements>"] == ["statements", "tl_helpers_a.py"]
    assert "tlmod.<top-level statements>" not in items  # tlmod itself sets nothing
    other, _, _, _ = code_of(tmp_path, src, files={"tl_helpers_a.py": helpers.replace("5", "8")})
    assert {k for k in items if items[k] != other.get(k)} == {"tl_helpers_a.<top-level statements>"}
    sys.modules.pop("tl_helpers_a", None)


def test_a_module_imported_for_its_effect_counts(tmp_path):
    seeding = "import random\nrandom.seed(4)\n"
    src = ("import random\nimport tl_seeding_b  # noqa: F401\nfrom zenbuild import step\n\n"
           "@step\ndef s() -> float:\n    return random.random()\n")
    items, meta, _, _ = code_of(tmp_path, src, files={"tl_seeding_b.py": seeding})
    assert meta["tl_seeding_b.<top-level statements>"] == ["statements", "tl_seeding_b.py"]
    other, _, _, _ = code_of(tmp_path, src, files={"tl_seeding_b.py": seeding.replace("4", "5")})
    assert {k for k in items if items[k] != other.get(k)} == {"tl_seeding_b.<top-level statements>"}
    # the same module imported and used by name: its seed is the process's, so it counts for
    # a step that does not reach it too (a reviewer's decimal precision set in utils.py)
    used = src.replace("  # noqa: F401", "\nN = tl_seeding_b.random")
    assert any("tl_seeding_b" in k for k in code_of(
        tmp_path, used, files={"tl_seeding_b.py": seeding})[0])
    sys.modules.pop("tl_seeding_b", None)


def test_computed_once_and_kept_in_the_source_cache(tmp_path, monkeypatch):
    src = MOD.format(extra="random.seed(SEED)")
    cache = SourceCache(lambda p: "same-file-digest")
    first = code_of(tmp_path, src, cache=cache)
    assert any(k.endswith("|toplevel") for k in cache.entries)
    import zenbuild.fingerprint.toplevel as toplevel

    def no_parse(tree):
        raise AssertionError("parsed again")

    monkeypatch.setattr(toplevel, "statements", no_parse)
    assert code_of(tmp_path, src, cache=cache)[0] == first[0]


def test_state_set_on_project_objects_is_left_to_their_values(tmp_path):
    """``model.Model.LR = 0.5`` or ``REG["a"] = 1`` set what a step reading them sees by value
    (a class's live attributes, a constant): no item for a step that reads neither; state set
    on a library object (os.environ, decimal's context, a from-imported library object) is."""
    helpers = "class Model:\n    LR = 0.1\n"
    covered = ("import tl_model_c\nREG = {}\nN = 0\n"
               "tl_model_c.Model.LR = 0.5\nREG['a'] = 1\nN += 1\n")
    src = covered + "from zenbuild import step\n\n@step\ndef s() -> int:\n    return 1\n"
    items, _, _, _ = code_of(tmp_path, src, files={"tl_model_c.py": helpers})
    before, _, _, _ = code_of(tmp_path, src, with_statements=False,
                              files={"tl_model_c.py": helpers})
    assert items == before
    for lib in ("import os\nos.environ['TL_X'] = '1'\n",
                "import decimal\ndecimal.getcontext().prec = 4\n",
                "from decimal import DefaultContext\nDefaultContext.prec = 28\n"):
        items, _, _, _ = code_of(tmp_path, lib + src, files={"tl_model_c.py": helpers})
        assert "tlmod.<top-level statements>" in items, lib
    sys.modules.pop("tl_model_c", None)


def test_effect_imports_list_imports_whether_read_or_not():
    """Imports read only by a decorator or by the last line of a long body count as any
    other: whether a module's name is read says nothing of whose state it set."""
    body = "\n".join(f"    x{i} = {i}" for i in range(300))
    tree = ast.parse(
        "import deco_only\nimport last_only\nimport seeding\n"
        f"@deco_only.wrap\ndef f():\n{body}\n    return last_only.x\n")
    assert [e[1:] for e in effect_imports(tree)] == [
        ["0", "deco_only", ""], ["0", "last_only", ""], ["0", "seeding", ""]]


def test_a_with_block_names_what_its_assignments_set():
    """``with open(p) as f: Limits.top = json.load(f)["top"]`` sets a project class's
    attribute (left to its live value); a call inside a block (a filter, a seed) keeps it."""
    groups = [c[2:] for c in text("with open('p.json') as f:\n    Limits.top = json.load(f)\n"
                                  "    Limits.n += 1\n"
                                  "with warnings.catch_warnings():\n    random.seed(1)\n")
              if c[0] == "<statement>"]
    assert groups == [["Limits", "Limits"], []]
