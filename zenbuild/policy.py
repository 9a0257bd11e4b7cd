"""Cache controls read before a step is judged: its Env() inputs (values, and digests for the
key: keyed for secrets, with the key kept in the store), its version probe's value, and the
names given to run --rerun / --step checked against the graph."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from zenbuild.binding import params_of
from zenbuild.digest import digest_bytes
from zenbuild.errors import ParamError, PipelineError
from zenbuild.graph import EnvRef, FileRef, Graph, InputRef, Node, OutputRef
from zenbuild.rebuild import PROBE_FAILED_VERSION

# the store's key lives in zenbuild.trace (the discovered record keys hidden values with it
# too); importable from here as before
from zenbuild.trace import KEY_FILE as KEY_FILE
from zenbuild.trace import KEY_SIZE as KEY_SIZE
from zenbuild.trace import is_hidden, keyed_digest, unrecorded
from zenbuild.trace import secret_key as secret_key


class EnvInputs:
    """Reads and digests the Env() inputs of steps; the store's key is read once, when a
    secret first needs it."""

    def __init__(self, store: str, environ: Optional[Dict[str, str]] = None) -> None:
        self.store = store
        self.environ = os.environ if environ is None else environ
        self._key: Optional[bytes] = None

    def key(self) -> bytes:
        if self._key is None:
            self._key = secret_key(self.store)
        return self._key

    def check_set(self, nodes: Iterable[Node]) -> None:
        """Raise ParamError (before anything runs) for the first Env() input of ``nodes`` that
        is neither set nor has a default: a run must not execute half a pipeline first."""
        for node in nodes:
            for ref in node.envs:
                if ref.default is None and self.environ.get(ref.name) is None:
                    self.read(node)  # raises, with the message

    def read(self, node: Node) -> Tuple[Dict[str, List[Any]], Dict[str, str]]:
        """(components: name -> [digest, display or None for a secret], values by name).
        Raises ParamError for a variable that is not set and has no default."""
        comps: Dict[str, List[Any]] = {}
        values: Dict[str, str] = {}
        for ref in node.envs:
            value = self.environ.get(ref.name)
            if value is None:
                value = ref.default
            if value is None:
                raise ParamError(
                    f"step {node.name} takes Env({ref.name!r}), but the environment variable "
                    f"{ref.name} is not set. Set it (export {ref.name}=...) before the run, or "
                    f"give the step a default: Env({ref.name!r}, default=\"...\").")
            values[ref.name] = value
            # OPENAI_API_KEY is a secret, said or not; so is a value that looks like a
            # credential (postgres://u:pw@host), whatever the variable is called
            if ref.secret or is_hidden(ref.name, value):
                comps[ref.name] = [keyed_digest(self.key(), value), None]
            else:
                data = value.encode("utf-8", "surrogatepass")
                shown = repr(value)
                comps[ref.name] = [digest_bytes(data),
                                   shown if len(shown) <= 60 else shown[:57] + "..."]
        return comps, values


def _plain(value: Any, root: str, envs: Dict[str, str]) -> Tuple[bool, Any]:
    """(usable, value) for a probe's keyword: markers resolved, upstream outputs unusable."""
    if isinstance(value, InputRef):
        return False, None
    if isinstance(value, (FileRef, OutputRef)):
        return True, Path(root, value.path)
    if isinstance(value, EnvRef):
        return True, envs.get(value.name)
    t = type(value)
    if t is list or t is tuple:
        items = [_plain(x, root, envs) for x in value]
        return all(ok for ok, _ in items), t(v for _, v in items)
    if t is dict:
        pairs = {k: _plain(x, root, envs) for k, x in value.items()}
        return all(ok for ok, _ in pairs.values()), {k: v for k, (_, v) in pairs.items()}
    return True, value


def probe_runs(node: Node) -> bool:
    """Whether ``node``'s version probe runs (a @no_cache step always executes: never probed)."""
    return node.step.version is not None and not node.step.no_cache


def probe_version(node: Node, root: str, envs: Dict[str, str]) -> Tuple[Any, Optional[str]]:
    """(what the step's version probe returned, None) or (PROBE_FAILED_VERSION, "Type: msg").
    The probe gets the step's params it names (all of them with **kwargs), except those that
    hold an upstream step's output, which is not known before the step runs."""
    probe = node.step.version
    assert probe is not None
    layout = params_of(probe)
    accepted = None if layout.varkw else set(layout.positional) | set(layout.kwonly)
    kwargs: Dict[str, Any] = {}
    for arg, value in node.args.items():
        if accepted is not None and arg not in accepted:
            continue
        ok, plain = _plain(value, root, envs)
        if ok:
            kwargs[arg] = plain
    timeout = node.step.probe_timeout
    try:
        value = _call_within(probe, kwargs, PROBE_TIMEOUT_S if timeout is None else timeout)
        json.dumps(value, sort_keys=True)
    except ProbeRaised as e:
        inner = e.args[0]
        said = f": {inner}" if str(inner) else ""
        return PROBE_FAILED_VERSION, f"it raised {type(inner).__name__}{said}"
    except ProbeTimeout as e:
        return PROBE_FAILED_VERSION, (
            f"it did not return within {e.args[0]:g} s (it goes on in the background; give it "
            "longer with @step(probe_timeout=...))")
    except Exception as e:  # the probe's own failure: the step executes, the run goes on
        if isinstance(e, TypeError) and "JSON serializable" in str(e):
            return PROBE_FAILED_VERSION, (f"it returned a value that is not JSON-able: {e}; "
                                          "return a string, number, list or dict")
        return PROBE_FAILED_VERSION, f"{type(e).__name__}: {e}"
    if value == PROBE_FAILED_VERSION:  # pragma: no cover - a probe mimicking the marker
        value = ["probe", value]
    return value, None


