"""Project generator for the routes property test: one project holding, per route by which a
step reaches code or data (issue 10), a step that reaches a target through that route, its
consumer, and the edits the test applies to the target."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# (file, old, new): a text replacement; applying it forwards moves the route to the other state.
Edit = Tuple[str, str, str]

# Every Python file holding a target opens with this docstring, has a `# cosmetic` comment in
# the target (and `"""Target."""` docstrings where the target is a function), and ends with an
# `unrelated()` helper that no step uses: the cosmetic and unrelated edits are generic.
HEAD = '"""Route target module."""\n'
UNRELATED = "\n\ndef unrelated():\n    return 0  # unrelated\n"

STEPS = (
    '''\
"""Route target module."""
from zenbuild import step, Output
{imports}


@step
def reach_{n}({args}):
{body}


@step
def down_{n}(v, out: Output) -> None:
{down}
'''
    + UNRELATED
)

DOWN = "out.write_text(repr((v, type(v).__name__)))"


@dataclass
class Route:
    """One route: its files (``{n}`` is the route's name; ``ext/...`` lives outside the root,
    on PYTHONPATH), the semantic edit of its target, an optional data edit, the Python file the
    cosmetic and unrelated edits apply to, and the steps that reach the target."""

    name: str
    files: Dict[str, str]
    semantic: Edit
    target: str
    data: Optional[Edit] = None
    reach: Tuple[str, ...] = ()
    wiring: str = 'down_{n}(reach_{n}(), Output("build/{n}.txt"))'
    always: Tuple[str, ...] = ()  # @no_cache steps: they execute on every run

    def __post_init__(self) -> None:
        n = self.name
        self.files = {k.replace("{n}", n): v.replace("{n}", n) for k, v in self.files.items()}
        self.semantic = sub(self.semantic, n)
        self.target = self.target.replace("{n}", n)
        self.data = sub(self.data, n) if self.data else None
        self.reach = tuple(s.replace("{n}", n) for s in self.reach) or (f"reach_{n}",)
        self.wiring = self.wiring.replace("{n}", n)
        self.always = tuple(s.replace("{n}", n) for s in self.always)

    @property
    def steps(self) -> Tuple[str, ...]:
        return (*self.reach, f"down_{self.name}")


def sub(edit: Edit, n: str) -> Edit:
    return (edit[0].replace("{n}", n), edit[1].replace("{n}", n), edit[2].replace("{n}", n))


def steps_module(
    body: str, imports: str = "", args: str = "", down: str = DOWN, extra: str = ""
) -> str:
    return STEPS.format(
        imports=imports,
        args=args,
        n="{n}",
        down=textwrap.indent(textwrap.dedent(down).strip(), "    "),
        body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "),
    ).replace(UNRELATED, textwrap.dedent(extra) + UNRELATED)


def module(text: str) -> str:
    return HEAD + textwrap.dedent(text).lstrip("\n") + UNRELATED


TARGET_FN = module('''
    def target(x):
        """Target."""
        # cosmetic
        return x + 1
''')
BUMP: Edit = ("", "return x + 1", "return x + 5")
POWER = module('''
    import functools


    def _power(x, n):
        """Target."""
        # cosmetic
        return x ** n


    CALL = functools.partial(_power, n=2)
''')


def fn_route(
    name: str,
    rel: str,
    body: str,
    imports: str = "",
    text: str = TARGET_FN,
    edit: Edit = BUMP,
    namespace: bool = False,
) -> Route:
    """A route whose target lives in module ``rel`` and whose step lives in ``s_{n}.py``."""
    files = {rel: text, "s_{n}.py": steps_module(body, imports)}
    if not namespace:  # a regular package gets an __init__.py at every level
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            files.setdefault("/".join(parts[:i]) + "/__init__.py", "")
    return Route(name, files, (edit[0] or rel, edit[1], edit[2]), target=rel)


OPEN_BODY = """
import os
# cosmetic
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "{n}.txt")) as f:
    return sum(int(t) for t in f.read().split())
"""

# Values that must keep their types between steps and digest the same under any hash seed.
VALUES_MODELS = module('''
    from dataclasses import dataclass, field

    import numpy as np


    @dataclass
    class Box:
        tags: set = field(default_factory=set)
        score: np.float32 = np.float32(0)
        inner: dict = field(default_factory=dict)


    def make():
        """Target."""
        # cosmetic
        tags = {"alpha", "beta", "gamma", "delta", "epsilon"}
        return {
            "set": set(tags),
            "f32": np.float32(0.5),
            "i64": np.int64(7),
            "box": Box(tags=set(tags), score=np.float32(1.5), inner={"n": np.int64(3), "s": {1, 2}}),
        }
''')
VALUES_DOWN = """
import numpy as np
from models_{n} import Box
assert type(v["set"]) is set and type(v["f32"]) is np.float32 and type(v["i64"]) is np.int64
b = v["box"]
assert type(b) is Box and type(b.tags) is set and type(b.score) is np.float32
assert type(b.inner["n"]) is np.int64 and type(b.inner["s"]) is set
out.write_text(repr((sorted(v["set"]), float(v["f32"]), int(v["i64"]), sorted(b.tags),
                     float(b.score), int(b.inner["n"]), sorted(b.inner["s"]))))
