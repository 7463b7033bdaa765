"""Evaluate CPU inference back ends for the image encoder, side by side, in one run.

    .venv/bin/python benchmarks/onnx_eval.py [--model ViT-B-32-256] [--avx2] [--rounds 3]

Back ends, all fed what the indexer hands the encoder (model-sized uint8 pixels):
- torch fp32 (`encode_images`, the baseline), bf16 (autocast, bf16 tower copy), and
  dynamic int8 as a separate inference copy of the image tower (nn.Linear quantised);
- ONNX Runtime on clipdex's image export (uint8 in, normalisation in the graph): fp32,
  dynamic int8 (weights QInt8, activations quantised per batch), static int8 QDQ
  calibrated on the first images (per-channel weights, with and without reduce_range),
  each at graph optimisation level ALL (and fp32 at BASIC, to show the level's worth),
  intra-op threads = cores, `session.intra_op.allow_spinning` = 0.

Each back end runs `--repeats` batches per round; rounds interleave the back ends (A B C
… A B C …) and the table gives the median rate. Cosines are against torch fp32 on the
same pixels. With random weights the cosine says little; `--model clipdex-tiny` (trained
weights) gives a meaningful fidelity figure.

`--avx2` re-runs this script with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2: torch
and oneDNN then use AVX2 kernels only. ONNX Runtime has no switch to cap its instruction
set (MLAS picks kernels from CPUID at start; no environment variable or session option
limits it), so its figures under `--avx2` are still those of this CPU's best kernels
(AVX-512 and VNNI where present): on a real AVX2 machine its int8 is slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")


def reexec_avx2() -> None:
    """Run this script again with torch and oneDNN capped at AVX2 (once: the variables are then set)."""
    if all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})


def cpu_header() -> str:
    """The CPU model, which of CPU_FLAGS it has, and torch's kernel level (after any cap)."""
    import torch

    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    capped = " (capped: " + " ".join(f"{k}={os.environ[k]}" for k in AVX2_ENV if k in os.environ) + ")" if any(
        k in os.environ for k in AVX2_ENV) else ""
    return f"{model}, {len(os.sched_getaffinity(0))} cores; {have}; torch kernels {torch.backends.cpu.get_cpu_capability()}{capped}"


