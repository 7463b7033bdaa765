// The duplicates view: GET /duplicates, each group drawn as a stack (keeper first, then its copies
// and burst shots, each labelled with how it matches the keeper). Nothing here deletes anything.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { baseName, clearResults, setState, stateArt, updateSummary } from "./render.js";

export async function showDuplicates() {
  clearResults();
  const box = $("duplicates");
  box.replaceChildren();
  box.hidden = false;
  setState(null);
  updateSummary("Looking for duplicates…");
  try {
    const report = await api("/duplicates");
    updateSummary(`${report.groups.length} group${report.groups.length === 1 ? "" : "s"} of duplicates among ` +
      `${Number(report.photos).toLocaleString()} photos · a suggested keeper each, nothing is deleted`);
    if (report.groups.length === 0) {
      setState("empty", (b) => stateArt(b, "empty", "No duplicates", "No copies, near copies or bursts were found."));
    }
    for (const group of report.groups) box.append(stack(group));
  } catch (e) {
    updateSummary(e.message);
  }
}

export function hideDuplicates() {
  $("duplicates").hidden = true;
  $("duplicates").replaceChildren();
}

function stack(group) {
  const section = el("section", "dup-group");
  section.dataset.tier = group.tier;
  section.dataset.keeper = String(group.keeper.id);
  const head = el("header", "dup-head");
  head.append(el("span", `dup-tier ${group.tier}`, group.tier),
    el("span", "dup-count", `${group.members.length} photos`),
    el("span", "dup-why", `Keep ${baseName(group.members[0].path)}: ${group.keeper.why}`));
  head.title = `Rule: ${group.keeper.rule}`;
  const row = el("div", "dup-members");
  for (const m of group.members) {
    const card = el("a", `dup-member ${m.match}`);
    card.href = m.image_url;
    card.target = "_blank";
    card.rel = "noopener";
    card.dataset.id = String(m.id);
    card.title = m.path;
    const img = el("img");
    img.loading = "lazy";
    img.alt = baseName(m.path);
    img.src = m.thumbnail_url;
    const size = m.width ? `${m.width}×${m.height}` : "";
    card.append(img, el("span", "dup-match", m.match), el("span", "dup-name", baseName(m.path)),
      el("span", "dup-meta", [size, m.taken_at ? m.taken_at.slice(0, 19).replace("T", " ") : ""].filter(Boolean).join(" · ")));
    row.append(card);
  }
  section.append(head, row);
  return section;
}
