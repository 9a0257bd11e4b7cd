"""The subclasses a step found through ``Base.__subclasses__()`` (trace/subclasses.py), as the
"subclasses" section of its entry's discovered record: each subclass's code digest, made when
the record is built, and the subclasses a class has now with their digests, when the entry is
checked (discovered.verify). A subclass counts as the static key counts a class it names (its
statement, its attributes as they are now, what they refer to: CodeFingerprinter.code), so an
edit of ``WEIGHT = 2`` in a plugin, or a plugin module imported that was not, reruns the step.
Both sides ask the run's fingerprinter (memoized per object for the run): a record without the
section costs nothing."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List, Optional

from zenbuild.digest import digest_bytes
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.encoders import find_class
from zenbuild.fingerprint.values import loaded_object


class SubclassDigests:
    """discovered.SubclassDigest over a run's fingerprinter: ``digest(module, qualname)`` of a
    project class (its module imported first when it is a project module not loaded yet, as
    the step that found it had it), and ``now(module, qualname)``: the named project
    subclasses that class has now, at any depth, or None when it cannot be found (a library
    class is only looked up among loaded modules: no library is imported for a record)."""

    def __init__(self, fp: CodeFingerprinter, root: str, store_dir: str = "") -> None:
        self.fp = fp
        self.root = os.path.abspath(root)
        self.store_dir = store_dir
        self._is_project: Optional[Callable[[Any], bool]] = None

    def digest(self, module: str, qualname: str) -> Optional[str]:
        cls = find_class(self.fp, module, qualname)
        if cls is None:
            return None
        try:
            info = self.fp.code(cls)
        except Exception:  # noqa: BLE001 - a class that cannot be analyzed: by name only
            return None
        text = "\n".join(f"{k}\0{v}" for k, v in sorted(info.items.items()))
        text += "\n" + "\n".join(f"{k}\0{v}" for k, v in sorted(info.packages.items()))
        return digest_bytes(text.encode("utf-8", "surrogatepass"))

    def now(self, module: str, qualname: str) -> Optional[List[List[str]]]:
        from zenbuild.trace import subclasses

        if module in sys.modules or not self.fp.locator.top_is_project(module):
            obj = loaded_object(module, qualname)
            cls = obj if isinstance(obj, type) else None
        else:
            cls = find_class(self.fp, module, qualname)
        if cls is None:
            return None
        return subclasses.descendants(cls, self._project())

    def _project(self) -> Callable[[Any], bool]:
        """The recorder's notion of a project class (the same root and exclusions), so a record
        and its check agree on which subclasses count."""
        if self._is_project is None:
            from zenbuild.trace import TraceOptions, _Recording, subclasses

            rec = _Recording(TraceOptions(self.root, self.store_dir), None)
            self._is_project = subclasses.project_class(rec.root, rec.excluded)
        return self._is_project
