"use strict";
// The mcpgw console: polls the gateway's read-only JSON and draws it. Text only (textContent), never markup
// from the data: names and messages come from the config source.

const REFRESH_MS = 2000;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function describeError(error) {
  if (!error) return "";
  const where = [error.file, error.tool && "tool " + error.tool, error.path].filter(Boolean).join(" · ");
  return (where ? where + ": " : "") + (error.reason || "");
}

function formatTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function drawServers(state) {
  const body = document.getElementById("servers");
  const rows = Object.values(state.servers).sort((a, b) => (a.name || a.server_id).localeCompare(b.name || b.server_id));
  body.replaceChildren(...rows.map((s) => {
    const tr = row([
      el("td", s.name || "(unnamed)"),
      el("td", s.phase, "phase-" + s.phase),
      el("td", s.applied_version || "—"),
      el("td", s.desired_version || "—"),
      el("td", s.tools),
      el("td", describeError(s.last_error) || s.message || "", "error"),
      el("td", s.server_id, "id"),
    ]);
    tr.dataset.server = s.name || s.server_id;
    tr.dataset.phase = s.phase;
    return tr;
  }));
}

function drawEndpoints(state) {
  const box = document.getElementById("endpoints");
  box.replaceChildren(...Object.entries(state.endpoints).map(([path, tools]) => {
    const section = el("div");
    section.dataset.endpoint = path;
    section.appendChild(el("h3", path + " (" + tools.length + ")"));
    const list = el("ul", null, "tools");
    for (const tool of tools) list.appendChild(el("li", tool.name));
    section.appendChild(list);
    return section;
  }));
}

function drawClusters(state) {
  const box = document.getElementById("clusters");
  box.replaceChildren(...Object.entries(state.clusters).map(([name, cluster]) => {
    const section = el("div");
    section.dataset.cluster = name;
    const balancer = cluster.balancer || {};
    const heading = cluster.service + (balancer.strategy ? " · " + balancer.strategy : "") + (balancer.panic ? " · PANIC" : "");
    section.appendChild(el("h3", heading));
    const table = el("table");
    table.appendChild(row(["instance", "weight", "state", "healthy", "calls", "failures", "timeouts", "ejections",
                           "latency (ewma ms)", "health check"].map((h) => el("th", h))));
    const stats = new Map((balancer.instances || []).map((i) => [i.id, i]));
    for (const instance of cluster.instances) {
      const s = stats.get(instance.id) || {};
      table.appendChild(row([
        el("td", instance.url, "mono"), el("td", instance.weight), el("td", s.state || (instance.enabled ? "" : "disabled")),
        el("td", instance.healthy ? "yes" : "no"), el("td", s.calls ?? ""), el("td", s.failures ?? ""),
        el("td", s.timeouts ?? ""), el("td", s.ejections ?? ""), el("td", s.ewma_latency_ms ?? ""),
        el("td", s.health_check ?? ""),
      ]));
    }
    section.appendChild(table);
    return section;
  }));
}

function drawProblems(state) {
  const list = document.getElementById("source-problems");
  const problems = state.source_problems || [];
  list.replaceChildren(...(problems.length ? problems.map((p) => el("li", p.where + ": " + p.problem, "error"))
                                            : [el("li", "none", "muted")]));
}

function drawChanges(changes) {
  const body = document.getElementById("changes");
  body.replaceChildren(...changes.map((c) => row([
    el("td", formatTime(c.at)),
    el("td", c.version),
    el("td", c.servers.map((s) => (s.name || s.server_id) + " → " + s.phase + (s.version ? " " + s.version : "")
                                  + (s.error ? " (" + describeError(s.error) + ")" : "")).join("; ")),
    el("td", c.endpoints.join(", ")),
  ])));
}

async function fetchJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const [state, changes] = await Promise.all([fetchJson("/admin/state"), fetchJson("/admin/changes")]);
    const phases = {};
    for (const s of Object.values(state.servers)) phases[s.phase] = (phases[s.phase] || 0) + 1;
    const counts = Object.entries(phases).sort().map(([phase, n]) => n + " " + phase).join(", ");
    document.getElementById("summary").textContent = "state " + state.version
      + (state.ready ? "" : " (first sync not done)") + " · servers: " + (counts || "none");
    drawServers(state);
    drawEndpoints(state);
    drawClusters(state);
    drawProblems(state);
    drawChanges(changes.changes);
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    problem.hidden = true;
  } catch (error) {
    problem.textContent = "Cannot reach the gateway: " + error.message;
    problem.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", refresh);
