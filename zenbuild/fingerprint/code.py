"""Code fingerprints: the normalized AST of a step plus the project helpers, classes, modules
and constants it reaches (through globals, imports in its body, literal import_module calls,
wrappers and containers), closure values, the identity of every library object it names, and
third-party package versions. Pure: no file is written. See docs/fingerprint.md."""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from zenbuild import imported
from zenbuild.digest import digest_bytes, digest_file
from zenbuild.fingerprint import dynamic_names, live
from zenbuild.fingerprint.project import ProjectLocator
from zenbuild.fingerprint.source import (
    IMPORT,
    SOURCE_CACHE_VERSION,
    NoSourceWarning,
    SourceCache,
    Sources,
    absolute_module,
    class_file,
    code_bytes,
    copy_without_decorators,
    dump,
    from_imports,
    method_lines,
    strip_docstrings,
)
from zenbuild.fingerprint.values import ValueEncoder, identity, named_object
from zenbuild.graph import StepDef
from zenbuild.records import field, record
from zenbuild.serialize import GENERATION
from zenbuild.serialize.materialize import Registration, registration

__all__ = ["CodeFingerprinter", "CodeInfo", "NoSourceWarning", "SourceCache"]

# Module metadata: where a module lives is not what it computes (and differs per checkout).
_MODULE_DUNDERS = frozenset(
    {"__file__", "__cached__", "__loader__", "__spec__", "__path__", "__builtins__",
     "__package__", "__doc__"}
)
_PLAIN = (int, float, str, bool, bytes, type(None))
EFFECT_IMPORT = "<effect import>"  # (fingerprint/toplevel.py; not imported: ast at parse time)
STATEMENT = "<statement>"  # (fingerprint/toplevel.py)
STATEMENTS = "statements"
_DATA = (dict, list, set, tuple, int, float, str, bool, bytes)  # the kind of a module's top-level statements item (toplevel.py)
IMPORT_ENV = "import env"  # a variable those statements' module read when it was imported
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodDescriptorType,
                      types.WrapperDescriptorType)


@record
class CodeInfo:
    """The code component of one step: item name -> digest, and package -> version."""

    items: Dict[str, str] = field(default_factory=dict)
    packages: Dict[str, str] = field(default_factory=dict)
    # item name -> [kind, file label]; kind is step|function|class|module|constant|callable|
    # library object|library module
    meta: Dict[str, List[str]] = field(default_factory=dict)
    # the fingerprint text of items (and packages, when tracked) -> rebuild.compute_components
    heads: Dict[bool, str] = field(default_factory=dict)
    # the project functions the closure holds (fingerprint.running checks them against disk)
    funcs: List[Any] = field(default_factory=list)


@record
class _Obj:
    """What one function, class, module or value contributes, and what it references."""

    key: str
    digest: str
    file: str
    refs: List[Any]
    packages: Dict[str, str]
    kind: str = "function"


def _file_digest_of(root: str, source_cache: Any) -> Callable[[str], Optional[str]]:
    """The digest of a project file (``rel`` under ``root``), through ``source_cache``'s stat
    cache when there is one."""

    def file_digest(rel: str) -> Optional[str]:
        full = os.path.join(root, rel)
        got = source_cache.file_digest(full) if source_cache is not None else None
        if got is None:
            try:
                got = digest_file(full)[0]
            except OSError:
                return None
        return got  # type: ignore[no-any-return]

    return file_digest


