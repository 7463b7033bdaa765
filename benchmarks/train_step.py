"""One fine-tuning step at fp32 and under bf16 autocast, interleaved: why `--precision auto` trains in fp32 on CPU.

    .venv/bin/python benchmarks/train_step.py              # --model clipdex-tiny --batch 128 --rounds 3
    .venv/bin/python benchmarks/train_step.py --avx2       # torch limited to AVX2 (no native bf16)

A step is what `clipdex finetune` runs (`retrieval.trainer.optimizer_step`): forward
through both towers, the contrastive loss, backward and AdamW, on a batch of random
images and captions. The two precisions alternate, the first one changing each round;
the table gives medians after one warm-up round each.
"""

from __future__ import annotations

import copy
import os
import sys

AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if "--avx2" in sys.argv and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":  # the limits act only at start
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_LIMITS})

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.grad_mode import cpu_line  # noqa: E402
from indexer.models import ModelSpec, load_encoder  # noqa: E402
from retrieval.contrastive import pixels_to_input  # noqa: E402
from retrieval.trainer import TrainConfig, make_optimizer, optimizer_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="clipdex-tiny")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--avx2", action="store_true", help="limit torch to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)")
    args = ap.parse_args()
    torch.manual_seed(0)
    enc = load_encoder(ModelSpec.parse(args.model), "cpu", "fp32")
    side = enc.input_spec
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, side.height, side.width, 3), dtype=np.uint8)
    x = pixels_to_input(enc, pixels)
    tokens = enc.tokenizer([f"photo number {i} of a test" for i in range(args.batch)])
    config = TrainConfig()
    nets = {p: copy.deepcopy(enc.model).train() for p in ("fp32", "bf16")}
    optimizers = {p: make_optimizer(nets[p], config) for p in nets}
    times: dict[str, list[float]] = {p: [] for p in nets}
    for r in range(args.rounds + 1):  # round 0 warms up
        for p in (["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]):
            t0 = time.perf_counter()
            optimizer_step(nets[p], optimizers[p], x, tokens, 1e-5, config, p)
            if r:
                times[p].append(time.perf_counter() - t0)
    fp32 = float(np.median(times["fp32"]))
    limited = ", torch limited to AVX2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else ""
    print(f"\n{args.model} training step (forward, backward, AdamW), batch {args.batch}, {args.rounds} interleaved rounds, "
          f"medians; torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads{limited}")
    print(f"{cpu_line()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'precision':22} {'s/step':>8} {'vs fp32':>8}")
    for p in nets:
        t = float(np.median(times[p]))
        print(f"{p + (' autocast' if p == 'bf16' else ''):22} {t:8.2f} {fp32 / t:7.2f}x")
    print(f"reproduce: .venv/bin/python benchmarks/train_step.py --model {args.model} --batch {args.batch} "
          f"--rounds {args.rounds}" + (" --avx2" if limited else ""))


if __name__ == "__main__":
    main()
