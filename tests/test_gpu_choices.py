"""GPU paths are chosen automatically and never silently lost: the choices, with the device
detection faked (no GPU here). What runs on a real GPU is measured by benchmarks/gpu_check.sh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import torch

from conftest import TINY
from indexer import models, precision_guard, vector_index
from indexer.ray_plan import ActorPlan, RayConfig, plan_actors
from indexer.vector_index import train_ivf
from retrieval.library import Library


def test_auto_picks_cuda_and_fp16_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = models.pick_device("auto")
    assert (device, models.pick_precision(device)) == (torch.device("cuda"), "fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "fma"})  # a laptop: no native bf16
    device = models.pick_device("auto")
    assert (device.type, models.pick_precision(device)) in {("cpu", "int8"), ("mps", "fp32")}  # int8: ONNX Runtime
    assert models.pick_precision(torch.device("cuda"), "bf16") == "bf16"  # asked for: kept


def test_ray_encoder_actors_take_a_gpu_each_when_the_cluster_has_gpus() -> None:
    auto = RayConfig()
    assert plan_actors(4, 1, auto) == ActorPlan(4, {"num_gpus": 1.0, "num_cpus": 1}, "cuda", 0)
    assert plan_actors(4, 2, auto) == ActorPlan(2, {"num_gpus": 1.0, "num_cpus": 1}, "cuda", 0)  # 2 models, own GPUs
    assert plan_actors(1, 2, auto) == ActorPlan(1, {"num_gpus": 0.5, "num_cpus": 1}, "cuda", 0)  # sharing one GPU
    spread = {"num_cpus": 1, "scheduling_strategy": "SPREAD"}
    assert plan_actors(0, 1, auto, nodes=3, cpus=6) == ActorPlan(3, spread, "cpu", 0)  # no GPU: a CPU actor per node
    assert plan_actors(4, 1, RayConfig(device="cpu", encoder_threads=8)) == ActorPlan(1, spread, "cpu", 8)
    # One free CPU: an actor holding it would leave none for the decode tasks, which would never run.
    assert plan_actors(0, 1, auto, nodes=1, cpus=1) == ActorPlan(1, {**spread, "num_cpus": 0}, "cpu", 0)


class FakeGpus:
    """faiss with one 'GPU': index_cpu_to_all_gpus hands back the CPU index it was given, and says so."""

    def __init__(self) -> None:
        self.copied: list[Any] = []

    def __call__(self, index: Any) -> Any:
        self.copied.append(index)
        return index


def test_ivf_kmeans_runs_on_the_gpus_when_faiss_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2048, 16)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)

    def ivf() -> Any:
        return faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(16), 16, 8, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)

    on_cpu = ivf()
    assert train_ivf(on_cpu, sample) == "cpu"
    fake = FakeGpus()
    monkeypatch.setattr(vector_index, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fake)
    on_gpu = ivf()
    assert train_ivf(on_gpu, sample) == "gpu"
    assert [type(i) for i in fake.copied] == [faiss.IndexFlatIP]  # the k-means assignment index went to the GPUs
    assert on_gpu.is_trained and on_gpu.clustering_index is None  # and is not kept in the index
    # The same k-means either way: the same centroids, bit for bit (the fake "GPU" is this CPU).
    assert np.array_equal(on_cpu.quantizer.reconstruct_n(0, 8), on_gpu.quantizer.reconstruct_n(0, 8))


def test_every_index_run_names_the_device_and_precision_of_each_model(tmp_path: Path, photos: Path) -> None:
    with Library.open(tmp_path / "lib", device="cpu", precision="fp32") as lib:
        report = lib.index([photos], model=TINY)
        fingerprint = lib.active_model().fingerprint  # type: ignore[union-attr]
    assert report.devices == {fingerprint: "cpu fp32"}


def test_the_cli_prints_that_line_on_stderr(tmp_path: Path, photos: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    run = CliRunner().invoke(app, ["index", str(photos), "--library", str(tmp_path / "lib"), "--model", "clipdex-tiny",
                                   "--device", "cpu", "--precision", "fp32"])  # fmt: skip
    assert run.exit_code == 0, run.output
    lines = [line for line in run.stderr.splitlines() if " ran on " in line]
    assert len(lines) == 1 and lines[0].startswith("clipdex-tiny@") and lines[0].endswith(" ran on cpu fp32")
    assert " ran on " not in run.stdout
