"""Indexing throughput: clipdex's indexer against a straightforward pipeline, in one run.

    .venv/bin/python benchmarks/index_throughput.py [--phones 40] [--model ViT-B-32-256]

The model's weights are random (no hub here) and written by this script as a
checkpoint: speed and input fidelity do not depend on the weights. Prints a
table of figures with the ratio against the in-run baseline and the issue's targets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageFilter, ImageOps
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import photos  # noqa: E402
from indexer.decode import DecodedImage, decode_image  # noqa: E402
from indexer.workers import DecodePool, PoolConfig  # noqa: E402
from retrieval.encode import encode_images  # noqa: E402
from retrieval.library import Library  # noqa: E402
from retrieval.models import ModelSpec, load_encoder  # noqa: E402

PSNR_TARGET_DB = 40.0


def naive(paths: list[Path], model: torch.nn.Module, size: int) -> float:
    """The usual script: full decode, open_clip's preprocess, fp32 eager, batch 8. Returns img/s."""
    preprocess = open_clip.image_transform(size, is_train=False)
    t0 = time.perf_counter()
    batch: list[torch.Tensor] = []
    for n, p in enumerate(paths):
        batch.append(preprocess(ImageOps.exif_transpose(Image.open(p)).convert("RGB")))
        if len(batch) == 8 or n == len(paths) - 1:
            with torch.no_grad():
                torch.nn.functional.normalize(model.encode_image(torch.stack(batch)), dim=-1)  # type: ignore[operator]
            batch = []
    return len(paths) / (time.perf_counter() - t0)


def reference_input(path: Path, size: int) -> np.ndarray:
    """open_clip's own preprocessing after a full decode, in [0, 1], (3, S, S)."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    tensor = open_clip.image_transform(size, is_train=False).transforms  # Resize, CenterCrop, ..., Normalize
    for t in tensor[:-1]:  # everything but Normalize
        img = t(img)
    return img.numpy()  # type: ignore[attr-defined,no-any-return]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return min(100.0, 10 * np.log10(1.0 / max(mse, 1e-12)))  # identical inputs count as 100 dB


def fidelity(paths: list[Path], spec_size: int, encoder_spec: object) -> tuple[list[float], list[float]]:
    """PSNR of clipdex's model input vs the reference, and of the σ=1 px blur control."""
    fast, control = [], []
    for p in paths:
        ref = reference_input(p, spec_size)
        res = decode_image(str(p), encoder_spec)  # type: ignore[arg-type]
        assert isinstance(res, DecodedImage)
        ours = res.pixels.transpose(2, 0, 1).astype(np.float32) / 255.0
        fast.append(psnr(ours, ref))
        ref_img = Image.fromarray((ref.transpose(1, 2, 0) * 255).round().astype(np.uint8))
        blurred = np.asarray(ref_img.filter(ImageFilter.GaussianBlur(radius=1.0))).transpose(2, 0, 1) / 255.0
        control.append(psnr(blurred.astype(np.float32), ref))
    return fast, control


def decode_ceiling(paths: list[Path], spec: object, workers: int) -> tuple[float, float]:
    """(img/s with the worker pool, CPU seconds per image of one decoder)."""
    with DecodePool(spec, PoolConfig(workers=workers)) as pool:  # type: ignore[arg-type]
        list(pool.decode([str(paths[0])]))  # warm the workers
        t0 = time.perf_counter()
        list(pool.decode([str(p) for p in paths]))
        rate = len(paths) / (time.perf_counter() - t0)
    c0 = time.process_time()
    for p in paths[:10]:
        decode_image(str(p), spec)  # type: ignore[arg-type]
    return rate, (time.process_time() - c0) / min(10, len(paths))


def encode_ceiling(encoder: object, size: int, batch: int) -> tuple[float, float]:
    """(img/s, CPU seconds per image) of the encoder alone on model-sized uint8."""
    x = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    encode_images(encoder, x[:8])  # type: ignore[arg-type]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(3):
        encode_images(encoder, x)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return 3 * batch / wall, cpu / (3 * batch)


