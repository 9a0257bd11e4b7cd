"""End-to-end: a class's key covers its live attributes (set from outside the class
statement, filled into a class-level registry, made by a metaclass, inherited), and a
singledispatch function's key covers its whole registry. Each edit through the real CLI
reruns exactly the step that depends on it and gives a fresh store's answer; values with no
stable encoding held by a class do not make a step rerun forever."""

from __future__ import annotations

from tests.e2e.test_stale_code import body_step, check

MODEL = '''
class Model:
    LR = 0.1
    ACT = None

    def lr(self):
        return self.LR

    def forward(self, x):
        return type(self).ACT(x)
'''
ACTS = "def relu(x):\n    return max(x, 0)\n\n\ndef absval(x):\n    return abs(x)\n"


def _setup_project(setup: str) -> dict:
    return {
        "model.py": MODEL,
        "acts.py": ACTS,
        "setup_model.py": setup,
        "pipe.py": "import setup_model\n" + body_step('''
            from model import Model
            m = Model()
            return f"lr={m.lr()} act={m.forward(-3)}"
        '''),
    }


def test_a_class_attribute_assigned_outside_the_statement(project):
    setup = "import acts, model\nmodel.Model.LR = 0.5\nmodel.Model.ACT = staticmethod(acts.relu)\n"
    check(project, _setup_project(setup), ("setup_model.py", "0.5", "0.7"),
          "lr=0.5 act=0", "lr=0.7 act=0")


def test_a_function_assigned_to_a_class_from_outside(project):
    setup = "import acts, model\nmodel.Model.LR = 0.5\nmodel.Model.ACT = staticmethod(acts.relu)\n"
    check(project, _setup_project(setup), ("setup_model.py", "acts.relu", "acts.absval"),
          "lr=0.5 act=0", "lr=0.5 act=3")


def test_the_code_of_a_function_assigned_from_outside(project):
    setup = "import acts, model\nmodel.Model.ACT = staticmethod(acts.relu)\n"
    check(project, _setup_project(setup), ("acts.py", "max(x, 0)", "max(x, 1)"),
          "lr=0.1 act=0", "lr=0.1 act=1")


def test_an_attribute_the_statement_does_not_have_inherited_by_a_subclass(project):
    files = {
        "base.py": "class Base:\n    def scale(self):\n        return self.SCALE\n",
        "sub.py": "from base import Base\n\n\nclass Sub(Base):\n    def twice(self):\n"
                  "        return 2 * self.scale()\n",
        "setup_model.py": "import base\nbase.Base.SCALE = 3\n",
        "pipe.py": "import setup_model\n" + body_step('''
            from sub import Sub
            return repr(Sub().twice())
        '''),
    }
    check(project, files, ("setup_model.py", "= 3", "= 4"), "6", "8")


REGISTRY = '''
class Model:
    REGISTRY = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Model.REGISTRY[cls.__name__.lower()] = cls

    @classmethod
    def create(cls, name):
        return cls.REGISTRY[name]()


class Registry:
    _items = {}

    @classmethod
    def register(cls, name):
        def deco(klass):
            cls._items[name] = klass
            return klass
        return deco

    @classmethod
    def get(cls, name):
        return cls._items[name]
'''


def test_a_registry_filled_by_init_subclass(project):
    files = {
        "base.py": REGISTRY,
        "models/__init__.py": "from . import mlp\n",
        "models/mlp.py": "from base import Model\n\n\nclass Mlp(Model):\n    DEPTH = 3\n\n"
                         "    def describe(self):\n        return f'mlp {self.DEPTH}'\n",
        "pipe.py": "import models\n" + body_step('''
            from base import Model
            return Model.create("mlp").describe()
        '''),
    }
    check(project, files, ("models/mlp.py", "DEPTH = 3", "DEPTH = 5"), "mlp 3", "mlp 5")


def test_a_registry_class_filled_by_a_classmethod_decorator(project):
    files = {
        "base.py": REGISTRY,
        "models/__init__.py": "from . import cnn\n",
        "models/cnn.py": "from base import Registry\n\n\n@Registry.register('cnn')\nclass Cnn:\n"
                         "    DEPTH = 3\n\n    def describe(self):\n        return f'cnn {self.DEPTH}'\n",
        "pipe.py": "import models\n" + body_step('''
            from base import Registry
            return Registry.get("cnn")().describe()
        '''),
    }
    check(project, files, ("models/cnn.py", "DEPTH = 3", "DEPTH = 5"), "cnn 3", "cnn 5")


def test_a_list_of_functions_registered_on_a_class(project):
    files = {
        "hooks.py": "class Hooks:\n    ALL = []\n\n    @classmethod\n    def add(cls, f):\n"
                    "        cls.ALL.append(f)\n        return f\n",
        "plugins.py": "from hooks import Hooks\n\n\n@Hooks.add\ndef plus(x):\n    return x + 1\n",
        "pipe.py": "import plugins\n" + body_step('''
            from hooks import Hooks
            return repr([f(1) for f in Hooks.ALL])
        '''),
    }
    check(project, files, ("plugins.py", "x + 1\n", "x + 1\n\n\n@Hooks.add\ndef ten(x):\n"
                                                   "    return x * 10\n"), "[2]", "[2, 10]")


