// vidtune serve: a little plain JavaScript over the JSON API (no build step).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) n.append(k);
  return n;
};
const fmt = (t) => (t == null ? "-" : Number(t).toFixed(2));
const status = (text, bad = false) => {
  const s = $("#status");
  if (s) { s.textContent = text; s.className = bad ? "error" : ""; }
};

async function api(url, options = {}) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || body.detail || `HTTP ${r.status}`);
  return body;
}

// A player that starts at `start` once the browser knows the video (a media fragment does the same;
// setting currentTime is what makes seeking explicit, and needs HTTP range requests on the server).
function player(key, start, end) {
  const v = el("video", { controls: "", preload: "metadata", src: `/media/${key}#t=${start || 0}` });
  v.dataset.start = start || 0;
  if (end != null) v.dataset.end = end;
  v.addEventListener("loadedmetadata", () => { v.currentTime = Number(v.dataset.start); }, { once: true });
  return v;
}

function showDialog(key, start, caption) {
  const d = $("#player-dialog"), v = $("#dialog-video");
  v.src = `/media/${key}#t=${start || 0}`;
  v.addEventListener("loadedmetadata", () => { v.currentTime = Number(start || 0); v.play().catch(() => {}); }, { once: true });
  $("#dialog-caption").textContent = caption;
  d.showModal();
  d.addEventListener("close", () => v.pause(), { once: true });
}

// -- search -----------------------------------------------------------------------------------------------
let INDEX = { videos: [] };

function keyOf(path) {
  const v = INDEX.videos.find((x) => x.path === path);
  return v ? v.id : null;
}

// The query's words inside a matched text, wrapped in <mark> (case-insensitive; a word also matches the
// start of a longer one, as "exit" does "exits"); built from text nodes, never from HTML.
const STOP = new Set("a an and are as at be but by do for from has have in into is it its of on or so that the their this to was we were with you your".split(" "));

function highlighted(text, query) {
  const words = [...new Set((query || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [])]
    .filter((w) => w.length > 1 && !STOP.has(w));  // function words match everywhere: not marked
  const p = el("p", { class: "matched" });
  if (!words.length) { p.textContent = text; return p; }
  const esc = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(${esc.join("|")})`, "giu");
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) p.append(text.slice(last, m.index));
    p.append(el("mark", { text: m[0] }));
    last = m.index + m[0].length;
  }
  if (last < text.length) p.append(text.slice(last));
  return p;
}

const MODALITY = { speech: "said", text: "on screen", frames: "frame (CLIP)", visual: "looks alike" };

function card(r, i, query) {
  const key = keyOf(r.path);
  const span = `${fmt(r.start)}–${fmt(r.end)} s`;
  const q = r.query_start == null ? "" : ` (query ${fmt(r.query_start)}–${fmt(r.query_end)} s)`;
  const words = r.text != null;  // a words result: the matched text and a calibrated confidence
  const modality = r.modality || "visual";
  const score = words && modality !== "frames"
    ? el("span", { class: "score", title: "confidence that this span is about the query", text: `${Math.round(100 * r.score)}%` })
    : el("span", { class: "score", title: "cosine similarity", text: r.score.toFixed(3) });
  return el("article", { class: `card ${words ? "words" : ""}`, "data-path": r.path, "data-start": r.start,
    "data-end": r.end, "data-modality": modality },
    el("header", {},
      el("span", { class: "rank", text: `#${i + 1}` }),
      el("span", { class: "path", text: r.path.split("/").pop(), title: r.path }),
      el("span", { class: `modality ${modality}`, text: MODALITY[modality] || modality }),
      score),
    el("div", { class: "span", text: span + q }),
    words && r.text ? highlighted(r.text, query) : null,
    key ? el("img", { class: "strip", alt: `frames ${span}`, loading: "lazy",
      src: `/sprite/${key}?start=${r.start}&end=${r.end}&n=6&h=54` }) : null,
    key ? player(key, r.start, r.end) : el("p", { class: "error", text: "not in the index any more" }),
    key ? el("a", { href: `/timeline?video=${key}`, text: "timeline" }) : null);
}

