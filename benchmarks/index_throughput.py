"""Indexing throughput: clipdex's indexer against a straightforward pipeline, as an ablation, in one run.

    .venv/bin/python benchmarks/index_throughput.py [--phones 60] [--rounds 2] [--avx2]

Four sides, each timed end to end the same way (wall clock around the whole call, the
model already loaded), interleaved A B C D then D C B A ..., medians over `--rounds`:
- naive fp32: full decode, open_clip's preprocess, fp32 eager, batch 8 (the usual script);
- naive at the chosen precision: the same script, encoding with clipdex's chosen encoder;
- clipdex fp32: `Library.index` into a fresh library (lock, quick check, decode pool,
  encode, commit, FAISS sync all inside the timing);
- clipdex at the chosen precision (`--precision auto` on this CPU), after its fidelity
  guard: the guard's one-time cost is its own row, measured on a library of its own;
- and clipdex at auto's other choices on this CPU (bf16 where the CPU has it natively and
  int8 goes first), so the order `auto` tries them in is checked in the same run.

`--avx2` re-runs the script with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (torch and
oneDNN use AVX2 kernels only). ONNX Runtime has no such switch (MLAS picks its kernels from
CPUID), so its int8 still uses AVX-512/VNNI where the CPU has them: see the header.

The benchmark model's weights are random (no hub here) and written by this script as a
checkpoint: speed and input fidelity do not depend on the weights. Embedding fidelity
does, so it is measured with the trained built-in model clipdex-tiny: the fast path
against full decode + open_clip preprocessing, and its reduced precisions against fp32.
One fixed PSNR threshold judges the fast path and its negative control (a σ=1 px blur),
so the control can fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import resource
import os
import statistics
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch
from PIL import Image, ImageFilter, ImageOps
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import photos  # noqa: E402
from onnx_eval import cpu_header, reexec_avx2  # noqa: E402
from indexer.decode import DecodedImage, InputSpec, decode_image  # noqa: E402
from indexer.workers import DecodePool, PoolConfig  # noqa: E402
from indexer.encode import auto_batch_size, encode_images  # noqa: E402
from indexer.items import PrecisionCheck  # noqa: E402
from indexer.precision_guard import ImageEncoding, auto_cpu_candidates, precision_in_use  # noqa: E402
from indexer import derived  # noqa: E402
from indexer.derived import IMAGE_ENCODER, IMAGE_ENCODER_INT8, TEXT_ENCODER, TEXT_ENCODER_INT8  # noqa: E402
from retrieval.library import Library  # noqa: E402
from indexer.models import TINY_MODEL, Encoder, ModelSpec, load_encoder  # noqa: E402
from retrieval.demo.world import make_scenes, render  # noqa: E402

EncodeFn = Callable[[np.ndarray], np.ndarray]

PSNR_TARGET_DB = 40.0
COSINE_TARGET = 0.99


def naive(paths: list[Path], encode: EncodeFn, size: int) -> float:
    """The usual script: full decode, open_clip's resize and crop, batch 8; `encode` takes the
    (B, S, S, 3) uint8 crops (fp32 eager torch, or the chosen encoder). Returns seconds."""
    transforms = open_clip.image_transform(size, is_train=False).transforms[:2]  # Resize, CenterCrop
    t0 = time.perf_counter()
    batch: list[np.ndarray] = []
    for n, p in enumerate(paths):
        img = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        for t in transforms:
            img = t(img)
        batch.append(np.asarray(img))
        if len(batch) == 8 or n == len(paths) - 1:
            encode(np.stack(batch))
            batch = []
    return time.perf_counter() - t0


def torch_fp32(model: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> EncodeFn:
    """open_clip's ToTensor + Normalize and fp32 eager encode_image, as the usual script runs them."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)

    def encode(pixels: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - m) / s
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()  # type: ignore[operator,no-any-return]

    return encode


def full_decode(path: Path) -> Image.Image:
    """The reference decode: every pixel of the file, upright."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def reference_input(img: Image.Image, size: int) -> np.ndarray:
    """open_clip's own preprocessing of a fully decoded image, in [0, 1], (3, S, S)."""
    tensor = open_clip.image_transform(size, is_train=False).transforms  # Resize, CenterCrop, ..., Normalize
    for t in tensor[:-1]:  # everything but Normalize
        img = t(img)
    return img.numpy()  # type: ignore[attr-defined,no-any-return]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return min(100.0, 10 * np.log10(1.0 / max(mse, 1e-12)))  # identical inputs count as 100 dB