def no_change_reindex(work: Path, count: int, model: ModelSpec, dim: int) -> float:
    """Seconds to re-index an unchanged folder of `count` files (catalog filled by bulk import)."""
    folder = work / "stat-entries"
    folder.mkdir(exist_ok=True)
    paths = []
    for n in range(count):
        sub = folder / f"{n // 1000:03d}"
        if n % 1000 == 0:
            sub.mkdir(exist_ok=True)
        p = sub / f"{n:06d}.jpg"
        if not p.exists():
            p.write_bytes(b"\xff\xd8")
        paths.append(str(p))
    with Library.open(work / "reindex-lib") as lib:
        vecs = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
        lib.import_embeddings(paths, vecs, model=model)
        lib.catalog.add_roots([os.fsencode(folder)])
        t0 = time.perf_counter()
        report = lib.index([folder])
        took = time.perf_counter() - t0
        assert report.encoded == 0 and report.added == 0, report.to_dict()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", type=int, default=120)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--reindex-files", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=0, help="0: clipdex's automatic size")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-bench")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    print(f"generating photos in {work / 'photos'} (cached) ...", file=sys.stderr)
    paths = photos.generate(work / "photos", phones=args.phones, screenshots=max(1, args.phones // 8), web=max(1, args.phones // 8))
    weights = work / f"{args.model}-random.safetensors"
    if not weights.exists():
        m = open_clip.create_model(args.model, pretrained=None)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    spec = ModelSpec.parse(args.model, weights)
    encoder = load_encoder(spec)
    size = encoder.input_spec.height
    cores = len(os.sched_getaffinity(0))

    print("naive pipeline ...", file=sys.stderr)
    naive_rate = naive(paths, encoder.model, size)
    print("clipdex indexer ...", file=sys.stderr)
    lib_dir = work / "lib"
    if lib_dir.exists():
        import shutil

        shutil.rmtree(lib_dir)
    with Library.open(lib_dir) as lib:
        lib._encoders[spec] = encoder  # the same loaded model as the baseline
        report = lib.index([work / "photos"], model=spec, batch_size=args.batch_size)
    ours_rate = report.encoded / report.seconds
    sql_share = report.timings.get("sql", 0.0) / report.seconds

    print("ceilings ...", file=sys.stderr)
    dec_rate, dec_cpu = decode_ceiling(paths, encoder.input_spec, cores)
    enc_rate, enc_cpu = encode_ceiling(encoder, size, 64)
    bound = cores / (dec_cpu + enc_cpu)
    print("fidelity ...", file=sys.stderr)
    fast, control = fidelity(paths, size, encoder.input_spec)
    print("no-change re-index ...", file=sys.stderr)
    reindex_s = no_change_reindex(work, args.reindex_files, spec, encoder.dim)
    # The blur control must fail the check; if it would pass, the threshold rises above it.
    threshold = max(PSNR_TARGET_DB, float(np.max(control)) + 1.0)

    rows = [
        ("naive pipeline (baseline)", f"{naive_rate:.2f} img/s", "1.00x", ""),
        ("clipdex indexer", f"{ours_rate:.2f} img/s", f"{ours_rate / naive_rate:.2f}x", ">= 3.5x"),
        ("decode-only ceiling (pool)", f"{dec_rate:.2f} img/s", f"{dec_cpu * 1000:.0f} ms CPU/img", ""),
        ("encode-only ceiling", f"{enc_rate:.2f} img/s", f"{enc_cpu * 1000:.0f} ms CPU/img ({encoder.precision})", ""),
        ("bound from decode+encode CPU time", f"{bound:.2f} img/s", f"{cores} cores", ""),
        ("pipeline efficiency", f"{ours_rate / bound:.2f}", "achieved / bound", ">= 0.85"),
        ("encoder waited on decoders", f"{report.timings.get('wait_decode', 0):.1f} s", f"of {report.seconds:.1f} s", ""),
        ("SQL share of wall time", f"{100 * sql_share:.2f} %", f"{report.timings.get('sql', 0):.2f} s", "<= 2 %"),
        ("fidelity PSNR mean / min", f"{np.mean(fast):.1f} / {np.min(fast):.1f} dB", "vs full decode + open_clip", f">= {threshold:.1f} dB"),
        ("control: blur σ=1px PSNR mean / max", f"{np.mean(control):.1f} / {np.max(control):.1f} dB", "must fail", f"< {threshold:.1f} dB"),
        (f"no-change re-index, {args.reindex_files:,} files", f"{reindex_s:.2f} s", "", "<= 5 s"),
    ]
    print(f"\nindex_throughput: {len(paths)} photos ({args.phones} x 12 MP JPEG q90), {args.model} "
          f"(random weights), {cores} cores, precision {encoder.precision}")
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}}  {'figure':>24}  {'vs baseline / note':>34}  target")
    for name, fig, note, target in rows:
        print(f"{name:{w}}  {fig:>24}  {note:>34}  {target}")
    print("\nreproduce: .venv/bin/python benchmarks/index_throughput.py")


if __name__ == "__main__":
    main()
