"""Shared fixtures: a private CLIPDEX_HOME per test, generated photos, the tiny model."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, make_url, text

from retrieval.library import Library
from retrieval.trainer import TrainConfig
from indexer.models import Encoder, ModelSpec, load_encoder

TINY = ModelSpec.parse("clipdex-tiny")
# A few quick training steps, no budget, no early stop: the fine-tuning tests' base config.
QUICK_TRAIN = TrainConfig(batch_size=8, lr=5e-4, warmup_steps=1, patience=0, checkpoint_every=1000, time_budget_s=None)


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    """clipdex-tiny on the CPU, loaded once per test module."""
    return load_encoder(TINY, "cpu")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches the user's library or Hugging Face cache."""
    home = tmp_path / "clipdex-home"
    monkeypatch.setenv("CLIPDEX_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLIPDEX_NO_EXPORT", "1")  # ONNX exports cost ~1.6 s each; tests/test_cold_search.py turns them on
    return home


def make_photo(path: Path, seed: int, size: tuple[int, int] = (160, 120), exif: Image.Exif | None = None) -> Path:
    """A distinct picture: a seeded 6x6 grid of colours, blown up with hard edges."""
    rng = np.random.default_rng(seed)
    grid = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(grid).resize(size, Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    if exif is not None:
        kwargs["exif"] = exif.tobytes()  # type: ignore[assignment]
    img.save(path, fmt, **kwargs)
    return path


def exif_with(taken: str | None = None, orientation: int | None = None, camera: tuple[str, str] | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if camera is not None:
        exif[0x010F], exif[0x0110] = camera
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken
    return exif


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Twelve distinct photos in two folders, plus one file that is not an image."""
    root = tmp_path / "photos"
    for i in range(8):
        make_photo(root / "trip" / f"beach{i}.jpg", seed=i)
    for i in range(8, 12):
        make_photo(root / "home" / f"cat{i}.png", seed=i)
    (root / "home" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


PG_ENV = "CLIPDEX_TEST_PG_URL"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server of $CLIPDEX_TEST_PG_URL; skipped without one, failed with CI=true."""
    url = os.environ.get(PG_ENV, "")
    why = ""
    if not url:
        why = f"set {PG_ENV}=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (.ci/postgres.sh starts a local one)"
    else:
        try:
            engine = create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as e:  # any driver or network failure means "no server here"
            first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
            why = f"cannot reach the server of {PG_ENV} ({make_url(url).render_as_string(hide_password=True)}): {first}"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests must run in CI: {why}")
        pytest.skip(f"no PostgreSQL server: {why}")
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"clipdex_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The catalog URL to test with: None for the default SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def library(tmp_path: Path, backend: str | None) -> Iterator[Library]:
    lib = Library.open(tmp_path / "lib", db=backend)
    yield lib
    lib.close()


def brute_force(lib: Library, query: np.ndarray, kind: str = "image") -> list[tuple[int, float]]:
    """Exact ranking over the catalog's stored vectors: the reference for every index."""
    model = lib.active_model()
    assert model is not None
    ids, vecs = lib.catalog.vectors(model.id, kind)
    scores = vecs @ query  # (N,)
    order = np.lexsort((ids, -scores))
    return [(int(ids[i]), float(scores[i])) for i in order]


def env_without_pytest() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