PROBE_TIMEOUT_S = 60.0  # how long a version probe may take, unless @step(probe_timeout=...)


class ProbeTimeout(Exception):
    """A version probe that did not return in time; args[0] is the timeout in seconds."""


class ProbeRaised(Exception):
    """A version probe raised a BaseException that is no Exception; args[0] is it."""


def _call_within(probe: Callable[..., Any], kwargs: Dict[str, Any], timeout: float) -> Any:
    """``probe(**kwargs)`` in a daemon thread (a probe stuck on a server that never answers must
    not hang the run, nor its exit); its exception re-raised here. Raises ProbeTimeout."""
    import threading

    got: List[Any] = []

    def call() -> None:
        try:  # unrecorded: a probe still running after its timeout reads for itself, not
            got.append((True, unrecorded(probe, **kwargs)))  # for the step running meanwhile
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            got.append((False, e))

    t = threading.Thread(target=call, name="zenbuild-probe-call", daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        raise ProbeTimeout(timeout)
    ok, value = got[0]
    if not ok:
        if isinstance(value, Exception):
            raise value
        # the probe's own SystemExit, KeyboardInterrupt or GeneratorExit (it ran in its thread:
        # not the user's Ctrl-C, which reaches the main thread): a failure of the probe, which
        # must not end zenbuild as if it were zenbuild's own
        raise ProbeRaised(value)
    return value


def probe_versions(nodes: List[Node], root: str,
                   envs_of: Dict[str, Dict[str, str]]) -> Dict[str, Tuple[Any, Optional[str]]]:
    """probe_version of every node in ``nodes`` at once, in threads (probes wait on a server
    or a database: one run's probes take as long as the slowest, not their sum). ``envs_of``:
    each node's Env() values (a node missing from it is left to its own visit)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [n for n in nodes if n.name in envs_of]
    with ThreadPoolExecutor(max_workers=min(8, len(todo)) or 1,
                            thread_name_prefix="zenbuild-probe") as pool:
        got = list(pool.map(lambda n: probe_version(n, root, envs_of[n.name]), todo))
    return {n.name: v for n, v in zip(todo, got)}


def named_steps(graph: Graph, names: Iterable[str], option: str) -> Set[str]:
    """The graph nodes ``names`` stand for (a call name, or a step function's name: all its
    calls). ``option`` words the error: "--rerun" (the command line) or "rerun" (a keyword of
    the Python API's .run()). Raises PipelineError for a name that is neither."""
    out: Set[str] = set()
    for name in names:
        hits = _hits(graph, name)
        if not hits:
            raise PipelineError(
                f"{_given(option, [name])}: pipeline {graph.pipeline} has no step named {name!r}. "
                f"Its steps are: {', '.join(graph.order)}. A step called twice is named NAME_2 "
                "for its second call.")
        out.update(hits)
    return out


def check_rerun_selected(graph: Graph, rerun: Iterable[str], targets: Sequence[str],
                         options: Tuple[str, str] = ("--rerun", "--step")) -> None:
    """A step to rerun must be among the steps the run runs (the ``targets`` chosen and what
    they need); else it would be quietly ignored. ``options`` names the two options as the
    user wrote them ("--rerun", "--step", or the API's "rerun", "steps"). Raises
    PipelineError."""
    rerun_opt, step_opt = options
    selected = graph.select(named_steps(graph, targets, step_opt))
    for name in rerun:
        hits = _hits(graph, name)
        if hits and not any(h in selected for h in hits):
            chosen = ", ".join(n for n in graph.order if n in selected)
            how = (f"add {step_opt} {name}" if step_opt.startswith("--")
                   else f"add {name!r} to {step_opt}=")
            raise PipelineError(
                f"{_given(rerun_opt, [name])}: step {name} does not run in this run: "
                f"{_given(step_opt, list(targets))} selects only {chosen} (the chosen steps and "
                f"what they need). To rerun it, {how}, or drop it from {rerun_opt}.")


def check_api_choices(graph: Graph, targets: Any, steps: Any, rerun: Any) -> None:
    """The Python API's ``.run(steps=..., rerun=...)`` (one name or a list of them): names
    checked against the graph, errors worded with the keywords, not the CLI's options.
    Raises PipelineError."""
    chosen = _as_names(targets, "targets") + _as_names(steps, "steps")
    again = _as_names(rerun, "rerun")
    named_steps(graph, chosen, "steps")
    named_steps(graph, again, "rerun")
    if chosen and again:
        check_rerun_selected(graph, again, chosen, ("rerun", "steps"))


def _as_names(given: Any, keyword: str) -> List[str]:
    if given is None:
        return []
    if isinstance(given, str):
        return [given]
    if isinstance(given, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in given):
        return list(given)
    raise PipelineError(f"run({keyword}={given!r}): expected a step name or a list of step "
                        f"names, like {keyword}=['load']")


def _hits(graph: Graph, name: str) -> List[str]:
    return [n for n in graph.order if n == name or graph.nodes[n].step.name == name]


def _given(option: str, names: List[str]) -> str:
    """How the user gave ``names``: "--step a --step b" on the command line, "steps=['a',
    'b']" in the Python API."""
    if option.startswith("--"):
        return " ".join(f"{option} {n}" for n in names)
    return f"{option}={names!r}"
