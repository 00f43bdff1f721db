// The Label page: a queue from /api/label/queue, one key per class, skip, undo, retrain.
// Uses $, el, fmt, api and status from app.js (loaded first).
"use strict";

const LABEL = { queue: [], current: null, history: [], busy: false, version: null, polling: null, refilling: false,
  actions: 0 };

const labelPost = (url, obj) => api(url, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify(obj || {}) });

function labelButtons(enabled) {
  for (const b of document.querySelectorAll("#class-keys .cls, #skip, #replay")) b.disabled = !enabled;
  $("#undo").disabled = LABEL.history.length === 0 && LABEL.actions === 0;
}

// Play the clip's span again and again (muted), starting at its start.
function playSpan(item) {
  const v = $("#label-player");
  const start = item.start == null ? 0 : Number(item.start);
  const end = item.end == null ? null : Number(item.end);
  v.dataset.id = item.id;
  v.dataset.start = start;
  v.dataset.end = end == null ? "" : end;
  v.src = `/media/${item.id}#t=${start}${end == null ? "" : "," + end}`;
  v.addEventListener("loadedmetadata", () => { v.currentTime = start; v.play().catch(() => {}); }, { once: true });
}

function replay() {
  const v = $("#label-player");
  if (!LABEL.current) return;
  v.currentTime = Number(v.dataset.start || 0);
  v.play().catch(() => {});
}

function showCurrent() {
  const it = LABEL.current;
  if (!it) {
    $("#label-player").removeAttribute("src");
    $("#label-player").load();
    $("#clip-path").textContent = "Nothing left to label in the queue.";
    $("#clip-span").textContent = "";
    $("#clip-pred").textContent = "";
    labelButtons(false);
  } else {
    playSpan(it);
    $("#clip-path").textContent = it.path;
    $("#clip-path").title = it.path;
    $("#clip-span").textContent = it.start == null ? "whole video" : `${fmt(it.start)}–${fmt(it.end)} s`;
    const pred = it.predicted == null ? "" : `model says ${it.predicted}` +
      (it.confidence == null ? "" : ` (${Number(it.confidence).toFixed(2)})`);
    $("#clip-pred").textContent = [pred, it.score == null ? "" : `score ${Number(it.score).toFixed(3)}`]
      .filter(Boolean).join(" · ");
    labelButtons(true);
  }
  $("#up-next").replaceChildren(...LABEL.queue.slice(0, 8).map((q) => el("li", {
    text: `${q.path.split("/").pop()} ${q.start == null ? "" : fmt(q.start) + "–" + fmt(q.end) + " s"}` +
      (q.predicted == null ? "" : ` · ${q.predicted}`) })));
}

function showCounts(s) {
  $("#total").textContent = s.labels;
  const top = Math.max(1, ...Object.values(s.per_class));
  for (const row of document.querySelectorAll("#counts tr")) {
    const n = s.per_class[row.dataset.label] || 0;
    row.querySelector(".n").textContent = n;
    row.querySelector(".bar").style.width = `${Math.round(150 * n / top)}px`;
  }
}

async function loadQueue(keepCurrent = false) {
  const r = await api("/api/label/queue?k=30");
  const cur = keepCurrent && LABEL.current ? LABEL.current.id : null;
  LABEL.queue = r.items.filter((x) => x.id !== cur);
  if (!keepCurrent || !LABEL.current) LABEL.current = LABEL.queue.shift() || null;
  showCurrent();
}

async function refill() {
  if (LABEL.queue.length >= 5 || LABEL.refilling) return;
  LABEL.refilling = true;
  try { await loadQueue(true); } catch (e) { status(e.message, true); } finally { LABEL.refilling = false; }
}

function advance() {
  LABEL.current = LABEL.queue.shift() || null;
  showCurrent();
  refill();
}

async function act(fn) {
  if (LABEL.busy) return;
  LABEL.busy = true;
  try { await fn(); } catch (e) { status(e.message, true); } finally { LABEL.busy = false; }
}

function labelAs(name) {
  const it = LABEL.current;
  if (!it) return;
  act(async () => {
    const r = await labelPost("/api/label", { id: it.id, label: name });
    LABEL.history.push(it);
    LABEL.actions += 1;
    const b = document.querySelector(`#class-keys .cls[data-label="${CSS.escape(name)}"]`);
    if (b) { b.classList.add("flash"); setTimeout(() => b.classList.remove("flash"), 250); }
    showCounts(r);
    status(`saved: ${it.path.split("/").pop()} is ${name}`);
    $("#status").className = "ok";
    advance();
  });
}

function skip() {
  const it = LABEL.current;
  if (!it) return;
  act(async () => {
    await labelPost("/api/label/skip", { id: it.id });
    LABEL.history.push(it);
    LABEL.actions += 1;
    status(`skipped ${it.path.split("/").pop()}`);
    advance();
  });
}

