"""Tags per model over every interface: GET /items/{id} (with the EXIF fields), GET /tags, and --tag with --model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from PIL.TiffImagePlugin import IFDRational as R
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, make_photo
from indexer.errors import NoVectors
from indexer.filters import SearchFilter
from indexer.models import ModelSpec
from retrieval.demo import world
from retrieval.library import Library
from retrieval.search import ImageResult
from saved_model_kit import save_tuned_model
from serverkit import client_for
from test_exif_filters import LIMA, exif_for

COLOURS = list(world.COLOURS)
TUNED_LABELS = [f"{c} thing" for c in COLOURS]  # labels only the second model tags with
TUNED = ModelSpec.parse("tuned")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, list[int], Path]]:
    """12 world scenes and one photo with full EXIF, indexed by clipdex-tiny (active) and a saved fine-tune
    `tuned`; tiny tags them with the colours, `tuned` with TUNED_LABELS, and folder tags on top."""
    folder = tmp_path_factory.mktemp("tags-http")
    photos = folder / "photos"
    world.write_world(photos / "world", world.make_scenes(12, 1516, world.BASE, split="test"))
    exif = exif_for(camera=("Nikon", "Z 6"), lens=("Nikon", "NIKKOR Z 24-70mm f/4 S"), focal=R(50, 1), iso=800, gps=LIMA)
    make_photo(photos / "exif.jpg", seed=5, exif=exif)
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before conftest's per-test env
        mp.setenv("CLIPDEX_NO_EXPORT", "1")
        lib = Library.open(folder / "lib")
        lib.index([photos], model=TINY)
        save_tuned_model(lib.home, "tuned")
        lib.index([photos], model=TUNED)
        lib.tag([COLOURS], folder_tags=True)
        lib.tag([TUNED_LABELS], model=TUNED)
        ids = sorted(lib.catalog.filter_ids("image", SearchFilter()).tolist())
        yield lib, ids, photos / "exif.jpg"
        lib.close()


def test_tags_are_kept_apart_per_model(two_models) -> None:  # type: ignore[no-untyped-def]
    lib, ids, _ = two_models
    tiny, tuned = lib.tags(), lib.tags(TUNED)
    assert lib.tags(TINY) == tiny and tiny["world"] == tuned["world"] == 12  # folder tags are every model's
    assert set(tiny) - {"world"} <= set(COLOURS) and set(tuned) - {"world"} <= set(TUNED_LABELS)
    assert set(tuned) - {"world"}, "the tuned model tagged nothing: the test needs one of its labels"
    everything = lib.catalog.tags_of(ids)  # every source
    assert {i: sorted(set(v) - set(TUNED_LABELS)) for i, v in everything.items()} == {
        i: v for i, v in lib.catalog.tags_of(ids, lib.active_model().id).items()  # type: ignore[union-attr]
    }
    with pytest.raises(NoVectors, match="no vectors from clipdex-tiny:nosuchtag"):
        lib.tags(ModelSpec.parse("clipdex-tiny:nosuchtag"))


def test_tag_filter_reads_the_searched_models_tags(two_models) -> None:  # type: ignore[no-untyped-def]
    lib, ids, _ = two_models
    label = next(lab for lab in TUNED_LABELS if lab in lib.tags(TUNED))
    holders = sorted(i for i, v in lib.catalog.tags_of(ids).items() if label in v)
    assert lib.search("a circle", top=50, filters=SearchFilter.parse(tag=[label])) == []  # tiny never tagged it
    hits = lib.search("a circle", top=50, filters=SearchFilter.parse(tag=[label]), model=TUNED)
    assert sorted(h.id for h in hits) == holders and all(isinstance(h, ImageResult) and label in h.tags for h in hits)
    both = lib.search("a circle", top=50, filters=SearchFilter.parse(tag=[label, "world"]), model=TUNED)
    assert sorted(h.id for h in both) == holders  # a folder tag and a model tag together
    assert all(not set(h.tags) & set(COLOURS) for h in hits if isinstance(h, ImageResult))  # tiny's tags stay out

    runner, home = CliRunner(), str(lib.home)
    out = runner.invoke(app, ["search", "a circle", "--library", home, "--tag", label, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout) == [], out.output
    out = runner.invoke(app, ["search", "a circle", "--library", home, "--model", "tuned", "--tag", label, "--json", "--top", "50"])
    assert out.exit_code == 0, out.output
    assert sorted(h["id"] for h in json.loads(out.stdout)) == holders


def test_item_endpoint_has_exif_fields_tags_and_gps_only_when_asked(two_models) -> None:  # type: ignore[no-untyped-def]
    lib, ids, exif_photo = two_models
    client = client_for(lib)
    exif_id = next(i for i in ids if lib.item(i).path == str(exif_photo))  # type: ignore[union-attr]
    body = client.get(f"/api/v1/items/{exif_id}").json()
    assert {k: body[k] for k in ("camera", "lens", "focal_mm", "iso", "lat", "lon", "tags")} == {
        "camera": "Nikon Z 6", "lens": "Nikon NIKKOR Z 24-70mm f/4 S", "focal_mm": 50.0, "iso": 800,
        "lat": None, "lon": None, "tags": lib.item_tags(exif_id),
    }  # fmt: skip
    placed = client.get(f"/api/v1/items/{exif_id}", params={"gps": "true"}).json()
    assert (round(placed["lat"], 4), round(placed["lon"], 4)) == (-12.0433, -77.04)
    assert {k: v for k, v in placed.items() if k not in ("lat", "lon")} == {k: v for k, v in body.items() if k not in ("lat", "lon")}

    tagged = next(i for i in ids if set(lib.item_tags(i)) & set(COLOURS) and "world" in lib.item_tags(i))
    tags = client.get(f"/api/v1/items/{tagged}").json()["tags"]
    assert tags == lib.item_tags(tagged) and "world" in tags and not set(tags) & set(TUNED_LABELS)
    tuned_tags = client_for(lib, model=TUNED).get(f"/api/v1/items/{tagged}").json()["tags"]
    assert tuned_tags == lib.item_tags(tagged, TUNED) and not set(tuned_tags) & set(COLOURS)


def test_tags_endpoint_lists_a_models_tags_with_counts(two_models) -> None:  # type: ignore[no-untyped-def]
    lib, _, _ = two_models
    client = client_for(lib)

    def listed(counts: dict[str, int]) -> list[dict[str, object]]:
        return [{"label": k, "count": n} for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    assert client.get("/api/v1/tags").json() == {"model": "clipdex-tiny", "tags": listed(lib.tags())}
    assert client.get("/api/v1/tags", params={"model": "tuned"}).json() == {"model": "tuned", "tags": listed(lib.tags(TUNED))}
    assert client_for(lib, model=TUNED).get("/api/v1/tags").json()["tags"] == listed(lib.tags(TUNED))
    missing = client.get("/api/v1/tags", params={"model": "clipdex-tiny:nosuchtag"})
    assert missing.status_code == 404 and "error" in missing.json()
