// Rendering: the grid, text results, summary, query chip, and the welcome/empty/loading/error states.
// What a click does (open the viewer, search, clear the filters) is passed in: this module imports
// no module that imports it.

import { $, el, icon } from "./dom.js";
import { state } from "./state.js";

const EXAMPLES = ["sunset over the sea", "a dog playing outside", "snowy mountains", "a birthday cake", "a city street at night"];

export function baseName(path) {
  if (!path) return "";
  const parts = path.split("/");
  return parts[parts.length - 1] || path;
}

export function folderOf(path) {
  const i = path ? path.lastIndexOf("/") : -1;
  return i > 0 ? path.slice(0, i) : "";
}

export function score(value) {
  return value.toFixed(2);
}

export function clearResults() {
  $("grid").replaceChildren();
  $("text-results").replaceChildren();
  $("sentinel").hidden = true;
}

export function renderTiles(page, start, onOpen, onTag) {
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
    if (hit.tags && hit.tags.length) tile.append(tagChips(hit.tags, onTag));
    tile.addEventListener("click", () => onOpen(start + i));
    grid.append(tile);
  });
}

function tagChips(tags, onTag) {
  // Inside a tile (itself a button), so each chip is a span that acts as a button.
  const box = el("span", "tags");
  for (const tag of tags) {
    const chip = el("span", "chip", tag);
    chip.setAttribute("role", "button");
    chip.tabIndex = 0;
    chip.title = `Only photos tagged ${tag}`;
    const pick = (e) => { e.stopPropagation(); e.preventDefault(); onTag(tag); };
    chip.addEventListener("click", pick);
    chip.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pick(e); });
    box.append(chip);
  }
  return box;
}

export function renderTexts(list, hits, replace) {
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

export function setState(kind, build) {
  const box = $("state");
  box.className = kind ? `state ${kind}` : "state";
  box.replaceChildren();
  if (build) build(box);
}

export function stateArt(box, symbol, title, text) {
  const art = el("div", "art");
  art.append(icon(symbol));
  box.append(art);
  const wrap = el("div");
  wrap.append(el("h2", "", title));
  if (text) wrap.append(el("p", "", text));
  box.append(wrap);
  return wrap;
}

export function showWelcome(onExample) {
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
      b.addEventListener("click", () => { $("q").value = text; onExample(text); });
      examples.append(b);
    }
    wrap.append(examples);
  });
}

export function showLoading() {
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

export function showEmpty(hasFilters, onClearFilters) {
  const filtered = state.mode === "photos" && hasFilters;
  setState("empty", (box) => {
    const wrap = stateArt(box, "empty", state.mode === "texts" ? "No texts found" : "No photos match",
      filtered ? "Nothing passes the folder and date filters. Widen them, or clear them to search everything."
        : state.mode === "texts" ? "The library has no texts yet. Add captions or labels with clipdex add-texts FILE."
          : "Try other words, or drop a photo to search by example.");
    if (filtered) {
      const b = el("button", "retry", "Clear filters");
      b.type = "button";
      b.addEventListener("click", onClearFilters);
      wrap.append(b);
    }
  });
}

export function showError(message, status, onRetry) {
  updateSummary("");
  const title = status === 0 ? "Cannot reach clipdex" : status >= 500 ? "Something went wrong" : "That search did not work";
  setState("error", (box) => {
    const wrap = stateArt(box, status === 0 ? "offline" : "error", title, message);
    const b = el("button", "retry", "Try again");
    b.type = "button";
    b.addEventListener("click", onRetry);
    if (state.source && (status === 0 || status >= 500)) wrap.append(b);  // a 4xx would fail the same way
  });
}

export function updateSummary(text) {
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

export function showChip() {
  const src = state.source;
  const chip = $("query-chip");
  if (!src || src.kind === "text") { chip.hidden = true; return; }
  $("query-chip-img").src = src.kind === "photo" ? src.url : src.thumb;
  $("query-chip-label").textContent = src.kind === "photo" ? src.name : `Like ${src.name}`;
  chip.hidden = false;
  $("q").placeholder = "Or type to search by text";
}
