"""`clipdex tag`: zero-shot tags at calibrated thresholds, re-tagging only what changed, folder tags, --tag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, make_photo
from indexer.encode import encode_texts
from indexer.filters import SearchFilter
from indexer import model_store
from retrieval import tagging
from retrieval.demo import world
from retrieval.library import Library
from retrieval.search import ImageResult
from serverkit import client_for

COLOURS, SHAPES = list(world.COLOURS), list(world.BASE.shapes)
SETS = [COLOURS, SHAPES]  # two sets of alternatives, as a label file's [colours] and [shapes] sections
LABELS = [*COLOURS, *SHAPES]
SEED = 1515


def truth_of(scenes: list[world.Scene]) -> np.ndarray:
    return np.array([[any(lab in (t.colour, t.shape) for t in s.things) for lab in LABELS] for s in scenes])


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, list[world.Scene], tagging.TagReport]]:
    """120 world scenes indexed with clipdex-tiny and tagged with the world's colours and shapes;
    the even ones in a folder `even`, which folder tags add."""
    folder = tmp_path_factory.mktemp("tags")
    scenes = world.make_scenes(120, SEED, world.BASE, split="test")
    world.write_world(folder / "photos", scenes)
    (folder / "photos" / "even").mkdir()
    for n in range(0, len(scenes), 2):
        (folder / "photos" / f"scene{n:05d}.png").rename(folder / "photos" / "even" / f"scene{n:05d}.png")
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before conftest's per-test env
        mp.setenv("CLIPDEX_NO_EXPORT", "1")  # labels encoded by torch, as reference_scores does
        lib = Library.open(folder / "lib")
        lib.index([folder / "photos"], model=TINY)
        report = lib.tag(SETS, folder_tags=True)
        yield lib, scenes, report
        lib.close()


def ids_by_scene(lib: Library, count: int) -> list[int]:
    everything = lib.catalog.filter_ids("image", SearchFilter()).tolist()
    by_name = {Path(r.path or "").name: i for i, r in lib.catalog.items(everything).items()}
    return [by_name[f"scene{n:05d}.png"] for n in range(count)]


def reference_scores(lib: Library, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, recomputed here from the stored vectors with numpy: (scores (N, L), thresholds (L,))."""
    model = lib.active_model()
    assert model is not None
    encoder = lib.encoder(TINY)
    templates = json.loads((model_store.BUILTIN_DIR / "clipdex-tiny.json").read_text())["prompt_templates"]
    background = encode_texts(encoder, list(tagging.BACKGROUND))  # (K, D), one prompt each
    got, vecs = lib.catalog.vectors(model.id, "image", ids)
    row = {int(i): n for n, i in enumerate(got)}
    vecs = vecs[[row[i] for i in ids]]  # (N, D) in the order of ids
    scores, thresholds = [], []
    for labels in SETS:
        prompts = encode_texts(encoder, [t.format(lab) for lab in labels for t in templates])
        vectors = prompts.reshape(len(labels), len(templates), -1).mean(axis=1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # (L, D)
        s = vecs @ vectors.T
        # a set of 4 or more is its own reference (the colours, 6, and the shapes, 4); a smaller one is compared
        # with the background too (test_a_set_of_three_is_compared_with_the_background)
        reference = s if len(labels) >= 4 else np.concatenate([s, vecs @ background.T], axis=1)
        scores.append((s - reference.mean(axis=1, keepdims=True)) / reference.std(axis=1, keepdims=True))
        n = reference.shape[1]
        thresholds += [np.sqrt((n - 3) / 3)] * len(labels)  # K = 3 labels equally present
    return np.concatenate(scores, axis=1), np.array(thresholds)


def test_tags_are_the_labels_above_thresholds_of_the_documented_rule(tagged) -> None:  # type: ignore[no-untyped-def]
    lib, scenes, report = tagged
    ids = ids_by_scene(lib, len(scenes))
    scores, thresholds = reference_scores(lib, ids)
    assert (report.calibrated, report.tagged, report.unchanged, report.waiting, report.sets) == (True, 120, 0, 0, 2)
    assert report.thresholds == {**{c: 1.0 for c in COLOURS}, **{s: pytest.approx(np.sqrt(1 / 3)) for s in SHAPES}}
    np.testing.assert_allclose([report.thresholds[lab] for lab in LABELS], thresholds)
    expected = {
        i: sorted([LABELS[j] for j in np.flatnonzero(row >= thresholds)] + (["even"] if n % 2 == 0 else []))
        for n, (i, row) in enumerate(zip(ids, scores))
    }
    margin = np.abs(scores - thresholds).min(axis=1)
    clear = [i for i, m in zip(ids, margin) if m > 0.02]  # leave out scores within the encoders' noise of a threshold
    assert len(clear) > 80
    got = lib.catalog.tags_of(ids)
    assert {i: got.get(i, []) for i in clear} == {i: expected[i] for i in clear}
    assert report.tags == sum(len(v) for v in got.values())  # the labels' and the 60 folder tags
    assert (report.folder_tagged, sum("even" in v for v in got.values())) == (120, 60)


def test_colour_tags_are_precise_and_find_most_colours_on_the_synthetic_world(tagged) -> None:  # type: ignore[no-untyped-def]
    """Colours, pooled over the six: precision at least 0.9 and recall at least 0.8 (the issue's targets),
    far above a permuted control."""
    lib, scenes, _ = tagged
    ids = ids_by_scene(lib, len(scenes))
    got = lib.catalog.tags_of(ids)
    pred = np.array([[lab in got.get(i, []) for lab in LABELS] for i in ids])
    truth = truth_of(scenes)
    colours = slice(0, len(COLOURS))
    tp = (pred & truth)[:, colours].sum()
    precision, recall = tp / pred[:, colours].sum(), tp / truth[:, colours].sum()
    control = truth[np.random.default_rng(0).permutation(len(scenes))]
    chance = (pred & control)[:, colours].sum() / pred[:, colours].sum()
    assert precision >= 0.9 and recall >= 0.8 and chance < 0.35, (precision, recall, chance)


def test_issue_targets_precision_09_recall_08_for_every_label(tagged) -> None:  # type: ignore[no-untyped-def]
    lib, scenes, _ = tagged
    ids = ids_by_scene(lib, len(scenes))
    got = lib.catalog.tags_of(ids)
    pred = np.array([[lab in got.get(i, []) for lab in LABELS] for i in ids])
    truth = truth_of(scenes)
    tp = (pred & truth).sum(axis=0)
    assert ((tp / np.maximum(pred.sum(axis=0), 1) >= 0.9) & (tp / truth.sum(axis=0) >= 0.8)).all()


def test_a_set_of_three_is_compared_with_the_background() -> None:
    """Four alternatives or more are their own reference; fewer are scored against the background texts too."""
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(rng.normal(size=(n, 16)))  # noqa: E731
    images, labels, background = unit(5), unit(4), unit(30)
    for size, reference in ((4, labels), (3, np.concatenate([labels[:3], background]))):
        scores, threshold = tagging.set_scores(images, labels[:size], background)
        cos = images @ reference.T
        expected = (images @ labels[:size].T - cos.mean(axis=1, keepdims=True)) / cos.std(axis=1, keepdims=True)
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        n = len(reference)
        assert threshold == pytest.approx(np.sqrt((n - 3) / 3))  # 0.577 for 4 labels, 3.16 for 3 with 30 texts


def test_tag_filters_before_ranking_and_results_carry_tags(tagged) -> None:  # type: ignore[no-untyped-def]
    lib, scenes, _ = tagged
    ids = ids_by_scene(lib, len(scenes))
    tags = lib.catalog.tags_of(ids)
    red = sorted(i for i in ids if "red" in tags.get(i, []))
    other = "even"  # a folder tag
    red_circle = sorted(i for i in red if other in tags[i])
    assert red and red_circle
    results = lib.search("a large blue square", top=200, filters=SearchFilter.parse(tag=["red"]))
    assert sorted(r.id for r in results) == red  # every red-tagged photo, however it ranks
    assert all(isinstance(r, ImageResult) and r.tags == tags[r.id] for r in results)
    assert sorted(lib.catalog.filter_ids("image", SearchFilter.parse(tag=["red", other])).tolist()) == red_circle
    assert lib.search("red", top=5, filters=SearchFilter.parse(tag=["no such tag"])) == []

    client = client_for(lib)
    hits = client.get("/api/v1/search", params={"q": "a circle", "tag": ["red", other], "top": 200}).json()["results"]
    assert sorted(h["id"] for h in hits) == red_circle and all(other in h["tags"] for h in hits)

    out = CliRunner().invoke(app, ["search", "a circle", "--library", str(lib.home), "--tag", "red", "--json", "--top", "3"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and all(h["id"] in red and h["tags"] == tags[h["id"]] for h in hits)


def test_re_tagging_touches_only_new_and_changed_photos_or_all_for_new_labels(tmp_path: Path) -> None:
    scenes = world.make_scenes(36, SEED + 1, world.BASE, split="test")
    photos = tmp_path / "photos"
    world.write_world(photos, scenes[:30])
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# the world's colours and shapes\n[colours]\n" + "\n".join(COLOURS) + "\n\n[shapes]\n"
                           + "\n".join(SHAPES) + "\n")  # fmt: skip
    home = tmp_path / "lib"
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
    out = CliRunner().invoke(app, ["tag", "--labels", str(labels_file), "--library", str(home), "--json"])
    assert out.exit_code == 0, out.output
    first = json.loads(out.stdout)
    assert (first["model"], first["labels"], first["sets"], first["calibrated"], first["tagged"], first["unchanged"]) == (
        "clipdex-tiny", 10, 2, True, 30, 0)  # fmt: skip
    with Library.open(home) as lib:
        report = lib.tag(SETS)
        assert (report.tagged, report.unchanged, report.calibrated) == (0, 30, False)

        world.write_world(photos, scenes, name="more.csv")  # six new pictures; the first thirty rewritten identically
        shutil.copy(photos / "scene00033.png", photos / "scene00003.png")  # one changed
        lib.index()
        again = lib.tag(SETS)
        assert (again.calibrated, again.tagged, again.unchanged) == (False, 7, 29)
        assert again.to_dict()["thresholds"] == first["thresholds"]

        changed = lib.tag(LABELS[:-1])  # one new set of nine: every photo again, new thresholds
        assert (changed.calibrated, changed.tagged, changed.unchanged, changed.labels, changed.sets) == (True, 36, 0, 9, 1)
        assert list(changed.thresholds.values()) == [pytest.approx(np.sqrt(2))] * 9  # among 9, K = 3: sqrt(6 / 3)
        assert "cross" not in lib.tags()


def test_folder_tags_are_the_folders_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_photo(root / "2021" / "Beach trip" / "a.jpg", seed=1)
    make_photo(root / "2021" / "b.jpg", seed=2)
    make_photo(root / "c.jpg", seed=3)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        report = lib.tag(folder_tags=True)
        assert (report.folder_tagged, report.folder_unchanged, report.labels) == (3, 0, 0)
        assert lib.tags() == {"2021": 2, "Beach trip": 1}
        (root / "2021" / "Beach trip").rename(root / "2021" / "Sea")
        lib.index()
        report = lib.tag(folder_tags=True)
        assert (report.folder_tagged, report.folder_unchanged) == (1, 2)  # the moved photo only
        assert lib.tags() == {"2021": 2, "Sea": 1}
        hits = lib.search("a photo", top=10, filters=SearchFilter.parse(tag=["Sea"]))
        assert [(Path(h.path).name, h.tags) for h in hits if isinstance(h, ImageResult)] == [("a.jpg", ["2021", "Sea"])]


def test_read_labels_skips_blanks_comments_and_repeats() -> None:
    assert tagging.read_labels("beach\n\n# a comment\n  dog \nbeach\n") == ["beach", "dog"]
    text = "# scenes\nbeach\nforest\n[animals]\ndog\n cat\ndog\n[empty]\n\n[ colours ]\nred\nbeach\n"
    assert tagging.read_label_sets(text) == [["beach", "forest"], ["dog", "cat"], ["red", "beach"]]
    assert tagging.read_labels(text) == ["beach", "forest", "dog", "cat", "red"]
    assert tagging.as_label_sets(["a", "b", "a"]) == [["a", "b"]] and tagging.as_label_sets([["a"], [], ["b"]]) == [["a"], ["b"]]
    assert [tagging.threshold_for(n) for n in (4, 6, 34)] == [pytest.approx(np.sqrt(1 / 3)), 1.0, pytest.approx(np.sqrt(31 / 3))]
    assert len(tagging.STARTER_LABELS) == len(set(tagging.STARTER_LABELS)) >= 30
