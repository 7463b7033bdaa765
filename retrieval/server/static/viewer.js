// The viewer: full image, metadata, prev/next, and the texts describing a photo.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { baseName, folderOf, renderTexts, score } from "./render.js";
import { state } from "./state.js";

export async function openViewer(index) {
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

export function closeViewer() {
  const viewer = $("viewer");
  if (viewer.hidden) return;
  viewer.hidden = true;
  document.body.style.overflow = "";
  $("viewer-img").removeAttribute("src");
  const tile = document.querySelector(`.tile[data-index="${state.viewerIndex}"]`);
  state.viewerIndex = -1;
  if (tile) tile.focus();
}

export async function describe() {
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
