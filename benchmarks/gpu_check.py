"""The figures benchmarks/gpu_check.sh prints: encoder, pipeline and FAISS on this machine.

    PYTHONPATH=. python benchmarks/gpu_check.py [--photos 2000] [--decoders 16] [--vectors 1000000]

With a CUDA GPU: ViT-B-32 image-encoder throughput on synthetic uint8 batches (fp16,
bf16), the full pipeline over generated 12 MP photos (local executor with `--decoders`
decoder processes; Ray too when `ray` imports), and FAISS k-means and search at
`--vectors` (on the GPU when faiss has GPUs). Without one, the same code runs its CPU
fallbacks at small sizes, so the script is known to work; every row says whether its
figure needs a GPU to mean anything. No figure from a CPU fallback is a GPU figure.
The model's weights are random (no hub here): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import photos  # noqa: E402
from indexer.encode import encode_images  # noqa: E402
from indexer.local_executor import LocalExecutor  # noqa: E402
from indexer.models import ModelSpec, load_encoder  # noqa: E402
from indexer.precision_guard import cpu_has_native_bf16  # noqa: E402
from indexer.vector_index import IndexTag, VectorIndex, choose_layout, gpu_count, train_ivf  # noqa: E402
from indexer.workers import PoolConfig  # noqa: E402
from retrieval.library import Library  # noqa: E402

Row = tuple[str, str, str]  # (what, figure, note)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def encoder_rows(weights: Path, on_gpu: bool, batches: int) -> list[Row]:
    spec = ModelSpec.parse("ViT-B-32", weights)
    rows = []
    precisions = ("fp16", "bf16") if on_gpu else ("fp32", "bf16")
    for precision in precisions:
        if not on_gpu and precision == "bf16" and not cpu_has_native_bf16():
            rows.append((f"encoder ViT-B-32 {precision}", "not run", "this CPU emulates bf16"))
            continue
        enc = load_encoder(spec, "cuda" if on_gpu else "cpu", precision)
        size = 256 if on_gpu else 8
        pixels = np.random.default_rng(0).integers(0, 256, (size, 224, 224, 3), dtype=np.uint8)  # (B, H, W, 3)
        encode_images(enc, pixels)  # warm-up (cuDNN autotune, bf16 tower copy)
        sync()
        t0 = time.perf_counter()
        for _ in range(batches):
            encode_images(enc, pixels)
        sync()
        rate = batches * size / (time.perf_counter() - t0)
        where = f"{enc.device} {enc.precision}, batch {size}"
        rows.append((f"encoder ViT-B-32 {precision}", f"{rate:,.0f} img/s", where if on_gpu else f"{where}: CPU fallback, needs a GPU"))
        del enc
        if on_gpu:
            torch.cuda.empty_cache()
    return rows


def pipeline_rows(work: Path, weights: Path, on_gpu: bool, count: int, decoders: int) -> list[Row]:
    sources = photos.generate(work / "sources", phones=16, screenshots=0, web=0)  # 12 MP JPEGs
    folder = work / f"pipeline-{count}"
    photos.replicate(sources, folder, count)
    spec = ModelSpec.parse("ViT-B-32", weights)
    device = "cuda" if on_gpu else "cpu"
    need = "" if on_gpu else ": CPU fallback, needs a GPU"
    rows = []

    def run(name: str, make: Callable[[Library], Any]) -> None:
        home = work / "lib"
        shutil.rmtree(home, ignore_errors=True)
        with Library.open(home, device=device) as lib, make(lib) as ex:
            report = lib.index([folder], model=spec, executor=ex)
        where = "; ".join(report.devices.values())
        rows.append((f"pipeline {count} x 12 MP, {name}", f"{report.encoded / report.seconds:,.1f} img/s",
                     f"{report.encoded} encoded in {report.seconds:.1f} s, {where}{need}"))  # fmt: skip

    run(f"local, {decoders} decoders", lambda lib: LocalExecutor(lib.encoder, pool=PoolConfig(workers=decoders)))
    try:
        import ray  # noqa: F401
    except ImportError:
        rows.append((f"pipeline {count} x 12 MP, Ray", "not run", "ray is not installed (its wheel is ~79 MB: see gpu_check.sh)"))
        return rows
    run("Ray (local instance)", lambda lib: lib.ray_executor())  # its start-up is included
    return rows


def faiss_rows(n: int, on_gpu: bool) -> list[Row]:
    dim, queries, k = 512, 1000, 10
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    layout, nlist = choose_layout(n, dim)
    need = "" if gpu_count() else (": faiss has no GPU here" + ("" if not on_gpu else " (faiss-cpu installed)"))
    rows = []
    ivf = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, max(nlist, 256), faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sample = vectors[rng.choice(n, min(n, ivf.nlist * 39), replace=False)]
    t0 = time.perf_counter()
    device = train_ivf(ivf, np.ascontiguousarray(sample))
    rows.append((f"FAISS k-means {ivf.nlist} lists, {len(sample):,} x {dim}", f"{time.perf_counter() - t0:.1f} s", f"on {device}{need}"))
    tag = IndexTag("gpu-check", "random", "image", 0, dim)
    t0 = time.perf_counter()
    index = VectorIndex.build(tag, np.arange(n, dtype=np.int64), vectors)
    build_s = time.perf_counter() - t0
    q = vectors[:queries] + 0.01 * rng.standard_normal((queries, dim), dtype=np.float32)
    index.search(q[:10], k)  # warm-up (GPU copy)
    t0 = time.perf_counter()
    index.search(q, k)
    qps = queries / (time.perf_counter() - t0)
    where = "GPU" if index.tag.layout == "flat" and gpu_count() else "CPU"  # IVF searches run on the CPU copy
    rows.append((f"FAISS search {n:,} x {dim}, {index.tag.layout}", f"{qps:,.0f} queries/s",
                 f"{queries} queries of top {k}, batched, on {where}; built in {build_s:.1f} s"))  # fmt: skip
    return rows


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    cores = len(os.sched_getaffinity(0))
    return f"{gpu}; {cores} CPUs; Python {platform.python_version()}; torch {torch.__version__}; faiss {faiss.__version__} ({gpu_count()} GPUs)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=0, help="0: 2000 with a GPU, 24 without")
    ap.add_argument("--decoders", type=int, default=0, help="0: one per CPU")
    ap.add_argument("--vectors", type=int, default=0, help="0: 1,000,000 on a GPU machine, 100,000 without")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-gpu-check")
    args = ap.parse_args()
    on_gpu = torch.cuda.is_available()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "ViT-B-32-random.safetensors"
    if not weights.exists():
        torch.manual_seed(0)
        m = open_clip.create_model("ViT-B-32", pretrained=None)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    started = time.perf_counter()
    rows: list[Row] = []
    for name, step in (
        ("encoder", lambda: encoder_rows(weights, on_gpu, 20 if on_gpu else 2)),
        ("pipeline", lambda: pipeline_rows(work, weights, on_gpu, args.photos or (2000 if on_gpu else 24),
                                           args.decoders or len(os.sched_getaffinity(0)))),  # fmt: skip
        ("faiss", lambda: faiss_rows(args.vectors or (1_000_000 if on_gpu or gpu_count() else 100_000), on_gpu)),
    ):
        print(f"gpu_check: {name} ...", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            rows += step()
        except Exception as e:  # a failed step is a row, and the others still run
            rows.append((name, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        print(f"gpu_check: {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"\ngpu_check: {machine()}")
    print(f"{'what':<46}{'figure':>18}  note")
    for what, fig, note in rows:
        print(f"{what:<46}{fig:>18}  {note}")
    print(f"total {time.perf_counter() - started:.0f} s" + ("" if on_gpu else "; CPU fallbacks only: no row above is a GPU figure"))


if __name__ == "__main__":
    main()
