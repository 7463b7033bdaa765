// clipdex web page: plain JavaScript over the /api/v1 HTTP API, no build step.
// Every piece of library data (paths, texts) is inserted with textContent, never as HTML.
"use strict";

const API = "/api/v1";
const PAGE = 60;
const EXAMPLES = ["sunset over the sea", "a dog playing outside", "snowy mountains", "a birthday cake", "a city street at night"];

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

// What is being searched: {kind: "text", q} | {kind: "photo", file, url, name} | {kind: "similar", id, name, thumb}
const state = {
  source: null,
  mode: "photos",        // "photos" or "texts": which collection is searched
  results: [],
  offset: 0,
  done: true,
  loading: false,
  seq: 0,                // drops responses of superseded searches
  viewerIndex: -1,
  textsAvailable: false,
};

// -- HTTP ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(API + path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options));
  } catch (e) {
    throw new ApiError(0, "The clipdex server cannot be reached. Is it still running?");
  }
  if (response.status === 401) {
    window.location.href = "/login";
    throw new ApiError(401, "Sign in to continue.");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const message = body && body.error && body.error.message ? body.error.message : `The server answered ${response.status}.`;
    throw new ApiError(response.status, message);
  }
  return body;
}

// -- Filters and the URL --------------------------------------------------------------------