function showResults(res) {
  const box = $("#results");
  box.replaceChildren(...res.results.map((r, i) => card(r, i, res.query)));
  if (!res.results.length && res.results !== undefined && INDEX.words && typeof res.query === "string") {
    status(`no match for “${res.query}”: nothing said or shown in the indexed videos is about it`);
    return;
  }
  status(`${res.results.length} result(s) for ${res.query}`);
}

async function runSearch(init, link) {
  status("searching…");
  $("#results").replaceChildren();
  if (link) history.replaceState(null, "", `/search?${new URLSearchParams(link)}`);  // results can be linked
  try { showResults(await api("/api/search", init)); } catch (e) { status(e.message, true); }
}

function jsonPost(obj) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) };
}

async function initSearch() {
  try { INDEX = await api("/api/index"); } catch (e) { status(e.message, true); return; }
  const sel = $("#video");
  for (const v of INDEX.videos) sel.append(el("option", { value: v.id, text: `${v.path} (${fmt(v.duration)} s)` }));
  const k = () => Number($("#k").value) || 10;
  $("#q-file").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = $("#file").files[0];
    if (!f) { status("choose a clip or an image first", true); return; }
    const fd = new FormData(ev.target);
    fd.set("k", k());
    for (const n of ["start", "end"]) if (!fd.get(n)) fd.delete(n);
    runSearch({ method: "POST", body: fd });
  });
  $("#q-segment").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { video: sel.value, k: k() };
    const s = $("#seg-start").value, e = $("#seg-end").value;
    if (s !== "") body.start = Number(s);
    if (e !== "") body.end = Number(e);
    runSearch(jsonPost(body), body);
  });
  $("#q-text").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { text: $("#text").value, k: k() };
    runSearch(jsonPost(body), body);
  });
  wordsHint();
  // a linked search (/search?text=...&k=... or ?video=ID&start=...&end=...) runs at once
  const params = new URLSearchParams(location.search);
  if (params.get("k")) $("#k").value = params.get("k");
  if (params.get("text")) {
    $("#text").value = params.get("text");
    $("#q-text").requestSubmit();
  } else if (params.get("video") && INDEX.videos.some((v) => v.id === params.get("video"))) {
    sel.value = params.get("video");
    if (params.get("start")) $("#seg-start").value = params.get("start");
    if (params.get("end")) $("#seg-end").value = params.get("end");
    $("#q-segment").requestSubmit();
  }
  $("#q-dupes").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = $("#dupes");
    box.textContent = "comparing every video…";
    try {
      const d = await api(`/api/dedupe?threshold=${$("#threshold").value}`);
      if (!d.groups.length) { box.textContent = `no near-duplicates at ${d.threshold} among ${d.videos} videos`; return; }
      box.replaceChildren(...d.groups.map((g, i) => el("div", { class: "group" },
        el("h3", { text: `group ${i + 1} (${g.length} videos)` }),
        ...g.map((p) => {
          const key = keyOf(p);
          const pair = d.pairs.find((x) => x.a === p || x.b === p);
          const t0 = pair ? (pair.a === p ? pair.a_start : pair.b_start) : 0;
          const t1 = pair ? (pair.a === p ? pair.a_end : pair.b_end) : t0 + 1;
          return el("figure", { class: "dupe" },
            key ? el("img", { class: "strip", src: `/sprite/${key}?start=${t0}&end=${t1}&n=4&h=48`, alt: p,
              onclick: () => showDialog(key, t0, p) }) : null,
            el("figcaption", { text: `${p} ${fmt(t0)}–${fmt(t1)} s` }));
        }))));
    } catch (e) { box.textContent = e.message; }
  });
}