// Undo this page's latest label or skip; after a reload, the latest one the server has.
function undo() {
  const last = LABEL.history[LABEL.history.length - 1];
  if (!last && LABEL.actions === 0) return;
  act(async () => {
    const r = await labelPost("/api/label/undo", last ? { id: last.id } : {});
    if (last) LABEL.history.pop();
    if (LABEL.current) LABEL.queue.unshift(LABEL.current);
    LABEL.current = r.item || last || null;
    LABEL.actions = Math.max(0, LABEL.actions - 1);
    showCounts(r);
    const name = LABEL.current ? LABEL.current.path.split("/").pop() : r.undone.id;
    if (!LABEL.current) LABEL.current = LABEL.queue.shift() || null;  // a label made outside this pool
    status(r.undone.op === "label" ? `undone: ${r.undone.label} on ${name}` : `undone: skip of ${name}`);
    showCurrent();
  });
}

function showStatus(s) {
  showCounts(s);
  LABEL.actions = s.labels + s.skipped;
  $("#undo").disabled = LABEL.history.length === 0 && LABEL.actions === 0;
  const run = s.run ? s.run.split("/").filter(Boolean).pop() : null;
  $("#run-name").textContent = run || "none yet";
  $("#run-name").title = s.run || "";
  const m = s.metrics || {};
  $("#run-top1").textContent = m.top1 == null ? "-" : `${(100 * m.top1).toFixed(1)}%`;
  $("#run-n").textContent = m.n == null ? "-" : m.n;
  $("#retrain").disabled = s.running;
  $("#train-state").textContent = s.running ? `round ${s.round}: ${s.phase || "working"}…`
    : s.ranking ? `${s.phase || "ranking"}…` : s.error ? "" : (s.round ? `round ${s.round} done` : "");
  if (s.error) status(s.error, true);
  $("#pool-info").textContent = `${s.remaining} of ${s.pool} clip(s) left in the pool` +
    (s.skipped ? `, ${s.skipped} skipped` : "") + (s.unreadable.length ? `, ${s.unreadable.length} unreadable` : "") + ".";
}

async function poll() {
  let s;
  try { s = await api("/api/label/status"); } catch (e) { status(e.message, true); return; }
  showStatus(s);
  if (LABEL.version !== null && s.queue_version !== LABEL.version && !s.running) {
    LABEL.version = s.queue_version;
    await loadQueue(false);  // the new run's uncertainty reorders the queue
    status(`queue refreshed with ${s.run ? s.run.split("/").pop() : "the new ranking"}`);
    $("#status").className = "ok";
  }
  if (LABEL.version === null && !s.ranking) LABEL.version = s.queue_version;
  clearTimeout(LABEL.polling);
  LABEL.polling = setTimeout(poll, s.running || s.ranking ? 700 : 4000);
}

async function initLabel() {
  const desk = $("#label-desk");
  const keys = {};
  for (const b of document.querySelectorAll("#class-keys .cls")) {
    keys[b.dataset.key] = b.dataset.label;
    b.addEventListener("click", () => labelAs(b.dataset.label));
  }
  $("#skip").addEventListener("click", skip);
  $("#undo").addEventListener("click", undo);
  $("#replay").addEventListener("click", replay);
  $("#retrain").addEventListener("click", async () => {
    try {
      const r = await labelPost("/api/label/retrain");
      status(`training round ${r.round}…`);
      $("#retrain").disabled = true;
      clearTimeout(LABEL.polling);
      LABEL.polling = setTimeout(poll, 300);
    } catch (e) { status(e.message, true); }
  });
  const v = $("#label-player");
  v.addEventListener("timeupdate", () => {  // loop the clip's span
    const end = v.dataset.end === "" ? null : Number(v.dataset.end);
    if (end != null && v.currentTime >= end) { v.currentTime = Number(v.dataset.start || 0); v.play().catch(() => {}); }
  });
  v.addEventListener("ended", replay);
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
    const k = ev.key.toLowerCase();
    if (keys[k] !== undefined) { ev.preventDefault(); labelAs(keys[k]); }
    else if (k === desk.dataset.skip) { ev.preventDefault(); skip(); }
    else if (k === desk.dataset.undo || k === "backspace") { ev.preventDefault(); undo(); }
    else if (k === desk.dataset.replay) { ev.preventDefault(); replay(); }
  });
  labelButtons(false);
  poll();
  status("ranking the pool…");
  try {
    await loadQueue(false);
    const s = await api("/api/label/status");
    LABEL.version = s.queue_version;
    showStatus(s);
    status(LABEL.current ? "press a class's key (or click it) to label the clip" : "the pool is all labelled");
  } catch (e) { status(e.message, true); }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "label") initLabel();
});
