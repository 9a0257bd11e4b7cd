"""The action cache (fingerprint -> value digest, output digests, components) and step state
(the latest entry of each step of a pipeline)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from zenbuild.digest import digest_bytes, is_digest
from zenbuild.store.database import BAD_TEXT, Database

# A served entry's last_used is rewritten only when older than this (like relatime for atimes):
# a no-op run of a big pipeline then writes nothing to the action cache, and `cache gc`, which
# ranks entries by last use, sees ages to within an hour.
TOUCH_EVERY_S = 3600.0
# Entries kept per static key besides the latest, for steps whose discovered inputs differ.
ALTERNATES_KEPT = 8
# What a damaged ``discovered`` column (not JSON, not an object) reads as: a record (format 1 of
# discovered.py) saying the step read a file that is not there, so the entry is never served,
# its step executes again and its row is replaced.
DAMAGED_RECORD: Dict[str, Any] = {"format": 1, "files": {"<damaged store row>": ["0", "0"]}}


class ActionEntry:
    """One action-cache entry: fingerprint -> value digest, output digests and components.
    ``components`` is decoded from JSON only when asked for (explain, a changed step)."""

    def __init__(
        self,
        fingerprint: str,
        pipeline: str,
        step: str,
        value_digest: str,
        outputs: Dict[str, Dict[str, Any]],
        components: Any,
        created: float = 0.0,
        last_used: float = 0.0,
        duration: float = 0.0,
        loader: Optional[Callable[[str], str]] = None,
        discovered: Any = None,
    ) -> None:
        self.fingerprint = fingerprint
        self.pipeline = pipeline
        self.step = step
        self.value_digest = value_digest
        self.outputs = outputs
        self._components = components  # a dict, its JSON text, or None: ask loader
        self._loader = loader
        self.created = created
        self.last_used = last_used
        self.duration = duration
        self.value_inline = False  # step_states(): the value blob is in the blobs table
        self._discovered = discovered  # a dict, its JSON text, or None: nothing to verify

    @property
    def discovered(self) -> Optional[Dict[str, Any]]:
        """What the step touched while it ran (discovered.py), verified before the entry is
        served; None when there is nothing to verify. Decoded on first use."""
        d = self._discovered
        if isinstance(d, str):
            d = self._discovered = _json_dict(d, DAMAGED_RECORD) if d else None
        return d  # type: ignore[no-any-return]

    @property
    def components(self) -> Dict[str, Any]:
        c = self._components
        if c is None and self._loader is not None:
            c = self._loader(self.fingerprint)
        if isinstance(c, str):
            c = _json_dict(c, {})  # a damaged row: nothing known of what made it
        elif not isinstance(c, dict):
            c = {}
        self._components = c
        return c

    @components.setter
    def components(self, value: Dict[str, Any]) -> None:
        self._components = value

    def __repr__(self) -> str:
        return f"ActionEntry({self.step!r}, {self.fingerprint!r})"


def _json_dict(text: str, default: Dict[str, Any]) -> Dict[str, Any]:
    try:
        d = json.loads(text)
    except ValueError:
        return default
    return d if isinstance(d, dict) else default


_NUM = {int, float}
_OPT_TEXT = {str, type(None)}


def _text(x: Any) -> bool:
    return type(x) is str and BAD_TEXT not in x




OUTPUT_KINDS = ("file", "dir", "link")  # what an output record may be (outputs.capture)


def _outputs(x: Any) -> Optional[Dict[str, Dict[str, Any]]]:
    """An entry's outputs column decoded, or None when it is damaged."""
    if x == "{}":
        return {}
    if not _text(x):
        return None
    d: Dict[str, Any] = _json_dict(x, {"": None}) if x else {"": None}
    for rel, rec in d.items():
        if not (rel and isinstance(rec, dict) and rec.get("kind") in OUTPUT_KINDS
                and is_digest(rec.get("digest"))):
            return None
    return d


def sound(row: Tuple[Any, ...]) -> Optional[Dict[str, Dict[str, Any]]]:
    """The outputs of an actions row (columns as ACTION_COLS) when the row is sound, else None:
    a row with text that is not UTF-8, a column of the wrong type or outputs that are not an
    object of output records is damaged. A damaged row is a miss: its step executes again and
    the row is replaced. Components and discovered are checked when decoded (ActionEntry)."""
    if not (_text(row[0]) and _text(row[1]) and _text(row[2]) and is_digest(row[3])):
        return None
    for n in row[6:9]:
        if type(n) is not float and type(n) is not int:
            return None
    if not (row[5] is None or _text(row[5])) or not (row[9] is None or _text(row[9])):
        return None
    return _outputs(row[4])