"""


def all_routes() -> List[Route]:
    return [
        fn_route("direct_call", "h_{n}.py", "return target(1)", "from h_{n} import target"),
        fn_route(
            "module_attribute",
            "h_{n}.py",
            "return h_{n}.FACTOR * 2",
            "import h_{n}",
            text=module("FACTOR = 3  # cosmetic\n"),
            edit=("", "FACTOR = 3", "FACTOR = 4"),
        ),
        fn_route(
            "import_in_body",
            "pkg_{n}/features.py",
            "from pkg_{n}.features import target\nreturn target(1)",
        ),
        fn_route(
            "import_module_in_body",
            "pkg_{n}/features.py",
            "import pkg_{n}.features\nreturn pkg_{n}.features.target(1)",
        ),
        fn_route(
            "dispatch_dict",
            "h_{n}.py",
            'return OPS["t"](1)',
            "from h_{n} import OPS",
            text=TARGET_FN.replace(UNRELATED, '\n\nOPS = {"t": target}\n' + UNRELATED),
        ),
        fn_route(
            "dispatch_list",
            "h_{n}.py",
            "return STEPS[0](1)",
            "from h_{n} import STEPS",
            text=TARGET_FN.replace(UNRELATED, "\n\nSTEPS = [target]\n" + UNRELATED),
        ),
        fn_route(
            "partial_keyword",
            "h_{n}.py",
            "return CALL(2)",
            "from h_{n} import CALL",
            text=POWER,
            edit=("", "n=2)", "n=3)"),
        ),
        fn_route(
            "partial_target",
            "h_{n}.py",
            "return CALL(2)",
            "from h_{n} import CALL",
            text=POWER,
            edit=("", "return x ** n", "return x ** n + 1"),
        ),
        fn_route(
            "lru_cache",
            "h_{n}.py",
            "return target(1)",
            "from h_{n} import target",
            text=TARGET_FN.replace(
                "def target", "@functools.lru_cache(maxsize=None)\ndef target"
            ).replace(HEAD, HEAD + "import functools\n\n\n"),
        ),
        Route(
            "upstream_instance_method",
            {
                "models_{n}.py": module('''
                class Scaler:
                    def __init__(self, k):
                        self.k = k

                    def transform(self, x):
                        """Target."""
                        # cosmetic
                        return x * self.k
            '''),
                "s_{n}.py": steps_module(
                    "return s.transform(3)",
                    "from models_{n} import Scaler",
                    "s",
                    extra="""

                                         @step
                                         def fit_{n}():
                                             return Scaler(2)
                                     """,
                ),
            },
            ("models_{n}.py", "return x * self.k", "return x * self.k + 1"),
            target="models_{n}.py",
            # fit names the class, so its code changed too; its output's bytes did not
            reach=("fit_{n}", "reach_{n}"),
            wiring='down_{n}(reach_{n}(fit_{n}()), Output("build/{n}.txt"))',
        ),
        fn_route(
            "staticmethod",
            "h_{n}.py",
            "return Tools.target(1)",
            "from h_{n} import Tools",
            text=module('''
                     class Tools:
                         @staticmethod
                         def target(x):
                             """Target."""
                             # cosmetic
                             return x + 1
                 '''),
        ),
        fn_route(
            "classmethod",
            "h_{n}.py",
            "return Tools.target(1)",
            "from h_{n} import Tools",
            text=module('''
                     class Tools:
                         K = 1

                         @classmethod
                         def target(cls, x):
                             """Target."""
                             # cosmetic
                             return x + cls.K
                 '''),
            edit=("", "return x + cls.K", "return x + cls.K * 5"),
        ),
        fn_route(
            "nested_package",
            "pkg_{n}/sub/mod.py",
            "return pkg_{n}.sub.mod.target(1)",
            "import pkg_{n}.sub.mod",
        ),
        fn_route(
            "namespace_package",
            "ns_{n}/sub/mod.py",
            "return ns_{n}.sub.mod.target(1)",
            "import ns_{n}.sub.mod",
            namespace=True,
        ),
        Route(
            "undeclared_open",
            {"s_{n}.py": steps_module(OPEN_BODY), "data/{n}.txt": "1 2 3\n"},
            ("s_{n}.py", "sum(int(t)", "sum(2 * int(t)"),
            target="s_{n}.py",
            data=("data/{n}.txt", "1 2 3", "1 2 30"),
        ),
        Route(
            "alias_swap",
            {
                "s_{n}.py": steps_module(
                    "# cosmetic\nreturn agg([1, 2, 9])", "from statistics import mean as agg"
                )
            },
            ("s_{n}.py", "mean as agg", "median as agg"),
            target="s_{n}.py",
        ),
        fn_route(
            "callable_itemgetter",
            "h_{n}.py",
            'return KEY({"a": 1, "b": 2})',
            "from h_{n} import KEY",
            text=module('import operator\n\nKEY = operator.itemgetter("a")  # cosmetic\n'),
            edit=("", 'itemgetter("a")', 'itemgetter("b")'),
        ),
        fn_route(
            "callable_bound_method",
            "h_{n}.py",
            "return NORMALIZE(3)",
            "from h_{n} import NORMALIZE",
            text=module('''
                     class Normalizer:
                         def __init__(self, k):
                             self.k = k

                         def transform(self, x):
                             """Target."""
                             # cosmetic
                             return x * self.k


                     NORMALIZE = Normalizer(2).transform
                 '''),
            edit=("", "return x * self.k", "return x * self.k + 1"),
        ),
        fn_route(
            "namedtuple_defaults",
            "h_{n}.py",
            "return tuple(Point(1))",
            "from h_{n} import Point",
            text=module("""
                     from collections import namedtuple

                     Point = namedtuple("Point", ["x", "y"], defaults=[0])  # cosmetic
                 """),
            edit=("", "defaults=[0]", "defaults=[5]"),
        ),
        fn_route(
            "functional_enum",
            "h_{n}.py",
            "return Split.TRAIN.value",
            "from h_{n} import Split",
            text=module("""
                     from enum import Enum

                     Split = Enum("Split", {"TRAIN": 1, "TEST": 2})  # cosmetic
                 """),
            edit=("", '"TRAIN": 1', '"TRAIN": 7'),
        ),
        Route(
            "outside_root_pythonpath",
            {
                "ext/extlib_{n}.py": TARGET_FN,
                "s_{n}.py": steps_module("return target(1)", "from extlib_{n} import target"),
            },
            ("ext/extlib_{n}.py", "return x + 1", "return x + 5"),
            target="ext/extlib_{n}.py",
        ),
        Route(
            "config_at_import",
            {
                "config_{n}.py": module("""
                import json
                import os

                # cosmetic
                with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "params_{n}.json")) as _f:
                    CFG = json.load(_f)
            """),
                "params_{n}.json": '{"lr": 0.25}\n',
                "s_{n}.py": steps_module('return CFG["lr"]', "from config_{n} import CFG"),
            },
            (
                "config_{n}.py",
                "CFG = json.load(_f)",
                "CFG = {k: v * 3 for k, v in json.load(_f).items()}",
            ),
            target="config_{n}.py",
            data=("params_{n}.json", "0.25", "0.5"),
        ),
        fn_route(
            "import_module_plugin",
            "plugins_{n}/fast.py",
            'import importlib\nname = "".join(["fa", "st"])\n'
            'return importlib.import_module(f"plugins_{n}.{name}").target(1)',
        ),
        Route(
            "values",
            {
                "models_{n}.py": VALUES_MODELS,
                # reach_values executes on every run, each under another PYTHONHASHSEED: its
                # consumer stays cached only if equal values (sets in them) digest equal
                "s_{n}.py": steps_module(
                    "return make()", "from models_{n} import make", down=VALUES_DOWN
                )
                .replace("from zenbuild import step", "from zenbuild import no_cache, step")
                .replace("@step\ndef reach_", "@no_cache\n@step\ndef reach_"),
            },
            ("models_{n}.py", "np.float32(1.5)", "np.float32(2.5)"),
            target="models_{n}.py",
            always=("reach_{n}",),
        ),
    ]


def pipeline_files(rs: List[Route]) -> Dict[str, str]:
    """Every route's files, plus pipe.py wiring all of them and a step that reaches none."""
    files: Dict[str, str] = {"zenbuild.toml": 'pipelines = ["pipe:p"]\n'}
    lines = ['"""All the routes in one pipeline."""', "from zenbuild import step, pipeline, Output"]
    for r in rs:
        files.update(r.files)
        lines.append(f"from s_{r.name} import *  # noqa: F403")
    lines += [
        "",
        "",
        "@step",
        "def other() -> int:",
        "    return 7",
        "",
        "",
        "@pipeline",
        "def p():",
        "    other()",
    ]
    lines += [f"    {r.wiring}" for r in rs]
    files["pipe.py"] = "\n".join(lines) + "\n"
    return files


MAIN_SCRIPT = module('''
    from zenbuild import step, pipeline, Output


    def target(x):
        """Target."""
        # cosmetic
        return x + 1


    @step
    def reach_main():
        return target(1)


    @step
    def other() -> int:
        return 7


    @step
    def down_main(v, out: Output) -> None:
        out.write_text(repr((v, type(v).__name__)))


    @pipeline
    def p():
        other()
        down_main(reach_main(), Output("build/main.txt"))


    if __name__ == "__main__":
        p().run()
''')

# A helper defined in __main__: a script run as `python script.py` that calls p().run().
MAIN_ROUTE = Route(
    "main",
    {"zenbuild.toml": "", "script.py": MAIN_SCRIPT},
    ("script.py", "return x + 1", "return x + 5"),
    target="script.py",
    reach=("reach_main",),
    wiring="",
)
