"""`GET /api/v1/saved-models` and the run chart route, over a library holding a real fine-tuned model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from retrieval.finetune import FinetuneResult
from retrieval.library import Library
from retrieval.server.saved_models import CHART_CSP
from saved_model_kit import save_tuned_model
from serverkit import client_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FinetuneResult, TestClient]]:
    home = tmp_path_factory.mktemp("saved") / "lib"
    with Library.open(home) as lib:
        result = save_tuned_model(home, "shapes-tuned")
        with client_for(lib) as client:
            yield home, result, client


def test_lists_the_saved_model_with_its_before_after_metrics_and_chart(served: tuple[Path, FinetuneResult, TestClient]) -> None:
    _, result, client = served
    r = client.get("/api/v1/saved-models")
    assert r.status_code == 200
    card = result.card
    assert r.json() == {"models": [{
        "name": "shapes-tuned", "arch": "clipdex-tiny", "base": "clipdex-tiny", "created_at": card["created_at"],
        "lr": card["lr_search"]["lr"], "lr_auto": True, "steps": 4, "stopped_by": "step cap", "wise_ft_alpha": None,
        "metrics": {"base": result.before.to_dict(), "tuned": result.after.to_dict()},
        "chart_url": "/api/v1/saved-models/shapes-tuned/chart",
    }], "problems": []}  # fmt: skip
    assert "clipdex-tiny" not in [m["name"] for m in r.json()["models"]]  # built-in models are not "saved"


def test_the_chart_is_the_svg_beside_the_weights_sent_as_an_image_that_runs_nothing(
    served: tuple[Path, FinetuneResult, TestClient],
) -> None:
    _, result, client = served
    r = client.get("/api/v1/saved-models/shapes-tuned/chart")
    assert r.status_code == 200
    assert r.content == result.weights.with_suffix(".svg").read_bytes() and r.text.startswith("<svg")
    assert r.headers["content-type"] == "image/svg+xml"
    assert r.headers["content-security-policy"] == CHART_CSP and "script" not in CHART_CSP
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["no-such-model", "clipdex-tiny", "..%2Fshapes-tuned", "shapes-tuned.json"])
def test_a_name_that_is_no_saved_model_is_404(served: tuple[Path, FinetuneResult, TestClient], name: str) -> None:
    r = served[2].get(f"/api/v1/saved-models/{name}/chart")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == 404


def test_a_model_without_its_chart_is_listed_without_a_chart_url(served: tuple[Path, FinetuneResult, TestClient]) -> None:
    home, result, client = served
    chart = result.weights.with_suffix(".svg")
    svg = chart.read_bytes()
    chart.unlink()
    try:
        assert client.get("/api/v1/saved-models").json()["models"][0]["chart_url"] is None
        assert client.get("/api/v1/saved-models/shapes-tuned/chart").status_code == 404
    finally:
        chart.write_bytes(svg)


def test_a_damaged_card_is_left_out_and_named_without_hiding_the_others(served: tuple[Path, FinetuneResult, TestClient]) -> None:
    home, result, client = served
    weights = result.weights.with_name("broken.safetensors")
    weights.write_bytes(result.weights.read_bytes())
    weights.with_suffix(".json").write_text("{not json", encoding="utf-8")
    try:
        body = client.get("/api/v1/saved-models").json()
    finally:
        weights.unlink()
        weights.with_suffix(".json").unlink()
    assert [m["name"] for m in body["models"]] == ["shapes-tuned"]
    assert len(body["problems"]) == 1 and "broken.json cannot be read" in body["problems"][0]
