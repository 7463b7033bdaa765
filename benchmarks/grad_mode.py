"""Why clipdex encodes under `torch.no_grad()` and not `torch.inference_mode()`: both timed, interleaved.

    .venv/bin/python benchmarks/grad_mode.py            # --model ViT-B-32-256 --batch 8 --rounds 3

The image tower of `--model` (random weights: speed does not depend on them) encodes one
batch of uint8 images through `indexer.encode.encode_images`, whose grad mode is swapped
here: fp32 under no_grad (the baseline), then bf16 autocast under no_grad (what
`--precision bf16` runs) and under inference_mode, and fp32 under inference_mode. The
variants run in a rotated order each round; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer import encode  # noqa: E402
from indexer.models import ModelSpec, load_encoder  # noqa: E402
from indexer.precision_guard import cpu_has_native_bf16  # noqa: E402


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown CPU")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"CPU: {name}, {len(os.sched_getaffinity(0))} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = ModelSpec.parse(args.model)
    enc32 = load_encoder(spec, "cpu", "fp32") if args.model == "clipdex-tiny" else _random(args.model)
    enc16 = replace(enc32, precision="bf16")
    side = enc32.input_spec
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, side.height, side.width, 3), dtype=np.uint8)
    modes: dict[str, Callable[[], AbstractContextManager[object]]] = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
    variants = [(f"{p} under {m}", e, modes[m]) for p, e in (("fp32", enc32), ("bf16", enc16)) for m in modes]
    if not cpu_has_native_bf16():
        variants = variants[:2]  # emulated bf16 is not what clipdex runs
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    original = encode.torch.no_grad
    for r in range(args.rounds + 1):  # round 0 warms up
        k = r % len(variants)
        for name, enc, mode in variants[k:] + variants[:k]:
            encode.torch.no_grad = mode  # type: ignore[assignment]  # the grad mode encode_images enters
            try:
                t0 = time.perf_counter()
                encode.encode_images(enc, pixels)
                if r:
                    times[name].append(time.perf_counter() - t0)
            finally:
                encode.torch.no_grad = original  # type: ignore[assignment]
    base = float(np.median(times["fp32 under no_grad"]))
    print(f"\n{args.model} image tower, batch {args.batch}, {args.rounds} interleaved rounds, medians; "
          f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads")
    print(f"{cpu_line()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':28} {'img/s':>7} {'vs fp32 no_grad':>16}")
    for name, _, _ in variants:
        t = float(np.median(times[name]))
        print(f"{name:28} {args.batch / t:7.1f} {base / t:15.2f}x")
    print(f"reproduce: .venv/bin/python benchmarks/grad_mode.py --model {args.model} --batch {args.batch} --rounds {args.rounds}")


def _random(name: str) -> encode.Encoder:
    """`name` with random weights (no hub), loaded as clipdex loads a checkpoint."""
    import tempfile

    import open_clip
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.safetensors"
        model = open_clip.create_model(name, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        del model
        return load_encoder(ModelSpec.parse(name, path), "cpu", "fp32")


if __name__ == "__main__":
    main()