function nextDay(isoDate) {
  const d = new Date(isoDate + "T00:00:00");
  d.setDate(d.getDate() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function folderGlob(folder) {
  const value = folder.trim();
  if (!value) return null;
  return /[*?[]/.test(value) ? value : value.replace(/\/+$/, "") + "/*";
}

function searchParams(offset) {
  const p = new URLSearchParams({ top: String(PAGE), offset: String(offset) });
  if (state.mode === "texts") {
    p.set("texts", "true");
    return p;
  }
  const glob = folderGlob($("folder").value);
  if (glob) p.set("path", glob);
  if ($("after").value) p.set("after", $("after").value);
  if ($("before").value) p.set("before", nextDay($("before").value)); // "To" is inclusive for people
  if ($("sort").value !== "score") p.set("sort", $("sort").value);
  return p;
}

function hasFilters() {
  return Boolean($("folder").value.trim() || $("after").value || $("before").value || $("sort").value !== "score");
}

function pageUrl() {
  const p = new URLSearchParams();
  const src = state.source;
  if (src && src.kind === "text") p.set("q", src.q);
  if (src && src.kind === "similar") p.set("similar", String(src.id));
  if (state.mode === "texts") p.set("mode", "texts");
  if ($("folder").value.trim()) p.set("folder", $("folder").value.trim());
  if ($("after").value) p.set("from", $("after").value);
  if ($("before").value) p.set("to", $("before").value);
  if ($("sort").value !== "score") p.set("sort", $("sort").value);
  const query = p.toString();
  return query ? `/?${query}` : "/";
}

function restoreFromUrl() {
  const p = new URLSearchParams(window.location.search);
  $("folder").value = p.get("folder") || "";
  $("after").value = p.get("from") || "";
  $("before").value = p.get("to") || "";
  $("sort").value = p.get("sort") === "date" ? "date" : "score";
  setMode(p.get("mode") === "texts" ? "texts" : "photos", false);
  if (p.get("q")) {
    $("q").value = p.get("q");
    state.source = { kind: "text", q: p.get("q") };
  } else if (/^\d+$/.test(p.get("similar") || "")) {
    const id = Number(p.get("similar"));
    state.source = { kind: "similar", id, name: `photo ${id}`, thumb: `${API}/items/${id}/thumbnail` };
    api(`/items/${id}`).then((item) => {  // the file name, for the chip and the summary
      if (state.source && state.source.kind === "similar" && state.source.id === id) {
        state.source.name = baseName(item.path);
        showChip();
        if (!state.loading) updateSummary();
      }
    }).catch(() => {});
  } else {
    state.source = null;
    $("q").value = "";
  }
  showChip();
  updateFilterControls();
  if (state.source) runSearch(false); else showWelcome();
}

// -- Searching ------------------------------------------------------------------------------

async function fetchPage(offset) {
  const src = state.source;
  const params = searchParams(offset);
  if (src.kind === "text") {
    params.set("q", src.q);
    return api(`/search?${params}`);
  }
  if (src.kind === "similar") return api(`/items/${src.id}/similar?${params}`);
  const form = new FormData();
  form.append("file", src.file, src.name);
  for (const [key, value] of params) form.append(key, value);
  return api("/search/image", { method: "POST", body: form });
}

async function runSearch(push = true) {
  if (!state.source) { showWelcome(); return; }
  if (push) history.pushState(null, "", pageUrl());
  const seq = ++state.seq;
  state.results = [];
  state.offset = 0;
  state.done = false;
  clearResults();
  showLoading();
  await loadPage(seq);
}

async function loadMore() {
  if (state.loading || state.done || !state.source) return;
  $("sentinel").hidden = false;
  await loadPage(state.seq);
}

async function loadPage(seq) {
  state.loading = true;
  $("main").setAttribute("aria-busy", "true");
  try {
    const body = await fetchPage(state.offset);
    if (seq !== state.seq) return;
    const page = body.results;
    state.offset += page.length;
    state.done = page.length < PAGE;
    const start = state.results.length;
    state.results.push(...page);
    setState(null);
    if (state.mode === "texts") renderTexts($("text-results"), page, start === 0);
    else renderTiles(page, start);
    if (state.results.length === 0) showEmpty();
  } catch (e) {
    if (seq !== state.seq) return;
    state.done = true;
    if (state.results.length === 0) { clearResults(); showError(e.message, e.status); }
  } finally {
    if (seq === state.seq) {
      state.loading = false;
      $("main").setAttribute("aria-busy", "false");
      $("sentinel").hidden = state.done;
      updateSummary();
      // The observer only reports changes: keep filling while the sentinel is still near the viewport.
      if (!state.done) requestAnimationFrame(() => { if (nearBottom()) loadMore(); });
    }
  }
}

function nearBottom() {
  const sentinel = $("sentinel");
  return !sentinel.hidden && sentinel.getBoundingClientRect().top < window.innerHeight + 800;
}

function searchText(q) {
  q = q.trim();
  if (!q) { $("q").focus(); return; }
  clearPhoto();
  state.source = { kind: "text", q };
  showChip();
  runSearch();
}

function searchPhoto(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image. Drop a JPEG, PNG, WebP, GIF, TIFF or BMP photo.`);
    return;
  }
  clearPhoto();
  state.source = { kind: "photo", file, url: URL.createObjectURL(file), name: file.name || "pasted photo" };
  $("q").value = "";
  showChip();
  runSearch();
}

function searchSimilar(item) {
  clearPhoto();
  state.source = { kind: "similar", id: item.id, name: baseName(item.path), thumb: item.thumbnail_url };
  $("q").value = "";
  setMode("photos", false);
  showChip();
  closeViewer();
  runSearch();
  window.scrollTo({ top: 0 });
}

function clearPhoto() {
  if (state.source && state.source.kind === "photo") URL.revokeObjectURL(state.source.url);
}

// -- Rendering ------------------------------------------------------------------------------

function baseName(path) {
  if (!path) return "";
  const parts = path.split("/");
  return parts[parts.length - 1] || path;
}

function folderOf(path) {
  const i = path ? path.lastIndexOf("/") : -1;
  return i > 0 ? path.slice(0, i) : "";
}

function score(value) {
  return value.toFixed(2);
}

function clearResults() {
  $("grid").replaceChildren();
  $("text-results").replaceChildren();
  $("sentinel").hidden = true;
}

function renderTiles(page, start) {
  const grid = $("grid");
  if (start === 0) grid.replaceChildren();
  page.forEach((hit, i) => {
    const tile = el("button", "tile");
    tile.type = "button";
    tile.dataset.id = String(hit.id);
    tile.dataset.index = String(start + i);
    tile.title = hit.path;
    const img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = baseName(hit.path);
    img.addEventListener("load", () => img.classList.add("loaded"), { once: true });
    img.src = hit.thumbnail_url;
    tile.append(img, el("span", "score", score(hit.score)), el("span", "name", baseName(hit.path)));
    tile.addEventListener("click", () => openViewer(start + i));
    grid.append(tile);
  });
}

function renderTexts(list, hits, replace) {
  if (replace) list.replaceChildren();
  const best = Math.max(...hits.map((h) => h.score), 0.0001);
  for (const hit of hits) {
    const row = el("li", "text-result");
    row.dataset.id = String(hit.id);
    const bar = el("span", "bar");
    const fill = el("i");
    fill.style.width = `${Math.max(4, Math.round((100 * Math.max(hit.score, 0)) / best))}%`;
    bar.append(fill);
    row.append(el("span", "text", hit.text), bar, el("span", "score", score(hit.score)));
    list.append(row);
  }
}

function setState(kind, build) {
  const box = $("state");
  box.className = kind ? `state ${kind}` : "state";
  box.replaceChildren();
  if (build) build(box);
}

const ICONS = {
  search: ["M11 4a7 7 0 1 0 0 14a7 7 0 1 0 0-14z", "M20 20l-3.5-3.5"],
  empty: ["M4 6.5A1.5 1.5 0 0 1 5.5 5h13A1.5 1.5 0 0 1 20 6.5v11a1.5 1.5 0 0 1-1.5 1.5h-13A1.5 1.5 0 0 1 4 17.5z",
    "M4 15l4.5-4.5 3.5 3.5 2.5-2.5L20 17", "M3 3l18 18"],
  error: ["M12 4L2.8 19.5h18.4z", "M12 10v4", "M12 17v.01"],
  offline: ["M2 8.8a15 15 0 0 1 20 0", "M5.5 12.3a10 10 0 0 1 13 0", "M9 15.8a5 5 0 0 1 6 0", "M12 19.5v.01", "M3 3l18 18"],
};

function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of ICONS[name]) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

function stateArt(box, symbol, title, text) {
  const art = el("div", "art");
  art.append(icon(symbol));
  box.append(art);
  const wrap = el("div");
  wrap.append(el("h2", "", title));
  if (text) wrap.append(el("p", "", text));
  box.append(wrap);
  return wrap;
}

function showWelcome() {
  state.seq++;
  state.results = [];
  clearResults();
  updateSummary();
  setState("welcome", (box) => {
    const wrap = stateArt(box, "search", "Find any photo by describing it",
      "Type what you remember: a place, an object, a mood. Or drop a photo anywhere on this page to find ones like it.");
    const examples = el("div", "examples");
    for (const text of EXAMPLES) {
      const b = el("button", "", text);
      b.type = "button";
      b.addEventListener("click", () => { $("q").value = text; searchText(text); });
      examples.append(b);
    }
    wrap.append(examples);
  });
}

function showLoading() {
  setState(null);
  updateSummary("Searching…");
  if (state.mode === "texts") return;
  const grid = $("grid");
  for (let i = 0; i < 18; i++) {
    const s = el("div", "tile skeleton");
    s.setAttribute("aria-hidden", "true");
    grid.append(s);
  }
}

function showEmpty() {
  const filtered = state.mode === "photos" && hasFilters();
  setState("empty", (box) => {
    const wrap = stateArt(box, "empty", state.mode === "texts" ? "No texts found" : "No photos match",
      filtered ? "Nothing passes the folder and date filters. Widen them, or clear them to search everything."
        : state.mode === "texts" ? "The library has no texts yet. Add captions or labels with clipdex add-texts FILE."
          : "Try other words, or drop a photo to search by example.");
    if (filtered) {
      const b = el("button", "retry", "Clear filters");
      b.type = "button";
      b.addEventListener("click", clearFilters);
      wrap.append(b);
    }
  });
}

function showError(message, status = 400) {
  updateSummary("");
  const title = status === 0 ? "Cannot reach clipdex" : status >= 500 ? "Something went wrong" : "That search did not work";
  setState("error", (box) => {
    const wrap = stateArt(box, status === 0 ? "offline" : "error", title, message);
    const b = el("button", "retry", "Try again");
    b.type = "button";
    b.addEventListener("click", () => runSearch(false));
    if (state.source && (status === 0 || status >= 500)) wrap.append(b);  // a 4xx would fail the same way
  });
}

function updateSummary(text) {
  const box = $("summary");
  box.replaceChildren();
  if (text !== undefined) { box.textContent = text; return; }
  const n = state.results.length;
  if (!state.source || n === 0) return;
  const noun = state.mode === "texts" ? (n === 1 ? "text" : "texts") : (n === 1 ? "photo" : "photos");
  const src = state.source;
  const what = src.kind === "text" ? `“${src.q}”` : src.kind === "photo" ? src.name : `${src.name}`;
  const lead = src.kind === "similar" ? "like " : src.kind === "photo" ? "like " : "for ";
  box.append(el("strong", "", `${n}${state.done ? "" : "+"} ${noun}`), document.createTextNode(` ${lead}${what}`));
}

function showChip() {
  const src = state.source;
  const chip = $("query-chip");
  if (!src || src.kind === "text") { chip.hidden = true; return; }
  $("query-chip-img").src = src.kind === "photo" ? src.url : src.thumb;
  $("query-chip-label").textContent = src.kind === "photo" ? src.name : `Like ${src.name}`;
  chip.hidden = false;
  $("q").placeholder = "Or type to search by text";
}

function clearChip() {
  clearPhoto();
  state.source = null;
  $("query-chip").hidden = true;
  $("q").placeholder = "Describe a photo, e.g. a dog on the beach";
  history.pushState(null, "", pageUrl());
  showWelcome();
  $("q").focus();
}

// -- Mode and filters -----------------------------------------------------------------------

function setMode(mode, rerun = true) {
  if (mode === "texts" && !state.textsAvailable && rerun) return;
  state.mode = mode;
  $("mode-photos").setAttribute("aria-pressed", String(mode === "photos"));
  $("mode-texts").setAttribute("aria-pressed", String(mode === "texts"));
  updateFilterControls();
  if (rerun && state.source) runSearch();
}

function updateFilterControls() {
  const off = state.mode === "texts";
  for (const id of ["folder", "after", "before", "sort"]) $(id).disabled = off;
  $("clear-filters").hidden = !hasFilters();
  const active = [$("folder").value.trim(), $("after").value, $("before").value, $("sort").value !== "score"].filter(Boolean).length;
  $("filter-count").textContent = String(active);
  $("filter-count").hidden = active === 0;
}

function toggleFilters() {
  const open = $("toolbar").classList.toggle("open");
  $("filters-toggle").setAttribute("aria-expanded", String(open));
}

function clearFilters() {
  $("folder").value = "";
  $("after").value = "";
  $("before").value = "";
  $("sort").value = "score";
  updateFilterControls();
  if (state.source) runSearch();
}

function filtersChanged() {
  updateFilterControls();
  if (state.source) runSearch();
}

// -- Viewer ---------------------------------------------------------------------------------

async function openViewer(index) {
  const hit = state.results[index];
  if (!hit) return;
  state.viewerIndex = index;
  const viewer = $("viewer");
  const img = $("viewer-img");
  img.src = hit.thumbnail_url;            // shown at once, replaced by the full image
  img.alt = baseName(hit.path);
  const full = new Image();
  full.addEventListener("load", () => { if (state.viewerIndex === index) img.src = hit.image_url; }, { once: true });
  full.src = hit.image_url;
  $("viewer-title").textContent = baseName(hit.path);
  $("viewer-folder").textContent = folderOf(hit.path);
  $("open-original").href = hit.image_url;
  $("viewer-texts").replaceChildren();
  $("describe").hidden = !state.textsAvailable;
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index >= state.results.length - 1;
  renderMeta(hit, null);
  if (viewer.hidden) {
    viewer.hidden = false;
    document.body.style.overflow = "hidden";
    $("viewer-close").focus();
  }
  try {
    const item = await api(`/items/${hit.id}`);
    if (state.viewerIndex === index) renderMeta(hit, item);
  } catch (e) { /* the search result's own fields stay shown */ }
}

function renderMeta(hit, item) {
  const rows = [];
  const taken = (item && item.taken_at) || hit.taken_at;
  rows.push(["Taken", taken ? new Date(taken).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "Unknown"]);
  if (item && item.camera) rows.push(["Camera", item.camera]);
  if (hit.width && hit.height) rows.push(["Size", `${hit.width} × ${hit.height}`]);
  if (item && item.size) rows.push(["File", `${(item.size / 1e6).toFixed(item.size < 1e6 ? 2 : 1)} MB`]);
  rows.push(["Score", score(hit.score)]);
  const dl = $("viewer-meta");
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(el("dt", "", k), el("dd", "", v));
}

function closeViewer() {
  const viewer = $("viewer");
  if (viewer.hidden) return;
  viewer.hidden = true;
  document.body.style.overflow = "";
  $("viewer-img").removeAttribute("src");
  const tile = document.querySelector(`.tile[data-index="${state.viewerIndex}"]`);
  state.viewerIndex = -1;
  if (tile) tile.focus();
}

async function describe() {
  const hit = state.results[state.viewerIndex];
  if (!hit) return;
  const list = $("viewer-texts");
  list.replaceChildren(el("li", "text-result", "Finding the best texts…"));
  try {
    const body = await api(`/items/${hit.id}/similar?texts=true&top=5`);
    if (body.results.length) renderTexts(list, body.results, true);
    else list.replaceChildren(el("li", "text-result", "No texts in this library yet."));
  } catch (e) {
    list.replaceChildren(el("li", "text-result", e.message));
  }
}

// -- Library summary ------------------------------------------------------------------------

async function loadStatus() {
  try {
    const st = await api("/status");
    const n = Number(st.images || 0);
    $("library-info").textContent = `${n.toLocaleString()} photo${n === 1 ? "" : "s"}` +
      (st.texts ? ` · ${Number(st.texts).toLocaleString()} texts` : "");
    state.textsAvailable = Number(st.texts || 0) > 0;
    $("mode-texts").disabled = !state.textsAvailable;
    $("mode-texts").title = state.textsAvailable ? "Find the texts that best match a photo or a phrase"
      : "This library has no texts; add some with clipdex add-texts FILE";
    const list = $("folder-list");
    list.replaceChildren();
    for (const root of st.roots || []) {
      const opt = el("option");
      opt.value = root.path;
      list.append(opt);
    }
    if (n === 0 && !state.source) {
      setState("empty", (box) => stateArt(box, "empty", "This library is empty",
        "Index a folder of photos with clipdex index ~/Pictures; new photos appear here without a restart."));
    }
  } catch (e) {
    $("library-info").textContent = "";
  }
}

// -- Events ---------------------------------------------------------------------------------

function bindEvents() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (q) searchText(q);
    else if (state.source && state.source.kind !== "text") runSearch();
    else $("q").focus();
  });
  $("pick").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => { searchPhoto($("file").files[0]); $("file").value = ""; });
  $("query-chip-clear").addEventListener("click", clearChip);
  $("mode-photos").addEventListener("click", () => setMode("photos"));
  $("mode-texts").addEventListener("click", () => setMode("texts"));
  $("folder").addEventListener("change", filtersChanged);
  $("folder").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("folder").blur(); } });
  $("after").addEventListener("change", filtersChanged);
  $("before").addEventListener("change", filtersChanged);
  $("sort").addEventListener("change", filtersChanged);
  $("clear-filters").addEventListener("click", clearFilters);
  $("filters-toggle").addEventListener("click", toggleFilters);

  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer-prev").addEventListener("click", () => openViewer(state.viewerIndex - 1));
  $("viewer-next").addEventListener("click", () => openViewer(state.viewerIndex + 1));
  $("more-like-this").addEventListener("click", () => searchSimilar(state.results[state.viewerIndex]));
  $("describe").addEventListener("click", describe);
  $("viewer").addEventListener("click", (e) => { if (e.target === e.currentTarget || e.target.classList.contains("viewer-stage")) closeViewer(); });

  document.addEventListener("keydown", (e) => {
    const viewerOpen = !$("viewer").hidden;
    if (e.key === "Escape" && viewerOpen) { e.preventDefault(); closeViewer(); }
    else if (viewerOpen && e.key === "ArrowLeft" && state.viewerIndex > 0) openViewer(state.viewerIndex - 1);
    else if (viewerOpen && e.key === "ArrowRight" && state.viewerIndex < state.results.length - 1) openViewer(state.viewerIndex + 1);
    else if (e.key === "/" && !viewerOpen && document.activeElement.tagName !== "INPUT") { e.preventDefault(); $("q").focus(); }
  });

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { dragDepth++; $("drop-overlay").hidden = false; } });
  window.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) $("drop-overlay").hidden = true; });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    $("drop-overlay").hidden = true;
    closeViewer();
    searchPhoto(e.dataTransfer.files[0]);
  });
  window.addEventListener("paste", (e) => {
    const file = Array.from((e.clipboardData && e.clipboardData.files) || []).find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); searchPhoto(file); }
  });
  window.addEventListener("popstate", restoreFromUrl);

  new IntersectionObserver((entries) => {
    if (entries.some((x) => x.isIntersecting)) loadMore();
  }, { rootMargin: "800px 0px" }).observe($("sentinel"));
}

bindEvents();
loadStatus().then(() => updateFilterControls());
restoreFromUrl();
