// GalaxAlign search page: builds queries, calls the JSON API, draws the result grid. No framework.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { classes: [], questions: [], answers: new Map(), phrases: new Map(), k: 12 };

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// A hit's decision-tree answers (when the catalog has them), the feature query's ones highlighted.
function featureLines(hit, query) {
  if (!Array.isArray(hit.answers)) return [];
  const wanted = new Set(query);
  const chips = hit.answers
    .filter((a) => wanted.has(a) || state.phrases.get(a))
    .map((a) => el("span", { class: `feature${wanted.has(a) ? " match" : ""}`, "data-answer": a, title: a,
                             text: state.phrases.get(a) || a }));
  const lines = [];
  if (hit.matched !== undefined && query.length) {
    lines.push(el("div", { class: "matched", text: `${hit.matched}/${query.length} features` }));
  }
  lines.push(el("div", { class: "features" }, chips));
  return lines;
}

function showResults(title, data) {
  $("#results-title").textContent = title;
  const grid = $("#grid");
  grid.replaceChildren();
  const query = (data.query && Array.isArray(data.query.answers)) ? data.query.answers : [];
  for (const hit of data.results) {
    const attrs = { class: "card", "data-id": hit.id, title: hit.source, onclick: () => searchId(hit.id) };
    if (hit.matched !== undefined) attrs["data-matched"] = String(hit.matched);
    if (Array.isArray(hit.answers)) attrs["data-answers"] = hit.answers.join(",");
    grid.append(el("div", attrs, [
      el("img", { src: hit.thumb_url, alt: hit.id, loading: "lazy" }),
      el("div", { class: "meta" }, [
        el("span", { class: "score", text: hit.score.toFixed(3) }),
        el("span", { class: "rank", text: `#${hit.rank} ` }),
        el("span", { class: "gid", text: hit.id }),
        el("div", { class: "label", text: hit.label_name }),
        ...featureLines(hit, query),
      ]),
    ]));
  }
  setStatus(`${data.results.length} nearest galaxies`);
}

async function run(title, request) {
  setStatus("searching…");
  try {
    showResults(title, await request());
  } catch (err) {
    setStatus(err.message, true);
  }
}

function searchId(id) {
  return run(`Neighbours of ${id}`, () => api(`/api/search/id/${encodeURIComponent(id)}?k=${state.k}`));
}

function uploadSearch(kind, blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  return run(`Nearest to ${kind} ${name}`, () => api(`/api/search/${kind}?k=${state.k}`, { method: "POST", body: form }));
}

// -- tabs -----------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tabs button")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b === tab));
    document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === `panel-${tab.dataset.tab}`));
  });
}

// -- image ----------------------------------------------------------------------------------
$("#image-search").addEventListener("click", () => {
  const file = $("#image-file").files[0];
  if (!file) { setStatus("choose an image file first", true); return; }
  uploadSearch("image", file, file.name);
});

// -- catalog --------------------------------------------------------------------------------
async function loadCatalog() {
  const label = $("#catalog-label").value;
  const query = `/api/catalog?random=true&limit=30&seed=${Math.floor(Math.random() * 1e9)}` + (label !== "" ? `&label=${label}` : "");
  try {
    const data = await api(query);
    $("#catalog-strip").replaceChildren(...data.items.map((item) =>
      el("img", { src: item.thumb_url, alt: item.id, title: `${item.id} · ${item.label_name}`, "data-id": item.id, loading: "lazy",
                  onclick: () => searchId(item.id) })));
  } catch (err) { setStatus(err.message, true); }
}
$("#catalog-shuffle").addEventListener("click", loadCatalog);
$("#catalog-label").addEventListener("change", loadCatalog);

// -- text -----------------------------------------------------------------------------------
function textSearch() {
  const text = $("#text-query").value.trim();
  if (!text) { setStatus("type a description first", true); return; }
  run(`Matching “${text}”`, () => api("/api/search/text", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text, k: state.k }) }));
}
$("#text-search").addEventListener("click", textSearch);
$("#text-query").addEventListener("keydown", (e) => { if (e.key === "Enter") textSearch(); });

