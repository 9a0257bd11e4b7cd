"""The DAG of step invocations and the traced markers (FileRef, InputRef, OutputRef, each with
its canonical encoding): nodes, edges, topological order, target selection; pure."""

from __future__ import annotations

import heapq
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.errors import PipelineError
from zenbuild.paths import inside as _inside
from zenbuild.paths import parents as _parents
from zenbuild.records import field, record


class FileRef:
    """A declared file or folder input: a project-relative posix path (and glob for folders).
    Immutable by convention; a plain slotted class because a large pipeline makes thousands
    (``item`` is its canonical encoding inside a fingerprinted param, made once here)."""

    __slots__ = ("path", "glob", "is_dir", "item")

    def __init__(self, path: str, glob: Optional[str] = None) -> None:
        self.path = path
        self.glob = glob  # None for a File, the pattern for a Dir
        self.is_dir = glob is not None
        p = path.encode("utf-8", "surrogatepass")
        g = glob.encode("utf-8", "surrogatepass") if glob else b""
        # _item(b"file\0" + p + b"\0" + g), in one formatting
        self.item = b"m%d:file\0%s\0%s" % (len(p) + len(g) + 6, p, g)

    def __eq__(self, other: Any) -> Any:
        if type(other) is not FileRef:
            return NotImplemented
        return self.path == other.path and self.glob == other.glob

    def __hash__(self) -> int:
        return hash((self.path, self.glob))

    def __repr__(self) -> str:
        return f"Dir({self.path!r}, glob={self.glob!r})" if self.is_dir else f"File({self.path!r})"


def _item(payload: bytes) -> bytes:
    """A marker's canonical encoding inside a fingerprinted param (serialize: tag m)."""
    return b"m%d:%s" % (len(payload), payload)


class OutputRef:
    """An Output inside a traced node's arguments (project-relative posix path)."""

    __slots__ = ("path", "item")

    def __init__(self, path: str) -> None:
        self.path = path
        self.item = _item(b"output\0" + path.encode("utf-8", "surrogatepass"))

    def __repr__(self) -> str:
        return f"Output({self.path!r})"


class InputRef:
    """A handle inside a traced node's arguments: upstream node name and item path."""

    __slots__ = ("node", "path", "item")

    def __init__(self, node: str, path: Tuple[Any, ...] = ()) -> None:
        self.node = node
        self.path = path
        self.item = _item(b"input\0" + node.encode("utf-8", "surrogatepass") + b"\0"
                          + repr(path).encode("utf-8", "surrogatepass"))

    def __repr__(self) -> str:
        return f"<output of {self.node}{''.join(f'[{p!r}]' for p in self.path)}>"

class EnvRef:
    """An Env("NAME") inside a traced node's arguments: the variable, its default (None: the
    variable must be set) and whether its value is secret (fingerprinted by a keyed digest,
    never shown). Its value is read when the step is fingerprinted and given to the step."""

    __slots__ = ("name", "default", "secret", "item")

    def __init__(self, name: str, default: Optional[str] = None, secret: bool = False) -> None:
        self.name = name
        self.default = default
        self.secret = secret
        self.item = _item(b"env\0" + name.encode("utf-8", "surrogatepass"))

    def __repr__(self) -> str:
        return f"Env({self.name!r}{', secret=True' if self.secret else ''})"


class StepDef:
    """What the engine knows of a step: its function, name and cache settings. ``dsl.Step``
    is the user-facing subclass; the engine (fingerprint, rebuild, scheduler) sees only this."""

    fn: Callable[..., Any]
    name: str
    enable_cache: Optional[bool]
    no_cache: bool
    # cache controls (dsl.step): arguments left out of the key, the version probe of an
    # external input (called with the step's plain params), the age after which a cached
    # result is executed again (seconds), how long the probe may take (None: PROBE_TIMEOUT_S)
    ignore: Tuple[str, ...] = ()
    version: Optional[Callable[..., Any]] = None
    expires_after: Optional[float] = None
    probe_timeout: Optional[float] = None

    @property
    def params(self) -> Any:  # binding.Params
        raise NotImplementedError


@record
class Node:
    """One invocation of a step inside a pipeline."""

    name: str
    step: StepDef
    index: int
    # Bound arguments: plain values, with markers (_InputRef, FileRef, OutputRef) at the leaves.
    args: Dict[str, Any]
    upstream: List[str] = field(default_factory=list)  # via handles, in first-use order
    files: List[FileRef] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)
    file_upstream: List[str] = field(default_factory=list)  # via File(path) == Output(path)
    arg_inputs: Dict[str, List[str]] = field(default_factory=dict)  # arg -> steps via handles
    # arg -> (step, item path) for each indexed handle (`train, test = split()`; out[0]): the
    # step is keyed by the digest of the element it reads, not of the whole value
    input_paths: Dict[str, List[Tuple[str, Tuple[Any, ...]]]] = field(default_factory=dict)
    envs: List[EnvRef] = field(default_factory=list)  # Env("NAME") arguments, in order

    @property
    def deps(self) -> List[str]:
        """Upstream steps, through handles and through files (computed once the graph has
        linked files to outputs; Graph.__init__ freezes it)."""
        cached: Optional[List[str]] = self.__dict__.get("_deps")
        if cached is not None:
            return cached
        seen: Dict[str, None] = dict.fromkeys(self.upstream)
        seen.update(dict.fromkeys(self.file_upstream))
        return list(seen)




