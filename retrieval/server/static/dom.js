// Small DOM helpers. Library data (paths, texts) only ever goes in through textContent.

export const $ = (id) => document.getElementById(id);

export const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

const ICONS = {
  search: ["M11 4a7 7 0 1 0 0 14a7 7 0 1 0 0-14z", "M20 20l-3.5-3.5"],
  empty: ["M4 6.5A1.5 1.5 0 0 1 5.5 5h13A1.5 1.5 0 0 1 20 6.5v11a1.5 1.5 0 0 1-1.5 1.5h-13A1.5 1.5 0 0 1 4 17.5z",
    "M4 15l4.5-4.5 3.5 3.5 2.5-2.5L20 17", "M3 3l18 18"],
  error: ["M12 4L2.8 19.5h18.4z", "M12 10v4", "M12 17v.01"],
  offline: ["M2 8.8a15 15 0 0 1 20 0", "M5.5 12.3a10 10 0 0 1 13 0", "M9 15.8a5 5 0 0 1 6 0", "M12 19.5v.01", "M3 3l18 18"],
};

export function icon(name) {
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
