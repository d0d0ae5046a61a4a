// podium trace viewer: runs list, run timeline, turn texts, per-model stats.
// Workflow runs (conductor, topologies) draw a swimlane timeline: one lane per step at its wall-clock span.
// All stored text is inserted with textContent, never as HTML: prompts are untrusted input.
"use strict";

const PAGE = 50;
const state = { offset: 0, total: 0, selected: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function fmtTime(ts) { return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19); }
function fmtCost(x) { return (x || 0).toFixed(6); }
function fmtSec(x) { return x == null ? "-" : x.toFixed(2); }
function pct(x) { return x == null ? "-" : (100 * x).toFixed(0) + "%"; }

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(err) {
  const box = document.getElementById("error");
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : "";
}

function filterParams() {
  const data = new FormData(document.getElementById("filters"));
  const params = new URLSearchParams();
  for (const [key, value] of data) if (value) params.set(key, value);
  params.set("limit", PAGE);
  params.set("offset", state.offset);
  return params;
}

async function loadRuns() {
  try {
    const body = await api("api/runs?" + filterParams());
    state.total = body.total;
    renderRuns(body.runs);
    showError(null);
  } catch (err) { showError(err); }
}

function renderRuns(runs) {
  const tbody = document.querySelector("#runs tbody");
  tbody.replaceChildren(...runs.map(runRow));
  const last = Math.min(state.offset + runs.length, state.total);
  document.getElementById("runs-count").textContent =
    state.total ? `runs ${state.offset + 1}–${last} of ${state.total}` : "no stored runs match";
  document.getElementById("prev").disabled = state.offset === 0;
  document.getElementById("next").disabled = last >= state.total;
}

function runRow(run) {
  const row = el("tr", { class: "run-row" + (run.id === state.selected ? " selected" : ""), "data-id": run.id, onclick: () => openRun(run.id) },
    el("td", { text: fmtTime(run.started_at).slice(5), title: fmtTime(run.started_at) + " UTC" }),
    el("td", {}, el("span", { class: "status " + run.status, text: run.status })),
    el("td", { class: "query", text: (run.query || "").slice(0, 200), title: run.query || "" }),
    el("td", { class: "num", text: run.n_turns }),
    el("td", { class: "num", text: run.total_tokens }),
    el("td", { class: "num", text: fmtCost(run.cost_usd) }),
    el("td", { class: "num", text: fmtSec(run.latency_s) }));
  row.dataset.tooltip = run.id;
  return row;
}

async function openRun(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("tr.run-row")) row.classList.toggle("selected", row.dataset.id === id);
  try {
    renderRun(await api("api/runs/" + encodeURIComponent(id)));
    showError(null);
  } catch (err) { showError(err); }
}

function renderRun(run) {
  const detail = document.getElementById("detail");
  const policy = Object.keys(run.policy || {}).length ? JSON.stringify(run.policy) : "none";
  const timeline = el("div", { class: "timeline", id: "timeline" });
  const turnBox = el("div", { class: "turn-detail", id: "turn-detail" }, el("p", { class: "muted", text: "Click a turn to see its prompt and response." }));
  const lanes = stepSpans(run.turns);
  if (lanes) {
    timeline.classList.add("swimlanes");
    run.turns.forEach((turn, i) => timeline.append(turnRow(turn, lanes[i][0], lanes[i][1], turnBox)));
  } else {
    const total = run.turns.reduce((sum, t) => sum + t.latency_s, 0) || 1;
    let start = 0;
    for (const turn of run.turns) {
      timeline.append(turnRow(turn, start / total, turn.latency_s / total, turnBox));
      start += turn.latency_s;
    }
  }
  const plans = ((run.workflow || {}).plans || []).map((p) =>
    el("p", { class: "meta plan", text: `plan (depth ${p.depth}${p.step ? ", in step " + p.step : ""}, round ${p.round}): ${p.origin}` }));
  detail.replaceChildren(
    el("h2", { text: run.id }),
    el("p", { class: "meta" }, el("span", { class: "status " + run.status, text: run.status }), " " + (run.reason || "")),
    el("p", { class: "meta", text: `${fmtTime(run.started_at)} UTC · pool ${run.pool} · coordinator ${run.coordinator} · policy ${policy}` }),
    el("p", { class: "meta", text: `${run.n_turns} turns · ${run.total_tokens} tokens · $${fmtCost(run.cost_usd)} · ${fmtSec(run.latency_s)} s` }),
    el("div", { class: "question", text: run.query || "" }),
    ...plans,
    timeline,
    el("div", { class: "answer" }, el("h3", { text: "answer" }), el("pre", { text: run.answer == null ? "(none)" : run.answer })),
    turnBox);
}

