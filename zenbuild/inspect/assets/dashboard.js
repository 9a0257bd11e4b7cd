/* zenbuild dashboard: the run list, and per run the DAG (Cytoscape.js + dagre layout), each
   step's status (a word and a colour), duration and reasons, and the run's log. */
(function () {
  "use strict";

  var styles = {};
  var selected = null;
  var lastRunIds = "";
  window.zbCy = null;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function when(t) {
    if (!t) return "-";
    var d = new Date(t * 1000);
    function p(n) { return String(n).padStart(2, "0"); }
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  function dur(s) { return s === null || s === undefined ? "-" : s.toFixed(3) + "s"; }

  function badge(status) {
    var cls = status.replace(/ /g, "-");
    var b = el("span", { "class": "badge " + cls, text: status, "data-status": status });
    var st = styles[status];
    if (st) {
      b.style.background = st.fill;
      b.style.borderColor = st.stroke;
      b.style.color = st.text;
      b.style.borderStyle = st.border === "double" ? "double" : st.border;
      if (st.border === "double") b.style.borderWidth = "3px";
    }
    return b;
  }

  function getJSON(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || r.statusText);
        return body;
      });
    });
  }

  function loadRuns() {
    return getJSON("/api/runs?limit=200").then(function (data) {
      document.getElementById("root").textContent = data.root;
      document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
      var ids = data.runs.map(function (r) { return r.id + r.status; }).join(",");
      if (ids === lastRunIds) return data.runs;
      lastRunIds = ids;
      var tbody = document.querySelector("#runs tbody");
      tbody.textContent = "";
      document.getElementById("no-runs").hidden = data.runs.length > 0;
      data.runs.forEach(function (r) {
        var tr = el("tr", { "data-run-id": r.id, tabindex: "0" }, [
          el("td", { "class": "mono", text: r.id }),
          el("td", { text: r.pipeline }),
          el("td", { text: when(r.started).slice(5), title: when(r.started) }),
          el("td", { text: r.duration_s === null ? "-" : r.duration_s.toFixed(2) + "s" }),
          el("td", { text: r.executed + " / " + r.cached + " / " + r.failed }),
          el("td", {}, [badge(r.status)])
        ]);
        if (r.id === selected) tr.classList.add("selected");
        tr.addEventListener("click", function () { location.hash = "run=" + r.id; });
        tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter") location.hash = "run=" + r.id; });
        tbody.appendChild(tr);
      });
      return data.runs;
    });
  }

  function showLegend() {
    var legend = document.getElementById("legend");
    legend.textContent = "";
    ["executed", "cached", "failed", "skipped", "not run"].forEach(function (s) {
      legend.appendChild(badge(s));
    });
  }

  function selectStep(name) {
    document.querySelectorAll("#steps tbody tr").forEach(function (tr) {
      tr.classList.toggle("selected", tr.getAttribute("data-step") === name);
    });
  }

  function drawGraph(graph) {
    var elements = [];
    graph.nodes.forEach(function (n) {
      var st = styles[n.status] || styles["not run"];
      var line2 = n.status + (n.duration_s !== null && (n.status === "executed" || n.status === "failed") ?
        " \u00B7 " + n.duration_s.toFixed(3) + "s" : "");
      elements.push({ group: "nodes", data: {
        id: n.id, status: n.status, label: n.id + "\n" + line2,
        fill: st.fill, stroke: st.stroke, text: st.text, border: st.border,
        borderWidth: st.border === "double" ? 5 : 2
      } });
    });
    graph.edges.forEach(function (e) {
      elements.push({ group: "edges", data: { id: e.from + "->" + e.to, source: e.from, target: e.to, kind: e.kind } });
    });
    if (window.zbCy) window.zbCy.destroy();
    var cy = cytoscape({
      container: document.getElementById("graph"),
      elements: elements,
      maxZoom: 1.4,
      style: [
        { selector: "node", style: {
          "shape": "round-rectangle", "label": "data(label)", "text-wrap": "wrap",
          "text-valign": "center", "text-halign": "center", "font-size": 12,
          "width": "label", "height": "label", "padding": "10px",
          "background-color": "data(fill)", "border-color": "data(stroke)",
          "border-style": "data(border)", "border-width": "data(borderWidth)", "color": "data(text)"
        } },
        { selector: "node:selected", style: { "overlay-opacity": 0.12, "overlay-color": "#1f5fbf" } },
        { selector: "edge", style: {
          "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 1.5,
          "line-color": "#8a94a3", "target-arrow-color": "#8a94a3"
        } },
        { selector: "edge[kind = 'file']", style: { "line-style": "dashed" } }
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 25, rankSep: 60, padding: 15 }
    });
    cy.on("tap", "node", function (ev) { selectStep(ev.target.id()); });
    window.zbCy = cy;
  }

  function showRun(id) {
    selected = id;
    document.querySelectorAll("#runs tbody tr").forEach(function (tr) {
      tr.classList.toggle("selected", tr.getAttribute("data-run-id") === id);
    });
    document.body.removeAttribute("data-run-loaded");
    return getJSON("/api/runs/" + encodeURIComponent(id)).then(function (run) {
      styles = run.graph.styles || styles;
      document.getElementById("run-title").textContent = "Run " + run.id + " \u2014 " + run.pipeline;
      var summary = document.getElementById("run-summary");
      summary.textContent = "started " + when(run.started) + ", took " + dur(run.duration_s) + "; " +
        run.executed + " executed, " + run.cached + " cached, " + run.failed + " failed, " +
        run.skipped + " skipped \u2014 ";
      summary.appendChild(badge(run.status));
      var note = document.getElementById("graph-note");
      note.hidden = !run.graph_note;
      note.textContent = run.graph_note || "";
      showLegend();
      drawGraph(run.graph);
      var tbody = document.querySelector("#steps tbody");
      tbody.textContent = "";
      run.graph.nodes.forEach(function (n) {
        var reasons = el("ul", { "class": "reasons" }, n.reasons.map(function (r) { return el("li", { text: r }); }));
        var cell = el("td", {}, [reasons]);
        if (n.error) cell.appendChild(el("div", { "class": "error mono", text: n.error.trim().split("\n").slice(-1)[0] }));
        var tr = el("tr", { "data-step": n.id, "data-status": n.status }, [
          el("td", { "class": "mono", text: n.id }),
          el("td", {}, [badge(n.status)]),
          el("td", { text: n.status === "executed" || n.status === "failed" ? dur(n.duration_s) : "-" }),
          cell
        ]);
        tr.addEventListener("click", function () {
          selectStep(n.id);
          if (window.zbCy) { window.zbCy.elements().unselect(); window.zbCy.$id(n.id).select(); }
        });
        tbody.appendChild(tr);
      });
      document.getElementById("log").textContent = run.log || "(no log)";
      document.body.setAttribute("data-run-loaded", run.id);
    }).catch(function (err) {
      document.getElementById("run-title").textContent = "Cannot show run " + id;
      document.getElementById("run-summary").textContent = String(err.message || err);
    });
  }

  function route() {
    var m = /run=([^&]+)/.exec(location.hash);
    if (m) showRun(decodeURIComponent(m[1]));
  }

  window.addEventListener("hashchange", route);
  getJSON("/api/styles").then(function (s) { styles = s; }).then(loadRuns).then(function (runs) {
    if (/run=/.test(location.hash)) route();
    else if (runs.length) location.hash = "run=" + runs[0].id;
    document.body.setAttribute("data-ready", "1");
  }).catch(function (err) {
    document.getElementById("run-title").textContent = "Cannot load runs: " + err.message;
  });
  setInterval(function () { loadRuns().catch(function () {}); }, 5000);
})();
