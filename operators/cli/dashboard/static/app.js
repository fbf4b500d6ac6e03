// Sluice dashboard: a live list of Sluice objects and a page per Rollout. State comes from the
// server's Server-Sent Events (/api/events): a snapshot on connect, then each object as it changes.
"use strict";

const TOKEN = document.querySelector('meta[name="sluice-token"]').content;
const SVG = "http://www.w3.org/2000/svg";
// result: what became of the last button press, kept here since the page is redrawn at every change.
const state = { objects: new Map(), errors: {}, watchingSince: null, result: "" };

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function selected() {
  const match = location.hash.match(/^#rollout\/([^/]+)\/(.+)$/);
  return match ? `Rollout/${decodeURIComponent(match[1])}/${decodeURIComponent(match[2])}` : null;
}

// ---- the list ----------------------------------------------------------------------------------

function renderList() {
  const rows = document.getElementById("rows");
  const objects = [...state.objects.values()].sort((a, b) => a.id.localeCompare(b.id));
  rows.replaceChildren(...objects.map((o) => {
    const row = el("tr", { "data-id": o.id },
      el("td", { text: o.kind }), el("td", { text: o.namespace }), el("td", { text: o.name }),
      el("td", { class: `phase phase-${o.phase}`, text: o.phase + (o.stalled ? " (stalled)" : "") }),
      el("td", { class: "progress", text: o.progress }),
      el("td", { text: o.kind === "Rollout" ? `${o.weight}%` : "" }),
      el("td", { class: "muted", text: o.message }));
    if (o.kind === "Rollout") {
      row.classList.add("clickable");
      row.addEventListener("click", () => {
        location.hash = `rollout/${encodeURIComponent(o.namespace)}/${encodeURIComponent(o.name)}`;
      });
    }
    return row;
  }));
  document.getElementById("empty").hidden = objects.length > 0;
  const errors = Object.values(state.errors);
  document.getElementById("errors").replaceChildren(...errors.map((e) => el("div", { class: "error", text: e })));
}

// ---- one Rollout -------------------------------------------------------------------------------

function renderDetail() {
  const id = selected();
  const detail = document.getElementById("detail");
  document.getElementById("list").hidden = id !== null;
  detail.hidden = id === null;
  if (id === null) return;
  const r = state.objects.get(id);
  if (!r) {
    detail.replaceChildren(el("p", { text: `${id}: not found (yet).` }), el("a", { href: "#", text: "← all objects" }));
    return;
  }
  detail.replaceChildren(
    el("a", { href: "#", text: "← all objects" }),
    el("h2", { text: `Rollout ${r.namespace}/${r.name}` }),
    el("div", { class: "facts" },
      el("span", {}, "Phase: ", el("span", { class: `phase phase-${r.phase}`, "data-field": "phase", text: r.phase + (r.stalled ? " (stalled)" : "") })),
      el("span", { "data-field": "progress", text: r.progress || "no release yet" }),
      el("span", { "data-field": "weight", text: `canary ${r.weight}%` }),
      el("span", { text: `stable ${r.stableRevision || "-"}` }),
      r.canaryRevision ? el("span", { text: `canary ${r.canaryRevision}` }) : "",
      r.paused ? el("span", { class: "phase phase-Paused", text: "spec.paused" }) : ""),
    el("p", { "data-field": "message", text: r.message }),
    el("div", { class: "buttons" }, ...["promote", "abort", "retry", "pause", "resume"].map((action) =>
      el("button", { type: "button", "data-action": action, text: action, onclick: () => act(r, action) }))),
    el("div", { id: "result", class: "muted", text: state.result }),
    el("div", { class: "charts" }, weightChart(r), ...r.metrics.map(metricChart)),
    el("p", { class: "muted", text:
      `Weights: from the Rollout's status.history (its last ${r.history.length} decisions) and what this ` +
      `dashboard has seen since ${r.watchingSince}. Metric values: the checks seen since then.` }),
    historyTable(r.history));
}

function showResult(text) {
  state.result = text;
  const result = document.getElementById("result");
  if (result) result.textContent = text;
}

async function act(r, action) {
  showResult(`${action}…`);
  try {
    const response = await fetch(`/api/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}/${action}`,
      { method: "POST", headers: { "X-Sluice-Token": TOKEN } });
    const body = await response.json().catch(() => ({ message: response.statusText }));
    showResult(response.ok ? `sent ${action}` : `${action} failed: ${body.message}`);
  } catch (error) {
    showResult(`${action} failed: ${error}`);
  }
}

function historyTable(history) {
  return el("table", { class: "history" },
    el("thead", {}, el("tr", {}, el("th", { text: "Time" }), el("th", { text: "Action" }), el("th", { text: "Message" }))),
    el("tbody", {}, ...history.map((h) => el("tr", {},
      el("td", { text: h.time }), el("td", { text: h.action }), el("td", { text: h.message || "" })))));
}

// ---- charts: hand-drawn SVG, time on x ------------------------------------------------------------

const W = 360, H = 160, PAD = { left: 34, right: 8, top: 8, bottom: 18 };

function frame(title, from, to, low, high, format) {
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const x = (t) => PAD.left + ((t - from) / Math.max(to - from, 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - low) / Math.max(high - low, 1e-12)) * (H - PAD.top - PAD.bottom);
  svg.append(
    el("svg:line", { class: "axis", x1: PAD.left, y1: y(low), x2: W - PAD.right, y2: y(low) }),
    el("svg:line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y(low) }),
    el("svg:text", { class: "label", x: 2, y: y(high) + 8, text: format(high) }),
    el("svg:text", { class: "label", x: 2, y: y(low), text: format(low) }),
    el("svg:text", { class: "label", x: PAD.left, y: H - 4, text: new Date(from).toLocaleTimeString() }),
    el("svg:text", { class: "label", x: W - PAD.right, y: H - 4, "text-anchor": "end", text: new Date(to).toLocaleTimeString() }));
  return { svg, x, y };
}

function weightChart(r) {
  const points = r.weights.map((p) => [Date.parse(p.time), p.weight]).filter(([t]) => !isNaN(t));
  const now = Date.now();
  const from = points.length ? Math.min(points[0][0], now - 60000) : now - 60000;
  const { svg, x, y } = frame("canary weight", from, now, 0, 100, (v) => `${v}%`);
  if (points.length) {
    let path = `M${x(points[0][0])},${y(points[0][1])}`;
    for (const [t, w] of points.slice(1)) path += `H${x(t)}V${y(w)}`; // a step line: weights jump
    path += `H${x(now)}`;
    svg.append(el("svg:path", { class: "weight", d: path }));
  }
  return el("div", { class: "chart", "data-chart": "weight" }, el("h3", { text: "Canary weight" }), svg);
}

function metricChart(m) {
  const values = m.values.filter((v) => v.value !== null).map((v) => [Date.parse(v.time), v.value, v.outcome]);
  const limits = [m.threshold.min, m.threshold.max].filter((v) => v !== undefined);
  const now = Date.now();
  const from = values.length ? Math.min(values[0][0], now - 60000) : now - 60000;
  const high = Math.max(...values.map((v) => v[1]), ...limits, 0) * 1.2 || 1;
  const { svg, x, y } = frame(m.name, from, now, 0, high, (v) => (+v.toPrecision(2)).toString());
  for (const limit of limits) svg.append(el("svg:line", { class: "threshold", x1: PAD.left, x2: W - PAD.right, y1: y(limit), y2: y(limit) }));
  if (values.length) svg.append(el("svg:polyline", { class: "value", points: values.map(([t, v]) => `${x(t)},${y(v)}`).join(" ") }));
  for (const [t, v, outcome] of values) svg.append(el("svg:circle", { class: outcome, cx: x(t), cy: y(v), r: 2.5 }));
  const latest = m.values.length ? m.values[m.values.length - 1] : null;
  const bounds = [m.threshold.min !== undefined ? `min ${m.threshold.min}` : "", m.threshold.max !== undefined ? `max ${m.threshold.max}` : ""].filter(Boolean).join(", ");
  const caption = latest ? `${latest.value ?? "n/a"} (${latest.outcome})` : "no check seen yet";
  return el("div", { class: "chart", "data-chart": `metric-${m.name}` },
    el("h3", { text: `${m.name}: ${caption}${bounds ? ` — threshold ${bounds}` : ""}` }), svg);
}

// ---- the live feed ---------------------------------------------------------------------------------

function render() { renderList(); renderDetail(); }

function connect() {
  const connection = document.getElementById("connection");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { connection.dataset.state = "live"; connection.textContent = "live"; });
  source.addEventListener("error", () => { connection.dataset.state = "lost"; connection.textContent = "reconnecting…"; });
  source.addEventListener("snapshot", (event) => {
    const snapshot = JSON.parse(event.data);
    state.objects = new Map(snapshot.objects.map((o) => [o.id, o]));
    state.errors = snapshot.errors;
    state.watchingSince = snapshot.watchingSince;
    render();
  });
  source.addEventListener("object", (event) => {
    const o = JSON.parse(event.data);
    state.objects.set(o.id, o);
    render();
  });
  source.addEventListener("deleted", (event) => {
    state.objects.delete(JSON.parse(event.data).id);
    render();
  });
}

window.addEventListener("hashchange", () => { state.result = ""; render(); });
// The charts run up to now: redraw them now and then, also when nothing changes.
setInterval(() => { if (selected() !== null) renderDetail(); }, 5000);
connect();