// -- symbols: the decision tree, one answer per question --------------------------------------
function selectedAnswers() {
  // Only answers whose questions are still reachable count (a changed earlier answer prunes later ones).
  return state.questions.filter(isActive).map((q) => state.answers.get(q.key)).filter(Boolean);
}

function isActive(question) {
  const chosen = new Set(state.answers.values());
  return question.requires.every((req) => chosen.has(req));
}

function renderQuestions() {
  const holder = $("#questions");
  holder.replaceChildren();
  for (const q of state.questions) {
    const active = isActive(q);
    if (!active) state.answers.delete(q.key);
  }
  for (const q of state.questions) {
    const active = isActive(q);
    holder.append(el("div", { class: `question${active ? "" : " inactive"}`, "data-question": q.key }, [
      el("h3", { text: q.text }),
      el("div", { class: "answers" }, q.answers.map((a) => el("button", {
        class: `answer${state.answers.get(q.key) === a.id ? " selected" : ""}`,
        "data-answer": a.id, title: a.id, ...(active ? {} : { disabled: "" }),
        onclick: () => {
          if (state.answers.get(q.key) === a.id) state.answers.delete(q.key); else state.answers.set(q.key, a.id);
          renderQuestions();
        },
      }, [el("img", { src: a.icon_url, alt: a.text }), el("span", { text: a.text })]))),
    ]));
  }
  const answers = selectedAnswers();
  $("#symbol-search").disabled = answers.length === 0;
  $("#symbol-answers").textContent = answers.length ? answers.join(", ") : "no answers yet";
  // The caption the text encoder reads (the server's answers.caption says the same: reachable answers
  // in tree order, in each answer's phrase); the search response's own caption replaces it.
  $("#symbol-caption").textContent = answers.length
    ? `“${answers.map((a) => state.phrases.get(a)).filter(Boolean).join(", ") || "galaxy"}”` : "";
  const preview = $("#symbol-preview");
  if (answers.length) preview.src = `/api/symbol.png?size=160&answers=${encodeURIComponent(answers.join(","))}`;
  else preview.removeAttribute("src");
}

$("#symbol-clear").addEventListener("click", () => { state.answers.clear(); renderQuestions(); });
$("#symbol-search").addEventListener("click", () => {
  const answers = selectedAnswers();
  const via = $("#symbol-via").value;
  const query = `answers=${encodeURIComponent(answers.join(","))}&via=${encodeURIComponent(via)}&k=${state.k}`;
  run(`Matching features (${via}): ${answers.join(" + ")}`, async () => {
    const data = await api(`/api/search/features?${query}`);
    $("#symbol-caption").textContent = `“${data.query.caption}”`;
    return data;
  });
});

// -- sketch ---------------------------------------------------------------------------------
const canvas = $("#sketch-canvas");
const ctx = canvas.getContext("2d");
function clearSketch() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
clearSketch();
let drawing = false;
function point(e) { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; }
canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...point(e)); });
canvas.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 6; ctx.lineCap = "round"; ctx.lineTo(...point(e)); ctx.stroke();
});
window.addEventListener("pointerup", () => { drawing = false; });
$("#sketch-clear").addEventListener("click", clearSketch);
$("#sketch-search").addEventListener("click", () => {
  const file = $("#sketch-file").files[0];
  if (file) { uploadSearch("sketch", file, file.name); return; }
  canvas.toBlob((blob) => uploadSearch("sketch", blob, "sketch.png"), "image/png");
});

// -- start ----------------------------------------------------------------------------------
async function start() {
  try {
    const info = await api("/api/info");
    state.classes = info.classes;
    $("#info").textContent = `${info.count.toLocaleString()} galaxies · ${info.kind} index · dim ${info.dim}`;
    const select = $("#catalog-label");
    info.classes.forEach((name, i) => select.append(el("option", { value: String(i), text: name })));
    const symbols = await api("/api/symbols");
    state.questions = symbols.questions;
    for (const q of symbols.questions) for (const a of q.answers) state.phrases.set(a.id, a.phrase ?? a.text);
    renderQuestions();
    await loadCatalog();
  } catch (err) {
    setStatus(err.message, true);
  }
}
start();
