// clipdex web page: plain JavaScript modules over the /api/v1 HTTP API, no build step.
// This module holds the search flow, the filters, the address bar and the event wiring.

import { API, PAGE, api, folderGlob, nextDay } from "./api.js";
import { $, el } from "./dom.js";
import { baseName, clearResults, renderTexts, renderTiles, setState, showChip, showEmpty, showError, showLoading,
  showWelcome, stateArt, updateSummary } from "./render.js";
import { state } from "./state.js";
import { closeViewer, describe, openViewer } from "./viewer.js";
import { hideDuplicates, showDuplicates } from "./duplicates.js";

// Camera, lens, focal, ISO, place and tag filters: each input's id is its API parameter and its name in
// the page's own URL; has_gps is a checkbox.
const EXIF_FILTERS = ["camera", "lens", "focal", "iso", "near", "within", "tag"];

function exifFiltersOn() {
  return EXIF_FILTERS.filter((id) => $(id).value.trim()).length + ($("has_gps").checked ? 1 : 0);
}

function setExifParams(p) {
  for (const id of EXIF_FILTERS) if ($(id).value.trim()) p.set(id, $(id).value.trim());
  if ($("has_gps").checked) p.set("has_gps", "true");
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
  setExifParams(p);
  if ($("collapse").checked) p.set("collapse", "true");
  return p;
}

function hasFilters() {
  return Boolean($("folder").value.trim() || $("after").value || $("before").value || $("sort").value !== "score" ||
    exifFiltersOn());
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
  setExifParams(p);
  const query = p.toString();
  return query ? `/?${query}` : "/";
}

function restoreFromUrl() {
  const p = new URLSearchParams(window.location.search);
  $("folder").value = p.get("folder") || "";
  $("after").value = p.get("from") || "";
  $("before").value = p.get("to") || "";
  $("sort").value = p.get("sort") === "date" ? "date" : "score";
  for (const id of EXIF_FILTERS) $(id).value = p.get(id) || "";
  $("has_gps").checked = p.get("has_gps") === "true";
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
  if (state.source) runSearch(false); else showWelcome(searchText);
}

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
  if (!state.source) { showWelcome(searchText); return; }
  if (push) history.pushState(null, "", pageUrl());
  const seq = ++state.seq;
  hideDuplicates();
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
    else renderTiles(page, start, openViewer, filterByTag);
    if (state.results.length === 0) showEmpty(hasFilters(), clearFilters);
  } catch (e) {
    if (seq !== state.seq) return;
    state.done = true;
    if (state.results.length === 0) { clearResults(); showError(e.message, e.status, () => runSearch(false)); }
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
    showError(`${file.name} is not an image. Drop a JPEG, PNG, WebP, GIF, TIFF or BMP photo.`, 400, () => runSearch(false));
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

function clearChip() {
  clearPhoto();
  state.source = null;
  $("query-chip").hidden = true;
  $("q").placeholder = "Describe a photo, e.g. a dog on the beach";
  history.pushState(null, "", pageUrl());
  showWelcome(searchText);
  $("q").focus();
}

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
  for (const id of ["folder", "after", "before", "sort", ...EXIF_FILTERS, "has_gps"]) $(id).disabled = off;
  $("clear-filters").hidden = !hasFilters();
  const active = [$("folder").value.trim(), $("after").value, $("before").value, $("sort").value !== "score"].filter(Boolean).length +
    exifFiltersOn();
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
  for (const id of EXIF_FILTERS) $(id).value = "";
  $("has_gps").checked = false;
  updateFilterControls();
  if (state.source) runSearch();
}

function filterByTag(tag) {  // a tag chip on a tile: show only the photos with that tag
  $("tag").value = tag;
  filtersChanged();
}

function filtersChanged() {
  updateFilterControls();
  if (state.source) runSearch();
}

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
  for (const id of [...EXIF_FILTERS, "has_gps"]) {
    $(id).addEventListener("change", filtersChanged);
    $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $(id).blur(); } });
  }
  $("clear-filters").addEventListener("click", clearFilters);
  $("filters-toggle").addEventListener("click", toggleFilters);
  $("collapse").addEventListener("change", filtersChanged);
  $("show-duplicates").addEventListener("click", () => { ++state.seq; showDuplicates(); });

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

async function loadTags() {  // the Tag filter suggests the library's tags (GET /tags: the server's model's and folders')
  try {
    const body = await api("/tags");
    $("tag-list").replaceChildren(...body.tags.map((t) => {
      const opt = el("option");
      opt.value = t.label;
      opt.label = `${t.label} (${t.count})`;
      return opt;
    }));
  } catch (e) { /* an empty library has no tags to suggest; searching still works */ }
}

bindEvents();
restoreFromUrl();

loadStatus().then(() => updateFilterControls());
loadTags();

