"""Ray's overhead at equal resources, and how throughput grows with nodes.

    .venv/bin/python benchmarks/ray_scaling.py [--photos 300] [--reps 2] [--model ViT-B-32-256]

The same photos (20 distinct ones from benchmarks/photos.py, 16 phone-like 12 MP JPEGs,
2 screenshots, 2 web images, each copied with a unique trailer: every file is decoded
in full, none is a duplicate) are indexed into fresh libraries by the local executor and by the
Ray executor on a local Ray instance, both limited to the same CPUs (this process's
affinity), interleaved A B B A ..., each with its model loaded and workers started
beforehand (Ray's start-up is reported apart). The figure is images/s from the run's
report; the ratio is Ray over local (target >= 0.8x). The negative control, Ray with one
chunk in flight (no decode/encode overlap), must come out at least 10% slower than Ray.

The scaling model takes the measured per-stage costs: decode CPU seconds per image,
encode CPU seconds per image (CPU actors; no GPU here, so no GPU row), and the driver's
seconds per image (planning, committing, waiting on results), and predicts images/s for
N nodes of C cores: min(N x C / (decode + encode CPU s), 1 / driver s). The model's
weights are random (no hub here): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import photos  # noqa: E402
from indexer.decode import decode_image  # noqa: E402
from indexer.encode import encode_images  # noqa: E402
from indexer.local_executor import LocalExecutor  # noqa: E402
from indexer.models import Encoder, ModelSpec, load_encoder  # noqa: E402
from indexer.pipeline import IndexReport  # noqa: E402
from indexer.ray_executor import RayExecutor  # noqa: E402
from indexer.ray_plan import RayConfig  # noqa: E402
from retrieval.library import Library  # noqa: E402
from cpu_info import cpu  # noqa: E402

TARGET = 0.8




def index_once(work: Path, folder: Path, spec: ModelSpec, executor: object) -> IndexReport:
    home = work / "lib"
    shutil.rmtree(home, ignore_errors=True)
    with Library.open(home, device="cpu") as lib:
        report = lib.index([folder], model=spec, executor=executor)  # type: ignore[arg-type]
    shutil.rmtree(home, ignore_errors=True)
    return report


def rate(report: IndexReport) -> float:
    return report.encoded / report.seconds


def stage_costs(paths: list[Path], encoder: Encoder, n: int = 24) -> tuple[float, float]:
    """(decode CPU s/img, encode CPU s/img), each measured alone in this process."""
    t0 = time.process_time()
    decoded = [decode_image(str(p), encoder.input_spec) for p in paths[:n]]
    dec = (time.process_time() - t0) / n
    pixels = np.stack([d.pixels for d in decoded if hasattr(d, "pixels")][:16])  # (16, H, W, 3)
    encode_images(encoder, pixels)  # warm-up
    t0 = time.process_time()
    for _ in range(3):
        encode_images(encoder, pixels)
    enc = (time.process_time() - t0) / (3 * len(pixels))
    return dec, enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-bench")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    torch.manual_seed(0)

    print(f"generating {args.photos} photos (cached) ...", file=sys.stderr)
    sources = photos.generate(work / "sources", phones=16, screenshots=2, web=2)
    folder = work / f"ray-photos-{args.photos}"
    paths = photos.replicate(sources, folder, args.photos)
    weights = work / f"{args.model}-random.safetensors"
    if not weights.exists():
        m = open_clip.create_model(args.model, pretrained=None)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    spec = ModelSpec.parse(args.model, weights)
    encoder = load_encoder(spec, "cpu")
    loader = {spec: encoder}.__getitem__

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cores, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    base = RayConfig(device="cpu", precision=encoder.precision)
    warm = work / "warm-photos"
    warm.mkdir(exist_ok=True)
    for p in paths[:16]:
        target = warm / p.name
        if not target.exists():
            shutil.copy(p, target)

    # One Ray executor (its actor holds one of the CPUs); the control runs on it with one chunk in flight.
    with LocalExecutor(loader) as local, RayExecutor(base) as on_ray:
        t0 = time.perf_counter()
        index_once(work, warm, spec, on_ray)  # actors started, model loaded and checked
        actors_start = time.perf_counter() - t0
        index_once(work, warm, spec, local)  # decoder processes started
        runs: dict[str, list[IndexReport]] = {"local": [], "ray": [], "control": []}
        for rep in range(args.reps):
            order = ["local", "ray", "control"] if rep % 2 == 0 else ["control", "ray", "local"]
            for name in order:
                on_ray.config = replace(base, in_flight=1) if name == "control" else base
                print(f"rep {rep + 1}/{args.reps}: {name} ...", file=sys.stderr)
                runs[name].append(index_once(work, folder, spec, local if name == "local" else on_ray))
        devices = on_ray.devices
    ray.shutdown()

    print("per-stage costs ...", file=sys.stderr)
    dec_cpu, enc_cpu = stage_costs(paths, encoder)
    med = {name: statistics.median(rate(r) for r in reports) for name, reports in runs.items()}
    ratio, control = med["ray"] / med["local"], med["control"] / med["local"]
    ray_reports = runs["ray"]
    driver_s = statistics.median((r.timings.get("sql", 0) + r.timings.get("scan", 0)) / r.encoded for r in ray_reports)
    node_bound = cores / (dec_cpu + enc_cpu)
    efficiency = med["ray"] / node_bound

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    rows = [
        ("local executor (baseline)", f"{med['local']:.2f} img/s", "1.00x", ""),
        ("Ray executor, same CPUs", f"{med['ray']:.2f} img/s", f"{ratio:.2f}x", f">= {TARGET}x: {verdict(ratio >= TARGET)}"),
        ("control: Ray, 1 chunk in flight", f"{med['control']:.2f} img/s", f"{control:.2f}x",
         f"no overlap: must be < 0.9x Ray: {'is' if med['control'] < 0.9 * med['ray'] else 'IS NOT'} ({med['control'] / med['ray']:.2f}x)"),  # fmt: skip
        ("runs (img/s) local", " ".join(f"{rate(r):.2f}" for r in runs["local"]), "", ""),
        ("runs (img/s) ray", " ".join(f"{rate(r):.2f}" for r in ray_reports), "", ""),
        ("Ray start-up (once)", f"{ray_start:.1f} s", f"+ {actors_start:.1f} s actors", "not in the figures"),
        ("encoder actors", "; ".join(devices.values()), "", ""),
        ("decode CPU per image", f"{dec_cpu * 1000:.0f} ms", "", "12 MP JPEG at DCT scale"),
        ("encode CPU per image", f"{enc_cpu * 1000:.0f} ms", "", f"{args.model}, batch 16"),
        ("driver per image", f"{driver_s * 1000:.2f} ms", "", "scan + plan + commit"),
        ("bound for this node", f"{node_bound:.2f} img/s", f"Ray at {efficiency:.2f}", f"{cores} cores / (decode + encode)"),
    ]
    print(f"\nray_scaling: {len(paths)} photos, {args.model} (random weights), {cpu()}")
    print(f"torch {torch.__version__}, ray {ray.__version__}, Python {platform.python_version()}, "
          f"{args.reps} interleaved reps, medians")  # fmt: skip
    for name, fig, vs, note in rows:
        print(f"{name:<34}{fig:>22}{vs:>22}  {note}")
    print("\nscaling model (CPU nodes; images/s = min(N x C / (decode + encode CPU s) x efficiency, 1 / driver s)):")
    print(f"{'nodes':>6}{'cores each':>12}{'img/s':>12}  bottleneck")
    cap = 1 / driver_s if driver_s > 0 else float("inf")
    for c in (cores, 16):
        for n in (1, 2, 4, 8, 16, 64):
            compute = n * c / (dec_cpu + enc_cpu) * efficiency
            print(f"{n:>6}{c:>12}{min(compute, cap):>12.1f}  {'nodes' if compute < cap else 'the driver (one writer)'}")


if __name__ == "__main__":
    main()
