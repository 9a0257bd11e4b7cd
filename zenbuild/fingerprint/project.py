"""Which code is the project's own (fingerprinted as source) and which is a library (recorded by
identity and package version): files under the root, notebook cells, namespace packages, and
source folders outside the root that no installed distribution owns."""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any, Dict, List, Optional, Tuple

from zenbuild.paths import PACKAGE_DIR, SKIP_DIRS, interactive_file, library_dirs

# Label of code typed into an interactive session (a notebook cell, IPython): its source lives
# only in linecache, under a file name that does not exist.
CELL = "<notebook cell>"


class OutsideRootWarning(UserWarning):
    """Project code imported from outside the project root; it is fingerprinted as source."""


def _library_dirs() -> Tuple[str, ...]:
    """Folders whose code is the interpreter's, an installed distribution's or zenbuild's."""
    dirs = set(library_dirs())
    for p in (sys.prefix, sys.exec_prefix, sys.base_prefix + os.sep + "lib"):
        dirs.add(os.path.realpath(p))
    dirs.add(os.path.realpath(PACKAGE_DIR))  # zenbuild's own package is never project code
    return tuple(sorted(dirs))


class ProjectLocator:
    """Decides, per file and module, whether code is project source; memoized per process."""

    def __init__(self, root: str, store_dir: str = "", warn: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.warn = warn  # False: source outside the root is told without OutsideRootWarning
        self.store_dir = os.path.realpath(store_dir) if store_dir else ""
        self._files: Dict[str, Optional[str]] = {}
        self._libdirs = _library_dirs()
        self._warned: Dict[str, None] = {}
        self._acknowledged: Dict[str, None] = {}
        self._modules: Dict[int, Optional[str]] = {}  # file-less modules, by id (pinned)
        self._pins: List[types.ModuleType] = []
        self._versions: Dict[str, Optional[str]] = {}
        self._dists: Optional[Dict[str, List[str]]] = None

    # -- files -----------------------------------------------------------------------------
    def project_file(self, filename: Optional[str]) -> Optional[str]:
        """A label for a source file of the project's own (root-relative path; the real path
        of source outside the root; CELL for a notebook cell), else None."""
        if not filename:
            return None
        hit = self._files.get(filename, "")
        if hit != "":
            return hit
        label = self._classify(filename)
        self._files[filename] = label
        return label

    def _classify(self, filename: str) -> Optional[str]:
        if interactive_file(filename):
            return CELL
        if filename.startswith("<") or not filename.endswith(".py"):
            return None  # <string>, <frozen ...>: no file, no source
        real = os.path.realpath(filename)
        if self.store_dir and real.startswith(self.store_dir + os.sep):
            return None
        parts = real.split(os.sep)
        if real.startswith(self.root + os.sep):
            rel = os.path.relpath(real, self.root)
            if any(p in SKIP_DIRS for p in rel.split(os.sep)):
                return None
            return rel.replace(os.sep, "/")
        if any(p in SKIP_DIRS for p in parts) or any(
            real.startswith(d + os.sep) for d in self._libdirs
        ):
            return None
        if not os.path.exists(real):
            return None
        if self.warn:
            self._warn_outside(real)
        return real

    def acknowledge(self, filename: str) -> None:
        """The folder of a step's own file is where the pipeline lives: code imported from it
        is fingerprinted as source without a warning (only other outside folders are named)."""
        if filename not in self._acknowledged:
            self._acknowledged[filename] = None
            self._warned[_package_top(os.path.realpath(filename))] = None

    def _warn_outside(self, real: str) -> None:
        folder = _package_top(real)
        if folder in self._warned:
            return
        self._warned[folder] = None
        warnings.warn(
            f"zenbuild: project code is imported from {folder}, which is outside the project "
            f"root {self.root} and belongs to no installed package. Its modules are "
            "fingerprinted as source code, so an edit there reruns the steps that use it. Move "
            "it under the root, or install it as a package, to silence this warning.",
            OutsideRootWarning,
            stacklevel=4,
        )

    # -- modules and objects ----------------------------------------------------------------
    def module_file(self, mod: types.ModuleType) -> Optional[str]:
        """The project label of a module: its file's, or for a namespace package (no
        __file__) the first of its folders that is project source, or CELL for the
        interactive __main__."""
        f = getattr(mod, "__file__", None)
        if f:
            return self.project_file(f)
        hit = self._modules.get(id(mod), "")
        if hit != "":
            return hit
        label = self._module_label(mod)
        self._modules[id(mod)] = label
        self._pins.append(mod)
        return label

    def _module_label(self, mod: types.ModuleType) -> Optional[str]:
        if mod.__name__ == "__main__":
            return CELL if _interactive_main(mod) else None
        path = getattr(mod, "__path__", None)
        if path is not None:
            try:
                folders = list(path)
            except Exception:
                return None
            for folder in folders:
                label = self.project_file(os.path.join(folder, "__init__.py"))
                if label is None and os.path.isdir(folder):
                    real = os.path.realpath(folder)
                    if real.startswith(self.root + os.sep):
                        rel = os.path.relpath(real, self.root)
                        if not any(p in SKIP_DIRS for p in rel.split(os.sep)):
                            return rel.replace(os.sep, "/") + "/"
                elif label is not None:
                    return label
        return None

    def module_is_project(self, mod: types.ModuleType) -> bool:
        return self.module_file(mod) is not None

    def is_project_object(self, value: Any) -> bool:
        """A function (by its code's file) or class (by its module) of the project."""
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType):
            return self.project_file(code.co_filename) is not None
        mod = sys.modules.get(getattr(value, "__module__", None) or "")
        return mod is not None and self.module_is_project(mod)

    def top_is_project(self, name: str) -> bool:
        """Whether a not-yet-imported top-level module would be project code, asked of the
        import system's finders without executing anything."""
        top = name.split(".")[0]
        mod = sys.modules.get(top)
        if mod is not None:
            return self.module_is_project(mod)
        if not top or top in sys.stdlib_module_names:
            return False
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            return self.project_file(spec.origin) is not None
        for folder in spec.submodule_search_locations or []:
            real = os.path.realpath(folder)
            if real.startswith(self.root + os.sep):
                return True
        return False

    # -- third-party packages ---------------------------------------------------------------
    def package_of(self, module_name: str) -> Optional[Tuple[str, str]]:
        top = module_name.split(".")[0]
        if not top or top in sys.stdlib_module_names or top in ("builtins", "zenbuild", "__main__"):
            return None
        mod = sys.modules.get(top)
        if mod is not None and self.module_is_project(mod):
            return None
        if top not in self._versions:
            self._versions[top] = self._version(top)
        v = self._versions[top]
        return (top, v) if v is not None else None

    def _version(self, top: str) -> Optional[str]:
        from importlib import metadata

        try:
            return metadata.version(top)
        except Exception:
            pass
        if self._dists is None:
            try:
                self._dists = dict(metadata.packages_distributions())
            except Exception:
                self._dists = {}
        for dist in self._dists.get(top, []):
            try:
                return f"{dist} {metadata.version(dist)}"
            except Exception:
                continue
        mod = sys.modules.get(top)
        ver = getattr(mod, "__version__", None)
        return str(ver) if isinstance(ver, str) else "unknown"


def _package_top(real: str) -> str:
    """The folder above the top package holding ``real`` (its own folder for a plain module)."""
    folder = os.path.dirname(real)
    while os.path.exists(os.path.join(folder, "__init__.py")):
        folder = os.path.dirname(folder)
    return folder


def _interactive_main(mod: types.ModuleType) -> bool:
    """The __main__ of an interactive session (Jupyter kernel, IPython, the REPL) has no file:
    the code defined there is the user's own."""
    return not getattr(mod, "__file__", None) and getattr(mod, "__spec__", None) is None