// [left, width] fractions of the run's wall-clock span per turn, when every turn is a timed workflow step.
function stepSpans(turns) {
  if (!turns.length || !turns.every((t) => t.step && t.started_at != null)) return null;
  const t0 = Math.min(...turns.map((t) => t.started_at));
  const end = (t) => (t.ended_at == null ? t.started_at : t.ended_at);
  const span = Math.max(...turns.map((t) => end(t) - t0)) || 1;
  return turns.map((t) => [(t.started_at - t0) / span, (end(t) - t.started_at) / span]);
}

function turnRow(turn, left, width, turnBox) {
  const bar = el("div", { class: `bar ${turn.role}${turn.error ? " error" : ""}${turn.model === "self" ? " nested" : ""}` });
  bar.style.left = (100 * left).toFixed(2) + "%";
  bar.style.width = (100 * width).toFixed(2) + "%";
  const note = turn.error ? el("span", { class: "err", text: "error" })
    : turn.verdict ? el("span", { class: "verdict-" + turn.verdict, text: turn.verdict }) : null;
  const reads = turn.step ? ` · reads ${(turn.inputs || []).join(", ") || "-"}` : "";
  const info = el("div", { class: "info" }, note, note ? " " : null,
    `${fmtSec(turn.latency_s)} s · ${turn.prompt_tokens}+${turn.completion_tokens} tok · $${fmtCost(turn.cost_usd)}${reads}`);
  const label = el("div", { class: "label", text: turn.step ? `${turn.turn}. ${turn.step} · ${turn.model}` : `${turn.turn}. ${turn.role} · ${turn.model}` });
  if (turn.depth) label.style.paddingLeft = 12 * turn.depth + "px";
  const row = el("div", { class: "turn", "data-turn": turn.turn, onclick: () => openTurn(turn, row, turnBox) },
    label, el("div", { class: "track" }, bar), info);
  if (turn.step) row.dataset.step = turn.step;
  row.title = turn.reason || "";
  return row;
}

function openTurn(turn, row, box) {
  for (const other of document.querySelectorAll(".turn")) other.classList.toggle("selected", other === row);
  const parts = [el("h3", { text: `turn ${turn.turn}: ${turn.role} ${turn.model}` + (turn.provider ? ` (${turn.provider}, ${turn.region})` : "") }),
    ...(turn.step ? [el("p", { class: "meta", text: `step ${turn.step} · depth ${turn.depth} · reads ${(turn.inputs || []).join(", ") || "-"}` })] : []),
    el("p", { class: "meta", text: "why: " + (turn.reason || "-") + (turn.fallback_from ? ` · fallback from ${turn.fallback_from}` : "") + (turn.retries ? ` · ${turn.retries} retries` : "") })];
  if (turn.error) parts.push(el("p", { class: "err", text: "error: " + turn.error }));
  parts.push(el("h3", { text: "prompt" }));
  if (turn.messages) {
    for (const m of turn.messages) parts.push(el("div", { class: "msg" }, el("div", { class: "who", text: m.role }), el("pre", { text: m.content })));
  } else {
    parts.push(el("pre", { class: "prompt", text: turn.prompt || "" }));
  }
  parts.push(el("h3", { text: "response" }), el("pre", { class: "response", text: turn.response || "" }));
  if (turn.diagnosis) parts.push(el("p", { class: "meta", text: "diagnosis: " + turn.diagnosis }));
  box.replaceChildren(...parts);
}

async function loadStats() {
  try {
    const body = await api("api/stats");
    document.querySelector("#stats tbody").replaceChildren(...body.models.map((m) => el("tr", { class: "stat-row", "data-model": m.model },
      el("td", { text: m.model }), el("td", { class: "num", text: m.calls }), el("td", { class: "num", text: m.runs }),
      el("td", { class: "num", text: m.tokens }), el("td", { class: "num", text: fmtCost(m.cost_usd) }),
      el("td", { class: "num", text: fmtSec(m.latency_p50_s) }), el("td", { class: "num", text: fmtSec(m.latency_p95_s) }),
      el("td", { class: "num", text: pct(m.accept_rate) }), el("td", { class: "num", text: pct(m.failure_rate) }),
      el("td", { text: Object.entries(m.roles).map(([r, n]) => `${r} ${n}`).join(", ") }))));
    showError(null);
  } catch (err) { showError(err); }
}

async function loadModels() {
  try {
    const body = await api("api/models");
    const select = document.querySelector("select[name=model]");
    select.append(...body.models.map((m) => el("option", { value: m, text: m })));
  } catch (err) { showError(err); }
}

function switchTab(name) {
  for (const tab of document.querySelectorAll("nav .tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  document.getElementById("runs-tab").hidden = name !== "runs";
  document.getElementById("stats-tab").hidden = name !== "stats";
  if (name === "stats") loadStats();
}

document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); state.offset = 0; loadRuns(); });
document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadRuns(); });
document.getElementById("next").addEventListener("click", () => { state.offset += PAGE; loadRuns(); });
for (const tab of document.querySelectorAll("nav .tab")) tab.addEventListener("click", () => switchTab(tab.dataset.tab));
loadModels();
loadRuns();
