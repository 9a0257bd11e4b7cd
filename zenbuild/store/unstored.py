"""STORE/unstored: the files at the Outputs of a step whose result zenbuild could not store
(a failed capture, a full disk, a step with Outputs that failed), so that the step's next run
overwrites them without a trash copy; and its pruning, which drops the lines that can never
match again (`zenbuild cache gc`, and a run whose appends made the file big).

Format: one JSON line per file, ``[project-relative path, stat key]`` (size, mtime_ns, inode,
ctime_ns); the last line for a path wins. A line matters while the file at its path has exactly
that stat (any write, rename or replacement changes it): a line whose file is gone or has been
rewritten since never matches again, and a path named twice keeps only its last line.

Appends and rewrites take an flock() of the file itself (lock.locked_file): a rewrite (temp file
in STORE/tmp, renamed over the file) never loses a line appended meanwhile, and an append never
goes to a file already replaced. Runs and `cache gc` also hold the workspace lock."""

from __future__ import annotations

import json
import os
import stat
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from zenbuild.digest import stat_key
from zenbuild.store.db import Store
from zenbuild.store.lock import locked_file

# A run that appends to a file bigger than this prunes it (``cache gc`` always does).
PRUNE_BYTES = 256 * 1024


class Unstored:
    """STORE/unstored for one store: read once (``known``), appended to by ``add``."""

    def __init__(self, store: Store) -> None:
        self.path = os.path.join(store.path, "unstored")
        self.tmp = store.tmp
        self._known: Optional[Dict[str, List[int]]] = None
        self.opened: Optional[Callable[[], object]] = None  # tests: see lock.locked_file

    def known(self) -> Dict[str, List[int]]:
        if self._known is None:
            try:
                with open(self.path, "rb") as f:
                    self._known = _parse(f.read())
            except OSError:
                self._known = {}
        return self._known

    def holds(self, rel: str, st: os.stat_result) -> bool:
        """Whether ``rel``, whose stat is ``st``, is what its step wrote, as add() saw it."""
        key = self.known().get(rel)
        return key is not None and tuple(key) == stat_key(st)

    def add(self, root: str, rels: Iterable[str]) -> None:
        """Note the files now at the Outputs ``rels`` (best effort: on a full disk even this
        small write may fail, and then they count as the user's, which is safe)."""
        from zenbuild.store.outputs import walk_files

        lines: List[str] = []
        known = self.known()
        for rel in rels:
            full = os.path.join(root, rel)
            if os.path.islink(full):
                continue  # never the step's to keep: a link at an Output is replaced
            names = [f"{rel}/{f}" for f in walk_files(full)] if os.path.isdir(full) else [rel]
            for name in names:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):  # a file, a
                    key = list(stat_key(st))  # fifo or socket the step made
                    known[name] = key
                    lines.append(json.dumps([name, key]) + "\n")
        if not lines:
            return
        big = False
        try:
            with locked_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                             self.opened) as fd:
                assert fd is not None  # O_CREAT
                data = "".join(lines).encode("utf-8", "surrogatepass")
                while data:
                    data = data[os.write(fd, data):]
                big = os.fstat(fd).st_size > PRUNE_BYTES
        except OSError:
            return
        if big:
            self.prune(root)

    def prune(self, root: str) -> Tuple[int, int]:
        """Rewrite the file with only the lines that can still match (the last line of each
        path whose file under ``root`` has that stat now), atomically; remove it when none
        can. Returns (lines kept, lines dropped). Best effort: a store that cannot be written
        keeps its file as it is (every line in it is still read right)."""
        try:
            with locked_file(self.path, os.O_RDWR, self.opened) as fd:
                if fd is None:
                    return 0, 0
                data = _read_all(fd)
                lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
                live = {rel: key for rel, key in _parse(data).items()
                        if _same_file(os.path.join(root, rel), key)}
                if len(live) == lines:
                    self._known = live
                    return len(live), 0
                if live:
                    self._replace(live)
                else:
                    os.unlink(self.path)
                self._known = live
                return len(live), lines - len(live)
        except OSError:
            return len(self.known()), 0

    def _replace(self, live: Dict[str, List[int]]) -> None:
        """Write ``live`` to a temp file in STORE/tmp (PID-named: a killed run's is swept
        with the other temp files) and rename it over the file (called with it locked)."""
        tmp = os.path.join(self.tmp, f"{os.getpid()}-unstored-{os.urandom(6).hex()}")
        text = "".join(json.dumps([rel, key]) + "\n" for rel, key in live.items())
        try:
            with open(tmp, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _read_all(fd: int) -> bytes:
    parts: List[bytes] = []
    pos = 0
    while True:
        chunk = os.pread(fd, 1 << 20, pos)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        pos += len(chunk)


def _parse(data: bytes) -> Dict[str, List[int]]:
    """path -> stat key, the last line of each path winning; a torn or damaged line (a killed
    run's last) is skipped."""
    out: Dict[str, List[int]] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rel, key = json.loads(line)
        except (ValueError, TypeError):
            continue
        if isinstance(rel, str) and isinstance(key, list):
            out.pop(rel, None)  # re-inserted last: the file keeps the order of last writes
            out[rel] = list(key)
    return out


def _same_file(full: str, key: List[int]) -> bool:
    try:
        st = os.lstat(full)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and list(stat_key(st)) == key