def interleaved(backends: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray, rounds: int, repeats: int) -> dict[str, float]:
    """Median img/s per back end over `rounds`, the back ends taking turns within each round."""
    for fn in backends.values():
        fn(x[:4])  # warm-up: first-call allocations and kernel choice
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for r in range(rounds):
        order = list(backends) if r % 2 == 0 else list(reversed(backends))  # no back end always first
        for name in order:
            t0 = time.perf_counter()
            for _ in range(repeats):
                backends[name](x)
            rates[name].append(repeats * len(x) / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--batch", type=int, default=16, help="the indexer's CPU batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--avx2", action="store_true", help="cap torch/oneDNN at AVX2 (re-executes this script)")
    args = ap.parse_args()
    if args.avx2:
        reexec_avx2()
    import torch

    from indexer.encode import encode_images
    from indexer.models import ModelSpec, load_encoder
    from indexer.quantised_export import calibrate_and_quantise, dynamic_quantise, session_options
    from indexer.onnx_export import ImageTower, _export  # the export the indexer uses
    from indexer.derived import IMAGE_ENCODER
    import onnxruntime as ort

    if args.checkpoint is None and args.model != "clipdex-tiny":
        import open_clip
        from safetensors.torch import save_file

        args.checkpoint = Path(tempfile.gettempdir()) / "clipdex-bench" / f"{args.model}-random.safetensors"
        if not args.checkpoint.exists():
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            m = open_clip.create_model(args.model, pretrained=None)
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(args.checkpoint))
    spec = ModelSpec.parse(args.model, args.checkpoint)
    fp32 = load_encoder(spec, "cpu", "fp32")
    bf16 = load_encoder(spec, "cpu", "bf16")
    size = fp32.input_spec.height
    rng = np.random.default_rng(0)
    # Smooth random pictures at model size, as uint8 (what the indexer hands the encoder).
    small = torch.from_numpy(rng.random((args.batch * 3, 3, 8, 8), dtype=np.float32))
    x = torch.nn.functional.interpolate(small, size=size, mode="bilinear").permute(0, 2, 3, 1)
    pixels_all = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (3B, S, S, 3)
    calib, pixels = pixels_all[: 2 * args.batch], pixels_all[2 * args.batch :]

    int8_tower = torch.ao.quantization.quantize_dynamic(
        ImageTower(fp32.model, fp32.mean, fp32.std).eval(), {torch.nn.Linear}, dtype=torch.qint8)

    def torch_int8(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return int8_tower(torch.from_numpy(a)).numpy()

    work = Path(tempfile.mkdtemp())
    print("exporting and quantising ...", file=sys.stderr)
    fp32_path = work / "image-encoder.onnx"
    _export(ImageTower(fp32.model, fp32.mean, fp32.std), torch.from_numpy(pixels[:2]), "pixels", fp32_path, IMAGE_ENCODER, "bench")
    dyn_path, qdq_path, qdq7_path = work / "dyn.onnx", work / "qdq.onnx", work / "qdq7.onnx"
    t0 = time.perf_counter()
    dynamic_quantise(fp32_path, dyn_path)
    t_dyn = time.perf_counter() - t0
    t0 = time.perf_counter()
    calibrate_and_quantise(fp32_path, qdq_path, calib, reduce_range=False)
    t_qdq = time.perf_counter() - t0
    calibrate_and_quantise(fp32_path, qdq7_path, calib, reduce_range=True)
    cores = len(os.sched_getaffinity(0))

    def ort_fn(path: Path, level: str = "all") -> Callable[[np.ndarray], np.ndarray]:
        sess = ort.InferenceSession(str(path), session_options(cores, level), providers=["CPUExecutionProvider"])
        return lambda a: sess.run(["vectors"], {"pixels": a})[0]

    backends: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "torch fp32 (baseline)": lambda a: encode_images(fp32, a),
        "torch bf16 (autocast, bf16 tower)": lambda a: encode_images(bf16, a),
        "torch int8 dynamic (tower copy)": torch_int8,
        "ORT fp32, opt BASIC": ort_fn(fp32_path, "basic"),
        "ORT fp32, opt ALL": ort_fn(fp32_path),
        "ORT int8 dynamic": ort_fn(dyn_path),
        "ORT int8 static QDQ": ort_fn(qdq_path),
        "ORT int8 static QDQ reduce_range": ort_fn(qdq7_path),
    }
    print("timing ...", file=sys.stderr)
    rates = interleaved(backends, pixels, args.rounds, args.repeats)
    base_out = encode_images(fp32, pixels)
    print(f"\nonnx_eval: {args.model} image encoder, batch {args.batch}, "
          f"{'trained' if args.model == 'clipdex-tiny' else 'random'} weights, {args.rounds} rounds x {args.repeats} batches, interleaved, medians")
    print(f"CPU: {cpu_header()}")
    print(f"ORT {ort.__version__}: intra-op threads {cores}, allow_spinning 0; "
          f"quantise time: dynamic {t_dyn:.1f} s, static QDQ (calibration on {len(calib)} images) {t_qdq:.1f} s")
    print(f"{'back end':36} {'img/s':>8} {'vs fp32':>8} {'cos mean':>9} {'cos min':>8}")
    base_rate = rates["torch fp32 (baseline)"]
    for name, fn in backends.items():
        out = np.asarray(fn(pixels), dtype=np.float32)
        cos = np.sum(out * base_out, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(base_out, axis=1))
        print(f"{name:36} {rates[name]:8.1f} {rates[name] / base_rate:7.2f}x {cos.mean():9.4f} {cos.min():8.4f}")
    print(f"reproduce: .venv/bin/python benchmarks/onnx_eval.py --model {args.model} --rounds {args.rounds}{' --avx2' if args.avx2 else ''}")


if __name__ == "__main__":
    main()
