// The library's fine-tuned models: each card's before/after table and its run chart.
// The chart is an <img> of our own SVG (an image cannot run script); card text goes in through textContent.

import { api } from "./api.js";
import { $, el } from "./dom.js";

const DIRECTIONS = [["text→image", "text_to_image"], ["image→text", "image_to_text"]];
const KS = ["R@1", "R@5", "R@10"];

const number = (v) => (typeof v === "number" ? v.toFixed(3) : "–");

function metricsTable(metrics) {
  const table = el("table", "metrics-table");
  const head = el("tr");
  for (const h of ["", "base", "tuned"]) head.append(el("th", null, h));
  table.append(head);
  for (const [label, key] of DIRECTIONS) {
    for (const k of KS) {
      const row = el("tr");
      row.append(el("th", null, `${label} ${k}`));
      for (const side of ["base", "tuned"]) row.append(el("td", null, number(metrics?.[side]?.[key]?.[k])));
      table.append(row);
    }
  }
  return table;
}

function facts(m) {
  const rate = typeof m.lr === "number" ? `learning rate ${m.lr.toExponential(1)}${m.lr_auto ? " (auto)" : ""}` : null;
  const run = m.steps != null ? `${m.steps} steps, stopped by ${m.stopped_by}` : null;
  const alpha = m.wise_ft_alpha != null ? `wise-ft α ${m.wise_ft_alpha}` : null;
  return [`from ${m.base || m.arch}`, rate, run, alpha, m.created_at].filter(Boolean).join(" · ");
}

function modelCard(m) {
  const box = el("article", "saved-model");
  box.dataset.name = m.name;
  box.append(el("h3", null, m.name), el("p", "saved-model-facts", facts(m)));
  if (m.metrics) box.append(metricsTable(m.metrics));
  if (m.chart_url) {
    const chart = el("img", "run-chart");
    chart.src = m.chart_url;
    chart.alt = `Learning-rate range test and validation curve of ${m.name}`;
    box.append(chart);
  }
  return box;
}

export async function loadSavedModels() {
  let body;
  try {
    body = await api("/saved-models");
  } catch (e) {
    return; // searching works without this panel
  }
  const models = body.models || [];
  $("saved-models-count").textContent = String(models.length);
  $("saved-models-list").replaceChildren(...models.map(modelCard));
  $("saved-models").hidden = models.length === 0;
}

loadSavedModels();