// What the Words box can search in this index: its placeholder and hint say so.
function wordsHint() {
  const mods = INDEX.modalities || [], hint = $("#words-hint"), box = $("#text");
  const words = mods.filter((m) => m === "speech" || m === "text");
  INDEX.words = words.length > 0;
  const said = { speech: "speech", text: "on-screen text" };
  if (words.length) {
    box.placeholder = words.includes("speech") ? "words said or shown, e.g. feed the cat" : "words shown, e.g. fire exit";
    hint.textContent = `Searches the ${words.map((m) => said[m]).join(" and ")} of the indexed videos, by meaning and by exact words`
      + (INDEX.frames ? ", and their frames (CLIP)." : ".");
  } else if (INDEX.frames) {
    box.placeholder = "what the frames show, e.g. a red car";
    hint.textContent = "Matches frames by a description (CLIP); this index holds no speech or on-screen text.";
  } else {
    box.placeholder = "words said or shown in the videos";
    hint.textContent = "This index has no speech or on-screen text: build it with "
      + "vidtune index build INDEX VIDEO... --modalities visual,speech,text to search by words.";
  }
}

// -- a run ------------------------------------------------------------------------------------------------
// Learning curves with uPlot (vendored in /static/vendor/uplot, MIT): losses on the left axis, top-1 on the right.
function curves(history) {
  const box = $("#curves");
  if (!box || !history.length) { if (box) box.textContent = "no history.csv"; return; }
  const series = [["train_loss", "#c0392b"], ["val_loss", "#e67e22"], ["train_top1", "#2471a3"], ["val_top1", "#27ae60"],
    ["val_mAP", "#8e44ad"]].filter(([k]) => history.some((h) => h[k] != null));
  const data = [history.map((h) => h.epoch), ...series.map(([k]) => history.map((h) => h[k] ?? null))];
  const acc = (k) => !k.endsWith("loss");
  const width = Math.min(560, Math.max(320, box.clientWidth || 520));
  const opts = {
    width, height: 260,
    scales: { x: { time: false }, acc: { range: [0, 1] } },
    series: [{ label: "epoch" }, ...series.map(([k, colour]) => ({
      label: k.replace("_", " "), stroke: colour, width: 2, scale: acc(k) ? "acc" : "loss",
      points: { show: true, size: 5 }, value: (u, v) => (v == null ? "-" : v.toFixed(3)) }))],
    axes: [
      { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] },
      { scale: "loss", label: "loss", values: (u, vals) => vals.map((v) => v.toFixed(2)) },
      { scale: "acc", side: 1, label: "top-1", grid: { show: false }, values: (u, vals) => vals.map((v) => `${Math.round(100 * v)}%`) },
    ],
  };
  box.replaceChildren();
  box.chart = new uPlot(opts, data, box);
}

async function initRun() {
  const rid = $("#run").dataset.run;
  curves(JSON.parse($("#history").textContent));
  const table = $("#confusion");
  if (!table) return;
  let clips = null;
  table.addEventListener("click", async (ev) => {
    const td = ev.target.closest("td[data-cell]");
    if (!td) return;
    const box = $("#cell-clips");
    table.querySelectorAll(".picked").forEach((x) => x.classList.remove("picked"));
    td.classList.add("picked");
    box.textContent = "finding the clips…";
    try {
      clips = clips || await api(`/api/runs/${rid}/confusion`);
      const [t, p] = td.dataset.cell.split(",").map(Number);
      const list = clips.cells[td.dataset.cell] || [];
      box.replaceChildren(el("h3", { text: `true ${clips.labels[t]}, predicted ${clips.labels[p]}: ${list.length} clip(s)` }),
        ...list.map((c) => {
          const s = c.start || 0, e = c.end == null ? s + 2 : c.end;
          return el("figure", { class: "clip", onclick: () => showDialog(c.id, s, c.path) },
            el("img", { src: `/sprite/${c.id}?start=${s}&end=${e}&n=3&h=54`, alt: c.path }),
            el("figcaption", { text: `${c.path.split("/").pop()} (${(100 * c.score).toFixed(0)}%)` }));
        }));
    } catch (e) { box.textContent = e.message; }
  });
}