def _entry(row: Tuple[Any, ...]) -> Optional[ActionEntry]:
    outputs = sound(row)
    if outputs is None:
        return None
    return ActionEntry(
        fingerprint=row[0],
        pipeline=row[1],
        step=row[2],
        value_digest=row[3],
        outputs=outputs,
        components=row[5],
        created=row[6],
        last_used=row[7],
        duration=row[8],
        discovered=row[9],
    )


_ENCODER = json.JSONEncoder(sort_keys=True)  # what json.dumps(x, sort_keys=True) uses


class _Encoder:
    """``json.dumps(x, sort_keys=True)`` through one C encoder made once: JSONEncoder.encode
    makes a new one at every call, ~9K of the ~25K instructions an entry's small outputs
    record cost. Its markers dict (the circular-reference check) is empty again after every
    encoding that succeeds; after one that raised, a new encoder is made. One per ActionCache
    (whose connection is used by one thread)."""

    def __init__(self) -> None:
        import json.encoder

        c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # None without _json
        encode_basestring_ascii = json.encoder.encode_basestring_ascii
        self._make: Any = None
        if c_make_encoder is not None:  # pragma: no branch - CPython has _json
            self._make = lambda: c_make_encoder(
                {}, _ENCODER.default, encode_basestring_ascii, None, _ENCODER.key_separator,
                _ENCODER.item_separator, True, _ENCODER.skipkeys, _ENCODER.allow_nan)
        self._c: Any = self._make() if self._make is not None else None

    def __call__(self, x: Any) -> str:
        c = self._c
        if c is None or type(x) is str:  # pragma: no cover - no _json
            return _ENCODER.encode(x)
        try:
            return "".join(c(x, 0))
        except BaseException:
            self._c = self._make()
            raise

_SHARED_SECTIONS = frozenset({"code", "code_meta", "packages"})
# section -> (the placeholder string _components_json encodes in its place, that string's JSON)
_HOLES = {k: (f"\0zenbuild-section-{k}\0", _ENCODER.encode(f"\0zenbuild-section-{k}\0"))
          for k in _SHARED_SECTIONS}

ACTION_COLS = ("fingerprint, pipeline, step, value_digest, outputs, components, created, "
                "last_used, duration, discovered")


