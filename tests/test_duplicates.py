"""clipdex duplicates on generated sets whose truth is known (tests/duplicate_sets.py), with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY
from duplicate_sets import write_set
from indexer import neighbours
from retrieval.duplicates import KEEPER_RULE, DuplicateConfig, Photo, find_duplicates
from retrieval.library import Library

SCENES = 3
DAY_ONE = {
    "pixels.png": "keeper",  # same pixels as the original, larger file: the keeper by the rule
    "original.jpg": "exact",
    "copy.jpg": "exact",
    "q85.jpg": "near",
    "q60.jpg": "near",
    "q35.jpg": "near",
    "half2.jpg": "near",
    "half4.jpg": "near",
    "crop.jpg": "near",
    "noexif.jpg": "near",
    "burst1.jpg": "burst",
    "burst2.jpg": "burst",
    "burst3.jpg": "burst",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Three scenes' sets (16 files each), indexed once for the module: (photos, library)."""
    base = tmp_path_factory.mktemp("dups")
    write_set(base / "photos", SCENES)
    with Library.open(base / "library") as lib:
        lib.index([base / "photos"], model=TINY)
    yield base / "photos", base / "library"


def _groups(report_groups: list) -> dict[str, dict[str, str]]:
    """{keeper file name: {member file name: match}}."""
    return {Path(g.members[0].path).name: {Path(m.path).name: m.match for m in g.members} for g in report_groups}


def test_groups_match_the_truth(indexed: tuple[Path, Path]) -> None:
    _, home = indexed
    with Library.open(home) as lib:
        report = lib.duplicates()
    expected = {f"s{k}-pixels.png": {f"s{k}-{name}": match for name, match in DAY_ONE.items()} for k in (1, 2, 3)}
    groups = _groups(report.groups)
    day_two = {keeper: members for keeper, members in groups.items() if "nextday" in keeper}
    assert {k: v for k, v in groups.items() if k not in day_two} == expected
    # The same scene a day later is its own burst: never merged with day one.
    assert sorted(sorted(m) for m in day_two.values()) == [[f"s{k}-nextday0.jpg", f"s{k}-nextday2.jpg"] for k in (1, 2, 3)]
    assert all(g.tier == "burst" for g in report.groups)
    grouped = {Path(m.path).name for g in report.groups for m in g.members}
    assert not any("lookalike" in name for name in grouped)  # same palette, other layout: apart
    assert report.photos == 16 * SCENES


def test_tiers_nest(indexed: tuple[Path, Path]) -> None:
    _, home = indexed
    with Library.open(home) as lib:
        near = _groups(lib.duplicates(DuplicateConfig(tier="near")).groups)
        exact = _groups(lib.duplicates(DuplicateConfig(tier="exact")).groups)
        no_window = _groups(lib.duplicates(DuplicateConfig(window_s=0)).groups)
    day_one_near = {k: v for k, v in DAY_ONE.items() if v != "burst"}
    assert near == {f"s{k}-pixels.png": {f"s{k}-{n}": m for n, m in day_one_near.items()} for k in (1, 2, 3)}
    assert no_window == near  # bursts need capture times within the window
    assert exact == {
        f"s{k}-pixels.png": {f"s{k}-pixels.png": "keeper", f"s{k}-original.jpg": "exact", f"s{k}-copy.jpg": "exact"}
        for k in (1, 2, 3)
    }