class CodeFingerprinter:
    """Computes code components, memoized per object for the life of one process."""

    def __init__(
        self,
        root: str,
        track_packages: bool = True,
        store_dir: str = "",
        source_cache: Optional[SourceCache] = None,
        ignore_env: Tuple[str, ...] = (),
    ) -> None:
        self.source_cache = source_cache
        self.locator = ProjectLocator(root, store_dir)
        self.root = self.locator.root
        self._given_root = os.path.abspath(root)
        self.track_packages = track_packages
        self.store_dir = self.locator.store_dir
        self.sources = Sources()
        self._objs: Dict[int, _Obj] = {}
        self._pins: List[Any] = []  # keep memoized objects alive so ids stay unique
        self._step_cache: Dict[int, CodeInfo] = {}
        self._entry_cache: Dict[int, CodeInfo] = {}  # code(fn, entry=True)
        self._last_entry = False
        self._last_fn: Any = None  # the step function code() answered last, and its answer
        self._last_info: Optional[CodeInfo] = None
        # id(class or function) -> value_code digest (None: no project code)
        self._value_code: Dict[int, Optional[str]] = {}
        # id(class) -> what its registered value-type hooks add (refs, packages)
        self._registered: Dict[int, Tuple[List[Any], Dict[str, str]]] = {}
        self._import_maps: Dict[str, Dict[str, Tuple[str, str]]] = {}
        # registrations of project code made in this process when the memos were started: a
        # later one (a module imported by a step, or after the first fingerprint) changes the
        # code of the classes it registers for, and of everything that reaches them
        self._generation = GENERATION[0]
        self._plain: Dict[Tuple[str, type, Any], str] = {}
        # functions that do not hold self: a fingerprinter in a reference cycle (and the
        # stat cache, graph and results its scheduler holds) waits for the cyclic GC
        # id(module) -> the items of its top-level statements that set process state (its
        # own, or those of modules it imports for their effect); modules are pinned
        self._statements: Dict[int, List[_Obj]] = {}
        self._ignore_env = ignore_env
        self.entry_module = ""  # the pipeline's module (set by the scheduler): see code()
        self._secret_key: Optional[bytes] = None
        self._import_reads = imported.ReadItems(self.root, self.locator.project_file,
                                                _file_digest_of(self._given_root, source_cache))

    # -- which code belongs to the project (fingerprint/project.py) --------------------------
    def project_file(self, filename: Optional[str]) -> Optional[str]:
        """The label of a source file of the project's own, else None."""
        return self.locator.project_file(filename)

    def module_is_project(self, mod: types.ModuleType) -> bool:
        return self.locator.module_is_project(mod)

    def package_of(self, module_name: str) -> Optional[Tuple[str, str]]:
        return self.locator.package_of(module_name)

    def _is_project(self, value: Any) -> bool:
        if isinstance(value, types.ModuleType):
            return self.module_is_project(value)
        if self.locator.is_project_object(value):
            return True
        # a class made at run time (make_dataclass before 3.12 names its module "types"): no
        # module holds it by name, so only its content can say what it is
        return isinstance(value, type) and not named_object(value) and value.__module__ != "builtins"

    def _add_package(self, module: Optional[str], packages: Dict[str, str]) -> None:
        if self.track_packages and module:
            pkg = self.package_of(module)
            if pkg:
                packages[pkg[0]] = pkg[1]

    # -- one definition ---------------------------------------------------------------------
    def _cache_key(self, src_file: Optional[str], *parts: object) -> Optional[str]:
        if self.source_cache is None or not src_file:
            return None
        fdigest = self.source_cache.file_digest(src_file)
        if fdigest is None:
            return None
        return "|".join([SOURCE_CACHE_VERSION, fdigest, *map(str, parts)])

    def _parse_function(self, obj: Any, key: str, strip: bool) -> Tuple[str, Optional[List[Any]]]:
        """(normalized digest, referenced name chains); chains is None when there was no
        source and the bytecode was fingerprinted."""
        node = self.sources.function_node(obj)
        if node is None:
            warnings.warn(
                f"{key} has no source; fingerprinting its bytecode instead",
                NoSourceWarning,
                stacklevel=4,
            )
            return digest_bytes(code_bytes(obj.__code__)), None
        if strip and hasattr(node, "decorator_list"):
            node = copy_without_decorators(node)
        strip_docstrings(node)
        from zenbuild.fingerprint.scopes import global_references  # imports ast: parse time only

        chains = [list(c) for c in global_references(node)]
        # names read by computed name, in evaluated strings, and non-literal defaults
        chains += [list(c) for c in dynamic_names.extra_chains(node, "step" if strip else "function")]
        return digest_bytes(dump(node).encode()), chains

    def _function_key(self, obj: Any) -> str:
        code: types.CodeType = obj.__code__
        module = getattr(obj, "__module__", None) or "?"
        own = getattr(code, "co_qualname", None)
        qual = getattr(obj, "__qualname__", None)
        if own is None:  # Python 3.10: no co_qualname
            if (type(qual) is str and qual.rpartition(".")[2] == code.co_name
                    and "__wrapped__" not in getattr(obj, "__dict__", {})):
                own = qual  # not a functools.wraps wrapper: the function's own, set from its
                # code when it was made (so a no-op parses no source for it)
            else:
                from zenbuild.trace.calls import code_qualname

                own = code_qualname(code)
        qual = qual or own
        if qual != own:  # a functools.wraps wrapper: its own code, then whose
            home = obj.__globals__.get("__name__", module)
            return f"{home}.{own}<{module}.{qual}>"
        return f"{module}.{qual}"

    def _analyze(self, obj: Any, strip_decorators: bool) -> _Obj:
        memo = self._objs.get(id(obj))
        if memo is not None:
            return memo
        if isinstance(obj, type):
            result = self._analyze_class(obj)
        else:
            result = self._analyze_function(obj, strip_decorators)
        self._objs[id(obj)] = result
        self._pins.append(obj)
        return result

    def _analyze_function(self, obj: Any, strip: bool) -> _Obj:
        code: types.CodeType = obj.__code__
        key, digest, chains = self._function_source(obj, strip)
        rel = self.project_file(code.co_filename) or ""
        refs: List[Any] = []
        packages: Dict[str, str] = {}
        g = obj.__globals__
        self._statements_ref(_main_of(g), refs)
        if chains:
            for chain in chains:
                if dynamic_names.is_marker(chain):  # fingerprint/dynamic_names.py
                    dynamic_names.resolve(self, obj, key, chain, g, rel, refs, packages)
                    continue
                self._resolve(tuple(chain), g, refs, packages)
        closure = getattr(obj, "__closure__", None)
        if closure:
            for var, cell in zip(code.co_freevars, closure):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                self._value_ref(f"{key}.<closure {var}>", value, rel, refs, packages, "closure")
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            self._value_ref(f"{key}.__wrapped__", wrapped, rel, refs, packages, "callable")
        attrs = getattr(obj, "__dict__", None)
        if attrs:  # what the code keeps on the function (a registry: register.items = {})
            for name in sorted(attrs):
                if name != "__wrapped__" and not name.startswith("__zenbuild"):
                    self._value_ref(f"{key}.<attribute {name}>", attrs[name], rel, refs,
                                    packages, "attribute")
        return _Obj(key, digest, rel, refs, packages, "step" if strip else "function")

    def _function_source(self, obj: Any, strip: bool) -> Tuple[str, str, Optional[List[Any]]]:
        """(item key, digest of the normalized definition, referenced chains), from the
        source cache when it has them (no parse on a no-op)."""
        code: types.CodeType = obj.__code__
        key = self._function_key(obj)
        src_file = code.co_filename
        where: object = code.co_firstlineno
        if code.co_name == "<lambda>":  # lambdas on one line are told apart by column
            positions = getattr(code, "co_positions", None)  # Python >= 3.11 (columns)
            cols = [c for _, _, c, _ in (positions() if positions else ()) if c is not None]
            where = f"{where}:{cols[-1] if cols else ''}"
        cache_key = self._cache_key(src_file, key, where, int(strip))
        cached = self.source_cache.get(cache_key) if cache_key and self.source_cache else None
        chains: Optional[List[Any]]
        if cached is not None:
            digest, chains = cached
        else:
            digest, chains = self._parse_function(obj, key, strip)
            if cache_key is not None and chains is not None and self.source_cache is not None:
                self.source_cache.put(cache_key, digest, chains)
        if code.co_name == "<lambda>":
            key = f"{key}#{digest[:12]}"  # lambdas share a name: their content tells them apart
        return key, digest, chains

    def _own_digest(self, fn: Any) -> Optional[str]:
        """The digest of a project function's own definition (not what it reaches), for
        code that names several functions of one name (singledispatch's `def _`)."""
        if not isinstance(fn, types.FunctionType) or not self._is_project(fn):
            return None
        memo = self._objs.get(id(fn))
        return memo.digest if memo is not None else self._function_source(fn, False)[1]

    def _encoder(self, key: str) -> ValueEncoder:
        enc = ValueEncoder(self._is_project, self.package_of, self._relocatable, key,
                           self._registered_refs)
        enc.own_digest = self._own_digest
        return enc

    def _analyze_class(self, cls: type) -> _Obj:
        key = f"{cls.__module__}.{cls.__qualname__}"
        src_file = class_file(cls)
        rel = self.project_file(src_file) or self.locator.module_file(
            sys.modules.get(cls.__module__) or types.ModuleType("?")) or ""
        lines = method_lines(cls, src_file) if src_file else []
        refs: List[Any] = []
        packages: Dict[str, str] = {}
        cache_key = self._cache_key(src_file, key, "class", min(lines) if lines else 0)
        cached = self.source_cache.get(cache_key) if cache_key and self.source_cache else None
        if cached is not None:
            digest, chains = cached
        else:
            nodes = self.sources.class_nodes(cls, src_file) if src_file else []
            from zenbuild.fingerprint.scopes import global_references

            chains = []
            texts = []
            for node in nodes:
                strip_docstrings(node)
                texts.append(dump(node))
                chains.extend(list(c) for c in global_references(node))
                chains.extend(list(c) for c in dynamic_names.extra_chains(node, "class"))
            digest = digest_bytes("\0".join(texts).encode()) if nodes else ""
            if cache_key is not None and nodes and self.source_cache is not None:
                self.source_cache.put(cache_key, digest, chains)
        if not digest or not lines:
            # made without a class statement (namedtuple, Enum("X", ...), make_dataclass), or
            # one with no methods of its own here: its content is what it is
            enc = self._encoder(key)
            digest = digest_bytes(digest.encode() + b"\0" + enc.class_content(cls))
            refs.extend(enc.refs)
            if self.track_packages:
                packages.update(enc.packages)
        enc = self._encoder(key)  # its attributes as they are now (fingerprint/live.py)
        state = live.class_attributes(cls, enc)
        if state:
            digest = digest_bytes(digest.encode() + b"\0live\0" + state)
            refs.extend(enc.refs)
            if self.track_packages:
                packages.update(enc.packages)
        g = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
        if cls.__module__ in sys.modules:
            self._statements_ref(sys.modules[cls.__module__], refs)
        for chain in chains or []:
            if dynamic_names.is_marker(chain):  # fingerprint/dynamic_names.py
                dynamic_names.resolve(self, cls, key, chain, g, rel, refs, packages)
                continue
            self._resolve(tuple(chain), g, refs, packages)
        self._add_registered(cls, refs, packages)
        return _Obj(key, digest, rel, refs, packages, "class")

    # -- the code registered for a type (register_value_type, @value_type) -----------------
    def _add_registered(self, cls: type, refs: List[Any], packages: Dict[str, str]) -> None:
        """The code registered to store ``cls``'s instances joins the code of whatever uses
        ``cls``, as its methods do: the reducer (it makes the stored value) and what it calls
        or names (the function that rebuilds the value where it is loaded), for a project
        class and for a library class alike."""
        got = self._registered_refs(cls)
        if got[0]:
            refs.extend(got[0])
            if self.track_packages:
                packages.update(got[1])

    def _registered_refs(self, cls: type) -> Tuple[List[Any], Dict[str, str]]:
        """(refs, packages) the registration for ``cls`` adds (serialize.materialize
        .registration): the reducer analyzed as a helper (a project function with the code
        it reaches; a partial or callable object by value), for @value_type its save and load
        methods, and an item naming what is registered, so that a registration changed to
        another function, or moved to a base class, changes the key too. zenbuild's own
        reducers (polars, Arrow columns: registered only once a value is stored) and library
        functions add nothing but the registration item: their package's version stands for
        them."""
        memo = self._registered.get(id(cls))
        if memo is not None:
            return memo
        refs: List[Any] = []
        packages: Dict[str, str] = {}
        reg = registration(cls)
        if reg is not None:
            self._registration_refs(cls, reg, refs, packages)
        self._registered[id(cls)] = (refs, packages)
        self._pins.append(cls)
        return refs, packages

    def _registration_refs(self, cls: type, reg: Registration, refs: List[Any],
                           packages: Dict[str, str]) -> None:
        key = f"{cls.__module__}.{cls.__qualname__}"
        hooks: List[Tuple[str, Any]]
        if reg.save or reg.load:  # @value_type: its methods, by name
            hooks = [(role, getattr(cls, name, None))
                     for role, name in (("save", reg.save), ("load", reg.load))]
            hooks = [(role, getattr(h, "__func__", h)) for role, h in hooks]  # classmethods
            named = [f"value_type save={reg.save} load={reg.load}"]
        elif (getattr(reg.reduce, "__module__", None) or "").split(".")[0] == "zenbuild":
            return  # zenbuild's own (registered lazily): its version is zenbuild's
        else:
            hooks, named = [("reduce", reg.reduce)], []
        rel = ""
        for role, hook in hooks:
            named.append(f"{role}={identity(hook)}")
            if hook is None:
                continue
            if isinstance(hook, (types.FunctionType, type)) and not self._is_project(hook):
                self._add_package(getattr(hook, "__module__", None), packages)
                continue  # a library's (or zenbuild's) code: its package version
            rel = rel or self.project_file(getattr(getattr(hook, "__code__", None),
                                                   "co_filename", None)) or ""
            self._value_ref(f"{key}.<registered {role}>", hook, rel, refs, packages, "callable")
        on = f"{reg.on.__module__}.{reg.on.__qualname__}"
        text = f"registered for {on}: " + ", ".join(named)
        refs.append(_Obj(f"{key}.<registered>", digest_bytes(text.encode(
            "utf-8", "surrogatepass")), rel, [], {}, "value type registration"))

    def _library_class_refs(self, value: Any, attrs: Tuple[str, ...], refs: List[Any],
                            packages: Dict[str, str]) -> None:
        """``value.attrs...`` read from a library module (``np.ndarray``, ``fractions.Fraction``
        in a step): when it leads to a class with a registration (a project reducer for a
        library type), the registration joins. Nothing is imported: a class with a
        registration is loaded already."""
        for attr in attrs:
            if isinstance(value, type):
                break
            if not isinstance(value, types.ModuleType):
                return
            nxt = getattr(value, attr, None)
            if nxt is None:
                nxt = sys.modules.get(f"{value.__name__}.{attr}")
            value = nxt
        if isinstance(value, type):
            self._add_registered(value, refs, packages)

    # -- what a name refers to --------------------------------------------------------------
    def _library_item(self, name: str, rel: str, kind: str) -> _Obj:
        return _Obj(name, digest_bytes(f"{kind}:{name}".encode()), rel, [], {}, kind)

    def _value_ref(
        self,
        key: str,
        value: Any,
        rel: str,
        refs: List[Any],
        packages: Dict[str, str],
        kind: str = "constant",
    ) -> None:
        if isinstance(value, StepDef):
            value = value.fn
        dispatcher = live.is_singledispatch(value)  # by value: its registry says what runs
        if isinstance(value, (types.FunctionType, type, types.ModuleType)) and not dispatcher:
            if self._is_project(value):
                refs.append(value)
            elif isinstance(value, types.ModuleType):
                refs.append(self._library_item(value.__name__, rel, "library module"))
                self._add_package(value.__name__, packages)
            else:
                refs.append(self._library_item(identity(value), rel, "library object"))
                self._add_package(getattr(value, "__module__", None), packages)
                if isinstance(value, type):  # a library class the project registered a reducer for
                    self._add_registered(value, refs, packages)
            return
        if not dispatcher and ((
            isinstance(value, _BUILTIN_CALLABLES)
            and isinstance(getattr(value, "__self__", None), (types.ModuleType, type(None)))
        ) or (callable(value) and named_object(value) and not self._is_project(value))):
            # math.sqrt, numpy.mean (a dispatcher object): a library object known by its name
            refs.append(self._library_item(identity(value), rel, "library object"))
            self._add_package(getattr(value, "__module__", None), packages)
            return
        if type(value) in _PLAIN:  # the same constant read by many steps: encoded once
            memo = self._plain.get((key, type(value), value))
            if memo is None:
                memo = self._plain[(key, type(value), value)] = ValueEncoder(
                    self._is_project, self.package_of, self._relocatable, key).digest(value)
            refs.append(_Obj(key, memo, rel, [], {}, kind))
            return
        enc = self._encoder(key)
        digest = enc.digest(value)
        refs.extend(enc.refs)
        if self.track_packages:
            packages.update(enc.packages)
        if callable(value) and kind == "constant":
            kind, key = "callable", f"{key} (value)"
        refs.append(_Obj(key, digest, rel, [], {}, kind))

    def _relocatable(self, value: Any) -> Any:
        """A path-like constant inside the project is hashed relative to the project root, so
        two checkouts at different places share fingerprints (and a remote cache)."""
        from pathlib import PurePath

        if isinstance(value, (str, PurePath)):
            text = os.fspath(value)
            for root in (self.root, self._given_root):
                if text == root or text.startswith(root + os.sep):
                    rel = "<project>" + text[len(root) :]
                    return type(value)(rel) if isinstance(value, PurePath) else rel
        return value

    def _resolve(
        self, chain: Tuple[str, ...], g: Dict[str, Any], refs: List[Any], packages: Dict[str, str]
    ) -> None:
        if chain and chain[0] == IMPORT:
            self._resolve_import(chain, g, refs, packages)
            return
        name = chain[0]
        if name not in g or name in _MODULE_DUNDERS:
            return  # a local, a builtin, module metadata, or a name that does not exist (yet)
        value = g[name]
        key = f"{g.get('__name__', '?')}.{name}"
        file_of = g.get("__file__")
        if len(chain) == 1 and not callable(value) and not isinstance(value, types.ModuleType):
            origin = self._imports_of(g).get(name)
            mod = sys.modules.get(origin[0]) if origin else None
            if origin and mod is not None and self.module_is_project(mod):
                key = f"{origin[0]}.{origin[1]}"  # name the constant where it is defined
                file_of = getattr(mod, "__file__", None)
                self._statements_ref(mod, refs)
        rel = self.project_file(file_of) or self.locator.module_file(_main_of(g)) or ""
        self._walk(value, key, rel, chain[1:], refs, packages)

    def _walk(
        self, value: Any, key: str, rel: str, rest: Tuple[str, ...], refs: List[Any],
        packages: Dict[str, str],
    ) -> None:
        """Follow attribute names through project modules (importing a project submodule not
        loaded yet), then record what the chain ends on."""
        for i, attr in enumerate(rest):
            if not (isinstance(value, types.ModuleType) and self.module_is_project(value)):
                if isinstance(value, types.ModuleType):  # a library's: np.ndarray, ...
                    self._library_class_refs(value, rest[i:], refs, packages)
                break
            if attr in _MODULE_DUNDERS:
                return
            owner = value
            self._statements_ref(owner, refs)
            value = getattr(owner, attr) if hasattr(owner, attr) else self._import_sub(owner, attr)
            if value is None:
                return
            key = f"{owner.__name__}.{attr}"
            rel = self.locator.module_file(owner) or ""
        self._value_ref(key, value, rel, refs, packages)

    def _import_sub(self, mod: types.ModuleType, attr: str) -> Any:
        import importlib

        name = f"{mod.__name__}.{attr}"
        if name not in sys.modules and not self.locator.top_is_project(name):
            return None
        try:
            importlib.import_module(name)
        except Exception:
            return None
        return getattr(mod, attr, sys.modules.get(name))

    def _resolve_import(
        self, chain: Tuple[str, ...], g: Dict[str, Any], refs: List[Any], packages: Dict[str, str]
    ) -> None:
        """An import inside a definition (or a literal import_module call): import the project
        module if it is not loaded yet, then follow the names read from it."""
        import importlib

        level = int(chain[1])
        package = g.get("__package__") or ""
        if level and not package:
            return  # a relative import outside a package fails when it runs
        target = absolute_module(chain[2], level, package)
        base = absolute_module(chain[3], level, package)
        rel = self.project_file(g.get("__file__")) or ""
        if not target or not base:
            return
        if not self.locator.top_is_project(target):
            # a library: the import statement is in the definition's text; record the module
            # the same way whether or not something else has loaded it in this process
            refs.append(self._library_item(target, rel, "library module"))
            self._add_package(target, packages)
            lib = sys.modules.get(base)
            if lib is not None and len(chain) > 4:  # from fractions import Fraction
                self._library_class_refs(lib, tuple(chain[4:]), refs, packages)
            return
        if target not in sys.modules:
            try:
                importlib.import_module(target)
            except Exception:
                return
        mod = sys.modules.get(base)
        if mod is None or not self.module_is_project(mod):
            return
        attrs = tuple(chain[4:])
        self._walk(mod, base, self.locator.module_file(mod) or "", attrs, refs, packages)

    def _imports_of(self, g: Dict[str, Any]) -> Dict[str, Tuple[str, str]]:
        """name -> (module, original name) for a module's `from X import name` statements,
        kept in the source cache by the module file's content digest."""
        filename = g.get("__file__")
        if not filename or self.project_file(filename) is None:
            return {}
        memo = self._import_maps.get(filename)
        if memo is not None:
            return memo
        cache_key = self._cache_key(filename, "imports", g.get("__package__") or "")
        pairs: Optional[List[List[str]]] = None
        if cache_key is not None and self.source_cache is not None:
            hit = self.source_cache.get(cache_key)
            pairs = hit[1] if hit is not None else None
        if pairs is None:
            pairs = from_imports(self.sources.module_ast(filename), g.get("__package__") or "")
            if cache_key is not None and self.source_cache is not None:
                self.source_cache.put(cache_key, "", [tuple(p) for p in pairs])
        result = {p[0]: (p[1], p[2]) for p in pairs}
        self._import_maps[filename] = result
        return result

    # -- a step -----------------------------------------------------------------------------
    def _registrations_changed(self) -> None:
        """A type was registered since the memos were made: drop those that may hold what was
        registered before (analyzed classes and what reaches them, step closures, value code
        digests). Registrations are made at import, so this happens a few times per process."""
        self._generation = GENERATION[0]
        self._objs.clear()
        self._step_cache.clear()
        self._entry_cache.clear()
        self._value_code.clear()
        self._registered.clear()
        self._statements.clear()
        self._last_fn, self._last_info, self._last_entry = None, None, False

    def code(self, fn: Any, entry: bool = False) -> CodeInfo:
        """The code component of a step function (decorators of the function itself ignored).
        With ``entry`` (a step's key), the top-level statements of the pipeline's module
        (``entry_module``) join too: they ran before any step of the pipeline."""
        if self._generation != GENERATION[0]:
            self._registrations_changed()
        if fn is self._last_fn and entry is self._last_entry:  # asked twice per executed
            return self._last_info  # type: ignore[return-value]  # step: no id() (an audit event)
        cache = self._entry_cache if entry else self._step_cache
        memo = cache.get(id(fn))
        if memo is not None:
            self._last_fn, self._last_info, self._last_entry = fn, memo, entry
            return memo
        while True:  # again if a module the analysis imported registered a type meanwhile
            info = self._step_code(fn, entry=entry)
            if self._generation == GENERATION[0]:
                break
            self._registrations_changed()
        cache[id(fn)] = info
        self._pins.append(fn)
        self._last_fn, self._last_info, self._last_entry = fn, info, entry
        return info

    def _step_code(self, fn: Any, statements: bool = True, entry: bool = False) -> CodeInfo:
        info = CodeInfo()
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            self.locator.acknowledge(code.co_filename)
        root = self._analyze(fn, strip_decorators=True)
        if isinstance(fn, types.FunctionType):
            info.funcs.append(fn)
        also: List[Any] = []
        mod = sys.modules.get(self.entry_module) if entry and self.entry_module else None
        if mod is not None and self.module_is_project(mod):
            self._statements_ref(mod, also)
        self._closure(root, info, statements, also)
        if imported.has_reads():  # files read when a module the code touches was imported
            self._import_reads.add(info.items, info.meta)
        return info

    def _closure(self, root: _Obj, info: CodeInfo, statements: bool = True,
                 also: Sequence[_Obj] = ()) -> None:
        """Add ``root`` and everything its refs reach to ``info`` (with ``statements``, the
        top-level statements of the modules they live in, and what those reach; ``also``:
        more statement items to start from)."""
        seen: Dict[int, None] = {id(o): None for o in also}
        stack: List[_Obj] = [root, *also]
        while stack:
            o = stack.pop()
            info.items[o.key] = o.digest
            info.meta[o.key] = [o.kind, o.file]
            info.packages.update(o.packages)
            for r in o.refs:
                if isinstance(r, _Obj):
                    if r.kind == STATEMENTS:  # followed: what the statements reach counts
                        if statements and id(r) not in seen:
                            seen[id(r)] = None
                            stack.append(r)
                        continue
                    info.items[r.key] = r.digest
                    info.meta[r.key] = [r.kind, r.file]
                    continue
                if id(r) in seen:
                    continue
                seen[id(r)] = None
                if isinstance(r, types.ModuleType):
                    stack.append(self._module_obj(r))
                else:
                    stack.append(self._analyze(r, strip_decorators=False))
                    if isinstance(r, types.FunctionType):
                        info.funcs.append(r)
                    elif isinstance(r, type):  # its methods run too
                        info.funcs += [v for v in vars(r).values()
                                       if isinstance(v, types.FunctionType)]

    def value_code(self, obj: Any) -> Optional[str]:
        """The code digest of a class or function a step's value names (its pickle refers to
        it), or None when it is not the project's own: the code that will run on the value
        where it is consumed is part of the value's identity (issue 10, class 1). A library
        class counts when the project registered code to store it (a reducer of its own):
        then the digest is that of the registered code."""
        if self._generation != GENERATION[0]:
            self._registrations_changed()
        memo = self._value_code.get(id(obj), "")
        if memo != "":
            return memo
        if self._is_project(obj):
            # the code itself, without its modules' top-level statements: what the process
            # state was when the value was made is the producing step's key, not the value's
            while True:
                info: Optional[CodeInfo] = self._step_code(obj, statements=False)
                if self._generation == GENERATION[0]:
                    break
                self._registrations_changed()
        elif isinstance(obj, type) and self._registered_refs(obj)[0]:
            info = CodeInfo()
            refs = self._registered_refs(obj)[0]
            self._closure(_Obj(identity(obj), digest_bytes(b"library class"), "", refs, {},
                               "library object"), info)
        else:
            info = None
        if info is not None:
            memo = digest_bytes("\n".join(f"{k}\0{v}" for k, v in sorted(info.items.items()))
                                .encode("utf-8", "surrogatepass"))
        else:
            memo = None
        self._value_code[id(obj)] = memo
        self._pins.append(obj)
        return memo

    def _module_obj(self, mod: types.ModuleType) -> _Obj:
        """A whole project module (an attribute read dynamically, a plugin loaded by name):
        its normalized source, and the project functions and classes it imported."""
        memo = self._objs.get(id(mod))
        if memo is not None:
            return memo
        filename = getattr(mod, "__file__", None) or ""
        cache_key = self._cache_key(filename, "module")
        cached = self.source_cache.get(cache_key) if cache_key and self.source_cache else None
        if cached is not None:
            digest = cached[0]
        elif not filename:
            digest = digest_bytes(b"namespace package")
        else:
            tree = self.sources.module_ast(filename)
            if tree is None:
                digest = digest_bytes(b"?")
            else:
                strip_docstrings(tree)
                digest = digest_bytes(dump(tree).encode())
                if cache_key is not None and self.source_cache is not None:
                    self.source_cache.put(cache_key, digest, [])
        refs: List[Any] = []
        for name, v in list(vars(mod).items()):
            if name not in _MODULE_DUNDERS and isinstance(v, (types.FunctionType, type)):
                if getattr(v, "__module__", None) != mod.__name__ and self._is_project(v):
                    refs.append(v)
        label = self.locator.module_file(mod) or ""
        o = _Obj(mod.__name__, digest, label, refs, {}, "module")
        self._objs[id(mod)] = o
        self._pins.append(mod)
        return o

    # -- a module's top-level statements that set process state (fingerprint/toplevel.py) --
    def _statements_ref(self, mod: types.ModuleType, refs: List[Any]) -> None:
        """Add to ``refs`` the item of ``mod``'s top-level statements that may set process
        state (a seed, a library option), when it has any: computed once per module."""
        got = self._statements.get(id(mod))
        if got is None:
            self._statements[id(mod)] = []  # (a module whose statements reach itself)
            self._pins.append(mod)
            got = self._statements[id(mod)] = self._statements_objs(mod)
        refs.extend(got)

    def _statements_objs(self, mod: types.ModuleType) -> List[_Obj]:
        filename = getattr(mod, "__file__", None)
        if not isinstance(filename, str) or not filename.endswith(".py"):
            return []  # a notebook cell's __main__, a namespace package: no module body
        label = self.locator.module_file(mod)
        if not label:
            return []
        cache_key = self._cache_key(filename, "toplevel")
        cached = self.source_cache.get(cache_key) if cache_key and self.source_cache else None
        chains: List[Any]
        if cached is not None:
            chains = cached[1]
        else:
            tree = self.sources.module_ast(filename)
            if tree is None:
                return []
            from zenbuild.fingerprint.toplevel import statements

            chains = statements(tree)[1]
            if cache_key is not None and self.source_cache is not None:
                self.source_cache.put(cache_key, "", chains)
        g = vars(mod)
        effects: List[Any] = []
        groups: List[Tuple[str, List[str], List[Any]]] = []  # (text, target roots, chains)
        for chain in chains:
            if chain and chain[0] == EFFECT_IMPORT:
                effects.append(chain)
            elif chain and chain[0] == STATEMENT:
                groups.append((chain[1], list(chain[2:]), []))
            elif groups:
                groups[-1][2].append(chain)
        kept = [grp for grp in groups if not self._left_out(grp[1], g)]
        refs: List[Any] = []
        for chain in effects:
            self._effect_import(mod, chain, refs)
        if not kept:  # no such statement: the module adds nothing itself (keys as before)
            return refs
        packages: Dict[str, str] = {}
        for _, _, grp_chains in kept:
            for chain in grp_chains:
                self._resolve(tuple(chain), g, refs, packages)
        digest = digest_bytes("\0".join(grp[0] for grp in kept).encode("utf-8", "surrogatepass"))
        env = imported.import_env(os.path.realpath(filename))
        if env:  # random.seed(int(os.environ["SEED"])): what the statements read at import
            from zenbuild.trace import env_filter

            wanted = env_filter(self._ignore_env)
            for name in sorted(env):
                if wanted(name):
                    refs.append(_Obj(f"{name} (read when {label} is imported)",
                                     self._env_digest(name, env[name]), label, [], {},
                                     IMPORT_ENV))
        return [_Obj(f"{mod.__name__}.<top-level statements>", digest, label, refs, packages,
                     STATEMENTS)]

    def _left_out(self, roots: List[str], g: Dict[str, Any]) -> bool:
        """Whether a statement (``roots``: statements() gives them) is left to other items: an
        assignment setting state on project objects only (_covered), or a call of zenbuild's
        own API (``zenbuild.register_value_type(...)``: registrations have items of their
        own, with the code they register)."""
        if not roots:
            return False
        if roots[0] == "<call>":
            v = g.get(roots[1]) if len(roots) > 1 else None
            mod = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", "")
            return isinstance(mod, str) and mod.split(".")[0] == "zenbuild"
        return all(self._covered(name, g) for name in roots)

    def _covered(self, name: str, g: Dict[str, Any]) -> bool:
        """Whether state set on ``name`` (``name.attr = ...``, ``name[k] = ...``) is a project
        object's that a step reading it sees by value anyway: a project module (its constants),
        class (its live attributes), function, or data the module made itself (a dict, list,
        set, number, string, or an instance of a project class). A library's (``os.environ``,
        ``decimal.getcontext()``, ``pd.options`` bound to a name) is not."""
        if name not in g:
            return False
        v = g[name]
        if isinstance(v, types.ModuleType):
            return self.module_is_project(v)
        if isinstance(v, (type, types.FunctionType)):
            return self._is_project(v)
        origin = self._imports_of(g).get(name)
        if origin is not None:
            src = sys.modules.get(origin[0])
            if src is None or not self.module_is_project(src):
                return False  # from matplotlib import rcParams
        return type(v) in _DATA or self._is_project(type(v))

    def _effect_import(self, mod: types.ModuleType, chain: List[str], refs: List[Any]) -> None:
        """The statements of a project module ``mod`` imports for its effect (``import
        seeding``): found in sys.modules (it was imported when ``mod`` was), never imported."""
        package = getattr(mod, "__package__", None) or ""
        level = int(chain[1])
        if level and not package:
            return
        target = absolute_module(chain[2], level, package)
        got = sys.modules.get(f"{target}.{chain[3]}") if chain[3] else None
        if not isinstance(got, types.ModuleType):
            got = sys.modules.get(target)
        if isinstance(got, types.ModuleType) and got is not mod and self.module_is_project(got):
            self._statements_ref(got, refs)

    def _env_digest(self, name: str, value: Optional[str]) -> str:
        """A variable's value as a key item: a hidden one (a secret-looking name or value) as
        a digest keyed by the store's key, as the run records keep them."""
        from zenbuild.trace import is_hidden, keyed_digest, secret_key

        if value is None:
            return digest_bytes(b"env unset")
        if is_hidden(name, value):
            if self._secret_key is None:
                self._secret_key = (secret_key(self.store_dir) if self.store_dir
                                    else os.urandom(32))
            return keyed_digest(self._secret_key, value)
        return digest_bytes(b"env\0" + value.encode("utf-8", "surrogatepass"))


def _main_of(g: Dict[str, Any]) -> types.ModuleType:
    mod = sys.modules.get(g.get("__name__") or "")
    return mod if mod is not None and vars(mod) is g else types.ModuleType("?")
