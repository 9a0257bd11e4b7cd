"""`zenbuild graph`: a pipeline's DAG with each step's status in a run, as JSON, Mermaid or DOT.
The JSON form is what the dashboard draws."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from zenbuild import reasons as R
from zenbuild.graph import Graph

GRAPH_FORMAT = "zenbuild.graph/1"

# status -> (fill, border, text colour, border style). Every status also shows as a word in the
# label, so colour is never the only cue.
STYLES: Dict[str, Dict[str, str]] = {
    "executed": {"fill": "#cfe2ff", "stroke": "#1f5fbf", "text": "#0b2e66", "border": "solid"},
    "cached": {"fill": "#d1f0d6", "stroke": "#2e8540", "text": "#0f3d19", "border": "solid"},
    "failed": {"fill": "#f8d0d0", "stroke": "#c0262d", "text": "#5c0a0e", "border": "double"},
    "skipped": {"fill": "#e9e9e9", "stroke": "#7a7a7a", "text": "#333333", "border": "dashed"},
    "not run": {"fill": "#ffffff", "stroke": "#9a9a9a", "text": "#555555", "border": "dotted"},
    "running": {"fill": "#fff1c2", "stroke": "#a67c00", "text": "#4d3900", "border": "dashed"},
}


def style(status: str) -> Dict[str, str]:
    return STYLES.get(status, STYLES["not run"])


def label(node: Dict[str, Any]) -> str:
    text = f"{node['id']}: {node['status']}"
    if node.get("expired"):
        text += " (expired)"
    if node.get("forced"):
        text += " (forced)"
    if node["status"] in ("executed", "failed") and node.get("duration_s") is not None:
        text += f" {node['duration_s']:.3f}s"
    return text


def graph_data(graph: Optional[Graph], run: Optional[Dict[str, Any]], pipeline: str = "") -> Dict[str, Any]:
    """Nodes and edges of ``graph`` with the statuses of ``run`` (a history.find_run dict).
    Without a graph (the pipeline cannot be loaded any more) the run's steps stand alone."""
    by_step = {s["step"]: s for s in (run or {}).get("steps", [])}
    nodes: List[Dict[str, Any]] = []
    edges: List[Dict[str, str]] = []
    order = list(graph.order) if graph is not None else []
    order += [s for s in by_step if s not in order]
    for name in order:
        rec = by_step.get(name)
        node = graph.nodes.get(name) if graph is not None else None
        status = rec["status"] if rec else "not run"
        kinds = {x.get("kind") for x in rec.get("reason_records") or []} if rec else set()
        nodes.append({
            "id": name,
            "function": node.step.name if node is not None else name,
            "status": status,
            "duration_s": round(rec["duration"], 6) if rec else None,
            "reasons": rec["reasons"] if rec else [],
            "error": rec["error"] if rec else None,
            "no_cache": bool(node.step.no_cache) if node is not None else False,
            # executed although cached: its result had expired, or run --rerun named it
            "expired": R.EXPIRED in kinds,
            "forced": R.FORCED_RERUN in kinds,
            "in_pipeline": node is not None,
        })
        nodes[-1]["label"] = label(nodes[-1])
        if node is not None:
            for d in node.deps:
                edges.append({"from": d, "to": name,
                              "kind": "data" if d in node.upstream else "file"})
    return {
        "format": GRAPH_FORMAT,
        "pipeline": graph.pipeline if graph is not None else pipeline,
        "run_id": run["id"] if run else None,
        "run_status": run["status"] if run else None,
        "nodes": nodes,
        "edges": edges,
        "styles": STYLES,
    }


def to_json(data: Dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def _mid(name: str) -> str:
    return "s_" + name  # step names are identifiers; the prefix avoids Mermaid keywords (end)


def to_mermaid(data: Dict[str, Any]) -> str:
    run = f"run {data['run_id']} ({data['run_status']})" if data["run_id"] else "never run"
    lines = ["flowchart LR", f"    %% zenbuild pipeline {data['pipeline']}, {run}"]
    used = []
    for n in data["nodes"]:
        cls = n["status"].replace(" ", "_")
        used.append(n["status"])
        text = n["label"].replace('"', "#quot;")
        lines.append(f'    {_mid(n["id"])}["{text}"]:::{cls}')
    for e in data["edges"]:
        arrow = "-->" if e["kind"] == "data" else "-.->"
        lines.append(f"    {_mid(e['from'])} {arrow} {_mid(e['to'])}")
    for status in dict.fromkeys(used):
        st = style(status)
        dash = {"dashed": ",stroke-dasharray:6 3", "dotted": ",stroke-dasharray:2 2"}.get(st["border"], "")
        width = "3px" if st["border"] == "double" else "1.5px"
        lines.append(f"    classDef {status.replace(' ', '_')} fill:{st['fill']},stroke:{st['stroke']},"
                     f"color:{st['text']},stroke-width:{width}{dash}")
    return "\n".join(lines)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(data: Dict[str, Any]) -> str:
    run = f"run {data['run_id']} ({data['run_status']})" if data["run_id"] else "never run"
    lines = [
        f"digraph {_q(data['pipeline'])} {{",
        f"    label={_q('pipeline ' + data['pipeline'] + ', ' + run)};",
        "    labelloc=t;",
        "    rankdir=LR;",
        '    node [shape=box, fontname="Helvetica"];',
    ]
    for n in data["nodes"]:
        st = style(n["status"])
        dot_style = {"dashed": "rounded,filled,dashed", "dotted": "rounded,filled,dotted"}.get(
            st["border"], "rounded,filled")
        tip = "; ".join(n["reasons"]) or n["status"]
        lines.append(
            f"    {_q(n['id'])} [label={_q(n['label'])}, class={_q(n['status'].replace(' ', '-'))}, "
            f"tooltip={_q(tip)}, style={_q(dot_style)}, fillcolor={_q(st['fill'])}, "
            f"color={_q(st['stroke'])}, fontcolor={_q(st['text'])}, "
            f"penwidth={3 if st['border'] == 'double' else 1.5}];"
        )
    for e in data["edges"]:
        extra = "" if e["kind"] == "data" else " [style=dashed]"
        lines.append(f"    {_q(e['from'])} -> {_q(e['to'])}{extra};")
    lines.append("}")
    return "\n".join(lines)


RENDERERS = {"json": to_json, "mermaid": to_mermaid, "dot": to_dot}


def pipeline_graph(config: Any, pipeline: Optional[str], run_id: Optional[str] = None) -> Dict[str, Any]:
    """The graph data of a configured pipeline, coloured by ``run_id`` or its latest run."""
    from zenbuild.inspect.history import find_run
    from zenbuild.project import open_pipeline
    from zenbuild.store.db import Store

    graph = open_pipeline(name=pipeline, config=config).graph
    run = None
    if os.path.isdir(config.store):
        store = Store(config.store, create=False)
        try:
            if run_id is not None:
                run = find_run(store, run_id)
            else:
                latest = store.list_runs(pipeline=graph.pipeline, limit=1)
                run = find_run(store, latest[0]["id"]) if latest else None
        finally:
            store.close()
    return graph_data(graph, run)
