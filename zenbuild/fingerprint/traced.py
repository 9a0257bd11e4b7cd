"""The closure digest of a function the call trace saw run (reached dynamically: getattr,
import_module, globals()[name]): the live function found again by file and qualname, and the
digest of its code component as CodeFingerprinter computes a step's (its own code, the project
globals, constants and aliases it refers to, library identities and, when tracked, package
versions). So a traced call is checked by what its names point to, not by its def's text only.
Memoized per process (the fingerprinter memoizes per object; its source cache keeps a no-op
from parsing unchanged files)."""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Dict, Optional, Tuple

from zenbuild.digest import digest_bytes
from zenbuild.fingerprint.code import CodeFingerprinter


class ClosureDigests:
    """(file, qualname, firstlineno) -> closure digest, or None (no live function: a nested
    def, a notebook cell, a module that no longer imports)."""

    def __init__(self, fp: CodeFingerprinter, root: str) -> None:
        self.fp = fp
        self.root = os.path.abspath(root)
        self._memo: Dict[Tuple[str, str], Optional[str]] = {}
        self._by_file: Dict[str, types.ModuleType] = {}

    def __call__(self, file: str, qualname: str, firstlineno: int) -> Optional[str]:
        key = (file, qualname)
        if key in self._memo:
            return self._memo[key]
        got: Optional[str] = None
        try:
            fn = self._live(file, qualname)
            if fn is not None:
                info = self.fp.code(fn)
                text = "\n".join(f"{k}\0{v}" for k, v in sorted(info.items.items()))
                text += "\n" + "\n".join(f"{k}\0{v}" for k, v in sorted(info.packages.items()))
                got = digest_bytes(text.encode("utf-8", "surrogatepass"))
        except Exception:  # the function cannot be analyzed: the AST digest still checks it
            got = None
        self._memo[key] = got
        return got

    def _module(self, file: str) -> Optional[types.ModuleType]:
        if file.startswith("<") or not file.endswith(".py"):
            return None
        full = os.path.join(self.root, *file.split("/"))
        mod = self._by_file.get(full)
        if mod is not None:
            return mod
        for m in list(sys.modules.values()):
            f = getattr(m, "__file__", None)
            if isinstance(f, str) and isinstance(m, types.ModuleType):
                self._by_file.setdefault(os.path.abspath(f), m)
        mod = self._by_file.get(full)
        if mod is not None:
            return mod
        name = file[:-3].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if name in sys.modules or not self.fp.locator.top_is_project(name):
            return None
        import importlib

        try:  # imported as the step imported it (the fingerprinter imports project modules too)
            mod = importlib.import_module(name)
        except Exception:
            return None
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str) or os.path.abspath(f) != full:
            return None
        self._by_file[full] = mod
        return mod

    def _live(self, file: str, qualname: str) -> Any:
        obj: Any = self._module(file)
        if obj is None:
            return None
        for part in qualname.split("."):
            if part.startswith("<"):
                return None  # a nested def, lambda or comprehension: no name reaches it
            obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            elif isinstance(obj, property):
                obj = obj.fget
            if obj is None:
                return None
        return obj if isinstance(obj, (types.FunctionType, type)) or callable(obj) else None