class ActionCache:
    """The ``actions`` and ``step_state`` tables."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.db = database.conn
        # id -> (a components section, its length, its JSON): see _components_json
        self._shared: Dict[int, Tuple[Any, int, str]] = {}
        self._last: Dict[str, Tuple[Any, int, str]] = {}  # section -> the last one encoded
        self._encode = _Encoder()

    def step_states(self, pipeline: str) -> Dict[str, ActionEntry]:
        """The latest entry of every step of ``pipeline``, in one query. Their components are
        read only if asked for (a step that changed); ``value_inline`` says whether the value
        blob is in the database (else it may be a file)."""
        cur = self.db.execute(
            "SELECT a.fingerprint, a.pipeline, a.step, a.value_digest, a.outputs, NULL, "
            "a.created, a.last_used, a.duration, a.discovered, s.step, b.digest IS NOT NULL "
            "FROM step_state s JOIN actions a ON a.fingerprint = s.fingerprint "
            "LEFT JOIN blobs b ON b.digest = a.value_digest WHERE s.pipeline = ?",
            (pipeline,),
        )
        rows = cur.fetchall()
        check = sound if getattr(cur, "lenient", False) else None  # text with bad bytes
        out: Dict[str, ActionEntry] = {}
        load, num, opt, digest_ok = self._components_of, _NUM, _OPT_TEXT, is_digest
        for r in rows:
            # a damaged row (see sound(); the checks a row's use needs, inline for a no-op of
            # thousands of steps) is left out: the step has no latest entry, and executes
            if (type(r[0]) is not str or type(r[2]) is not str or not digest_ok(r[3])
                    or type(r[10]) is not str
                    or type(r[6]) not in num or type(r[7]) not in num or type(r[8]) not in num
                    or type(r[9]) not in opt):
                continue
            outputs = {} if r[4] == "{}" else _outputs(r[4])
            if outputs is None or (check is not None and (check(r) is None or not _text(r[10]))):
                continue
            e = ActionEntry(r[0], r[1], r[2], r[3], outputs, None, r[6], r[7], r[8], load, r[9])
            e.value_inline = bool(r[11])
            out[r[10]] = e
        return out

    def _components_of(self, fingerprint: str) -> str:
        row = self.db.execute(
            "SELECT components FROM actions WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row and _text(row[0]) else "{}"

    def get(self, fingerprint: str) -> Optional[ActionEntry]:
        row = self.db.execute(
            f"SELECT {ACTION_COLS} FROM actions WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return _entry(row) if row else None  # a damaged row is a miss, replaced by put()

    def put(self, e: ActionEntry) -> None:
        with self.database.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO actions ({ACTION_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    e.fingerprint,
                    e.pipeline,
                    e.step,
                    e.value_digest,
                    self._encode(e.outputs),  # json.dumps(x, sort_keys=True)
                    self._components_json(e.components),
                    e.created or time.time(),
                    e.last_used or time.time(),
                    e.duration,
                    None if e.discovered is None else self._encode(e.discovered),
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO step_state VALUES (?,?,?)", (e.pipeline, e.step, e.fingerprint)
            )

    def _components_json(self, c: Dict[str, Any]) -> str:
        """``json.dumps(c, sort_keys=True)``, the same text, with the sections every call of a
        step shares (its code, code_meta and packages: one dict per step function in a run)
        encoded once: they were most of the bytes encoded per entry. The rest is encoded in
        one call, a placeholder string standing for each shared section, then spliced (an
        encoder call a key cost more than the encoding itself). A placeholder holds a NUL,
        which JSON writes as \\u0000: a text that shows one placeholder other than exactly
        once is encoded whole instead."""
        if type(c) is not dict or not all(type(k) is str for k in c):
            return json.dumps(c, sort_keys=True)
        shared, last = self._shared, self._last
        rest: Dict[str, Any] = {}
        texts: List[Tuple[str, str]] = []  # (a placeholder's JSON, the section's JSON)
        for k, v in c.items():
            if k in _SHARED_SECTIONS and type(v) is dict:
                got = last.get(k)  # the same step function as the last entry: no id() call
                if got is None or got[0] is not v or got[1] != len(v):
                    got = shared.get(id(v))  # (id() is an audit event: a hook call)
                    if got is None or got[0] is not v or got[1] != len(v):
                        if len(shared) >= 256:
                            shared.clear()
                        got = shared[id(v)] = (v, len(v), self._encode(v))
                    last[k] = got
                rest[k] = _HOLES[k][0]
                texts.append((_HOLES[k][1], got[2]))
            else:
                rest[k] = v
        text = self._encode(rest)
        if not texts:
            return text
        cuts: List[Tuple[int, int, str]] = []
        for hole, section in texts:
            at = text.find(hole)
            if at < 0 or text.find(hole, at + 1) >= 0:  # a value held a placeholder's text
                return json.dumps(c, sort_keys=True)
            cuts.append((at, at + len(hole), section))
        cuts.sort()
        parts: List[str] = []
        pos = 0
        for start, end, section in cuts:
            parts += (text[pos:start], section)
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    # -- alternates: other entries of one static key, told apart by what their step read ----
    # A step's static key does not cover what it touched while it ran (an undeclared read, an
    # env var, a plugin), so one key can have several valid entries: the latest is stored under
    # the fingerprint, earlier ones (with a discovered record) under "FINGERPRINT:TAG", TAG a
    # digest of their record; a reverted file or variable is then served, not executed again.

    def alternates(self, fingerprint: str) -> List[ActionEntry]:
        """The alternates of ``fingerprint``, the most recently used first."""
        rows = self.db.execute(
            f"SELECT {ACTION_COLS} FROM actions WHERE fingerprint > ? AND fingerprint < ? "
            "ORDER BY last_used DESC", (fingerprint + ":", fingerprint + ";")).fetchall()
        return [e for e in map(_entry, rows) if e is not None]

    def demote(self, fingerprint: str, unless: Optional[str] = None) -> None:
        """Keep the entry under ``fingerprint`` as an alternate (if it has a discovered record
        other than ``unless``, the JSON of the entry about to replace it); at most
        ALTERNATES_KEPT alternates are kept, the least recently used go."""
        row = self.db.execute(
            "SELECT discovered FROM actions WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None or not _text(row[0]) or not row[0] or row[0] == unless:
            return
        alt = f"{fingerprint}:{digest_bytes(row[0].encode())[:16]}"
        with self.database.transaction() as db:
            db.execute("UPDATE OR REPLACE actions SET fingerprint = ? WHERE fingerprint = ?",
                       (alt, fingerprint))
            db.execute(
                "DELETE FROM actions WHERE fingerprint IN (SELECT fingerprint FROM actions "
                "WHERE fingerprint > ? AND fingerprint < ? ORDER BY last_used DESC "
                "LIMIT -1 OFFSET ?)", (fingerprint + ":", fingerprint + ";", ALTERNATES_KEPT))

    def promote(self, alternate: str, fingerprint: str) -> None:
        """Make the alternate ``alternate`` (just served) the entry of ``fingerprint`` again."""
        with self.database.transaction() as db:
            self.demote(fingerprint)
            db.execute("UPDATE OR REPLACE actions SET fingerprint = ? WHERE fingerprint = ?",
                       (fingerprint, alternate))

    def set_step_states(self, pipeline: str, states: Dict[str, str]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO step_state VALUES (?,?,?)",
            [(pipeline, s, fp) for s, fp in states.items()],
        )

    def drop_step_states(self, pipeline: str, steps: Iterable[str]) -> None:
        """Forget the latest entries of ``steps`` of ``pipeline`` (calls the pipeline no
        longer makes; their entries stay in the action cache, served if the call returns)."""
        with self.database.transaction() as db:
            db.executemany("DELETE FROM step_state WHERE pipeline = ? AND step = ?",
                           [(pipeline, s) for s in steps])

    def outputs_of_others(self, pipeline: str) -> List[str]:
        """The Outputs the latest entries of every pipeline but ``pipeline`` recorded (one
        query; asked only when a pipeline lost a call)."""
        rows = self.db.execute(
            "SELECT a.outputs FROM step_state s JOIN actions a ON a.fingerprint = s.fingerprint "
            "WHERE s.pipeline != ?", (pipeline,)).fetchall()
        out: List[str] = []
        for (text,) in rows:
            d = _outputs(text) if _text(text) else None
            if d:
                out.extend(d)
        return out

    def touch(self, fingerprints: Iterable[str], when: float) -> None:
        """Mark entries used at ``when`` (for `cache gc`). Callers pass only entries whose
        last_used is older than TOUCH_EVERY_S, as relatime does for atimes."""
        self.db.executemany(
            "UPDATE actions SET last_used = ? WHERE fingerprint = ?", [(when, f) for f in fingerprints]
        )

    def delete(self, fingerprints: Iterable[str]) -> None:
        fps = list(fingerprints)
        with self.database.transaction() as db:
            db.executemany("DELETE FROM actions WHERE fingerprint = ?", [(f,) for f in fps])
            db.executemany("DELETE FROM step_state WHERE fingerprint = ?", [(f,) for f in fps])

    def recorded_at(self, path: str) -> List[Dict[str, Any]]:
        """The output records (outputs.capture's) that any entry keeps for the Output at
        ``path``, whichever step, pipeline or params made it (one scan of the table: asked
        only when what is at an Output is not what the step's latest entry recorded)."""
        key = json.dumps(path)
        pattern = "%" + (key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")) + ": {%"
        rows = self.db.execute(
            "SELECT outputs FROM actions WHERE outputs LIKE ? ESCAPE '\\'", (pattern,)).fetchall()
        out: List[Dict[str, Any]] = []
        for (text,) in rows:
            d = _outputs(text)
            rec = d.get(path) if d else None
            if rec is not None:
                out.append(rec)
        return out

    def using(self, digest: str) -> List[str]:
        """Fingerprints of the entries whose value or outputs refer to blob ``digest``."""
        rows = self.db.execute(
            "SELECT fingerprint FROM actions WHERE value_digest = ? OR outputs LIKE ?",
            (digest, f"%{digest}%"),
        ).fetchall()
        return [r[0] for r in rows if _text(r[0])]
