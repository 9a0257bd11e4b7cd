"""The registered code that encoded a stored value (register_value_type's reducer, @value_type's
save and load), as the "types" section of its entry's discovered record: made when the value is
stored, checked before the entry is served (discovered.verify). Both sides ask the run's code
fingerprinter (its value_code, memoized per object for the run), so a value that used no
registered type costs nothing, and one that did costs one digest per class per run."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Iterable, List, Optional, Tuple

from zenbuild import imported
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.values import loaded_object


def encoder_record(fp: CodeFingerprinter, classes: Iterable[type]) -> List[List[Any]]:
    """[module, qualname, code digest] of each class whose registered code encoded a value
    (serialize.buffers.Encoded.types), sorted; classes with no project code in their
    registration (value_code None: a library's own reducer) are left out, as the static key
    leaves them out (their package version stands for them)."""
    out: List[List[Any]] = []
    for cls in classes:
        digest = fp.value_code(cls)
        if digest is not None:
            out.append([str(cls.__module__), str(cls.__qualname__), digest])
    out.sort()
    return out


def find_class(fp: CodeFingerprinter, module: str, qualname: str) -> Optional[type]:
    """The class ``module.qualname`` names, importing ``module`` first when it is one of the
    project's own and not loaded yet (the pipeline need not import the module that defines a
    type its steps return; loading the value would import it, as this does). No module
    outside the project is imported: a record from a remote cache names only what it names."""
    if (module not in sys.modules and fp.locator.top_is_project(module)
            and imported.imports_allowed()):  # (never for a record from an unsigned remote)
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - gone or broken: the class cannot be found
            return None
    obj = loaded_object(module, qualname)
    return obj if isinstance(obj, type) else None


class TypeDigests:
    """discovered.TypeDigest over a run's fingerprinter: (whether the class exists now, the
    code digest its registration has now). Holds the fingerprinter, not the scheduler."""

    def __init__(self, fp: CodeFingerprinter) -> None:
        self.fp = fp

    def __call__(self, module: str, qualname: str) -> Tuple[bool, Optional[str]]:
        cls = find_class(self.fp, module, qualname)
        if cls is None:
            return False, None
        return True, self.fp.value_code(cls)