class Graph:
    """Nodes in invocation order plus the edges between them, validated and ordered."""

    def __init__(self, pipeline: str, nodes: List[Node], entry_module: str = "") -> None:
        self.pipeline = pipeline
        # the module the pipeline function is defined in: its top-level statements (a seed set
        # there) ran before any step, so they join every step's key (fingerprint/toplevel.py)
        self.entry_module = entry_module
        self.nodes: Dict[str, Node] = {n.name: n for n in nodes}
        self._link_files()
        for node in self.nodes.values():
            node.__dict__["_deps"] = node.deps
        self.order: List[str] = self._toposort()
        # step -> the item paths its consumers read it by (`train, test = split()`), so each
        # element gets its own digest
        self.indexed: Dict[str, Set[Tuple[Any, ...]]] = {}
        for node in self.nodes.values():
            for pairs in node.input_paths.values():
                for up, path in pairs:
                    self.indexed.setdefault(up, set()).add(path)
        self.downstream: Dict[str, List[str]] = {n: [] for n in self.nodes}
        for n in self.order:
            for d in self.nodes[n].deps:
                self.downstream[d].append(n)

    def _link_files(self) -> None:
        producers: Dict[str, str] = {}
        for node in self.nodes.values():
            for out in node.outputs:
                if out in producers:
                    raise PipelineError(
                        f"steps {producers[out]} and {node.name} both declare Output {out!r}. "
                        "Each output file or folder must belong to exactly one step."
                    )
                producers[out] = node.name
        # by components ("/" as the lowest character): a folder, then what is inside it
        ordered = sorted(producers, key=lambda p: p.replace("/", "\0"))
        for a, b in zip(ordered, ordered[1:]):
            if _inside(b, a):
                raise PipelineError(
                    f"steps {producers[a]} and {producers[b]} declare overlapping outputs "
                    f"{a!r} and {b!r}. Each output file or folder must belong to exactly one step."
                )
        # A file can only be (inside) an output whose first path component it shares: most
        # inputs (source data) skip the walk up their parent folders.
        heads = {p.split("/", 1)[0] for p in producers}
        for node in self.nodes.values():
            for ref in node.files:
                if not ref.is_dir and ref.path.split("/", 1)[0] not in heads:
                    continue
                found = [producers[p] for p in _parents(ref.path) if p in producers]
                if ref.is_dir:
                    prefix = ref.path.rstrip("/") + "/"
                    found += [n for p, n in producers.items() if p.startswith(prefix) or ref.path == "."]
                for producer in found:
                    if producer == node.name:
                        raise PipelineError(
                            f"step {node.name} reads {ref.path!r}, which is its own Output. "
                            "A step cannot depend on what it writes."
                        )
                    if producer not in node.file_upstream:
                        node.file_upstream.append(producer)

    def _toposort(self) -> List[str]:
        """The nodes in dependency order, ties in invocation order. A node's handles name
        steps called before it, so unless a File input reaches a later step's Output, that
        order is the invocation order itself (Kahn's walk below gives the same: each node is
        ready once the ones before it are done, and is the lowest ready index)."""
        nodes = self.nodes
        last = -1
        for node in nodes.values():
            i = node.index
            if i <= last:
                break
            for d in node.deps:
                up = nodes.get(d)
                if up is None or up.index >= i:
                    break
            else:
                last = i
                continue
            break
        else:
            return list(nodes)
        index = {name: n.index for name, n in self.nodes.items()}
        indeg = {name: 0 for name in self.nodes}
        down: Dict[str, List[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for d in node.deps:
                if d not in self.nodes:
                    raise PipelineError(f"step {node.name} depends on unknown step {d}")
                indeg[node.name] += 1
                down[d].append(node.name)
        heap = [(index[n], n) for n, k in indeg.items() if k == 0]
        heapq.heapify(heap)
        order: List[str] = []
        while heap:
            _, n = heapq.heappop(heap)
            order.append(n)
            for m in down[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(heap, (index[m], m))
        if len(order) != len(self.nodes):
            raise PipelineError("the pipeline has a cycle: " + " -> ".join(self._find_cycle()))
        return order

    def _find_cycle(self) -> List[str]:
        state: Dict[str, int] = {}
        stack: List[str] = []

        def visit(n: str) -> Optional[List[str]]:
            state[n] = 1
            stack.append(n)
            for d in self.nodes[n].deps:
                if state.get(d) == 1:
                    return stack[stack.index(d) :] + [d]
                if d not in state:
                    found = visit(d)
                    if found:
                        return found
            stack.pop()
            state[n] = 2
            return None

        for n in self.nodes:
            if n not in state:
                found = visit(n)
                if found:
                    return list(reversed(found))
        return []  # pragma: no cover

    def select(self, targets: Iterable[str]) -> Set[str]:
        """The targets and everything they depend on."""
        want: Set[str] = set()
        stack = list(targets)
        for t in stack:
            if t not in self.nodes:
                raise PipelineError(f"no step named {t!r}; steps are: {', '.join(self.order)}")
        while stack:
            n = stack.pop()
            if n in want:
                continue
            want.add(n)
            stack.extend(self.nodes[n].deps)
        return want

    def __len__(self) -> int:
        return len(self.nodes)
