"""fingerprint.running.code_shape: the same source gives the same shape in any process. A -j
or Dask worker compares it with the client's to tell an edit made during the run; a set
literal's frozenset constant is ordered by the process's string hashes, and every Dask run of
a step holding one failed with 'the code ... in the worker differs'."""

from __future__ import annotations

import os
import subprocess
import sys

SRC = '''
def s(x):
    names = sorted({"alpha", "beta", "gamma", "delta", "epsilon"})
    return x in {"a", "b", "c", ("t", frozenset({"u", "v", "w"}))}, names
'''

SHOW = f'''
import hashlib, types
from zenbuild.fingerprint.running import code_shape
code = next(c for c in compile({SRC!r}, "m.py", "exec").co_consts if isinstance(c, types.CodeType))
print(hashlib.sha256(repr(code_shape(code)).encode()).hexdigest())
'''


def test_a_set_literal_has_the_same_shape_whatever_the_hash_seed():
    got = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True,
                             text=True, check=True)
        got.add(out.stdout.strip())
    assert len(got) == 1, got


def test_a_changed_set_literal_changes_the_shape():
    from zenbuild.fingerprint.running import code_shape

    def shape(src: str) -> object:
        return code_shape(compile(src, "m.py", "exec"))

    assert shape('y = x in {"a", "b", "c"}') == shape('y = x in {"c", "b", "a"}')  # one frozenset
    assert shape('y = x in {"a", "b", "c"}') != shape('y = x in {"a", "b", "d"}')
