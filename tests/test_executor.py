"""The executor seam: the local executor embeds as the encoders do, failures come back as
values, and another executor plugged into `Library.index` gives the same catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pytest

from conftest import TINY, make_photo
from indexer import failpoints
from indexer.decode import DecodedImage, decode_image
from indexer.encode import encode_images, encode_texts
from indexer.errors import ModelNotAvailable
from indexer.executor import EmbedResult, EmbedTask, Failure, ModelRef, check_fingerprint
from indexer.items import IMAGE, TEXT
from indexer.local_executor import LocalExecutor
from indexer.models import Encoder, ModelSpec, load_encoder
from indexer.workers import PoolConfig
from retrieval.library import Library

TEXTS = ["a cat on a sofa", "the beach at sunset", "a red car"]
BATCH = 16  # images per encoder call on both sides: the same batches give the same bits


class SerialExecutor:
    """Another engine, written here: decodes in this process, one file after another."""

    def __init__(self, loader: Callable[[ModelSpec], Encoder]) -> None:
        self.loader = loader
        self.timings: dict[str, float] = {}
        self.given: list[tuple[str, int]] = []  # (kind, tasks) of each call: proof that it ran

    def embed(self, tasks: Sequence[EmbedTask], models: Sequence[ModelRef]) -> Iterator[list[EmbedResult]]:
        self.given += [(kind, n) for kind in (IMAGE, TEXT) if (n := sum(t.kind == kind for t in tasks))]
        encoders = [check_fingerprint(self.loader(m.spec), m) for m in models]
        return self._run(list(tasks), encoders)

    def _run(self, tasks: list[EmbedTask], encoders: list[Encoder]) -> Iterator[list[EmbedResult]]:
        texts = [t for t in tasks if t.kind == TEXT]
        if texts:
            results = [EmbedResult(t.key) for t in texts]
            for enc in encoders:
                for res, v in zip(results, encode_texts(enc, [str(t.value) for t in texts])):
                    res.vectors[enc.fingerprint] = v
            yield results
        images = [t for t in tasks if t.kind == IMAGE]
        for start in range(0, len(images), BATCH):
            results = [EmbedResult(t.key) for t in images[start : start + BATCH]]
            for enc in encoders:
                decoded = [decode_image(t.value, enc.input_spec) for t in images[start : start + BATCH]]
                ok = [(res, d) for res, d in zip(results, decoded) if isinstance(d, DecodedImage)]
                for res, d in zip(results, decoded):
                    if not isinstance(d, DecodedImage):
                        res.failures.append(Failure(d.reason))
                    res.info = res.info or (d.info if isinstance(d, DecodedImage) else None)
                if ok:
                    for (res, _), v in zip(ok, encode_images(enc, np.stack([d.pixels for _, d in ok]))):
                        res.vectors[enc.fingerprint] = v
            yield results


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return load_encoder(TINY, "cpu", "fp32")


def image_tasks(paths: list[Path]) -> list[EmbedTask]:
    return [EmbedTask(n, str(p).encode()) for n, p in enumerate(paths)]


def test_local_executor_gives_the_encoders_own_vectors_and_a_failure_as_a_value(tiny: Encoder, photos: Path) -> None:
    paths = sorted(photos.rglob("*.*"))  # twelve photos and broken.jpg
    broken = paths.index(photos / "home" / "broken.jpg")
    tasks = image_tasks(paths) + [EmbedTask(100 + n, t, TEXT) for n, t in enumerate(TEXTS)]
    with LocalExecutor({TINY: tiny}.__getitem__, batch_size=BATCH, pool=PoolConfig(workers=2)) as ex:
        got = {r.key: r for batch in ex.embed(tasks, [ModelRef(TINY, tiny.fingerprint)]) for r in batch}

    assert sorted(got) == [t.key for t in tasks]
    decoded = [decode_image(str(p), tiny.input_spec) for p in paths]
    ok = [n for n, d in enumerate(decoded) if isinstance(d, DecodedImage)]
    want = encode_images(tiny, np.stack([decoded[n].pixels for n in ok]))  # type: ignore[union-attr]  # (12, D)
    assert [n for n in range(len(paths)) if n not in ok] == [broken]
    for n, v in zip(ok, want):
        assert np.array_equal(got[n].vectors[tiny.fingerprint], v)
        assert (got[n].info, got[n].failures) == (decoded[n].info, [])  # type: ignore[union-attr]
    assert (got[broken].vectors, got[broken].info) == ({}, None)
    assert got[broken].failures == [Failure("not a supported image format", is_transient=False)]
    for n, v in enumerate(encode_texts(tiny, TEXTS)):
        assert np.array_equal(got[100 + n].vectors[tiny.fingerprint], v)


def test_a_crashed_decoder_comes_back_as_a_transient_failure(
    tiny: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [make_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(3)]
    monkeypatch.setenv(failpoints.ENV, f"{failpoints.DECODER_BEFORE_DECODE}:2")  # each worker dies on its 2nd file
    try:
        with LocalExecutor({TINY: tiny}.__getitem__, pool=PoolConfig(workers=1)) as ex:
            got = [r for batch in ex.embed(image_tasks(paths), [ModelRef(TINY, tiny.fingerprint)]) for r in batch]
    finally:
        failpoints.disarm()
    assert [r.key for r in got] == [0, 1, 2]
    assert [sorted(r.vectors) for r in got] == [[tiny.fingerprint], [], [tiny.fingerprint]]
    assert got[1].failures == [Failure("decoder crashed (exit -9)", is_transient=True)]


def test_a_model_whose_fingerprint_differs_is_refused_before_any_work(tiny: Encoder, photos: Path) -> None:
    wrong = ModelRef(TINY, "clipdex-tiny@00000000000000000000")
    with LocalExecutor({TINY: tiny}.__getitem__) as ex:
        with pytest.raises(ModelNotAvailable, match=f"now loads as {tiny.fingerprint}, not {wrong.fingerprint}"):
            ex.embed(image_tasks(sorted(photos.rglob("*.jpg"))), [wrong])
        assert ex._pools == {}  # no decoder was started


def catalog_of(home: Path, photos: Path, executor: Callable[[Library], SerialExecutor] | None) -> dict[str, object]:
    """Index `photos` and add texts into a fresh library (with the executor made by `executor`);
    return what the catalog holds."""
    with Library.open(home, precision="fp32") as lib:  # (at bf16 the default executor's guard keeps fp32 vectors for the first images)
        ex = executor(lib) if executor else None
        report = lib.index([photos], model=TINY, executor=ex)
        added = lib.add_texts(TEXTS, executor=ex)
        model = lib.active_model()
        assert model is not None
        ids, vectors = lib.catalog.vectors(model.id, IMAGE)
        text_ids, text_vectors = lib.catalog.vectors(model.id, TEXT)
        return {
            "report": (report.added, report.skipped, report.encoded, added.encoded),
            "items": lib.catalog.items(list(range(1, 20))),
            "skipped": lib.catalog.skipped(),
            "ids": (ids.tolist(), text_ids.tolist()),
            "vectors": (vectors, text_vectors),
            "given": ex.given if ex else None,
        }


def test_another_executor_plugged_into_index_gives_the_same_catalog(tmp_path: Path, photos: Path) -> None:
    ours = catalog_of(tmp_path / "local", photos, None)
    theirs = catalog_of(tmp_path / "serial", photos, lambda lib: SerialExecutor(lib.encoder))
    assert theirs["given"] == [(IMAGE, 13), (TEXT, 3)]
    assert ours["report"] == theirs["report"] == (12, 1, 12, 3)
    broken = 5  # home/broken.jpg, in scan order: an item, skipped, without a vector
    assert ours["ids"] == theirs["ids"] == ([n for n in range(1, 14) if n != broken], [14, 15, 16])
    assert ours["items"] == theirs["items"]
    assert ours["skipped"] == theirs["skipped"] == [(str(photos / "home" / "broken.jpg"), "not a supported image format")]
    for a, b in zip(ours["vectors"], theirs["vectors"]):  # type: ignore[call-overload]
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-6


def test_a_batch_size_with_a_given_executor_is_refused_before_anything_changes(tmp_path: Path, photos: Path) -> None:
    with Library.open(tmp_path / "lib") as lib:
        with pytest.raises(ValueError, match="batch_size sizes the default executor"):
            lib.index([photos], model=TINY, batch_size=4, executor=SerialExecutor(lib.encoder))
        assert (lib.roots(), lib.active_model()) == ([], None)
