"""A fine-tuning run as one small SVG chart, drawn from its model card (no plotting library).

Left: the learning-rate range test (smoothed loss against the rate, log scale, the
chosen rate marked). Right: validation score (mean R@1 of both directions) against
the step, the kept best step marked. Either panel says so when its data is absent.
"""

from __future__ import annotations

import math
from typing import Any, Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 240
PANEL_W, PANEL_H = 260, 160
MARGIN_X, MARGIN_Y = 50, 40


def run_chart(card: dict[str, Any]) -> str:
    """The SVG text for a fine-tuned model's card."""
    search = card.get("lr_search") or {}
    curve = [(math.log10(p["lr"]), p["loss"]) for p in search.get("curve", [])]
    marks = [math.log10(search["lr"])] if "lr" in search else []
    validation = card.get("training", {}).get("validation", [])
    points = [(float(v["step"]), float(v["score"])) for v in validation]
    best = card.get("training", {}).get("best_step")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        _panel(MARGIN_X, "learning-rate range test", "log10 rate", "loss", curve, marks),
        _panel(MARGIN_X + PANEL_W + 70, "validation", "step", "R@1 (mean)", points, [float(best)] if best else []),
        "</svg>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _panel(
    left: float, title: str, x_label: str, y_label: str, points: Sequence[tuple[float, float]], marks: Sequence[float]
) -> str:
    top, bottom, right = MARGIN_Y, MARGIN_Y + PANEL_H, left + PANEL_W
    out = [
        f'<text x="{left}" y="{top - 12}" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>',
        f'<text x="{left + PANEL_W / 2}" y="{bottom + 28}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="{left - 38}" y="{top + PANEL_H / 2}" transform="rotate(-90 {left - 38} {top + PANEL_H / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]
    if not points:
        out.append(f'<text x="{left + 10}" y="{top + 20}" fill="#666">not recorded</text>')
        return "\n".join(out)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> str:
        return f"{left + (x - x0) / (x1 - x0) * PANEL_W:.1f},{bottom - (y - y0) / (y1 - y0) * PANEL_H:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    out.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for mark in marks:
        x = left + (mark - x0) / (x1 - x0) * PANEL_W
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" stroke-dasharray="4 3"/>')
    out += [
        f'<text x="{left}" y="{bottom + 14}">{x0:g}</text>',
        f'<text x="{right}" y="{bottom + 14}" text-anchor="end">{x1:.3g}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{y0:.2f}</text>',
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{y1:.2f}</text>',
    ]
    return "\n".join(out)
