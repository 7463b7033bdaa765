"""The Ray executor on a real local Ray instance: the same catalog as the local executor,
a killed driver resumes to the same catalog, killed Ray workers lose nothing, and a file
that kills its worker every time is skipped with its reason.

One Ray instance serves the module (2 CPUs, a small object store, no dashboard); the
killed driver runs `clipdex index --executor ray` in a subprocess with its own instance.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from conftest import TINY, make_photo
from indexer import failpoints
from indexer.errors import BadOption, ModelNotAvailable
from indexer.executor import EmbedTask, ModelRef
from indexer.items import IMAGE
from indexer.ray_executor import RayExecutor
from indexer.ray_plan import PathMap, RayConfig, map_path
from retrieval.library import Library

# CI installs the `ray` extra: there a missing ray fails; elsewhere these tests skip.
ray = importlib.import_module("ray") if os.environ.get("CI") == "true" else pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent
PHOTOS = 60
BROKEN = {"broken.jpg": "not a supported image format"}


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixty distinct photos in three folders, and a file that is not an image."""
    root = tmp_path_factory.mktemp("ray") / "photos"
    for i in range(PHOTOS):
        make_photo(root / f"f{i % 3}" / f"p{i:02d}.jpg", seed=i)
    (root / "f0" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


def config(lib: Library, **changes: Any) -> RayConfig:
    return RayConfig(home=str(lib.home), device=lib.device, precision=lib.precision, **changes)


def open_lib(home: Path) -> Library:
    return Library.open(home, device="cpu", precision="fp32")  # fp32 both sides: bf16 would differ by batch


def catalog(lib: Library) -> dict[str, Any]:
    """What the catalog holds, by path: items, skipped files with reasons, vectors."""
    model = lib.active_model()
    assert model is not None
    ids, vectors = lib.catalog.vectors(model.id, IMAGE)
    rows = lib.catalog.items(ids.tolist())
    by_path = {rows[i].path: v for i, v in zip(ids.tolist(), vectors)}
    return {"paths": sorted(by_path), "skipped": lib.catalog.skipped(), "vectors": by_path}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["paths"] == b["paths"]
    assert a["skipped"] == b["skipped"]
    cos = [float(np.dot(a["vectors"][p], b["vectors"][p])) for p in a["paths"]]
    assert min(cos) >= 0.9999


@pytest.fixture(scope="module")
def local_catalog(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with open_lib(tmp_path_factory.mktemp("local")) as lib:
        report = lib.index([photos], model=TINY)
        assert (report.added, report.skipped, report.encoded) == (PHOTOS, 1, PHOTOS)
        return catalog(lib)


def test_path_maps_translate_the_drivers_paths_for_the_nodes() -> None:
    maps = (PathMap.parse("/data=/mnt/nfs/data"), PathMap.parse("/data/photos/=/photos"))
    assert map_path(b"/data/photos/a.jpg", maps) == b"/photos/a.jpg"  # the longest match wins
    assert map_path("/data/x/\u00e9.jpg", maps) == "/mnt/nfs/data/x/\u00e9.jpg"
    assert map_path(b"/database/a.jpg", maps) == b"/database/a.jpg"  # a prefix of a name is not a folder
    assert map_path(b"/data", maps) == b"/mnt/nfs/data"
    with pytest.raises(BadOption, match="path_map must be LOCAL=REMOTE, two absolute folders"):
        PathMap.parse("photos=/mnt/photos")


def test_ray_gives_the_local_executors_catalog(
    ray_instance: None, photos: Path, local_catalog: dict[str, Any], tmp_path: Path
) -> None:
    with open_lib(tmp_path / "lib") as lib, lib.ray_executor() as ex:
        report = lib.index([photos], model=TINY, executor=ex)
        assert (report.added, report.skipped, report.encoded) == (PHOTOS, 1, PHOTOS)
        assert report.devices == {lib.active_model().fingerprint: "cpu fp32, 1 Ray actor"}  # type: ignore[union-attr]
        assert_same(catalog(lib), local_catalog)
        assert lib.catalog.skipped() == [(str(photos / "f0" / "broken.jpg"), BROKEN["broken.jpg"])]
        again = lib.index(executor=ex)  # nothing is embedded twice
        assert (again.added, again.updated, again.encoded) == (0, 0, 0)


def test_a_model_whose_fingerprint_differs_is_refused_before_any_work(ray_instance: None, tmp_path: Path) -> None:
    with open_lib(tmp_path / "lib") as lib, RayExecutor(config(lib)) as ex:
        wrong = ModelRef(TINY, "clipdex-tiny@00000000000000000000")
        with pytest.raises(ModelNotAvailable, match="loads on the Ray cluster as clipdex-tiny@"):
            ex.embed([EmbedTask(0, b"/nowhere.jpg")], [wrong])


def test_killed_ray_workers_lose_nothing(
    ray_instance: None, photos: Path, local_catalog: dict[str, Any], tmp_path: Path
) -> None:
    # Every decode worker SIGKILLs itself at its 20th file: its chunk is retried one file per task.
    kill = ((failpoints.ENV, f"{failpoints.RAY_BEFORE_DECODE}:20"),)
    with open_lib(tmp_path / "lib") as lib, RayExecutor(config(lib, worker_env=kill)) as ex:
        report = lib.index([photos], model=TINY, executor=ex)
        assert (report.added, report.skipped, report.encoded) == (PHOTOS, 1, PHOTOS)
        assert_same(catalog(lib), local_catalog)


def test_a_file_that_kills_its_worker_every_time_is_skipped_with_its_reason(ray_instance: None, tmp_path: Path) -> None:
    for i in range(2):
        make_photo(tmp_path / "p" / f"{i}.jpg", seed=i)
    kill = ((failpoints.ENV, f"{failpoints.RAY_BEFORE_DECODE}:1"),)  # every worker dies on its first file
    with open_lib(tmp_path / "lib") as lib, RayExecutor(config(lib, worker_env=kill)) as ex:
        report = lib.index([tmp_path / "p"], model=TINY, executor=ex)
        assert (report.added, report.skipped, report.encoded) == (0, 2, 0)
        skipped = lib.catalog.skipped()
    assert [p for p, _ in skipped] == [str(tmp_path / "p" / f"{i}.jpg") for i in range(2)]
    for _, reason in skipped:  # transient, as a crashed local decoder: tried again by the next runs
        assert reason.startswith("decoder crashed on a Ray worker (")
        assert reason.endswith("; retried on the next run (try 1 of 3)")


def test_a_driver_killed_mid_run_resumes_to_the_same_catalog(
    ray_instance: None, photos: Path, local_catalog: dict[str, Any], tmp_path: Path
) -> None:
    home = tmp_path / "lib"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CLIPDEX_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CLIPDEX_NO_EXPORT="1")
    env[failpoints.ENV] = f"{failpoints.CATALOG_AFTER_COMMIT}:2"  # the driver dies after its 2nd batch
    argv = [sys.executable, "-c", "from cli.app import main; main()", "index", str(photos), "--library", str(home),
            "--model", "clipdex-tiny", "--device", "cpu", "--precision", "fp32", "--executor", "ray", "--batch-size", "8"]  # fmt: skip
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    with open_lib(home) as lib:
        committed = len(lib.catalog.files_under([os.fsencode(photos)]))
        assert committed == 16  # two batches of 8
        with lib.ray_executor() as ex:
            report = lib.index(executor=ex)
        assert (report.added, report.skipped, report.encoded) == (PHOTOS - 16, 1, PHOTOS - 16)  # broken.jpg: added, then skipped
        assert_same(catalog(lib), local_catalog)


def test_without_ray_installed_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cli.error_lines import error_line
    from indexer.errors import ExecutorUnavailable

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with open_lib(tmp_path / "lib") as lib, pytest.raises(ExecutorUnavailable) as caught:
        lib.ray_executor()
    assert str(caught.value) == "the ray executor needs the 'ray' package; install 'clipdex[ray]'"
    assert error_line(caught.value) == "--executor ray needs ray: pip install 'clipdex[ray]'"


def test_the_nodes_read_the_files_where_the_path_map_says(ray_instance: None, tmp_path: Path) -> None:
    # The driver sees local/; the "nodes" see remote/, holding other pictures under the same names:
    # the vectors must be remote/'s, the catalog's paths local/'s.
    for i in range(3):
        make_photo(tmp_path / "local" / f"{i}.jpg", seed=i)
        make_photo(tmp_path / "remote" / f"{i}.jpg", seed=100 + i)
    with open_lib(tmp_path / "want") as lib:
        lib.index([tmp_path / "local", tmp_path / "remote"], model=TINY)
        want = catalog(lib)["vectors"]
    for i in range(3):  # the control: local/'s pictures give other vectors
        assert float(np.dot(want[str(tmp_path / "local" / f"{i}.jpg")], want[str(tmp_path / "remote" / f"{i}.jpg")])) < 0.99
    with open_lib(tmp_path / "lib") as lib, lib.ray_executor(path_map=[f"{tmp_path / 'local'}={tmp_path / 'remote'}"]) as ex:
        lib.index([tmp_path / "local"], model=TINY, executor=ex)
        got = catalog(lib)
    assert got["paths"] == [str(tmp_path / "local" / f"{i}.jpg") for i in range(3)]
    for i in range(3):
        remote = want[str(tmp_path / "remote" / f"{i}.jpg")]
        assert float(np.dot(got["vectors"][str(tmp_path / "local" / f"{i}.jpg")], remote)) >= 0.9999