def test_cli_json_and_text(indexed: tuple[Path, Path]) -> None:
    photos, home = indexed
    runner = CliRunner()
    res = runner.invoke(app, ["duplicates", "--library", str(home), "--json", "--tier", "exact"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"model", "photos", "window_s", "tier", "groups"}
    assert (data["photos"], data["window_s"], data["tier"]) == (48, 10.0, "exact")
    first = data["groups"][0]
    assert first["keeper"] == {
        "id": first["members"][0]["id"],
        "rule": KEEPER_RULE,
        "why": f"largest file among those at 480x360: {(photos / 's1-pixels.png').stat().st_size} bytes",
    }
    original = next(m for m in first["members"] if m["path"] == str(photos / "s1-original.jpg"))
    assert original == {
        "id": original["id"], "path": str(photos / "s1-original.jpg"),
        "size": (photos / "s1-original.jpg").stat().st_size, "width": 480, "height": 360,
        "taken_at": original["taken_at"], "match": "exact",
    }
    assert original["taken_at"].startswith("2024-07-01T10:00:00")
    res = runner.invoke(app, ["duplicates", "--library", str(home), "--window", "1h"])
    assert res.exit_code == 0
    assert res.stdout.splitlines()[0].startswith(f"burst group of 13: keep {photos / 's1-pixels.png'} (largest file")
    res = runner.invoke(app, ["duplicates", "--library", str(home), "--window", "soon"])
    assert res.exit_code == 2 and "--window" in res.output


def test_search_collapse_shows_keepers_only(indexed: tuple[Path, Path]) -> None:
    photos, home = indexed
    with Library.open(home) as lib:
        full = lib.search(str(photos / "s2-q60.jpg"), top=5)
        collapsed = lib.search(str(photos / "s2-q60.jpg"), top=5, collapse=DuplicateConfig())
        hidden = lib.duplicates().hidden_ids()
    assert len(collapsed) == 5
    assert not {r.id for r in collapsed} & hidden
    assert Path(collapsed[0].path).name == "s2-pixels.png"  # the group's keeper stands for it
    assert sum(Path(r.path).name.startswith("s2-") for r in full) == 5  # uncollapsed: the copies crowd it
    res = CliRunner().invoke(app, ["search", "--library", str(home), str(photos / "s2-q60.jpg"), "--collapse", "--json", "--top", "5"])
    assert [r["id"] for r in json.loads(res.stdout)] == [r.id for r in collapsed]


def _photo(n: int, width: int, size: int, taken: float | None) -> Photo:
    return Photo(n, b"/nowhere/%d.jpg" % n, f"/nowhere/{n}.jpg", size, width, width * 3 // 4, taken, taken, None)


def test_keeper_rule_and_burst_needs_exif_times() -> None:
    vectors = np.tile(np.eye(4, dtype=np.float32)[:1], (5, 1))  # (5, 4): identical embeddings
    photos = [
        _photo(1, 400, 900, 1000.0),
        _photo(2, 800, 500, 1001.0),  # largest resolution: the keeper
        _photo(3, 600, 400, 1002.0),
        _photo(4, 800, 500, None),  # no capture time: never in a burst (and its file is unreadable: no hash)
        _photo(5, 400, 900, 2000.0),  # 1000 s later: outside the window
    ]
    report = find_duplicates(photos, vectors)
    assert [(g.keeper, g.why, [(m.id, m.match) for m in g.members]) for g in report.groups] == [
        (2, "largest resolution: 800x600", [(2, "keeper"), (3, "burst"), (1, "burst")])
    ]
    photos[2] = _photo(3, 800, 500, 1000.5)
    photos[0] = _photo(1, 800, 500, 999.0)
    report = find_duplicates(photos, vectors)
    assert report.groups[0].why == "earliest of those with the same resolution and size: " + str(
        report.groups[0].members[0].taken_at
    )
    assert report.groups[0].keeper == 1


def test_pairs_within_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    x = np.vstack([base, base[:300] + 0.05 * rng.normal(size=(300, 32)).astype(np.float32)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    want = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(sims >= 0.95, 1)))}
    i, j, s = neighbours.pairs_within(x, 0.95)
    assert set(zip(i.tolist(), j.tolist())) == want
    np.testing.assert_allclose(s, sims[i, j], rtol=1e-5)
    monkeypatch.setattr(neighbours, "EXACT_MAX", 100)  # the cell path: never a false pair, few missed
    i, j, _ = neighbours.pairs_within(x, 0.95)
    found = set(zip(i.tolist(), j.tolist()))
    assert found <= want and len(found) >= 0.95 * len(want)


def test_http_duplicates_and_collapse(indexed: tuple[Path, Path]) -> None:
    from serverkit import client_for

    photos, home = indexed
    with Library.open(home) as lib:
        want = lib.duplicates(DuplicateConfig(tier="near")).to_dict()
        collapsed = [r.id for r in lib.search("item:1", top=8, collapse=DuplicateConfig())]
        with client_for(lib) as client:
            body = client.get("/api/v1/duplicates", params={"tier": "near"}).json()
            hits = client.get("/api/v1/search", params={"q": "item:1", "top": 8, "collapse": "true"}).json()
            bad = client.get("/api/v1/duplicates", params={"tier": "similar"})
    for group in want["groups"]:  # type: ignore[union-attr]
        for m in group["members"]:
            m |= {"thumbnail_url": f"/api/v1/items/{m['id']}/thumbnail", "image_url": f"/api/v1/items/{m['id']}/image"}
    assert body == want
    assert [h["id"] for h in hits["results"]] == collapsed
    assert bad.status_code == 422


def test_a_server_groups_duplicates_without_holding_up_other_requests(
    indexed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from retrieval.duplicates import DuplicateJob
    from retrieval.server.schemas import SearchOptions
    from retrieval.server.service import SearchService
    from retrieval.server.settings import ServerSettings

    _, home = indexed
    started, release = threading.Event(), threading.Event()
    grouping = DuplicateJob.run

    def held_run(job: DuplicateJob) -> object:
        started.set()
        assert release.wait(60)
        return grouping(job)

    with Library.open(home) as lib:
        want = [r.id for r in lib.search("item:1", top=8, collapse=DuplicateConfig())]
        plain = [r.id for r in lib.search("item:2", top=3)]
    with Library.open(home) as lib:  # nothing grouped yet
        service = SearchService(lib, ServerSettings())
        monkeypatch.setattr(DuplicateJob, "run", held_run)
        collapsed: list[list[dict[str, object]]] = []
        first = threading.Thread(target=lambda: collapsed.append(service.search("item:1", SearchOptions(top=8, collapse=True))))
        first.start()
        assert started.wait(60)
        other: list[list[dict[str, object]]] = []
        second = threading.Thread(target=lambda: other.append(service.search("item:2", SearchOptions(top=3))))
        second.start()
        second.join(60)
        answered_while_grouping = not second.is_alive() and not release.is_set()
        release.set()
        first.join(60)
    assert answered_while_grouping
    assert [r["id"] for r in other[0]] == plain
    assert [r["id"] for r in collapsed[0]] == want