def test_an_attribute_a_metaclass_makes(project):
    files = {
        "meta.py": "class Meta(type):\n    def __new__(m, name, bases, ns):\n"
                   "        cls = super().__new__(m, name, bases, ns)\n"
                   "        cls.TABLE = dict(ns.get('PAIRS', ()))\n        return cls\n",
        "model.py": "from meta import Meta\n\n\nclass Model(metaclass=Meta):\n"
                    "    PAIRS = (('a', 1),)\n\n    def get(self, k):\n"
                    "        return self.TABLE[k]\n",
        "tweak.py": "import model\nmodel.Model.TABLE['b'] = 2\n",
        "pipe.py": "import tweak\n" + body_step('''
            from model import Model
            return repr(sorted(Model.TABLE.items()))
        '''),
    }
    check(project, files, ("tweak.py", "= 2", "= 3"), "[('a', 1), ('b', 2)]",
          "[('a', 1), ('b', 3)]")


ENCODE = '''
from functools import singledispatch


@singledispatch
def encode(x):
    return "generic"


@encode.register
def _(x: int):
    return "int"


@encode.register
def _(x: str):
    return "str"
'''


def test_a_singledispatch_implementation_registered_in_another_module(project):
    files = {
        "encode.py": ENCODE,
        "extra.py": "from encode import encode\n\n\n@encode.register\ndef _(x: float):\n"
                    "    return 'float'\n",
        "pipe.py": "import extra\n" + body_step('''
            from encode import encode
            return encode(True)
        '''),
    }
    check(project, files, ("extra.py", "x: float):\n    return 'float'",
                           "x: bool):\n    return 'bool'"), "int", "bool")


def test_a_singledispatchmethod_implementation_registered_from_outside(project):
    files = {
        "enc.py": "from functools import singledispatchmethod\n\n\nclass Enc:\n"
                  "    @singledispatchmethod\n    def enc(self, x):\n        return 'generic'\n\n"
                  "    @enc.register\n    def _(self, x: int):\n        return 'int'\n",
        "extra.py": "from enc import Enc\n\n\n@Enc.enc.register\ndef _(self, x: float):\n"
                    "    return 'float'\n",
        "pipe.py": "import extra\n" + body_step('''
            from enc import Enc
            return Enc().enc(True)
        '''),
    }
    check(project, files, ("extra.py", "x: float):\n    return 'float'",
                           "x: bool):\n    return 'bool'"), "int", "bool")


def test_unstable_class_state_does_not_rerun_forever(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", '''
        import logging
        import threading


        class Handle:
            pass


        class Model:
            LOCK = threading.Lock()
            LOG = logging.getLogger("model")
            HANDLE = Handle()
            _cache = {}
            _instance = None

            @classmethod
            def get(cls):
                if cls._instance is None:
                    cls._instance = cls()
                return cls._instance

            def load(self, k):
                self._cache.setdefault(k, k * 2)
                return self._cache[k]
        ''')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline
        from model import Model


        @step
        def a() -> int:
            return Model.get().load(1)


        @step
        def b(x: int) -> int:
            return Model.get().load(x) + len(Model._cache)


        @pipeline
        def p():
            b(a())
        ''')
    r = project.run("run")
    assert sorted(r.executed) == ["a", "b"], r
    for _ in range(2):
        r = project.run("run")
        assert r.executed == [] and sorted(r.cached) == ["a", "b"], r
    r = project.run("run", "-j", "2")
    assert r.executed == [], r


def test_classes_made_by_the_standard_machinery_stay_cached(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("lib.py", '''
        import abc, collections, dataclasses, enum, functools, logging, re, threading, typing


        @dataclasses.dataclass
        class DC:
            a: int = 1
            b: list = dataclasses.field(default_factory=list)


        class Color(enum.IntFlag):
            R = 1
            G = 2


        class NT(typing.NamedTuple):
            x: int = 1


        T = typing.TypeVar("T")


        class Box(typing.Generic[T]):
            def get(self):
                return 1


        class A(abc.ABC):
            @abc.abstractmethod
            def f(self): ...


        class Impl(A):
            PAT = re.compile(r"a+")
            LOCK = threading.RLock()
            LOG = logging.getLogger("x")
            DD = collections.defaultdict(list)
            part = functools.partial(int, base=2)

            def f(self):
                return 1

            @functools.singledispatchmethod
            def g(self, x):
                return "g"

            @g.register
            def _(self, x: int):
                return "gi"
        ''')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline
        import lib


        @step
        def s() -> str:
            c = lib.Color(3)  # a pseudo-member, cached in the class at run time
            isinstance(lib.Impl(), lib.A)  # fills ABC's cache
            lib.Impl.DD["k"].append(1)
            return repr((lib.DC().a, int(c), lib.NT().x, lib.Box().get(), lib.Impl().g(1)))


        @step
        def t(x: str) -> str:
            return x + repr(lib.Impl.DD)


        @pipeline
        def p():
            t(s())
        ''')
    r = project.run("run")
    assert sorted(r.executed) == ["s", "t"] and "Warning" not in r.output, r
    for args in ((), ("-j", "2")):
        r = project.run("run", *args)
        assert r.executed == [] and "Warning" not in r.output, r
