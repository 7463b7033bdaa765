"""The library's fine-tuned models over HTTP: their cards' before/after table and the run chart.

`GET /api/v1/saved-models` lists the models `clipdex finetune` saved in the library
(its `models/` folder) with the numbers of their cards; `GET /api/v1/saved-models/NAME/chart`
sends the SVG chart written beside the weights. A name is only looked up among the
listed models, never joined into a path. The SVG is ours, but it is still sent as
`image/svg+xml` with a CSP that allows no script, no fetch and no styles from elsewhere,
and the page shows it through `<img>`, where an SVG cannot run anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from indexer.model_store import ModelCard, list_cards
from retrieval.server.errors import SavedModelNotFound
from retrieval.server.service import API

CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
_CHART_HEADERS = {"Content-Security-Policy": CHART_CSP, "Cache-Control": "no-cache"}


def saved_models_router(home: Path) -> APIRouter:
    """The routes for the models saved in the library at `home` (included under API)."""
    router = APIRouter(tags=["models"])

    @router.get("/saved-models")
    def saved_models() -> dict[str, object]:
        """The library's fine-tuned models, newest first: base, training summary, before/after metrics, chart URL;
        `problems`: the cards that could not be read (left out)."""
        problems: list[str] = []
        return {"models": [model_summary(c) for c in _saved(home, problems)], "problems": problems}

    @router.get("/saved-models/{name}/chart", response_class=FileResponse)
    def chart(name: str) -> FileResponse:
        """The SVG chart of a saved model's run (range test and validation curve)."""
        card = next((c for c in _saved(home) if c.name == name), None)
        path = chart_path(card) if card is not None else None
        if path is None:
            raise SavedModelNotFound(f"no saved model {name!r} with a chart in this library")
        return FileResponse(path, media_type="image/svg+xml", headers=_CHART_HEADERS)

    return router


def _saved(home: Path, problems: list[str] | None = None) -> list[ModelCard]:
    cards = [c for c in list_cards(home, [] if problems is None else problems) if not c.is_builtin]
    return sorted(cards, key=lambda c: str(c.card.get("created_at", "")), reverse=True)


def chart_path(card: ModelCard) -> Path | None:
    """The chart `clipdex finetune` wrote beside the weights, if it is there."""
    path = card.weights.with_suffix(".svg")
    return path if path.is_file() else None


def model_summary(card: ModelCard) -> dict[str, Any]:
    """What the page shows of one saved model, from its card (missing fields are None)."""
    c = card.card
    training, search, hyper = _part(c, "training"), _part(c, "lr_search"), _part(c, "hyperparameters")
    kept, base = _part(c, "keep_base"), _part(c, "base")
    return {
        "name": card.name,
        "arch": card.arch,
        "base": base.get("model"),
        "created_at": c.get("created_at"),
        "lr": hyper.get("lr") if hyper.get("lr") is not None else search.get("lr"),
        "lr_auto": bool(search),
        "steps": training.get("steps"),
        "stopped_by": training.get("stopped_by"),
        "wise_ft_alpha": kept.get("alpha", hyper.get("wise_ft")),
        "metrics": c.get("metrics"),  # {"base": {...}, "tuned": {...}} as `clipdex eval --json` prints them
        "chart_url": f"{API}/saved-models/{card.name}/chart" if chart_path(card) is not None else None,
    }


def _part(card: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of the card, or {} where it is missing or not an object."""
    value = card.get(key)
    return value if isinstance(value, dict) else {}