def fast_input(path: Path, spec: InputSpec) -> np.ndarray:
    """clipdex's model input for a file: (S, S, 3) uint8."""
    res = decode_image(str(path), spec)
    assert isinstance(res, DecodedImage), res
    return res.pixels


def blur(pixels: np.ndarray) -> Image.Image:
    """The negative control: a Gaussian blur of σ = 1 px at model resolution."""
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=1.0))


def input_fidelity(paths: list[Path], spec: InputSpec) -> tuple[list[float], list[float]]:
    """PSNR of clipdex's model input against the reference, and of the blur control against the reference."""
    fast, control = [], []
    for p in paths:
        ref = reference_input(full_decode(p), spec.height)  # (3, S, S) in [0, 1]
        fast.append(psnr(fast_input(p, spec).transpose(2, 0, 1) / 255.0, ref))
        ref_u8 = (ref.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        control.append(psnr(np.asarray(blur(ref_u8)).transpose(2, 0, 1) / 255.0, ref))
    return fast, control


@dataclass
class EmbeddingFidelity:
    fast: list[float] = field(default_factory=list)  # fast path vs reference path, fp32
    control: list[float] = field(default_factory=list)  # blurred reference input vs reference
    others: float = 0.0  # mean cosine between different photos: what "unrelated" looks like
    precision: dict[str, list[float]] = field(default_factory=dict)  # bf16/int8 vs fp32, same fast-path input


def world_photos(folder: Path, count: int) -> list[Path]:
    """Scenes of the synthetic world the tiny model was trained on, as 3000 px JPEGs at quality 90."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, scene in enumerate(make_scenes(count, seed=77, split="test")):
        path = folder / f"scene_{n:03d}.jpg"
        if not path.exists():
            render(scene, 3000).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def embedding_fidelity(paths: list[Path], fp32: Encoder, reduced: dict[str, EncodeFn]) -> EmbeddingFidelity:
    """Embedding cosines with trained weights, where a random encoder would say ≈ 1 for anything."""
    preprocess = open_clip.image_transform(fp32.input_spec.height, is_train=False)
    out = EmbeddingFidelity(precision={p: [] for p in reduced})
    refs, fasts = [], []
    for p in paths:
        full = full_decode(p)
        with torch.no_grad():
            refs.append(torch.nn.functional.normalize(fp32.model.encode_image(preprocess(full)[None]), dim=-1)[0].numpy())  # type: ignore[operator]
        ref_u8 = (reference_input(full, fp32.input_spec.height).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        out.control.append(float(encode_images(fp32, np.asarray(blur(ref_u8))[None])[0] @ refs[-1]))
        fasts.append(fast_input(p, fp32.input_spec))
    ref = np.stack(refs)  # (N, D)
    fast = encode_images(fp32, np.stack(fasts))  # (N, D)
    out.fast = list(np.sum(fast * ref, axis=1))
    cross = ref @ ref.T
    out.others = float((cross.sum() - np.trace(cross)) / (len(paths) * (len(paths) - 1)))
    for name, cos in out.precision.items():
        cos.extend(np.sum(reduced[name](np.stack(fasts)) * fast, axis=1))
    return out


def decode_ceiling(paths: list[Path], spec: InputSpec, workers: int) -> tuple[float, float]:
    """(img/s with the worker pool, CPU seconds per image of one in-process decoder over every photo)."""
    with DecodePool(spec, PoolConfig(workers=workers)) as pool:
        list(pool.decode([str(paths[0])] * 2 * workers))  # warm the workers
        t0 = time.perf_counter()
        list(pool.decode([str(p) for p in paths]))
        rate = len(paths) / (time.perf_counter() - t0)
    c0 = time.process_time()
    for p in paths:
        decode_image(str(p), spec)
    return rate, (time.process_time() - c0) / len(paths)


def encode_ceiling(encode: EncodeFn, size: int, batch: int, repeats: int = 4) -> tuple[float, float]:
    """(img/s, core seconds per image) of an encoder alone on model-sized uint8, at the pipeline's batch size.

    Core seconds are the process's CPU time: its threads hold every core while it runs.
    """
    x = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    encode(x)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        encode(x)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return repeats * batch / wall, cpu / (repeats * batch)


def clipdex_run(work: Path, name: str, photos_dir: Path, spec: ModelSpec, precision: str, seed_from: Path | None) -> tuple[float, dict[str, float], int]:
    """(seconds, stage timings, images) of `Library.index` into a fresh library, timed around the whole call.

    `seed_from`: a library whose derived exports (the text tower every first index exports,
    the int8 image encoder) and guard verdicts the fresh one starts with: the state after
    the one-time costs, for fp32 and the chosen precision alike. The model is loaded
    before the clock starts.
    """
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    if seed_from is not None and (seed_from / "derived").is_dir():
        shutil.copytree(seed_from / "derived", home / "derived")
    with Library.open(home, precision=precision) as lib:
        enc = lib.encoder(spec)
        if seed_from is not None and precision != "fp32":
            lib.catalog.ensure_model(enc.fingerprint, spec.name, spec.pretrained, spec.checkpoint, enc.dim)
            with Library.open(seed_from) as seeded:
                for check in seeded.catalog.precision_checks():
                    lib.catalog.record_precision_check(check)
        for kind in (TEXT_ENCODER, TEXT_ENCODER_INT8, IMAGE_ENCODER, IMAGE_ENCODER_INT8):  # hash the copies now, as a
            derived.lookup(home, enc.fingerprint, kind)  # library's own files are after its first run, not inside the timing
        t0 = time.perf_counter()
        report = lib.index([photos_dir], model=spec)
        took = time.perf_counter() - t0
    return took, report.timings, report.encoded


def no_change_reindex(work: Path, count: int, model: ModelSpec, dim: int) -> tuple[float, float]:
    """Seconds to index a folder of `count` files whose vectors were imported (the first run reads
    their EXIF headers once), then to re-index it unchanged."""
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
    shutil.rmtree(work / "reindex-lib", ignore_errors=True)
    with Library.open(work / "reindex-lib") as lib:
        vecs = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
        lib.import_embeddings(paths, vecs, model=model)
        lib.catalog.add_roots([os.fsencode(folder)])
        took = []
        for _ in range(2):
            t0 = time.perf_counter()
            report = lib.index([folder])
            took.append(time.perf_counter() - t0)
            assert report.encoded == 0 and report.added == 0, report.to_dict()
    return took[0], took[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", type=int, default=60)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the table shows medians")
    ap.add_argument("--reindex-files", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-bench")
    ap.add_argument("--avx2", action="store_true", help="cap torch/oneDNN at AVX2 (re-executes this script)")
    args = ap.parse_args()
    if args.avx2:
        reexec_avx2()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    photo_dir = work / f"photos-{args.phones}"  # one folder per set: the libraries index the whole folder
    print(f"generating photos in {photo_dir} (cached) ...", file=sys.stderr)
    paths = photos.generate(photo_dir, phones=args.phones, screenshots=max(1, args.phones // 8), web=max(1, args.phones // 8))
    weights = work / f"{args.model}-random.safetensors"
    if args.model != TINY_MODEL and not weights.exists():
        m = open_clip.create_model(args.model, pretrained=None)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    spec = ModelSpec(TINY_MODEL) if args.model == TINY_MODEL else ModelSpec.parse(args.model, weights)  # tiny: a quick smoke run
    cores = len(os.sched_getaffinity(0))

    # The one-time guard, on a library of its own: it picks (and checks) the precision the timed runs use.
    print("fidelity guard (one time) ...", file=sys.stderr)
    guard_lib = work / "guard-lib"
    guard_s, _, _ = clipdex_run(work, "guard-lib", photo_dir, spec, "auto", None)
    with Library.open(guard_lib) as lib:
        encoder = lib.encoder(spec)  # auto: its first choice, fp32 weights
        checks = lib.catalog.precision_checks()
        chosen_fn = ImageEncoding(guard_lib, checks, lambda note: None, auto=True)(encoder)
    chosen = precision_in_use("auto", "cpu", encoder.fingerprint, checks)
    size = encoder.input_spec.height
    fp32_fn = torch_fp32(encoder.model, encoder.mean, encoder.std)
    # auto's other choices on this CPU (bf16 where it is native and int8 goes first): timed too, so the order shows
    others = [p for p in auto_cpu_candidates() if p != chosen]
    other_libs: dict[str, Path] = {}
    for p in others:  # each with its own guard verdict, reached outside the timing
        clipdex_run(work, f"guard-{p}", photo_dir, spec, p, None)
        other_libs[p] = work / f"guard-{p}"

    sides: dict[str, Callable[[], float]] = {
        "naive fp32": lambda: naive(paths, fp32_fn, size),
        f"naive {chosen}": lambda: naive(paths, chosen_fn, size),
        "clipdex fp32": lambda: clipdex_run(work, "lib-fp32", photo_dir, spec, "fp32", guard_lib)[0],
        f"clipdex {chosen}": lambda: clipdex_run(work, "lib-chosen", photo_dir, spec, "auto", guard_lib)[0],
    }
    for p in others:
        sides[f"clipdex {p} (auto's other choice)"] = functools.partial(lambda p: clipdex_run(work, f"lib-{p}", photo_dir, spec, p, other_libs[p])[0], p)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # no side always first or cold
        for name in order:
            print(f"round {r + 1}: {name} ...", file=sys.stderr)
            seconds[name].append(sides[name]())
    rates = {name: len(paths) / statistics.median(s) for name, s in seconds.items()}
    _, timings, encoded = clipdex_run(work, "lib-chosen", photo_dir, spec, "auto", guard_lib)  # stage split, untimed
    assert encoded == len(paths), (encoded, len(paths))

    print("ceilings ...", file=sys.stderr)
    batch = auto_batch_size(encoder)
    dec_rate, dec_cpu = decode_ceiling(paths, encoder.input_spec, cores)
    enc_rate, enc_cpu = encode_ceiling(chosen_fn, size, batch)
    by_batch = {b: encode_ceiling(chosen_fn, size, b, repeats=max(2, 64 // b)) for b in (4, 8, 32) if b != batch}  # the batch choice
    other_ceilings = {p: encode_ceiling(ImageEncoding(other_libs[p], _checks(other_libs[p]), lambda note: None)(dataclasses.replace(encoder, precision=p)), size, batch) for p in others}
    enc32_rate, enc32_cpu = encode_ceiling(lambda a: encode_images(dataclasses.replace(encoder, precision="fp32"), a), size, batch)
    bound = cores / (dec_cpu + enc_cpu)
    # On a loaded machine this process gets less than `cores`, and CPU time overstates the bound.
    # The wall-clock rates alone, measured under the same load, give a second estimate:
    # decoding and encoding one after the other on the same cores.
    shared = 1.0 / (1.0 / dec_rate + 1.0 / enc_rate)
    print("fidelity ...", file=sys.stderr)
    psnr_fast, psnr_control = input_fidelity(paths, encoder.input_spec)
    emb = embedding_fidelity(world_photos(work / "world-photos", 24), *tiny_encoders(work / "tiny-lib"))
    print("no-change re-index ...", file=sys.stderr)
    first_s, reindex_s = no_change_reindex(work, args.reindex_files, spec, encoder.dim)
    base = rates["naive fp32"]
    ours = rates[f"clipdex {chosen}"]
    efficiency = ours / bound
    guard = next((c for c in checks if c.precision == chosen), checks[-1] if checks else None)
    refused = [c for c in checks if not c.accepted]

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    def cos_row(name: str, cos: list[float], note: str) -> tuple[str, str, str, str]:
        return (name, f"{np.mean(cos):.4f} / {np.min(cos):.4f}", note, f">= {COSINE_TARGET}: {verdict(min(cos) >= COSINE_TARGET)}")

    def side_row(name: str, target: str = "") -> tuple[str, str, str, str]:
        runs = " ".join(f"{s:.1f}" for s in seconds[name])
        return (name, f"{rates[name]:.2f} img/s", f"{rates[name] / base:.2f}x (runs {runs} s)", target)

    rows = [
        side_row("naive fp32"),
        side_row(f"naive {chosen}"),
        side_row("clipdex fp32"),
        side_row(f"clipdex {chosen}", f">= 3.5x: {verdict(ours / base >= 3.5)}"),
        *(side_row(name) for name in seconds if "other choice" in name),
        *((f"guard refused {c.precision}", f"{c.seconds:.1f} s", f"cos {c.mean_cosine:.4f} / {c.min_cosine:.4f}, {c.images} img", "")
          for c in refused),
        ("fidelity guard, one time" if guard else "fidelity guard: none (fp32)",
         f"{guard.seconds:.1f} s" if guard else "-",
         f"{guard.precision} {'accepted' if guard.accepted else 'REFUSED'}: cos {guard.mean_cosine:.4f} / {guard.min_cosine:.4f}, {guard.images} img"
         if guard else "", f"whole first run {guard_s:.1f} s"),
        ("decode-only ceiling (pool)", f"{dec_rate:.2f} img/s", f"{dec_cpu * 1000:.0f} ms CPU/img", ""),
        (f"encode-only ceiling, {chosen}", f"{enc_rate:.2f} img/s", f"{enc_cpu * 1000:.0f} ms CPU/img (batch {batch})", ""),
        *((f"  the same at batch {b}", f"{r:.2f} img/s", f"{c * 1000:.0f} ms CPU/img (batch {b})", "") for b, (r, c) in by_batch.items()),
        *((f"encode-only ceiling, {p}", f"{r:.2f} img/s", f"{c * 1000:.0f} ms CPU/img (batch {batch})", "") for p, (r, c) in other_ceilings.items()),
        ("encode-only ceiling, fp32", f"{enc32_rate:.2f} img/s", f"{enc32_cpu * 1000:.0f} ms CPU/img (batch {batch})", ""),
        ("bound from decode+encode CPU time", f"{bound:.2f} img/s", f"{cores} cores, {bound / base:.2f}x naive fp32", ""),
        ("pipeline efficiency", f"{efficiency:.2f}", f"clipdex {chosen} / bound", f">= 0.85: {verdict(efficiency >= 0.85)}"),
        ("wall-clock estimate: decode then encode", f"{shared:.2f} img/s", "1 / (1/decode + 1/encode ceilings)", ""),
        ("efficiency vs the wall-clock estimate", f"{ours / shared:.2f}", f"clipdex {chosen} / estimate", "(for loaded machines)"),
        ("encoder waited on decoders", f"{timings.get('wait_decode', 0):.1f} s", f"encode {timings.get('encode', 0):.1f} s", ""),
        ("fidelity PSNR mean / min", f"{np.mean(psnr_fast):.1f} / {np.min(psnr_fast):.1f} dB", "vs full decode + open_clip",
         f"min >= {PSNR_TARGET_DB:.0f} dB: {verdict(min(psnr_fast) >= PSNR_TARGET_DB)}"),
        ("control: blur σ=1px PSNR mean / max", f"{np.mean(psnr_control):.1f} / {np.max(psnr_control):.1f} dB", "same threshold, must fail",
         f"max < {PSNR_TARGET_DB:.0f} dB: {verdict(max(psnr_control) < PSNR_TARGET_DB)}"),
        cos_row("trained tiny: embedding cos mean / min", emb.fast, f"{len(emb.fast)} world scenes, fast vs full decode"),
        ("control: blur σ=1px cos mean / min", f"{np.mean(emb.control):.4f} / {np.min(emb.control):.4f}",
         f"different scenes: mean cos {emb.others:.3f}", f"mean < {COSINE_TARGET}: {verdict(bool(np.mean(emb.control) < COSINE_TARGET))}"),
        *(cos_row(f"trained tiny {p} vs fp32: cos mean / min", c, "same fast-path input") for p, c in emb.precision.items()),
        (f"first index after import, {args.reindex_files:,}", f"{first_s:.2f} s", "reads each file's EXIF header once", ""),
        (f"no-change re-index, {args.reindex_files:,} files", f"{reindex_s:.2f} s", "", f"<= 5 s: {verdict(reindex_s <= 5)}"),
        ("peak RSS of this process", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", "", ""),
    ]
    print(f"\nindex_throughput: {len(paths)} photos ({args.phones} x 12 MP JPEG q90), {args.model} "
          f"(random weights), chosen precision {chosen}; {args.rounds} rounds interleaved, medians, each side timed end to end")
    print(f"CPU: {cpu_header()}")
    if "ATEN_CPU_CAPABILITY" in os.environ:
        print("     (ONNX Runtime cannot be capped: its int8 kernels still use this CPU's best instructions)")
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}}  {'figure':>16}  {'vs naive fp32 / note':>48}  target")
    for name, fig, note, target in rows:
        print(f"{name:{w}}  {fig:>16}  {note:>48}  {target}")
    print(f"\nreproduce: .venv/bin/python benchmarks/index_throughput.py --phones {args.phones} --rounds {args.rounds}"
          f"{'' if args.model == 'ViT-B-32-256' else ' --model ' + args.model}"
          f"{' --avx2' if 'ATEN_CPU_CAPABILITY' in os.environ else ''}")


def _checks(home: Path) -> list[PrecisionCheck]:
    with Library.open(home) as lib:
        return lib.catalog.precision_checks()


def tiny_encoders(home: Path) -> tuple[Encoder, dict[str, EncodeFn]]:
    """clipdex-tiny at fp32, and its image encoders at bf16 and int8 (the ONNX Runtime copy clipdex indexes with)."""
    from indexer.quantised_export import image_encoder_int8, open_encoder

    fp32 = load_encoder(ModelSpec(TINY_MODEL), "cpu", "fp32")
    bf16 = load_encoder(ModelSpec(TINY_MODEL), "cpu", "bf16")
    int8 = open_encoder(image_encoder_int8(fp32, home))
    return fp32, {"bf16": lambda a: encode_images(bf16, a), "int8": int8.encode}


if __name__ == "__main__":
    main()