// -- timelines --------------------------------------------------------------------------------------------
const COLOURS = ["#2471a3", "#27ae60", "#c0392b", "#8e44ad", "#d68910", "#17a589", "#cb4335", "#566573"];

function drawTimeline(res, key, run, file) {
  const r = res.results[0];
  if (!r || r.error) { status(r ? `${r.path}: ${r.error}` : "nothing tagged", true); return; }
  $("#timeline-view").hidden = false;
  const v = $("#tl-player");
  if (v.dataset.key !== key) {
    // an upload is not kept by the server: play the browser's own copy of the file
    if (v.src.startsWith("blob:")) URL.revokeObjectURL(v.src);
    v.src = file ? URL.createObjectURL(file) : `/media/${key}`;
    v.dataset.key = key;
  }
  const box = $("#timeline");
  const labels = [...new Set(r.segments.map((s) => s.label))];
  const pct = (t) => `${(100 * t / r.duration).toFixed(3)}%`;
  const rows = labels.map((lab, j) => el("div", { class: "row" },
    el("span", { class: "label", text: lab }),
    el("div", { class: "track" }, ...r.segments.filter((s) => s.label === lab).map((s) =>
      el("button", { class: "band", style: `left:${pct(s.start)};width:${pct(s.end - s.start)};background:${COLOURS[j % COLOURS.length]}`,
        title: `${lab} ${fmt(s.start)}–${fmt(s.end)} s (${s.score.toFixed(2)})`, "data-start": s.start,
        onclick: () => { v.currentTime = s.start; v.play().catch(() => {}); } })))));
  const shots = el("div", { class: "row" }, el("span", { class: "label", text: "shots" }),
    el("div", { class: "track shots" }, ...r.shots.map((s) => el("span", { class: "shot", style: `left:${pct(s.start)}`, title: `shot ${s.index} at ${fmt(s.start)} s` }))));
  const head = el("div", { class: "playhead" });
  box.replaceChildren(...rows, shots, head);
  v.ontimeupdate = () => { head.style.left = `calc(6rem + (100% - 6rem) * ${v.currentTime / r.duration})`; };
  for (const a of document.querySelectorAll(".downloads a")) {
    a.href = `/api/tag/export?run=${encodeURIComponent(run)}&video=${key}&format=${a.dataset.fmt}`;
    a.setAttribute("download", "");
  }
  $("#segments").replaceChildren(el("tr", {}, ...["start", "end", "label", "score"].map((c) => el("th", { text: c }))),
    ...r.segments.map((s) => el("tr", {}, el("td", { text: fmt(s.start) }), el("td", { text: fmt(s.end) }),
      el("td", { text: s.label }), el("td", { text: s.score.toFixed(2) }))));
  status(`${r.segments.length} segment(s), ${r.shots.length} shot(s) in ${fmt(r.duration)} s`);
}

async function initTimeline() {
  const form = $("#tag-form");
  if (!form) return;
  const sel = $("#tag-video");
  if (sel) {
    try {
      INDEX = await api("/api/index");
      for (const v of INDEX.videos) sel.append(el("option", { value: v.id, text: v.path }));
      const want = new URLSearchParams(location.search).get("video");
      if (want) sel.value = want;
    } catch (e) { status(e.message, true); }
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const run = $("#tag-run").value, file = $("#tag-file") && $("#tag-file").files[0];
    status("tagging…");
    try {
      let res;
      if (file) {
        const fd = new FormData();
        fd.set("file", file);
        fd.set("run", run);
        res = await api("/api/tag", { method: "POST", body: fd });
      } else {
        res = await api("/api/tag", jsonPost({ run, video: sel && sel.value }));
      }
      drawTimeline(res, res.video, run, file);
    } catch (e) { status(e.message, true); }
  });
  if (sel && new URLSearchParams(location.search).get("video")) form.requestSubmit();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "search" && $("#q-segment")) initSearch();
  if (page === "run") initRun();
  if (page === "timeline") initTimeline();
});
